package wslink

import "github.com/berth-dev/berth/internal/tlsidle"

// IdleState reports, on the reader's goroutine between reads, whether c
// parks on its socket while idle and whether it holds a read buffer.
func (c *Conn) IdleState() (parks, holdsBuffer bool) { return c.park != nil, c.rbuf != nil }

// TLSHeld is the capacity of the read buffers that c's TLS connection keeps
// (tlsidle.Held); -1 when it is not a *tls.Conn.
func (c *Conn) TLSHeld() int { return tlsidle.Held(c.tls) }
