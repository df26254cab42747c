package wslink

// IdleState reports, on the reader's goroutine between reads, whether c
// parks on its socket while idle and whether it holds a read buffer.
func (c *Conn) IdleState() (parks, holdsBuffer bool) { return c.park != nil, c.rbuf != nil }
