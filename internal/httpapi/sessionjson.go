package httpapi

import (
	"strconv"
	"time"
	"unicode/utf8"

	"github.com/berth-dev/berth/internal/broker"
)

// appendSession appends the JSON of a session as encoding/json would encode
// the api.Session built by sessionFields, with server (already encoded, may be
// nil) as its Server. DescribeSessions pages are mostly this, so it avoids
// reflection; TestAppendSession_MatchesEncodingJSON keeps the two identical.
func appendSession(b []byte, x *broker.Session, server []byte) []byte {
	b = appendSessionHead(b, x)
	if server != nil {
		b = append(b, `,"Server":`...)
		b = append(b, server...)
	}
	return appendSessionTail(b, x)
}

// encodeSession is x's encoding for its memo: what appendSession writes
// before the server and after it.
func encodeSession(x *broker.Session) *broker.SessionEncoding {
	b := appendSessionHead(make([]byte, 0, 256), x)
	split := len(b)
	b = appendSessionTail(b, x)
	return &broker.SessionEncoding{Bytes: b[:len(b):len(b)], Split: split}
}

// appendEncoded is appendSession from a session's memo.
func appendEncoded(b []byte, e *broker.SessionEncoding, server []byte) []byte {
	b = append(b, e.Bytes[:e.Split]...)
	if server != nil {
		b = append(b, `,"Server":`...)
		b = append(b, server...)
	}
	return append(b, e.Bytes[e.Split:]...)
}

// appendSessionHead appends x's fields before its server: the object's
// opening and Id, Name and Owner.
func appendSessionHead(b []byte, x *broker.Session) []byte {
	b = append(b, `{"Id":`...)
	b = appendString(b, x.ID)
	b = append(b, `,"Name":`...)
	b = appendString(b, x.Name)
	b = append(b, `,"Owner":`...)
	return appendString(b, x.Owner)
}

// appendSessionTail appends x's fields after its server, and the object's
// end.
func appendSessionTail(b []byte, x *broker.Session) []byte {
	b = append(b, `,"Type":`...)
	b = appendString(b, x.Type)
	if x.MaxConcurrentClients != 0 {
		b = append(b, `,"MaxConcurrentClients":`...)
		b = strconv.AppendInt(b, x.MaxConcurrentClients, 10)
	}
	b = append(b, `,"State":`...)
	b = appendString(b, x.State)
	if x.Substate != "" {
		b = append(b, `,"Substate":`...)
		b = appendString(b, x.Substate)
	}
	if x.StateReason != "" {
		b = append(b, `,"StateReason":`...)
		b = appendString(b, x.StateReason)
	}
	b = append(b, `,"CreationTime":`...)
	b = appendTime(b, x.CreationTime)
	if !x.LastDisconnectionTime.IsZero() {
		b = append(b, `,"LastDisconnectionTime":`...)
		b = appendTime(b, x.LastDisconnectionTime)
	}
	b = append(b, `,"NumOfConnections":`...)
	b = strconv.AppendInt(b, x.NumOfConnections, 10)
	if x.StorageRoot != "" {
		b = append(b, `,"StorageRoot":`...)
		b = appendString(b, x.StorageRoot)
	}
	return append(b, '}')
}

// appendTime appends t in UTC as encoding/json writes a time.Time: quoted
// RFC 3339 with the fraction of a second, trailing zeros cut. Years 0-9999
// are written by hand (AppendFormat is a third of a page's encoding); others
// by AppendFormat.
func appendTime(b []byte, t time.Time) []byte {
	unix := t.Unix()
	days, sod := unix/86400, int(unix%86400)
	if sod < 0 {
		days, sod = days-1, sod+86400
	}
	year, month, day := civilDate(days)
	if year < 0 || year > 9999 {
		b = append(b, '"')
		b = t.UTC().AppendFormat(b, time.RFC3339Nano)
		return append(b, '"')
	}
	hour, min, sec := sod/3600, sod/60%60, sod%60
	b = append(b, '"',
		byte('0'+year/1000), byte('0'+year/100%10), byte('0'+year/10%10), byte('0'+year%10), '-',
		byte('0'+month/10), byte('0'+month%10), '-', byte('0'+day/10), byte('0'+day%10), 'T',
		byte('0'+hour/10), byte('0'+hour%10), ':', byte('0'+min/10), byte('0'+min%10), ':',
		byte('0'+sec/10), byte('0'+sec%10))
	if ns := t.Nanosecond(); ns != 0 {
		var frac [10]byte
		frac[0] = '.'
		for i := 9; i >= 1; i-- {
			frac[i] = byte('0' + ns%10)
			ns /= 10
		}
		n := 10
		for frac[n-1] == '0' {
			n--
		}
		b = append(b, frac[:n]...)
	}
	return append(b, 'Z', '"')
}

// civilDate is the proleptic Gregorian date of the day that is days after
// 1970-01-01 (Howard Hinnant's days_from_civil inverse): what time.Time's
// Date computes, without its location and absolute-time steps.
func civilDate(days int64) (year int64, month, day int) {
	z := days + 719468
	era := z / 146097
	if z < 0 && z%146097 != 0 {
		era--
	}
	doe := z - era*146097                                  // [0, 146096]
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365 // [0, 399]
	doy := doe - (365*yoe + yoe/4 - yoe/100)               // [0, 365]
	mp := (5*doy + 2) / 153                                // [0, 11], from March
	day = int(doy - (153*mp+2)/5 + 1)
	month = int(mp + 3)
	if mp >= 10 {
		month = int(mp - 9)
	}
	year = yoe + era*400
	if month <= 2 {
		year++
	}
	return year, month, day
}

const hexDigits = "0123456789abcdef"

// plain marks the bytes that encoding/json writes as they are: printable
// ASCII but for '"', '\\' and the HTML-unsafe '<', '>' and '&'.
var plain = func() (t [256]bool) {
	for c := 0x20; c < utf8.RuneSelf; c++ {
		t[c] = c != '"' && c != '\\' && c != '<' && c != '>' && c != '&'
	}
	return t
}()

// appendString appends s as a JSON string exactly as encoding/json does by
// default (HTML-safe, invalid UTF-8 replaced by U+FFFD).
func appendString(b []byte, s string) []byte {
	b = append(b, '"')
	i := 0
	for i < len(s) && plain[s[i]] {
		i++
	}
	if i == len(s) { // the usual case: nothing to escape
		b = append(b, s...)
		return append(b, '"')
	}
	start := 0
	for i < len(s) {
		if c := s[i]; c < utf8.RuneSelf {
			if plain[c] {
				i++
				continue
			}
			b = append(b, s[start:i]...)
			switch c {
			case '\\', '"':
				b = append(b, '\\', c)
			case '\b':
				b = append(b, '\\', 'b')
			case '\f':
				b = append(b, '\\', 'f')
			case '\n':
				b = append(b, '\\', 'n')
			case '\r':
				b = append(b, '\\', 'r')
			case '\t':
				b = append(b, '\\', 't')
			default:
				b = append(b, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xF])
			}
			i++
			start = i
			continue
		}
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 {
			b = append(b, s[start:i]...)
			b = append(b, "\ufffd"...) // raw U+FFFD, as encoding/json writes it since Go 1.27
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			b = append(b, s[start:i]...)
			b = append(b, '\\', 'u', '2', '0', '2', hexDigits[r&0xF])
			i += size
			start = i
			continue
		}
		i += size
	}
	b = append(b, s[start:]...)
	return append(b, '"')
}
