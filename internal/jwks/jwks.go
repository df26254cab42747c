// Package jwks reads the JSON Web Key Sets (RFC 7517) of external OAuth2
// authorization servers, whose tokens the broker accepts beside its own: a
// strict parser (Parse) and a per-URL cache that fetches a set over TLS with a
// timeout and a size limit, fetches it again when a token names a key it does
// not know (at most once per MinRefetch), and keeps the keys it has while the
// server cannot be reached (Source).
//
// Only signature keys for the algorithms in Algorithms are kept: RSA keys of
// 2048 to 16384 bits with a sane public exponent, and EC keys on P-256, P-384
// and P-521 whose point lies on the curve. Symmetric ("oct") keys, keys for
// encryption, keys that name another algorithm and keys without a "kid" are
// skipped, each with the reason (Set.Skipped). Header fields that point at
// other keys (jku, x5u) are the token's business, not this package's: nothing
// here fetches any URL but the registered one.
package jwks

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"slices"
	"strings"
)

// Limits of a key set document and of its keys.
const (
	// MaxDocumentBytes bounds a key set document.
	MaxDocumentBytes = 1 << 20
	// MaxKeys bounds the keys of a set, usable or not.
	MaxKeys = 100
	// MinRSABits and MaxRSABits bound an RSA modulus.
	MinRSABits = 2048
	MaxRSABits = 16384
	// maxKeyIDLen bounds a "kid".
	maxKeyIDLen = 256
)

// Algorithms are the JWS algorithms whose keys a Set keeps and that external
// tokens may be signed with. "none" and the HMAC algorithms are not among
// them: an external server shares no secret with the broker.
var Algorithms = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}

// Allowed reports whether alg is one of Algorithms.
func Allowed(alg string) bool { return slices.Contains(Algorithms, alg) }

// Key is a public key of a set.
type Key struct {
	// ID is the key's "kid".
	ID string
	// Algorithm is the key's "alg"; empty when the set does not name one.
	Algorithm string
	// Public is an *rsa.PublicKey or an *ecdsa.PublicKey.
	Public crypto.PublicKey
}

// ErrAlgorithmMismatch means a key may not verify a signature of the
// algorithm asked for.
var ErrAlgorithmMismatch = errors.New("algorithm does not match the key")

// Check returns nil if k may verify a signature made with alg, and an error
// wrapping ErrAlgorithmMismatch if not: alg must be one of Algorithms, equal
// to the key's own "alg" when it has one, of the key's type (RS and PS for
// RSA, ES for EC) and, for EC, of the key's curve.
func (k *Key) Check(alg string) error {
	if !Allowed(alg) {
		return fmt.Errorf("%w: %s is not accepted", ErrAlgorithmMismatch, clip(alg))
	}
	if k.Algorithm != "" && k.Algorithm != alg {
		return fmt.Errorf("%w: the token says %s, key %s is for %s", ErrAlgorithmMismatch, alg, clip(k.ID), k.Algorithm)
	}
	if !fits(k.Public, alg) {
		return fmt.Errorf("%w: key %s (%s) cannot verify %s", ErrAlgorithmMismatch, clip(k.ID), describe(k.Public), alg)
	}
	return nil
}

// fits reports whether pub is of the type and curve alg needs.
func fits(pub crypto.PublicKey, alg string) bool {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return strings.HasPrefix(alg, "RS") || strings.HasPrefix(alg, "PS")
	case *ecdsa.PublicKey:
		return alg == curveAlg(p.Curve)
	}
	return false
}

func curveAlg(c elliptic.Curve) string {
	switch c {
	case elliptic.P256():
		return "ES256"
	case elliptic.P384():
		return "ES384"
	case elliptic.P521():
		return "ES512"
	}
	return ""
}

func describe(pub crypto.PublicKey) string {
	switch p := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA %d bits", p.N.BitLen())
	case *ecdsa.PublicKey:
		return "EC " + p.Curve.Params().Name
	}
	return fmt.Sprintf("%T", pub)
}

// Skipped is a key of a set that Parse did not keep, and why.
type Skipped struct {
	// KeyID is the key's "kid" (clipped), or "#N" (its index) if it has none.
	KeyID  string
	Reason string
}

// String is "kid: reason".
func (s Skipped) String() string { return s.KeyID + ": " + s.Reason }

