package fleetbench

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/berth-dev/berth/api"
)

// register: N agents with empty state directories start at once and
// register with the broker's software statement, then link. It measures
// the times to the first and the last Welcome and until DescribeServers
// shows all AVAILABLE, and counts the agent clients the broker made.
func (b *bench) register(ctx context.Context) Row {
	row := Row{}
	if err := b.ensureBroker(ctx); err != nil {
		return b.fail(&row, err)
	}
	if b.f.running() || b.registered {
		b.f.stop()
		if err := b.newFleet(); err != nil {
			return b.fail(&row, err)
		}
	}
	clients0, err := b.b.agentClients(ctx)
	if err != nil {
		return b.fail(&row, err)
	}
	m := b.measure(250 * time.Millisecond)
	start := time.Now()
	b.f.start(b.b.agentURL(), b.statement)
	b.registered = true
	t, err := b.waitFleet(ctx, start, "register")
	fillFleetTimes(&row, start, t)
	m.done(&row)
	b.fleetNotes(&row, 0, 0)
	if clients, cerr := b.b.agentClients(ctx); cerr == nil {
		row.Notes = append(row.Notes, fmt.Sprintf("%d agent clients registered (%d unused)", clients-clients0, clients-clients0-b.o.Agents))
	}
	if err != nil {
		return b.fail(&row, err)
	}
	return row
}

// connect: the agents, holding credentials, stop; the broker restarts
// (SIGTERM, start); then every agent starts at once. It measures as
// register does, against a fresh broker process.
func (b *bench) connect(ctx context.Context) Row {
	row := Row{}
	if err := b.ensureLinked(ctx); err != nil {
		return b.fail(&row, err)
	}
	b.f.stop()
	if err := b.b.stop(); err != nil {
		row.Notes = append(row.Notes, err.Error())
	}
	if err := b.startBroker(ctx); err != nil {
		return b.fail(&row, err)
	}
	welcomes0, warns0 := b.fleetMark()
	m := b.measure(250 * time.Millisecond)
	start := time.Now()
	b.f.start(b.b.agentURL(), b.statement)
	t, err := b.waitFleet(ctx, start, "connect")
	fillFleetTimes(&row, start, t)
	m.done(&row)
	b.fleetNotes(&row, welcomes0, warns0)
	if err != nil {
		return b.fail(&row, err)
	}
	return row
}

// idle: every agent linked and reporting, nothing else. After a settling
// time of three base update intervals (at least 5 s: long enough for every
// agent to ask for an ack, whose answer retimes a link that linked while
// the fleet was smaller), it measures the broker's CPU over the idle
// window, and the rate of the agents' periodic reports. With changing,
// every report carries a new load figure, so every update holds a host
// report.
func (b *bench) idle(ctx context.Context, changing bool) Row {
	row := Row{}
	if err := b.ensureLinked(ctx); err != nil {
		return b.fail(&row, err)
	}
	b.f.changing.Store(changing)
	defer b.f.changing.Store(false)
	wait(ctx, max(3*b.o.UpdateInterval, 5*time.Second))
	welcomes0, warns0 := b.fleetMark()
	reports0, start := b.f.reports.Load(), time.Now()
	m := b.measure(time.Second)
	end := time.Now().Add(b.o.IdleWindow)
	for time.Now().Before(end) && ctx.Err() == nil {
		wait(ctx, min(10*time.Second, time.Until(end)))
		b.progress("idle: %s left; %d/%d agents linked", time.Until(end).Round(time.Second), b.f.linked(time.Time{}), b.o.Agents)
	}
	m.done(&row)
	row.Notes = append(row.Notes, reportRate(b.o.Agents, b.f.reports.Load()-reports0, time.Since(start), b.f.medianGap()))
	if l := b.f.linked(time.Time{}); l != b.o.Agents {
		row.Notes = append(row.Notes, fmt.Sprintf("only %d agents linked at the end", l))
	}
	b.fleetNotes(&row, welcomes0, warns0)
	if ctx.Err() != nil {
		return b.fail(&row, ctx.Err())
	}
	return row
}

// storm: o.Sessions sessions through CreateSessions (calls of 1,000, one
// after the other) on the linked fleet; the times until the broker has
// accepted all and until DescribeSessions shows all READY, and the rate
// to READY.
func (b *bench) storm(ctx context.Context) Row {
	row := Row{Sessions: b.o.Sessions}
	if err := b.ensureLinked(ctx); err != nil {
		return b.fail(&row, err)
	}
	m := b.measure(250 * time.Millisecond)
	start := time.Now()
	created, failed, reasons, err := b.createSessions(ctx, b.o.Sessions, "storm")
	row.ToAccepted = time.Since(start)
	if failed > 0 {
		row.Notes = append(row.Notes, fmt.Sprintf("%d refused: %s", failed, topReasons(reasons)))
	}
	if err != nil {
		m.done(&row)
		return b.fail(&row, err)
	}
	b.progress("storm: %d sessions accepted in %s", len(created), fmtDur(row.ToAccepted))
	ready, err := b.waitReady(ctx, created, start, "storm")
	m.done(&row)
	if err != nil {
		return b.fail(&row, err)
	}
	row.ToReady = ready.Sub(start)
	row.Rate = float64(len(created)) / row.ToReady.Seconds()
	if note := cpuPerItem(row.CPUPercent, row.Window, len(created), "session"); note != "" {
		row.Notes = append(row.Notes, note)
	}
	return row
}

