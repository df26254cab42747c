package broker

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"hash"
	"slices"
	"strings"
	"sync"
)

// Pagination cursors are opaque to clients: the position (a Seq) and a hash of the
// query, authenticated with a key kept in the store so every broker of a cluster
// accepts the others' cursors and nobody can forge or alter one.

// filterHash identifies a query so a cursor cannot be replayed on another one.
func filterHash(parts ...any) []byte {
	h := sha256.New()
	for _, p := range parts {
		switch v := p.(type) {
		case string:
			h.Write([]byte(v))
		case []string:
			for _, x := range v {
				h.Write([]byte(x))
				h.Write([]byte{0})
			}
		case map[string]string:
			keys := make([]string, 0, len(v))
			for k := range v {
				keys = append(keys, k)
			}
			slices.Sort(keys)
			for _, k := range keys {
				h.Write([]byte(k + "\x00" + v[k] + "\x00"))
			}
		}
		h.Write([]byte{1})
	}
	return h.Sum(nil)[:8]
}

func (s *Service) encodeCursor(seq int64, fh []byte) string {
	buf := make([]byte, 0, 8+8+16)
	buf = binary.BigEndian.AppendUint64(buf, uint64(seq))
	buf = append(buf, fh...)
	m := s.cursorMAC()
	m.h.Write(buf)
	var sum [sha256.Size]byte
	buf = append(buf, m.h.Sum(sum[:0])[:16]...)
	m.release()
	return base64.RawURLEncoding.EncodeToString(buf)
}

// decodeCursor returns the Seq after which a page starts (0 for an empty token).
func (s *Service) decodeCursor(tok string, fh []byte) (int64, error) {
	if tok == "" {
		return 0, nil
	}
	bad := Errorf(CodeInvalidInput, "NextToken: is not a token this broker issued for this query")
	if len(tok) > 128 {
		return 0, bad
	}
	raw, err := base64.RawURLEncoding.DecodeString(strings.TrimRight(tok, "="))
	if err != nil || len(raw) != 32 {
		return 0, bad
	}
	m := s.cursorMAC()
	m.h.Write(raw[:16])
	var sum [sha256.Size]byte
	ok := hmac.Equal(m.h.Sum(sum[:0])[:16], raw[16:]) && hmac.Equal(raw[8:16], fh)
	m.release()
	if !ok {
		return 0, bad
	}
	seq := int64(binary.BigEndian.Uint64(raw[:8]))
	if seq < 0 {
		return 0, bad
	}
	return seq, nil
}

// cursorMAC is a keyed HMAC for cursors, reused: setting up an HMAC is a
// good part of the work of checking and making a page's cursors.
type cursorMAC struct {
	key []byte
	h   hash.Hash
}

var cursorMACs sync.Pool

// cursorMAC returns an HMAC with s's cursor key, ready for writing.
func (s *Service) cursorMAC() *cursorMAC {
	if m, ok := cursorMACs.Get().(*cursorMAC); ok && bytes.Equal(m.key, s.cursorKey) {
		return m
	}
	return &cursorMAC{key: s.cursorKey, h: hmac.New(sha256.New, s.cursorKey)}
}

// release resets m and gives it back for reuse.
func (m *cursorMAC) release() {
	m.h.Reset()
	cursorMACs.Put(m)
}
