package gateway

import (
	"bytes"
	"io"
)

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// ServerMessageEnds parses a recorded server stream as the gateway does for
// a 3.8 client that asked for updates in the pixel format clientPF (16
// bytes; nil: the server's), and returns the offset where the handshake
// ends, then where each message ends, and the error that stopped the parse
// (io.EOF at a message boundary).
func ServerMessageEnds(stream, clientPF []byte) ([]int, error) {
	link := newLink()
	link.setMinor(8)
	if clientPF != nil {
		link.setClientFormat(parsePixelFormat(clientPF))
	}
	link.updatesRequested()
	c := &countingReader{r: bytes.NewReader(stream)}
	p := newServerParser(io.Discard, c, link, nil)
	var ends []int
	err := p.handshake()
	for err == nil {
		ends = append(ends, c.n-p.r.Buffered())
		err = p.message()
	}
	return ends, err
}
