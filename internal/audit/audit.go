// Package audit is berth's audit log: one Record per state-changing call (the
// Session Manager API, berth's /berth/v1 API, the portal, the berth-broker
// admin commands), saying who did what, to which IDs, from where, when, and
// with which result. Records are append-only and hash-chained: each record's
// Hash is SHA-256 over the previous record's hash and a canonical encoding of
// the record (Seal), so that editing, deleting or reordering a stored row
// breaks the chain, which Verify detects. The stores (sqlite, postgres)
// implement Store and seal the records they append under their write lock, so
// the chain is linear even across the brokers of a cluster. Appender batches
// the API's records off the request path.
package audit

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"slices"
	"time"
)

// Actor kinds: who made a call.
const (
	// ActorClient is an API client; Actor is its client ID.
	ActorClient = "client"
	// ActorPortal is a portal user; Actor is the user name.
	ActorPortal = "portal"
	// ActorExternal is a client of a registered external authorization
	// server; Actor is its token's client ID (or subject).
	ActorExternal = "external"
	// ActorAdmin is a berth-broker admin command; Actor is the OS user who ran it.
	ActorAdmin = "admin"
	// ActorAnonymous is a call without authentication (enable-authorization = false).
	ActorAnonymous = "anonymous"
)

// Results of a call.
const (
	// ResultOK: the call did everything it was asked.
	ResultOK = "ok"
	// ResultPartial: a batch call of which some items succeeded and some failed.
	ResultPartial = "partial"
	// ResultFailed: the call was answered but did nothing (every item failed,
	// or an error status).
	ResultFailed = "failed"
)

// Target kinds, the prefixes of Target.Kind.
const (
	TargetSession  = "session"
	TargetServer   = "server"
	TargetTemplate = "template"
	TargetOwner    = "owner"
	TargetUser     = "user"
	TargetClient   = "client"
	TargetWebhook  = "webhook"
)

// Target is one ID a call acted on.
type Target struct {
	Kind string `json:"kind"`
	ID   string `json:"id"`
}

// Record is one audited call.
type Record struct {
	// Seq is the record's position in the chain (1, 2, ...), set by the
	// store when it appends the record.
	Seq int64 `json:"seq"`
	// Time is when the call was made (UTC, millisecond precision).
	Time time.Time `json:"time"`
	// ActorKind is ActorClient, ActorPortal, ActorAdmin or ActorAnonymous;
	// Actor the client ID, portal user or OS user.
	ActorKind string `json:"actor_kind"`
	Actor     string `json:"actor"`
	// Action is the operation: an API operation name (CreateSessions), a
	// portal action (portal.DeleteSession) or an admin command
	// (register-api-client).
	Action string `json:"action"`
	// Targets are the IDs the call named or created, in order, without
	// duplicates.
	Targets []Target `json:"targets,omitempty"`
	// Source is the address the call came from (the client's IP), or
	// "local" for an admin command.
	Source string `json:"source"`
	// Result is ResultOK, ResultPartial or ResultFailed; Status the HTTP
	// status answered (0 for admin commands); Error the error code or a
	// short reason when the call failed.
	Result string `json:"result"`
	Status int    `json:"status,omitempty"`
	Error  string `json:"error,omitempty"`
	// Detail is extra, non-secret context (counts, a permissions file's
	// size and SHA-256).
	Detail string `json:"detail,omitempty"`
	// Broker is the broker instance that recorded the call.
	Broker string `json:"broker,omitempty"`

	// PrevHash and Hash are the chain: hex SHA-256, set by Seal.
	PrevHash string `json:"prev_hash"`
	Hash     string `json:"hash"`

	// index holds Targets once there are more than indexTargets
	// (HasTarget); it is rebuilt when it does not match them.
	index map[Target]struct{}
}

// indexTargets is how many targets a record looks through one by one;
// past it, HasTarget and AddTarget use an index (a batch call of 1,000
// sessions names 1,000 targets, and a scan per target made its record
// cost quadratic time).
const indexTargets = 16

