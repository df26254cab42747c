package jwks_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strings"
	"sync"
	"testing"

	"github.com/berth-dev/berth/internal/jwks"
)

var (
	keysOnce sync.Once
	rsaKey   *rsa.PrivateKey
	ecKeys   map[string]*ecdsa.PrivateKey
)

// testKeys returns an RSA 2048 key and one EC key per curve, made once.
func testKeys(tb testing.TB) (*rsa.PrivateKey, map[string]*ecdsa.PrivateKey) {
	tb.Helper()
	keysOnce.Do(func() {
		var err error
		if rsaKey, err = rsa.GenerateKey(rand.Reader, 2048); err != nil {
			panic(err)
		}
		ecKeys = map[string]*ecdsa.PrivateKey{}
		for name, c := range map[string]elliptic.Curve{"P-256": elliptic.P256(), "P-384": elliptic.P384(), "P-521": elliptic.P521()} {
			if ecKeys[name], err = ecdsa.GenerateKey(c, rand.Reader); err != nil {
				panic(err)
			}
		}
	})
	return rsaKey, ecKeys
}

func b64(b []byte) string { return base64.RawURLEncoding.EncodeToString(b) }

// rsaJWK is pub as a JSON Web Key with the extra members.
func rsaJWK(kid string, pub *rsa.PublicKey, extra map[string]any) map[string]any {
	m := map[string]any{"kty": "RSA", "kid": kid, "n": b64(pub.N.Bytes()), "e": b64(big.NewInt(int64(pub.E)).Bytes())}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

// ecJWK is pub as a JSON Web Key with the extra members.
func ecJWK(kid string, pub *ecdsa.PublicKey, extra map[string]any) map[string]any {
	b, err := pub.Bytes()
	if err != nil {
		panic(err)
	}
	size := (len(b) - 1) / 2
	m := map[string]any{"kty": "EC", "kid": kid, "crv": pub.Curve.Params().Name, "x": b64(b[1 : 1+size]), "y": b64(b[1+size:])}
	for k, v := range extra {
		m[k] = v
	}
	return m
}

func doc(keys ...map[string]any) []byte {
	if keys == nil {
		keys = []map[string]any{}
	}
	b, err := json.Marshal(map[string]any{"keys": keys})
	if err != nil {
		panic(err)
	}
	return b
}

// smallRSA is an RSA public key of bits bits (not a real key: Parse looks at
// the numbers only).
func smallRSA(bits int) *rsa.PublicKey {
	n := new(big.Int).Lsh(big.NewInt(1), uint(bits-1))
	n.SetBit(n, 0, 1)
	return &rsa.PublicKey{N: n, E: 65537}
}

func TestParse_Keys(t *testing.T) {
	rk, ec := testKeys(t)
	p256 := &ec["P-256"].PublicKey
	offCurve := ecJWK("off", p256, nil)
	offCurve["y"] = offCurve["x"]
	tests := []struct {
		name string
		key  map[string]any
		skip string // "" when the key is kept
	}{
		{"RSA 2048", rsaJWK("k", &rk.PublicKey, nil), ""},
		{"RSA with alg RS256 and use sig", rsaJWK("k", &rk.PublicKey, map[string]any{"alg": "RS256", "use": "sig"}), ""},
		{"RSA with alg PS512", rsaJWK("k", &rk.PublicKey, map[string]any{"alg": "PS512"}), ""},
		{"RSA with key_ops verify", rsaJWK("k", &rk.PublicKey, map[string]any{"key_ops": []string{"verify"}}), ""},
		{"RSA with x5c (ignored)", rsaJWK("k", &rk.PublicKey, map[string]any{"x5c": []string{"MIIB"}}), ""},
		{"EC P-256", ecJWK("k", p256, map[string]any{"alg": "ES256"}), ""},
		{"EC P-384", ecJWK("k", &ec["P-384"].PublicKey, nil), ""},
		{"EC P-521", ecJWK("k", &ec["P-521"].PublicKey, map[string]any{"alg": "ES512"}), ""},

		{"RSA 1024", rsaJWK("k", smallRSA(1024), nil), "RSA key of 1024 bits"},
		{"RSA 2047", rsaJWK("k", smallRSA(2047), nil), "RSA key of 2047 bits"},
		{"RSA 16385", rsaJWK("k", smallRSA(16385), nil), "RSA key of 16385 bits"},
		{"RSA even modulus", rsaJWK("k", &rsa.PublicKey{N: new(big.Int).Lsh(big.NewInt(1), 2048), E: 65537}, nil), "modulus is even"},
		{"RSA exponent 1", rsaJWK("k", &rsa.PublicKey{N: rk.N, E: 1}, nil), "exponent"},
		{"RSA even exponent", rsaJWK("k", &rsa.PublicKey{N: rk.N, E: 65536}, nil), "exponent"},
		{"RSA huge exponent", map[string]any{"kty": "RSA", "kid": "k", "n": b64(rk.N.Bytes()), "e": b64([]byte{1, 0, 0, 0, 1})}, "exponent"},
		{"RSA n not base64", map[string]any{"kty": "RSA", "kid": "k", "n": "!!", "e": "AQAB"}, "not base64url"},
		{"RSA no n", map[string]any{"kty": "RSA", "kid": "k", "e": "AQAB"}, "not base64url"},
		{"RSA n too long", map[string]any{"kty": "RSA", "kid": "k", "n": strings.Repeat("A", 5000), "e": "AQAB"}, "too long"},
		{"oct", map[string]any{"kty": "oct", "kid": "k", "k": "c2VjcmV0"}, "symmetric"},
		{"OKP", map[string]any{"kty": "OKP", "kid": "k", "crv": "Ed25519", "x": "AAAA"}, "key type"},
		{"no kty", map[string]any{"kid": "k"}, "no \"kty\""},
		{"use enc", rsaJWK("k", &rk.PublicKey, map[string]any{"use": "enc"}), "use \"enc\""},
		{"key_ops encrypt", rsaJWK("k", &rk.PublicKey, map[string]any{"key_ops": []string{"encrypt"}}), "key_ops"},
		{"alg HS256", rsaJWK("k", &rk.PublicKey, map[string]any{"alg": "HS256"}), "alg \"HS256\" is not accepted"},
		{"alg none", rsaJWK("k", &rk.PublicKey, map[string]any{"alg": "none"}), "alg \"none\" is not accepted"},
		{"alg ES256 on RSA", rsaJWK("k", &rk.PublicKey, map[string]any{"alg": "ES256"}), "does not fit"},
		{"alg ES384 on P-256", ecJWK("k", p256, map[string]any{"alg": "ES384"}), "does not fit"},
		{"alg RS256 on EC", ecJWK("k", p256, map[string]any{"alg": "RS256"}), "does not fit"},
		{"EC off the curve", offCurve, "not on the curve"},
		{"EC short coordinate", map[string]any{"kty": "EC", "kid": "k", "crv": "P-256", "x": "AAAA", "y": "AAAA"}, "32 bytes"},
		{"EC P-224", map[string]any{"kty": "EC", "kid": "k", "crv": "P-224", "x": "AAAA", "y": "AAAA"}, "curve"},
		{"EC secp256k1", map[string]any{"kty": "EC", "kid": "k", "crv": "secp256k1", "x": "AAAA", "y": "AAAA"}, "curve"},
		{"no kid", rsaJWK("", &rk.PublicKey, nil), "no \"kid\""},
		{"long kid", rsaJWK(strings.Repeat("k", 257), &rk.PublicKey, nil), "kid longer"},
		{"kid of the wrong type", map[string]any{"kty": "RSA", "kid": 7}, "wrong type"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// The key under test comes with a good EC key, so that the set
			// parses either way.
			good := ecJWK("good", p256, nil)
			s, err := jwks.Parse(doc(tt.key, good))
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if s.Key("good") == nil {
				t.Fatal("the good key is missing")
			}
			kid, _ := tt.key["kid"].(string)
			k := s.Key(kid)
			switch {
			case tt.skip == "" && k == nil:
				t.Fatalf("key skipped: %v", s.Skipped())
			case tt.skip == "" && k.Algorithm != fmt.Sprint(tt.key["alg"]) && tt.key["alg"] != nil:
				t.Errorf("Algorithm = %q", k.Algorithm)
			case tt.skip != "" && k != nil:
				t.Fatalf("key kept, want skipped for %q", tt.skip)
			case tt.skip != "":
				sk := s.Skipped()
				if len(sk) != 1 || !strings.Contains(sk[0].Reason, tt.skip) {
					t.Errorf("Skipped = %v, want one with %q", sk, tt.skip)
				}
				if s.Len() != 1 {
					t.Errorf("Len = %d, want 1", s.Len())
				}
			}
		})
	}
}

