package broker

import (
	"context"
	"errors"
	"time"
)

// Store errors. Implementations return these (possibly wrapped) so the core can tell
// them apart with errors.Is.
var (
	// ErrNotFound means the session or server does not exist.
	ErrNotFound = errors.New("not found")
	// ErrServerFull means a placement re-check found no room on the chosen server.
	ErrServerFull = errors.New("server full")
	// ErrConflict means a server ID is claimed by another agent client, or a
	// session ID already exists.
	ErrConflict = errors.New("conflict")
	// ErrStoreUnavailable means the store cannot be reached (its database
	// server is down or restarting); the API answers 503 and clients retry.
	ErrStoreUnavailable = errors.New("the broker's database is unavailable; retry shortly")
)

// SessionFilter selects sessions. Zero fields do not filter.
type SessionFilter struct {
	IDs      []string
	Owner    string
	ServerID string
	// Tags keeps sessions whose server has every tag with the given value.
	Tags map[string]string
	// States keeps sessions in one of these states.
	States []string
	// Unplaced keeps sessions with no server (waiting for placement).
	Unplaced bool
	// AfterSeq keeps sessions with Seq > AfterSeq (pagination).
	AfterSeq int64
	// DueBefore, when set, keeps sessions whose DueAt is set and not after
	// it (the lifetime policies' due sessions, read through the stores'
	// index of due_at).
	DueBefore time.Time
	// Limit caps the result; 0 means no limit. Results are ordered by Seq.
	Limit int
}

// ServerFilter selects servers. Zero fields do not filter.
type ServerFilter struct {
	IDs      []string
	AfterSeq int64
	Limit    int // 0: no limit; ordered by Seq
}

// Placement is one session to commit on the server named by Session.ServerID.
type Placement struct {
	Session *Session
	// Insert is true for a new session, false to move an existing (queued or
	// retried) session onto its server.
	Insert bool
	// Quotas are the quotas the placement must hold (none: no quota applies,
	// and the commit reads nothing for quotas). The commit counts each
	// quota's placed (ServerID set), not DELETED sessions, plus the batch's
	// earlier placements, and refuses a placement that Quota.Check refuses.
	Quotas []Quota
}