// HasTarget reports whether r names the target kind:id.
func (r *Record) HasTarget(kind, id string) bool {
	t := Target{Kind: kind, ID: id}
	if len(r.Targets) <= indexTargets {
		return slices.Contains(r.Targets, t)
	}
	if len(r.index) != len(r.Targets) { // first use, or Targets set directly
		r.index = make(map[Target]struct{}, 2*len(r.Targets))
		for _, x := range r.Targets {
			r.index[x] = struct{}{}
		}
	}
	_, ok := r.index[t]
	return ok
}

// AddTarget adds kind:id to r's targets unless id is empty or already there.
func (r *Record) AddTarget(kind, id string) {
	if id == "" || r.HasTarget(kind, id) {
		return
	}
	t := Target{Kind: kind, ID: id}
	r.Targets = append(r.Targets, t)
	if r.index != nil && len(r.index) == len(r.Targets)-1 {
		r.index[t] = struct{}{}
	}
}

// GenesisHash is the PrevHash of the first record of a log that was never
// purged: 64 zeros.
var GenesisHash = hex.EncodeToString(make([]byte, sha256.Size))

// hashDomain separates berth's audit hashes from any other use of SHA-256.
const hashDomain = "berth-audit-v1\x00"

// Canonical returns r's canonical encoding, the bytes its hash covers: every
// field but Hash and PrevHash, each length-prefixed (uvarint) in a fixed
// order, the sequence number and the time (unix milliseconds) as 8 bytes big
// endian. Two records encode alike only if they are alike.
func Canonical(r *Record) []byte {
	b := make([]byte, 0, 128+len(r.Detail))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Seq))
	b = binary.BigEndian.AppendUint64(b, uint64(r.Time.UnixMilli()))
	str := func(s string) {
		b = binary.AppendUvarint(b, uint64(len(s)))
		b = append(b, s...)
	}
	str(r.ActorKind)
	str(r.Actor)
	str(r.Action)
	b = binary.AppendUvarint(b, uint64(len(r.Targets)))
	for _, t := range r.Targets {
		str(t.Kind)
		str(t.ID)
	}
	str(r.Source)
	str(r.Result)
	b = binary.BigEndian.AppendUint64(b, uint64(int64(r.Status)))
	str(r.Error)
	str(r.Detail)
	str(r.Broker)
	return b
}

// HashOf returns the hex SHA-256 over prev (hex) and r's canonical encoding.
func HashOf(prev string, r *Record) string {
	h := sha256.New()
	h.Write([]byte(hashDomain))
	h.Write([]byte(prev))
	h.Write(Canonical(r))
	return hex.EncodeToString(h.Sum(nil))
}

// Seal sets r's Seq, PrevHash and Hash to follow a chain whose last record
// has sequence number prevSeq and hash prev. The time is truncated to
// milliseconds first, the precision the stores keep.
func Seal(r *Record, prevSeq int64, prev string) {
	r.Seq = prevSeq + 1
	r.Time = r.Time.UTC().Truncate(time.Millisecond)
	r.PrevHash = prev
	r.Hash = HashOf(prev, r)
}

// Head is the end of a chain and its anchor.
type Head struct {
	// Seq and Hash are the last record appended (0 and GenesisHash for an
	// empty log never appended to).
	Seq  int64
	Hash string
	// AnchorSeq and AnchorHash are the last record purged by retention (0
	// and GenesisHash when none was): the first record kept must follow it.
	AnchorSeq  int64
	AnchorHash string
}

// Filter selects records; zero fields select all.
type Filter struct {
	// AfterSeq selects records after this sequence number.
	AfterSeq int64
	// Since and Until bound the records' time (Until exclusive).
	Since, Until time.Time
	// Actor selects one actor (a client ID, a portal user, an OS user).
	Actor string
	// Session selects the records naming this session ID.
	Session string
	// Action selects one action.
	Action string
	// Limit caps the records returned; 0 means DefaultLimit.
	Limit int
}

// DefaultLimit and MaxLimit bound Filter.Limit.
const (
	DefaultLimit = 1000
	MaxLimit     = 10000
)