func TestParse_Documents(t *testing.T) {
	rk, _ := testKeys(t)
	good := rsaJWK("k1", &rk.PublicKey, nil)
	many := make([]map[string]any, jwks.MaxKeys+1)
	for i := range many {
		many[i] = rsaJWK(fmt.Sprint("k", i), &rk.PublicKey, nil)
	}
	big := append(doc(good)[:len(doc(good))-2], []byte(`],"pad":"`+strings.Repeat("x", jwks.MaxDocumentBytes)+`"}`)...)
	tests := []struct {
		name, doc string
		err       string // "" when it parses
	}{
		{"one key", string(doc(good)), ""},
		{"empty", "", "not a JSON object"},
		{"not JSON", "{keys:", "not a JSON object"},
		{"truncated", string(doc(good))[:40], "not a JSON object"},
		{"array", "[]", "not a JSON object"},
		{"null", "null", `no "keys"`},
		{"no keys member", `{"kid":"x"}`, `no "keys"`},
		{"keys null", `{"keys":null}`, `no "keys"`},
		{"keys not an array", `{"keys":{"kty":"RSA"}}`, "wrong type"},
		{"no key", `{"keys":[]}`, "holds no key"},
		{"keys not objects", `{"keys":[1,"a",null]}`, "no usable key"},
		{"only unusable keys", string(doc(rsaJWK("small", smallRSA(1024), nil))), "RSA key of 1024 bits"},
		{"too many keys", string(doc(many...)), "101 keys"},
		{"over 1 MiB", string(big), "larger than"},
		{"trailing garbage", string(doc(good)) + "x", "not a JSON object"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := jwks.Parse([]byte(tt.doc))
			switch {
			case tt.err == "" && err != nil:
				t.Fatalf("Parse: %v", err)
			case tt.err != "" && (err == nil || !strings.Contains(err.Error(), tt.err)):
				t.Fatalf("Parse = %v, %v; want an error with %q", s, err, tt.err)
			case tt.err != "" && s != nil:
				t.Errorf("Parse returned a set with its error")
			}
		})
	}
}

