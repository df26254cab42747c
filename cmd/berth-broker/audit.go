package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/user"
	"strconv"
	"strings"
	"time"

	"github.com/berth-dev/berth/internal/audit"
	"github.com/berth-dev/berth/internal/broker"
)

// auditCommands are `berth-broker audit` (list records) and `berth-broker
// audit verify` (check the hash chain; also spelled audit-verify).
func auditCommands() []adminCommand {
	return []adminCommand{
		{name: "audit", summary: "print the audit log's records, one JSON object a line, oldest first (berth-broker audit verify checks its hash chain)",
			flags: auditFlags, example: "berth-broker audit --since 24h --client 3f1c...",
			run: listAudit},
		{name: "audit-verify", summary: "check the audit log's hash chain: exit 1 naming each edited, deleted or reordered record",
			example: "berth-broker audit verify", run: verifyAudit},
	}
}

// auditArgs turns `audit [options] verify [options]` into `audit-verify
// [options]`: verify is audit's first argument that is neither an option nor
// an option's value (every option of audit takes one).
func auditArgs(args []string) []string {
	if len(args) < 2 || args[0] != "audit" {
		return args
	}
	for i := 1; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "verify":
			return append(append([]string{"audit-verify"}, args[1:i]...), args[i+1:]...)
		case strings.HasPrefix(a, "-") && a != "-" && a != "--":
			if !strings.Contains(a, "=") {
				i++ // its value
			}
		default:
			return args
		}
	}
	return args
}

// auditFlags are audit's options: --since, --until, --client, --session,
// --action, --limit.
func auditFlags(fs *flag.FlagSet) func() []string {
	since := fs.String("since", "", "records from this time on: RFC 3339 (2026-03-01T00:00:00Z) or an age (90m, 24h, 7d)")
	until := fs.String("until", "", "records before this time: RFC 3339 or an age")
	client := fs.String("client", "", "records of this actor: an API client ID, portal user or OS user")
	session := fs.String("session", "", "records naming this session ID")
	action := fs.String("action", "", "records of this action (CreateSessions, portal.DeleteSession, register-api-client, ...)")
	limit := fs.String("limit", "", "print at most this many records (default 1000)")
	return func() []string { return []string{*since, *until, *client, *session, *action, *limit} }
}

// auditStore is the broker's store as an audit log.
func auditStore(m *Main) (audit.Store, error) {
	s, ok := m.store.(audit.Store)
	if !ok {
		return nil, errors.New("this store keeps no audit log")
	}
	return s, nil
}

// parseWhen reads an RFC 3339 time or an age before now (90m, 24h, 7d).
func parseWhen(flagName, v string, now time.Time) (time.Time, error) {
	if v == "" {
		return time.Time{}, nil
	}
	if t, err := time.Parse(time.RFC3339, v); err == nil {
		return t, nil
	}
	if d, ok := strings.CutSuffix(v, "d"); ok {
		if n, err := strconv.Atoi(d); err == nil && n >= 0 {
			return now.Add(-time.Duration(n) * 24 * time.Hour), nil
		}
	}
	if d, err := time.ParseDuration(v); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, usageError(fmt.Sprintf("--%s: expected an RFC 3339 time or an age like 24h or 7d, got %q", flagName, v))
}

func listAudit(ctx context.Context, m *Main, a []string, out io.Writer) error {
	s, err := auditStore(m)
	if err != nil {
		return err
	}
	now := time.Now()
	f := audit.Filter{Actor: a[2], Session: a[3], Action: a[4]}
	if f.Since, err = parseWhen("since", a[0], now); err != nil {
		return err
	}
	if f.Until, err = parseWhen("until", a[1], now); err != nil {
		return err
	}
	limit := audit.DefaultLimit
	if a[5] != "" {
		if limit, err = strconv.Atoi(a[5]); err != nil || limit < 1 {
			return usageError(fmt.Sprintf("--limit: expected a whole number of at least 1, got %q", a[5]))
		}
	}
	enc := json.NewEncoder(out)
	for limit > 0 {
		f.Limit = min(limit, audit.MaxLimit)
		recs, err := s.ListAudit(ctx, f)
		if err != nil {
			return err
		}
		for i := range recs {
			if err := enc.Encode(&recs[i]); err != nil {
				return err
			}
		}
		limit -= len(recs)
		if len(recs) < f.Limit {
			break
		}
		f.AfterSeq = recs[len(recs)-1].Seq
	}
	return nil
}

func verifyAudit(ctx context.Context, m *Main, _ []string, out io.Writer) error {
	s, err := auditStore(m)
	if err != nil {
		return err
	}
	head, err := s.AuditHead(ctx)
	if err != nil {
		return err
	}
	rep, err := audit.Verify(ctx, s)
	if err != nil {
		return err
	}
	anchor := "the log was never purged"
	if head.AnchorSeq > 0 {
		anchor = fmt.Sprintf("records up to %d were purged by retention; the chain is anchored on %d's hash %.16s…", head.AnchorSeq, head.AnchorSeq, head.AnchorHash)
	}
	if rep.OK() {
		fmt.Fprintf(out, "audit log intact: %d records checked, up to record %d (hash %.16s…); %s\n", rep.Checked, head.Seq, head.Hash, anchor)
		return nil
	}
	fmt.Fprintf(out, "audit log BROKEN: %d records checked; %s\n", rep.Checked, anchor)
	for _, p := range rep.Problems {
		fmt.Fprintf(out, "  record %d: %s\n", p.Seq, p.Reason)
	}
	return audit.ErrBroken
}