// Store is where records are kept. The stores of berth implement it.
type Store interface {
	// AppendAudit seals recs in order after the chain's last record (Seal)
	// and inserts them, in one transaction under a lock that makes the
	// chain linear across every writer of the store.
	AppendAudit(ctx context.Context, recs []*Record) error
	// ListAudit returns the records f selects, by sequence number.
	ListAudit(ctx context.Context, f Filter) ([]Record, error)
	// AuditHead returns the chain's end and anchor.
	AuditHead(ctx context.Context) (Head, error)
	// PurgeAudit deletes the records older than before, oldest first, and
	// makes the last deleted the anchor; it returns how many it deleted.
	PurgeAudit(ctx context.Context, before time.Time) (int, error)
}

// Problem is one break of the chain that Verify found.
type Problem struct {
	// Seq is the record at which the chain breaks (the sequence number
	// expected, for a missing record).
	Seq    int64  `json:"seq"`
	Reason string `json:"reason"`
}

// Report is what Verify found.
type Report struct {
	// Checked is the number of records read; First and Last their range.
	Checked     int64     `json:"checked"`
	First, Last int64     `json:"-"`
	Problems    []Problem `json:"problems,omitempty"`
}

// OK reports whether the chain is intact.
func (r *Report) OK() bool { return len(r.Problems) == 0 }

// maxProblems caps the problems a Report lists.
const maxProblems = 100

// ErrBroken is returned by Verify's callers when the chain is not intact.
var ErrBroken = errors.New("the audit log's hash chain is broken")

// Verify reads the whole log of s in order and checks the chain: each record
// follows the one before it (or the anchor), its PrevHash is that record's
// hash, its hash is what its contents hash to, and the last record is the
// head the store recorded. An edited row fails its own hash; a deleted row
// leaves a gap in the sequence numbers and a PrevHash that matches nothing;
// reordered rows fail both; a deleted tail falls short of the head.
func Verify(ctx context.Context, s Store) (*Report, error) {
	head, err := s.AuditHead(ctx)
	if err != nil {
		return nil, err
	}
	rep := &Report{}
	v := verifier{rep: rep, seq: head.AnchorSeq, hash: head.AnchorHash}
	after := int64(-1) << 62
	for {
		recs, err := s.ListAudit(ctx, Filter{AfterSeq: after, Limit: MaxLimit})
		if err != nil {
			return nil, err
		}
		for i := range recs {
			v.check(&recs[i])
		}
		if len(recs) < MaxLimit {
			break
		}
		after = recs[len(recs)-1].Seq
	}
	if v.seq != head.Seq || v.hash != head.Hash {
		v.problem(head.Seq, fmt.Sprintf("the log ends at record %d, the head recorded is record %d (%.12s…): records missing at the end", v.seq, head.Seq, head.Hash))
	}
	return rep, nil
}

// VerifyRecords checks recs as a whole chain after the anchor (anchorSeq,
// anchorHash), without a head: what Verify does for a store's rows.
func VerifyRecords(recs []Record, anchorSeq int64, anchorHash string) *Report {
	rep := &Report{}
	v := verifier{rep: rep, seq: anchorSeq, hash: anchorHash}
	for i := range recs {
		v.check(&recs[i])
	}
	return rep
}

type verifier struct {
	rep  *Report
	seq  int64
	hash string
}

func (v *verifier) problem(seq int64, reason string) {
	if len(v.rep.Problems) < maxProblems {
		v.rep.Problems = append(v.rep.Problems, Problem{Seq: seq, Reason: reason})
	}
}

func (v *verifier) check(r *Record) {
	if v.rep.Checked == 0 {
		v.rep.First = r.Seq
	}
	v.rep.Checked++
	v.rep.Last = r.Seq
	switch {
	case r.Seq <= v.seq:
		v.problem(r.Seq, fmt.Sprintf("record %d comes after record %d: out of order", r.Seq, v.seq))
	case r.Seq != v.seq+1:
		v.problem(v.seq+1, fmt.Sprintf("records %d to %d are missing", v.seq+1, r.Seq-1))
	}
	if r.PrevHash != v.hash {
		v.problem(r.Seq, "its previous hash is not the hash of the record before it: a record before it was deleted, edited or moved")
	}
	if got := HashOf(r.PrevHash, r); !bytes.Equal([]byte(got), []byte(r.Hash)) {
		v.problem(r.Seq, "its contents do not match its hash: the record was edited")
	}
	v.seq, v.hash = r.Seq, r.Hash
}
