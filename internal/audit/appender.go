package audit

import (
	"context"
	"log/slog"
	"sync"
	"time"
)

// Appender appends records to a Store off the caller's path: Add queues a
// record and returns; one goroutine appends everything queued in one store
// transaction, so that concurrent API calls share a commit. A record is
// durable once Flush returns after it was added; a broker killed before that
// loses the records still queued (those of the last Linger and of the
// transaction under way).
type Appender struct {
	store  appendStore
	broker string
	log    *slog.Logger
	max    int
	wake   chan struct{}
	done   chan struct{}
	closed chan struct{}

	mu        sync.Mutex
	cond      *sync.Cond
	pending   []entry
	added     uint64 // records added so far
	committed uint64 // records appended (or given up) so far
	stopping  bool
}

// appendStore is the part of Store an Appender uses.
type appendStore interface {
	AppendAudit(ctx context.Context, recs []*Record) error
}

// entry is a queued record and what completes it before it is sealed.
type entry struct {
	rec    *Record
	finish func(*Record)
}

// Linger is how long the appender waits, once a record is added, for more
// to append in the same transaction. Calls do not wait for it; it is the
// window of records a killed broker may lose.
const Linger = 10 * time.Millisecond

// DefaultMaxPending is how many records may wait before Add blocks.
const DefaultMaxPending = 65536

// NewAppender returns an Appender writing to s and starts its goroutine;
// Close stops it. broker names this broker in the records (Record.Broker)
// that do not name one.
func NewAppender(s appendStore, broker string, log *slog.Logger) *Appender {
	if log == nil {
		log = slog.Default()
	}
	a := &Appender{store: s, broker: broker, log: log, max: DefaultMaxPending,
		wake: make(chan struct{}, 1), done: make(chan struct{}), closed: make(chan struct{})}
	a.cond = sync.NewCond(&a.mu)
	go a.run()
	return a
}

// Add queues rec. finish, when not nil, is called on rec by the appending
// goroutine before rec is sealed: work that the caller's path should not pay
// for (reading the IDs out of a request's body). Add blocks only while
// DefaultMaxPending records wait (the store is down or slow), until ctx ends;
// then the record is dropped and logged.
func (a *Appender) Add(ctx context.Context, rec *Record, finish func(*Record)) {
	a.mu.Lock()
	for len(a.pending) >= a.max && !a.stopping {
		if ctx.Err() != nil {
			a.mu.Unlock()
			a.log.Error("audit record dropped: the audit log is not being written", "action", rec.Action, "err", ctx.Err())
			return
		}
		a.waitCtx(ctx)
	}
	if a.stopping {
		a.mu.Unlock()
		a.log.Error("audit record dropped: the audit log is closed", "action", rec.Action)
		return
	}
	a.pending = append(a.pending, entry{rec: rec, finish: finish})
	a.added++
	a.mu.Unlock()
	select {
	case a.wake <- struct{}{}:
	default:
	}
}

// waitCtx waits on the condition until a broadcast or ctx ends; a.mu is held.
func (a *Appender) waitCtx(ctx context.Context) {
	stop := context.AfterFunc(ctx, func() {
		a.mu.Lock()
		a.cond.Broadcast()
		a.mu.Unlock()
	})
	a.cond.Wait()
	stop()
}

// Flush waits until every record added before it was called is appended, or
// ctx ends.
func (a *Appender) Flush(ctx context.Context) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	target := a.added
	for a.committed < target {
		if err := ctx.Err(); err != nil {
			return err
		}
		a.waitCtx(ctx)
	}
	return nil
}

// Close appends what is queued (until ctx ends) and stops the goroutine.
func (a *Appender) Close(ctx context.Context) error {
	err := a.Flush(ctx)
	a.mu.Lock()
	a.stopping = true
	a.cond.Broadcast()
	a.mu.Unlock()
	select {
	case <-a.closed:
	default:
		close(a.closed)
	}
	select {
	case <-a.done:
	case <-ctx.Done():
		return ctx.Err()
	}
	return err
}

// run appends the queued records, all of them in one transaction, and tries
// a failed batch again with a growing pause (the records stay in order).
func (a *Appender) run() {
	defer close(a.done)
	var batch []entry
	backoff := 50 * time.Millisecond
	for {
		if len(batch) == 0 {
			a.mu.Lock()
			batch, a.pending = a.pending, nil
			a.cond.Broadcast() // room for blocked Adds
			a.mu.Unlock()
		}
		if len(batch) == 0 {
			select {
			case <-a.wake:
				// Gather what the next Linger brings into the same
				// transaction: fewer, larger appends leave the store's
				// writer to the calls being recorded.
				select {
				case <-time.After(Linger):
				case <-a.closed:
				}
				continue
			case <-a.closed:
				return
			}
		}
		recs := make([]*Record, len(batch))
		for i, e := range batch {
			if e.finish != nil {
				e.finish(e.rec)
				batch[i].finish = nil
			}
			if e.rec.Broker == "" {
				e.rec.Broker = a.broker
			}
			recs[i] = e.rec
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err := a.store.AppendAudit(ctx, recs)
		cancel()
		if err != nil {
			a.log.Error("audit log append failed, trying again", "records", len(recs), "err", err)
			select {
			case <-time.After(backoff):
			case <-a.closed:
				a.log.Error("audit records dropped: the audit log closed while its store failed", "records", len(recs))
				a.finish(len(batch))
				return
			}
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 50 * time.Millisecond
		a.finish(len(batch))
		batch = nil
	}
}

// finish counts n records as done and wakes Flush.
func (a *Appender) finish(n int) {
	a.mu.Lock()
	a.committed += uint64(n)
	a.cond.Broadcast()
	a.mu.Unlock()
}
