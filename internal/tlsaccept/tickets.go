package tlsaccept

import (
	"context"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/tls"
	"errors"
	"strconv"
	"time"
)

// DefaultTicketPeriod is how long one session ticket key issues tickets.
const DefaultTicketPeriod = 24 * time.Hour

// ticketInfo is HKDF's info for a ticket key, followed by its period's
// number.
const ticketInfo = "berth tls session ticket key "

// TicketKeys derives the session ticket keys of the time now from secret:
// one key per period (the Unix time divided by period), so that every
// process with the same secret, a broker after its restart or the brokers
// sharing one store, issues and accepts the same tickets. The first key,
// the current period's, issues tickets; the previous period's is accepted
// so that a ticket outlives one rotation, and the next period's so that a
// broker whose clock runs a little behind another's accepts its tickets.
// A period of 0 means DefaultTicketPeriod; periods are whole
// seconds, at least one.
func TicketKeys(secret []byte, period time.Duration, now time.Time) ([][32]byte, error) {
	if len(secret) < 32 {
		return nil, errors.New("tlsaccept: a ticket secret has at least 32 bytes")
	}
	if period <= 0 {
		period = DefaultTicketPeriod
	}
	period = max(period, time.Second)
	e := now.Unix() / int64(period/time.Second)
	keys := make([][32]byte, 0, 3)
	for _, n := range []int64{e, e - 1, e + 1} {
		k, err := hkdf.Key(sha256.New, secret, nil, ticketInfo+strconv.FormatInt(n, 10), 32)
		if err != nil {
			return nil, err
		}
		keys = append(keys, [32]byte(k))
	}
	return keys, nil
}

// RotateTicketKeys sets cfgs' session ticket keys from secret
// (TicketKeys) now, then again at each period's start until ctx is done.
// Call it before cfgs serve a handshake; it returns an error only for a
// secret TicketKeys refuses, before it starts rotating on its own
// goroutine.
func RotateTicketKeys(ctx context.Context, secret []byte, period time.Duration, cfgs ...*tls.Config) error {
	if period <= 0 {
		period = DefaultTicketPeriod
	}
	period = max(period, time.Second)
	set := func(now time.Time) error {
		keys, err := TicketKeys(secret, period, now)
		if err != nil {
			return err
		}
		for _, c := range cfgs {
			c.SetSessionTicketKeys(keys)
		}
		return nil
	}
	if err := set(time.Now()); err != nil {
		return err
	}
	go func() {
		for {
			now := time.Now()
			p := int64(period / time.Second)
			next := time.Unix((now.Unix()/p+1)*p, 0)
			t := time.NewTimer(next.Sub(now) + time.Second)
			select {
			case <-ctx.Done():
				t.Stop()
				return
			case now := <-t.C:
				set(now) // the secret was accepted above
			}
		}
	}()
	return nil
}