// Set is a parsed key set. The zero Set holds no key.
type Set struct {
	keys    map[string]*Key
	order   []string // kids in document order
	skipped []Skipped
}

// Key returns the key named kid, or nil.
func (s *Set) Key(kid string) *Key {
	if s == nil {
		return nil
	}
	return s.keys[kid]
}

// Len is the number of usable keys.
func (s *Set) Len() int {
	if s == nil {
		return 0
	}
	return len(s.order)
}

// IDs returns the kids of the usable keys, in document order.
func (s *Set) IDs() []string {
	if s == nil {
		return nil
	}
	return slices.Clone(s.order)
}

// Skipped returns the keys Parse did not keep, in document order.
func (s *Set) Skipped() []Skipped {
	if s == nil {
		return nil
	}
	return slices.Clone(s.skipped)
}

// SkipReason returns why the key named kid was skipped, or "" if no key of
// that name was.
func (s *Set) SkipReason(kid string) string {
	if s == nil {
		return ""
	}
	for _, k := range s.skipped {
		if k.KeyID == kid {
			return k.Reason
		}
	}
	return ""
}

// rawKey is a JSON Web Key as the document gives it. Members this package
// does not use (x5c, x5t, ...) are ignored.
type rawKey struct {
	Kty    string   `json:"kty"`
	Kid    string   `json:"kid"`
	Alg    string   `json:"alg"`
	Use    string   `json:"use"`
	KeyOps []string `json:"key_ops"`
	N      string   `json:"n"`
	E      string   `json:"e"`
	Crv    string   `json:"crv"`
	X      string   `json:"x"`
	Y      string   `json:"y"`
}