// readOnlyAdmin reports whether an admin command changes nothing, and so is
// not recorded in the audit log.
func readOnlyAdmin(name string) bool {
	return strings.HasPrefix(name, "describe-") || strings.HasPrefix(name, "list-") || strings.HasPrefix(name, "audit")
}

// adminTargetFlags are the admin commands' options whose values are the IDs
// that the audit log records; other options are recorded by name only (an
// option may carry a secret).
var adminTargetFlags = map[string]string{
	"client-id":   audit.TargetClient,
	"client-name": audit.TargetClient,
	"user":        audit.TargetUser,
	"session-id":  audit.TargetSession,
	"server-id":   audit.TargetServer,
	"webhook-id":  audit.TargetWebhook,
	"id":          "id",
}

// recordAdmin appends the audit record of an admin command that ran with
// the options set in fs and ended with err: the OS user who ran it, the
// command, the IDs it named, the result. It warns on stderr if the record
// could not be written.
func recordAdmin(ctx context.Context, m *Main, name string, fs *flag.FlagSet, printed *printedIDs, err error) {
	if readOnlyAdmin(name) || m.store == nil {
		return
	}
	s, ok := m.store.(audit.Store)
	if !ok {
		return
	}
	rec := &audit.Record{Time: time.Now(), ActorKind: audit.ActorAdmin, Actor: osUser(), Action: name,
		Source: "local", Result: audit.ResultOK, Broker: m.Config.BrokerID}
	if host, herr := os.Hostname(); herr == nil {
		rec.Source = "local@" + host
	}
	var opts []string
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "config" {
			return
		}
		opts = append(opts, "--"+f.Name)
		if kind, ok := adminTargetFlags[f.Name]; ok {
			rec.AddTarget(kind, f.Value.String())
		}
	})
	for _, id := range printed.ids {
		rec.AddTarget(audit.TargetClient, id)
	}
	if len(opts) > 0 {
		rec.Detail = "options " + strings.Join(opts, " ")
	}
	if err != nil {
		rec.Result, rec.Error = audit.ResultFailed, truncate(err.Error(), 300)
	}
	if werr := s.AppendAudit(context.WithoutCancel(ctx), []*audit.Record{rec}); werr != nil {
		fmt.Fprintf(m.Stderr, "berth-broker: warning: the audit log could not record %s: %v\n", name, werr)
	}
}

// printedIDs passes an admin command's output on and keeps the IDs of the
// clients it created (its "client-id: " lines) for the audit record; nothing
// else of the output (a "client-password: " line) is kept.
type printedIDs struct {
	w    io.Writer
	line []byte
	ids  []string
}

// maxPrintedLine caps the line printedIDs holds while it waits for its end.
const maxPrintedLine = 4096

func (p *printedIDs) Write(b []byte) (int, error) {
	n, err := p.w.Write(b)
	for _, c := range b[:n] {
		if c != '\n' {
			if len(p.line) < maxPrintedLine {
				p.line = append(p.line, c)
			}
			continue
		}
		if id, ok := strings.CutPrefix(string(p.line), "client-id: "); ok {
			p.ids = append(p.ids, strings.TrimSpace(id))
		}
		clear(p.line)
		p.line = p.line[:0]
	}
	return n, err
}

// truncate cuts s to n bytes.
func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…"
}

// osUser names who runs the command: the user, and who became it with sudo.
func osUser() string {
	name := strconv.Itoa(os.Getuid())
	if u, err := user.Current(); err == nil {
		name = u.Username
	}
	if su := os.Getenv("SUDO_USER"); su != "" && su != name {
		name += " (sudo by " + su + ")"
	}
	return name
}

// auditPurgeInterval is how often the leader purges audit records older
// than audit-retention-days.
const auditPurgeInterval = time.Hour

// startAudit starts the broker's audit log: the appender that records the
// API's calls in batches, and on the leader (leaser nil: this broker) the
// hourly purge of records older than audit-retention-days (0: none).
func (m *Main) startAudit(leaser broker.Leaser) {
	s, ok := m.store.(audit.Store)
	if !ok {
		return
	}
	m.audit = audit.NewAppender(s, m.brokerID(), m.Logger)
	keep := m.Config.AuditRetention
	if keep <= 0 {
		return
	}
	m.goRun(func() {
		t := time.NewTicker(auditPurgeInterval)
		defer t.Stop()
		for {
			if leaser == nil || leaser.IsLeader(m.runCtx) {
				n, err := s.PurgeAudit(m.runCtx, time.Now().Add(-keep))
				switch {
				case err != nil && m.runCtx.Err() == nil:
					m.Logger.Error("audit log purge failed", "err", err)
				case n > 0:
					m.Logger.Info("audit records purged", "records", n, "retention_days", int(keep/(24*time.Hour)))
				}
			}
			select {
			case <-t.C:
			case <-m.runCtx.Done():
				return
			}
		}
	})
}

// auditClients is audit-api-clients as a list.
func (c *Config) auditClients() []string {
	var out []string
	for _, id := range strings.Split(c.AuditAPIClients, ",") {
		if id = strings.TrimSpace(id); id != "" {
			out = append(out, id)
		}
	}
	return out
}