func TestParse_DuplicateKid(t *testing.T) {
	rk, ec := testKeys(t)
	s, err := jwks.Parse(doc(rsaJWK("k", &rk.PublicKey, nil), ecJWK("k", &ec["P-256"].PublicKey, nil)))
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := s.Key("k").Public.(*rsa.PublicKey); !ok || s.Len() != 1 {
		t.Errorf("the first key of a kid should win: %T, %d keys", s.Key("k").Public, s.Len())
	}
	if r := s.SkipReason("k"); !strings.Contains(r, "another key") {
		t.Errorf("SkipReason = %q", r)
	}
}

func TestKey_Check(t *testing.T) {
	rk, ec := testKeys(t)
	s, err := jwks.Parse(doc(
		rsaJWK("rsa", &rk.PublicKey, nil),
		rsaJWK("rs256", &rk.PublicKey, map[string]any{"alg": "RS256"}),
		ecJWK("p256", &ec["P-256"].PublicKey, nil),
		ecJWK("p521", &ec["P-521"].PublicKey, nil),
	))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		kid, alg string
		ok       bool
	}{
		{"rsa", "RS256", true}, {"rsa", "RS512", true}, {"rsa", "PS384", true},
		{"rsa", "ES256", false}, {"rsa", "HS256", false}, {"rsa", "none", false}, {"rsa", "", false},
		{"rs256", "RS256", true}, {"rs256", "RS512", false}, {"rs256", "PS256", false},
		{"p256", "ES256", true}, {"p256", "ES384", false}, {"p256", "RS256", false},
		{"p521", "ES512", true}, {"p521", "ES256", false},
	}
	for _, tt := range tests {
		err := s.Key(tt.kid).Check(tt.alg)
		if (err == nil) != tt.ok {
			t.Errorf("%s.Check(%q) = %v, want ok %v", tt.kid, tt.alg, err, tt.ok)
		}
		if err != nil && !errors.Is(err, jwks.ErrAlgorithmMismatch) {
			t.Errorf("%s.Check(%q) = %v, not ErrAlgorithmMismatch", tt.kid, tt.alg, err)
		}
	}
}

// FuzzParse feeds Parse arbitrary documents: it must not panic, and what it
// returns must hold only usable keys.
func FuzzParse(f *testing.F) {
	rk, ec := testKeys(f)
	f.Add(doc(rsaJWK("k", &rk.PublicKey, map[string]any{"alg": "RS256", "use": "sig"})))
	f.Add(doc(ecJWK("k", &ec["P-256"].PublicKey, nil), ecJWK("k2", &ec["P-521"].PublicKey, map[string]any{"alg": "ES512"})))
	f.Add(doc(rsaJWK("small", smallRSA(1024), nil)))
	f.Add([]byte(`{"keys":[{"kty":"oct","kid":"h","k":"c2VjcmV0","alg":"HS256"}]}`))
	f.Add([]byte(`{"keys":[{"kty":"RSA","kid":"x","n":"","e":"AQAB"}]}`))
	f.Add([]byte(`{"keys":[`))
	f.Fuzz(func(t *testing.T, data []byte) {
		s, err := jwks.Parse(data)
		if err != nil {
			if s != nil {
				t.Fatal("a set with an error")
			}
			return
		}
		if s.Len() == 0 || s.Len() > jwks.MaxKeys {
			t.Fatalf("%d keys", s.Len())
		}
		for _, kid := range s.IDs() {
			k := s.Key(kid)
			if k == nil || k.ID != kid || kid == "" {
				t.Fatalf("key %q: %+v", kid, k)
			}
			switch p := k.Public.(type) {
			case *rsa.PublicKey:
				if b := p.N.BitLen(); b < jwks.MinRSABits || b > jwks.MaxRSABits || p.E < 3 || p.E%2 == 0 {
					t.Fatalf("RSA key %q of %d bits, e %d", kid, b, p.E)
				}
			case *ecdsa.PublicKey:
				b, err := p.Bytes()
				if err != nil {
					t.Fatalf("EC key %q: %v", kid, err)
				}
				if _, err := ecdsa.ParseUncompressedPublicKey(p.Curve, b); err != nil {
					t.Fatalf("EC key %q off its curve: %v", kid, err)
				}
			default:
				t.Fatalf("key %q of type %T", kid, k.Public)
			}
			if k.Algorithm != "" && k.Check(k.Algorithm) != nil {
				t.Fatalf("key %q cannot verify its own alg %s", kid, k.Algorithm)
			}
		}
	})
}
