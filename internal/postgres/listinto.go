package postgres

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"
	"sync"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"github.com/berth-dev/berth/internal/broker"
)

// ListSessionsInto is ListSessions filling buf (from its start) rather than
// allocating a page of *Session: the broker reuses buf for DescribeSessions
// pages. The rows are read from their wire form (rawPage) rather than
// scanned: the text of a page's sessions is one string that their fields
// share, so a page of 100 allocates a few objects instead of thousands.
func (s *Store) ListSessionsInto(ctx context.Context, f broker.SessionFilter, buf []broker.Session) (_ []broker.Session, err error) {
	defer unavailable(&err)
	buf = buf[:0]
	query, args := listSessionsQuery(&f)
	rows, err := s.pool.Query(ctx, query, args...)
	if err != nil {
		return buf, fmt.Errorf("list sessions: %w", err)
	}
	defer rows.Close()
	page := rawPages.Get().(*rawPage)
	defer page.release()
	if !page.fits(rows.FieldDescriptions()) {
		// Not the columns rawPage reads: scan as ListSessions does.
		for rows.Next() {
			buf = append(buf, broker.Session{})
			if err := scanSessionInto(rows, &buf[len(buf)-1]); err != nil {
				return buf[:0], fmt.Errorf("list sessions: %w", err)
			}
		}
	} else {
		for rows.Next() {
			buf = append(buf, broker.Session{})
			if err := page.add(rows.RawValues(), &buf[len(buf)-1]); err != nil {
				return buf[:0], fmt.Errorf("list sessions: %w", err)
			}
		}
	}
	if err := rows.Err(); err != nil {
		return buf[:0], fmt.Errorf("list sessions: %w", err)
	}
	if err := page.finish(buf); err != nil {
		return buf[:0], fmt.Errorf("list sessions: %w", err)
	}
	return buf, nil
}

// The columns of sessionCols, in order.
const (
	colSeq = iota
	colID
	colOwner
	colName
	colType
	colServerID
	colState
	colSubstate
	colStateReason
	colMaxClients
	colStorageRoot
	colCreation
	colLastDisconnection
	colNumConnections
	colUpdated
	colAttempts
	colExcluded
	colEnqueued
	colEnqueuedAt
	colSpec
	colLastInput
	colDue
	colLife
	numSessionCols
)

// textCols are the text columns of a row rawPage keeps, and where each goes.
var textCols = [...]int{colID, colOwner, colName, colType, colServerID, colState, colSubstate, colStateReason,
	colStorageRoot, colExcluded, colSpec, colLife}

// PostgreSQL type OIDs of the session columns.
const (
	oidBool = 16
	oidInt8 = 20
	oidInt4 = 23
	oidText = 25
)

// rawPage reads session rows from their wire values: integers and booleans
// are decoded at once, the text columns of every row are appended to one
// buffer, and finish makes it one string and points the sessions' fields
// into it.
type rawPage struct {
	binary [numSessionCols]bool // the column's values are in binary format
	text   []byte
	ends   []int32 // per row, the end in text of each of textCols
}

// maxPooledText is the largest text buffer a released rawPage keeps.
const maxPooledText = 1 << 20

var rawPages = sync.Pool{New: func() any { return new(rawPage) }}

// release gives p back for reuse.
func (p *rawPage) release() {
	if cap(p.text) > maxPooledText {
		p.text, p.ends = nil, nil
	}
	p.text, p.ends = p.text[:0], p.ends[:0]
	rawPages.Put(p)
}

// fits reports whether fds are the columns of sessionCols with types
// rawPage reads, and notes their formats.
func (p *rawPage) fits(fds []pgconn.FieldDescription) bool {
	if len(fds) != numSessionCols {
		return false
	}
	for i, fd := range fds {
		want := uint32(oidInt8)
		switch i {
		case colID, colOwner, colName, colType, colServerID, colState, colSubstate, colStateReason, colStorageRoot,
			colExcluded, colSpec, colLife:
			want = oidText
		case colAttempts:
			want = oidInt4
		case colEnqueued:
			want = oidBool
		}
		if fd.DataTypeOID != want || fd.Format > 1 {
			return false
		}
		p.binary[i] = fd.Format == pgx.BinaryFormatCode
	}
	return true
}