// restart: with the fleet linked and its sessions READY, SIGKILL the
// broker and start it again at once. It measures the times until it
// listens, until the first and the last agent are welcomed again, and
// until DescribeServers shows every server AVAILABLE; then it checks that
// every session is still there, once, and READY, in the API and on the
// agents.
func (b *bench) restart(ctx context.Context) Row {
	row := Row{}
	if err := b.ensureLinked(ctx); err != nil {
		return b.fail(&row, err)
	}
	if len(b.live) == 0 {
		b.progress("restart: creating %d sessions first (not measured)", b.o.Sessions)
		if _, _, _, err := b.createSessions(ctx, b.o.Sessions, "restart"); err != nil {
			return b.fail(&row, err)
		}
	}
	before := make(map[string]string, len(b.live))
	for id, owner := range b.live {
		before[id] = owner
	}
	row.Sessions = len(before)
	if _, err := b.waitReady(ctx, before, time.Now(), "restart: before the kill"); err != nil {
		return b.fail(&row, fmt.Errorf("before the kill: %w", err))
	}

	start := time.Now()
	if err := b.b.kill(); err != nil {
		return b.fail(&row, err)
	}
	if err := b.b.start(); err != nil {
		return b.fail(&row, err)
	}
	m := b.measure(250 * time.Millisecond)
	m.start = procSample{At: start} // a new process: no CPU time before
	welcomes0, warns0 := b.fleetMark()
	// The probe process tells when the broker listens: in this process,
	// busy with 10,000 agents' reconnects, a dial's answer can wait
	// seconds for a CPU.
	lctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	listening, err := b.probe.listening(lctx, b.b.agentAddr(), b.b.clientAddr())
	cancel()
	if err != nil {
		m.done(&row)
		if b.b.exited() {
			err = fmt.Errorf("berth-broker exited:\n%s", b.b.logTail(20))
		}
		return b.fail(&row, fmt.Errorf("waiting for the broker to listen: %w", err))
	}
	row.ToListen = listening.Sub(start)
	t, err := b.waitFleet(ctx, start, "restart")
	fillFleetTimes(&row, start, t)
	if err != nil {
		m.done(&row)
		return b.fail(&row, err)
	}
	m.done(&row)
	b.fleetNotes(&row, welcomes0, warns0)
	row.Check, err = b.checkSessions(ctx, before)
	if err != nil {
		return b.fail(&row, err)
	}
	return row
}

// checkSessions waits (up to the READY timeout) until every session of
// before is READY again, then compares before with what DescribeSessions
// lists and what the agents hold.
func (b *bench) checkSessions(ctx context.Context, before map[string]string) (*SessionCheck, error) {
	if _, err := b.waitReady(ctx, before, time.Now(), "restart: sessions after the restart"); err != nil {
		b.progress("restart: %v", err)
	}
	sc, err := b.scanSessions(ctx)
	if err != nil {
		return &SessionCheck{Before: len(before)}, err
	}
	held, heldTwice := b.f.sessions(ctx)
	return compareSessions(before, sc, held, heldTwice), nil
}

// compareSessions compares the sessions before a restart with what
// DescribeSessions lists after it (sc) and what the agents hold (held: ID
// → agents holding it; heldTwice: IDs held by more than one).
func compareSessions(before map[string]string, sc sessionScan, held map[string]int, heldTwice int) *SessionCheck {
	c := &SessionCheck{Before: len(before)}
	for id := range before {
		st, ok := sc.state[id]
		switch {
		case !ok || st == api.StateDeleted || held[id] == 0:
			c.Lost++
		case st != api.StateReady:
			c.NotReady++
		}
	}
	c.Duplicated = heldTwice
	for id, n := range sc.listed {
		if n > 1 {
			c.Duplicated++
		}
		if _, ok := before[id]; !ok && sc.state[id] != api.StateDeleted {
			c.Duplicated++ // a session nobody created
		}
	}
	for id := range held {
		if _, ok := before[id]; !ok {
			c.Duplicated++
		}
	}
	return c
}