// Store keeps the broker's state. All methods are safe for concurrent use.
// Implementations: internal/sqlite, internal/postgres.
type Store interface {
	// UpsertServer inserts the server or updates its Info, LastSeen and BrokerID,
	// keeping Open, Seq and CreatedAt of an existing row. It returns ErrConflict
	// if the server exists with another AgentClientID. Stores that also keep
	// the OAuth clients bind a new server's ID to its AgentClientID for good:
	// after the server's row is deleted (unreachable for UnreachableServerTTL)
	// the ID stays the agent client's, and inserting it for another agent
	// client is ErrConflict too while the bound client exists and is active.
	UpsertServer(ctx context.Context, s *Server) error
	// UpdateServers writes the Info, LastSeen and BrokerID of existing
	// servers in one transaction, as UpsertServer does for an existing row
	// (tag rows rewritten only when the tags changed; a new Version when
	// anything but LastSeen and BrokerID changed). A server whose row is
	// gone, or is registered by another agent client, is skipped: nothing
	// is inserted. The servers are not modified.
	UpdateServers(ctx context.Context, srvs []*Server) error
	// GetServer returns ErrNotFound for an unknown ID.
	GetServer(ctx context.Context, id string) (*Server, error)
	// ListServers returns servers ordered by Seq.
	ListServers(ctx context.Context, f ServerFilter) ([]*Server, error)
	// SetServerOpen returns ErrNotFound for an unknown ID.
	SetServerOpen(ctx context.Context, id string, open bool) error
	// SetServerSeen records contact with the server's agent (zero t: link lost).
	// It returns ErrNotFound for an unknown ID.
	SetServerSeen(ctx context.Context, id, brokerID string, t time.Time) error
	// SetServersSeen is SetServerSeen for many servers in one transaction:
	// seen maps server IDs to their contact times. Unknown IDs are skipped.
	SetServersSeen(ctx context.Context, brokerID string, seen map[string]time.Time) error
	// DeleteServer removes the server and its sessions.
	DeleteServer(ctx context.Context, id string) error

	// InsertSessions inserts new sessions and assigns their Seq.
	// It returns ErrConflict if an ID exists.
	InsertSessions(ctx context.Context, ss []*Session) error
	// CommitPlacements commits placements in one transaction. For each it locks
	// the server, re-checks max virtual sessions, max sessions per owner and the
	// single console session against the server's current sessions, and inserts or
	// updates the session. Items that no longer fit get ErrServerFull in the
	// returned slice (same order) and are not written; a missing server gives
	// ErrNotFound; an Insert=false session that is no longer CREATING and
	// unplaced (deleted or placed meanwhile) gives ErrConflict and is not
	// written. A placement that its Quotas refuse gets a *QuotaError
	// (matching ErrOverQuota) and is not written; the quota check holds
	// against concurrent commits, of this and of other brokers sharing the
	// store (the quotas' counts are locked per Quota.Key for the
	// transaction). The second result is a failure of the whole transaction.
	CommitPlacements(ctx context.Context, ps []Placement) ([]error, error)
	// QuotaUse returns the current use of each quota (in the same order):
	// its placed, not DELETED sessions and their GPUs. It takes no lock;
	// CommitPlacements checks again.
	QuotaUse(ctx context.Context, qs []Quota) ([]QuotaUse, error)
	// GetSession returns ErrNotFound for an unknown ID.
	GetSession(ctx context.Context, id string) (*Session, error)
	// ListSessions returns sessions ordered by Seq.
	ListSessions(ctx context.Context, f SessionFilter) ([]*Session, error)
	// UpdateSession reads the session, calls fn and writes the result back in one
	// transaction (the row is locked against concurrent updates). fn may return an
	// error to abort. It returns ErrNotFound for an unknown ID.
	UpdateSession(ctx context.Context, id string, fn func(*Session) error) error
	// UpdateSessions is UpdateSession for many sessions in one transaction,
	// so that an agent's report of many changes costs one commit. For each
	// ID it reads the session (locked against concurrent updates), calls fn
	// and writes the result back. The returned slice holds, in the order of
	// ids, nil for a session written, fn's error for one that fn refused
	// (not written; the others still are), and ErrNotFound for an unknown ID
	// (fn not called). The second result is a failure of the whole
	// transaction, after which nothing was written. ids must be distinct.
	// fn may be called again, with fresh copies, if the transaction has to be
	// retried; the slice describes the attempt that committed.
	UpdateSessions(ctx context.Context, ids []string, fn func(*Session) error) ([]error, error)
	// DeleteSession removes the session row. It returns ErrNotFound for an unknown ID.
	DeleteSession(ctx context.Context, id string) error
	// PurgeDeleted removes DELETED sessions whose UpdatedAt is before t.
	PurgeDeleted(ctx context.Context, before time.Time) (int, error)
	// CountSessions returns the active (not DELETED) sessions per server.
	CountSessions(ctx context.Context) (map[string]Counts, error)
	// CountByState returns the number of sessions per state (for metrics).
	CountByState(ctx context.Context) (map[string]int, error)

	// Setting returns the named value, storing def first if none exists (so
	// every broker of a cluster sees the same value).
	Setting(ctx context.Context, name, def string) (string, error)

	// Ping checks that the store answers.
	Ping(ctx context.Context) error
	Close() error
}

// ServerStamp is what a broker needs to keep its server cache current: the
// fields that change on every heartbeat, and the version of the rest.
type ServerStamp struct {
	ID       string
	Version  int64
	LastSeen time.Time
	BrokerID string
	// HolderLive says BrokerID names a broker whose cluster heartbeat is
	// fresh: one that is alive and may hold the agent's link.
	HolderLive bool
}

// ServerSyncer is implemented by stores that several brokers share
// (internal/postgres). A Service whose store implements it refreshes its
// server cache from the stamps every Config.SyncInterval, re-reading only the
// servers whose Version changed and dropping those that are gone.
type ServerSyncer interface {
	// ServerStamps returns one stamp per server, in no particular order.
	ServerStamps(ctx context.Context) ([]ServerStamp, error)
}