// add reads one row into ss (zero) but for its text, which finish sets.
func (p *rawPage) add(raw [][]byte, ss *broker.Session) error {
	if len(raw) != numSessionCols {
		return fmt.Errorf("row of %d columns, want %d", len(raw), numSessionCols)
	}
	var err error
	integer := func(col int) int64 {
		v, e := p.int(raw[col], col)
		if e != nil && err == nil {
			err = fmt.Errorf("column %d: %w", col, e)
		}
		return v
	}
	ss.Seq = integer(colSeq)
	ss.MaxConcurrentClients = integer(colMaxClients)
	ss.CreationTime = fromMillis(integer(colCreation))
	ss.LastDisconnectionTime = fromMillis(integer(colLastDisconnection))
	ss.NumOfConnections = integer(colNumConnections)
	ss.UpdatedAt = fromMillis(integer(colUpdated))
	ss.Attempts = int(integer(colAttempts))
	ss.EnqueuedAt = fromMillis(integer(colEnqueuedAt))
	ss.LastInputTime = fromMillis(integer(colLastInput))
	ss.DueAt = fromMillis(integer(colDue))
	if b := raw[colEnqueued]; len(b) == 1 {
		ss.Enqueued = b[0] == 1 || b[0] == 't'
	}
	for _, col := range textCols {
		p.text = append(p.text, raw[col]...)
		p.ends = append(p.ends, int32(len(p.text)))
	}
	return err
}

// int decodes an integer column's value.
func (p *rawPage) int(b []byte, col int) (int64, error) {
	if !p.binary[col] {
		return strconv.ParseInt(string(b), 10, 64)
	}
	switch len(b) {
	case 8:
		return int64(binary.BigEndian.Uint64(b)), nil
	case 4:
		return int64(int32(binary.BigEndian.Uint32(b))), nil
	case 0:
		return 0, nil // NULL; the columns are NOT NULL
	}
	return 0, fmt.Errorf("integer of %d bytes", len(b))
}

// finish sets the text fields of the page's sessions, which add read in
// order, from one string.
func (p *rawPage) finish(ss []broker.Session) error {
	if len(ss) == 0 {
		return nil
	}
	text := string(p.text)
	start := int32(0)
	next := func(k int) (string, []byte) {
		end := p.ends[k]
		s, b := text[start:end], p.text[start:end]
		start = end
		return s, b
	}
	k := 0
	for i := range ss {
		x := &ss[i]
		x.ID, _ = next(k)
		x.Owner, _ = next(k + 1)
		x.Name, _ = next(k + 2)
		x.Type, _ = next(k + 3)
		x.ServerID, _ = next(k + 4)
		x.State, _ = next(k + 5)
		x.Substate, _ = next(k + 6)
		x.StateReason, _ = next(k + 7)
		x.StorageRoot, _ = next(k + 8)
		_, excluded := next(k + 9)
		_, spec := next(k + 10)
		_, life := next(k + 11)
		k += len(textCols)
		if err := decodeLife(life, &x.Life); err != nil {
			return fmt.Errorf("decode session %q life: %w", x.ID, err)
		}
		if len(excluded) > 2 { // not "[]"
			var err error
			if x.Excluded, err = decodeStrings(excluded); err != nil {
				return fmt.Errorf("decode session %q excluded: %w", x.ID, err)
			}
		}
		if len(spec) > 2 { // not "{}"
			if err := decodeSpec(spec, &x.Spec); err != nil {
				return fmt.Errorf("decode session %q spec: %w", x.ID, err)
			}
		}
	}
	return nil
}