// Parse reads a key set document: a JSON object whose "keys" member is an
// array of at most MaxKeys keys, in at most MaxDocumentBytes. It returns an
// error if the document is not such an object or if no key is usable;
// otherwise the set of usable keys, with the others in Skipped. When two
// usable keys share a kid the first one is kept.
func Parse(data []byte) (*Set, error) {
	if len(data) > MaxDocumentBytes {
		return nil, fmt.Errorf("key set larger than %d bytes", MaxDocumentBytes)
	}
	var doc struct {
		Keys *[]json.RawMessage `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("key set is not a JSON object with a keys array: %w", jsonError(err))
	}
	if doc.Keys == nil {
		return nil, errors.New(`key set has no "keys" array`)
	}
	raws := *doc.Keys
	if len(raws) > MaxKeys {
		return nil, fmt.Errorf("key set has %d keys; at most %d are read", len(raws), MaxKeys)
	}
	s := &Set{keys: make(map[string]*Key, len(raws))}
	for i, raw := range raws {
		var rk rawKey
		if err := json.Unmarshal(raw, &rk); err != nil {
			s.skipped = append(s.skipped, Skipped{fmt.Sprintf("#%d", i), "not a JSON Web Key: " + jsonError(err).Error()})
			continue
		}
		name := clip(rk.Kid)
		if rk.Kid == "" {
			name = fmt.Sprintf("#%d", i)
		}
		k, err := rk.key()
		if err == nil && s.keys[rk.Kid] != nil {
			err = errors.New("another key of the set has this kid")
		}
		if err != nil {
			s.skipped = append(s.skipped, Skipped{name, err.Error()})
			continue
		}
		s.keys[k.ID] = k
		s.order = append(s.order, k.ID)
	}
	if len(s.order) == 0 {
		if len(s.skipped) == 0 {
			return nil, errors.New("key set holds no key")
		}
		return nil, fmt.Errorf("key set holds no usable key (%s)", summary(s.skipped))
	}
	return s, nil
}

// summary lists up to 5 skipped keys.
func summary(sk []Skipped) string {
	var parts []string
	for i, k := range sk {
		if i == 5 {
			parts = append(parts, fmt.Sprintf("and %d more", len(sk)-5))
			break
		}
		parts = append(parts, k.String())
	}
	return strings.Join(parts, "; ")
}

// jsonError drops the Go type names from encoding/json's errors.
func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		return fmt.Errorf("member %q has the wrong type", te.Field)
	}
	return err
}

// key checks rk and returns the key it describes.
func (rk *rawKey) key() (*Key, error) {
	switch {
	case rk.Kid == "":
		return nil, errors.New(`no "kid"`)
	case len(rk.Kid) > maxKeyIDLen:
		return nil, fmt.Errorf("kid longer than %d bytes", maxKeyIDLen)
	case rk.Use != "" && rk.Use != "sig":
		return nil, fmt.Errorf("use %q is not sig", clip(rk.Use))
	case rk.KeyOps != nil && !slices.Contains(rk.KeyOps, "verify"):
		return nil, errors.New(`key_ops does not include "verify"`)
	case rk.Alg != "" && !Allowed(rk.Alg):
		return nil, fmt.Errorf("alg %q is not accepted (only %s)", clip(rk.Alg), strings.Join(Algorithms, ", "))
	}
	var (
		pub crypto.PublicKey
		err error
	)
	switch rk.Kty {
	case "RSA":
		pub, err = rk.rsa()
	case "EC":
		pub, err = rk.ec()
	case "oct":
		return nil, errors.New("symmetric (oct) key: HMAC is not accepted from an external server")
	case "":
		return nil, errors.New(`no "kty"`)
	default:
		return nil, fmt.Errorf("key type %q is not accepted (only RSA and EC)", clip(rk.Kty))
	}
	if err != nil {
		return nil, err
	}
	k := &Key{ID: rk.Kid, Algorithm: rk.Alg, Public: pub}
	if rk.Alg != "" && !fits(pub, rk.Alg) {
		return nil, fmt.Errorf("alg %s does not fit the key (%s)", rk.Alg, describe(pub))
	}
	return k, nil
}

func (rk *rawKey) rsa() (*rsa.PublicKey, error) {
	n, err := decodeInt(rk.N, "n", (MaxRSABits+7)/8+1)
	if err != nil {
		return nil, err
	}
	e, err := decodeInt(rk.E, "e", 8)
	if err != nil {
		return nil, err
	}
	if bits := n.BitLen(); bits < MinRSABits || bits > MaxRSABits {
		return nil, fmt.Errorf("RSA key of %d bits (at least %d, at most %d)", bits, MinRSABits, MaxRSABits)
	}
	if n.Bit(0) == 0 {
		return nil, errors.New("RSA modulus is even")
	}
	if !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 || e.Bit(0) == 0 {
		return nil, errors.New("RSA public exponent is not an odd number from 3 to 2^31-1")
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}

func (rk *rawKey) ec() (*ecdsa.PublicKey, error) {
	var (
		curve elliptic.Curve
		size  int
	)
	switch rk.Crv {
	case "P-256":
		curve, size = elliptic.P256(), 32
	case "P-384":
		curve, size = elliptic.P384(), 48
	case "P-521":
		curve, size = elliptic.P521(), 66
	default:
		return nil, fmt.Errorf("curve %q is not accepted (only P-256, P-384, P-521)", clip(rk.Crv))
	}
	x, errX := decode(rk.X)
	y, errY := decode(rk.Y)
	if errX != nil || errY != nil || len(x) != size || len(y) != size {
		return nil, fmt.Errorf("EC coordinates are not %d bytes of base64url each", size)
	}
	pt := make([]byte, 0, 1+2*size)
	pt = append(append(append(pt, 4), x...), y...)
	pub, err := ecdsa.ParseUncompressedPublicKey(curve, pt)
	if err != nil {
		return nil, errors.New("EC point is not on the curve")
	}
	return pub, nil
}

// decodeInt reads a base64url unsigned big-endian integer of at most
// maxBytes bytes.
func decodeInt(s, name string, maxBytes int) (*big.Int, error) {
	if base64.RawURLEncoding.DecodedLen(len(s)) > maxBytes+1 {
		return nil, fmt.Errorf("RSA %q is too long", name)
	}
	b, err := decode(s)
	if err != nil || len(b) == 0 {
		return nil, fmt.Errorf("RSA %q is not base64url", name)
	}
	return new(big.Int).SetBytes(b), nil
}

// decode reads base64url without padding (RFC 7515 section 2), tolerating
// padding that some servers add.
func decode(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// clip shortens text from a document or a token for messages and logs.
func clip(s string) string {
	const n = 64
	if len(s) > n {
		s = s[:n] + "..."
	}
	return strings.ToValidUTF8(s, "?")
}