// churn: on the linked fleet, create o.ChurnRate sessions every second for
// o.Churn, and delete each 10 s after its creation; RSS is sampled all
// along, and the row says whether it levelled off (the last third's mean
// within 5 % of the middle third's).
func (b *bench) churn(ctx context.Context) Row {
	row := Row{}
	if err := b.ensureLinked(ctx); err != nil {
		return b.fail(&row, err)
	}
	type born struct {
		id, owner string
		at        time.Time
	}
	var queue []born
	created, createFailed, deleted, deleteFailed := 0, 0, 0, 0
	reasons := map[string]int{}
	m := b.measure(max(time.Second, b.o.Churn/120))
	start := time.Now()
	tick := time.NewTicker(time.Second)
	defer tick.Stop()
	report := start
	var err error
	for time.Since(start) < b.o.Churn && err == nil {
		var got map[string]string
		var failed int
		var rs map[string]int
		got, failed, rs, err = b.createSessions(ctx, b.o.ChurnRate, "churn")
		now := time.Now()
		for id, owner := range got {
			queue = append(queue, born{id, owner, now})
		}
		created += len(got)
		createFailed += failed
		for r, n := range rs {
			reasons[r] += n
		}
		old := map[string]string{}
		for len(queue) > 0 && now.Sub(queue[0].at) >= churnLifetime {
			old[queue[0].id] = queue[0].owner
			queue = queue[1:]
		}
		if err == nil && len(old) > 0 {
			failed, err = b.deleteSessions(ctx, old)
			deleted += len(old) - failed
			deleteFailed += failed
		}
		if time.Since(report) >= 10*time.Second {
			report = time.Now()
			rss := int64(0)
			if ps, perr := readProc(b.b.pid()); perr == nil {
				rss = ps.RSSKB
			}
			b.progress("churn: %s of %s, %d created, %d deleted, broker RSS %.0f MB", time.Since(start).Round(time.Second), b.o.Churn, created, deleted, float64(rss)*1024/1e6)
		}
		select {
		case <-ctx.Done():
			err = ctx.Err()
		case <-tick.C:
		}
	}
	elapsed := time.Since(start)
	samples := m.done(&row)
	row.Sessions = created
	row.Rate = float64(created) / elapsed.Seconds()
	row.Notes = append(row.Notes, fmt.Sprintf("%d created, %d deleted in %s", created, deleted, fmtDur(elapsed)))
	if createFailed+deleteFailed > 0 {
		row.Notes = append(row.Notes, fmt.Sprintf("%d creates refused (%s), %d deletes refused", createFailed, topReasons(reasons), deleteFailed))
	}
	if len(samples) > 0 {
		row.Notes = append(row.Notes, fmt.Sprintf("RSS at start %.0f MB", float64(samples[0].RSSKB)*1024/1e6))
	}
	if ok, mid, last, known := plateau(samples); known {
		verdict := "memory plateaus"
		if !ok {
			verdict = "memory still grows"
		}
		row.Notes = append(row.Notes, fmt.Sprintf("%s (mean RSS middle third %.0f MB, last third %.0f MB)", verdict, float64(mid)*1024/1e6, float64(last)*1024/1e6))
	}
	// The sessions still alive go, unmeasured.
	rest := map[string]string{}
	for _, x := range queue {
		rest[x.id] = x.owner
	}
	if _, derr := b.deleteSessions(ctx, rest); derr != nil && err == nil {
		err = derr
	}
	if err != nil {
		return b.fail(&row, err)
	}
	return row
}

// pages compares DescribeSessions pages with JupyterHub's (pages.go).
func (b *bench) pages(ctx context.Context) Row { return pagesRow(ctx, b) }

// topReasons formats the most common failure reasons.
func topReasons(reasons map[string]int) string {
	type kv struct {
		r string
		n int
	}
	var list []kv
	for r, n := range reasons {
		list = append(list, kv{r, n})
	}
	sort.Slice(list, func(i, j int) bool { return list[i].n > list[j].n })
	s := ""
	for i, x := range list {
		if i == 3 {
			break
		}
		if i > 0 {
			s += ", "
		}
		s += fmt.Sprintf("%d× %.80q", x.n, x.r)
	}
	return s
}

// reportRate describes the periodic reports n agents made over d, and the
// median time between an agent's last two reports (gap): the interval in
// effect, and the fleet's rate it means. The window's own rate differs from
// that when the agents' timers are in step (they linked together).
func reportRate(n int, reports int64, d, gap time.Duration) string {
	if reports <= 0 || d <= 0 || gap <= 0 {
		return fmt.Sprintf("%d agents made %d periodic reports in %s", n, reports, d.Round(time.Second))
	}
	return fmt.Sprintf("agents report every %s (median gap; %.0f reports a second for %d agents), %.0f a second in the window",
		gap.Round(100*time.Millisecond), float64(n)/gap.Seconds(), n, float64(reports)/d.Seconds())
}
