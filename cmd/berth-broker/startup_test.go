package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/broker"
	"github.com/berth-dev/berth/internal/broker/storetest"
	"github.com/berth-dev/berth/internal/sqlite"
)

// BenchmarkBrokerStart reports how long the broker takes from Run to
// listening (start_ms) on a working path whose store holds N servers
// (BERTH_START_SERVERS, default 10,000) and as many READY sessions, one on
// each (BERTH_START_SESSIONS), as after a restart of a broker with a fleet:
// the time agents and clients are refused.
func BenchmarkBrokerStart(b *testing.B) {
	n := 10000
	if v, err := strconv.Atoi(os.Getenv("BERTH_START_SERVERS")); err == nil && v > 0 {
		n = v
	}
	sessions := n
	if v, err := strconv.Atoi(os.Getenv("BERTH_START_SESSIONS")); err == nil && v >= 0 {
		sessions = v
	}
	dir := b.TempDir()
	ctx := context.Background()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "berth.db"))
	if err != nil {
		b.Fatal(err)
	}
	now := time.Now()
	for i := range n {
		srv := &broker.Server{ID: fmt.Sprintf("srv-%05d", i), Open: true, LastSeen: now, BrokerID: "old", CreatedAt: now,
			Info: broker.ServerInfo{Hostname: fmt.Sprintf("h%05d", i), Healthy: true, Host: broker.Host{OSFamily: "linux", OSName: "Ubuntu", CPUs: 8}}}
		if err := st.UpsertServer(ctx, srv); err != nil {
			b.Fatal(err)
		}
	}
	for start := 0; start < sessions; start += 1000 {
		var batch []*broker.Session
		for i := start; i < min(start+1000, sessions); i++ {
			batch = append(batch, storetest.NewSession(fmt.Sprintf("ses-%06d", i), fmt.Sprintf("user%d", i%100),
				broker.TypeVirtual, fmt.Sprintf("srv-%05d", i%n), broker.StateReady))
		}
		if err := st.InsertSessions(ctx, batch); err != nil {
			b.Fatal(err)
		}
	}
	st.Close()
	b.ResetTimer()
	var total time.Duration
	for range b.N {
		start := time.Now()
		tb := MustRunMain(b, dir, nil)
		total += time.Since(start)
		if got := tb.svc.ServerCount(); got != n {
			b.Fatalf("%d servers loaded, want %d", got, n)
		}
		tb.Close()
	}
	b.ReportMetric(float64(total.Milliseconds())/float64(b.N), "start_ms")
}

// loadedStore is a store whose background load ends when loaded is closed,
// with err.
type loadedStore struct {
	store
	loaded chan struct{}
	err    error
}

func (s loadedStore) Loaded() <-chan struct{} { return s.loaded }
func (s loadedStore) LoadError() error        { return s.err }

func TestWaitStoreLoaded(t *testing.T) {
	closed := make(chan struct{})
	close(closed)
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name    string
		store   store
		ctx     context.Context
		wantErr bool
		wantLog string
	}{
		{"loaded", loadedStore{loaded: closed}, context.Background(), false, ""},
		{"load failed: logged, the broker starts", loadedStore{loaded: closed, err: errors.New("disk I/O error")},
			context.Background(), false, "disk I/O error"},
		{"still loading, start abandoned", loadedStore{loaded: make(chan struct{})}, cancelled, true, ""},
		{"a store that loads nothing later", struct{ store }{}, cancelled, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var log strings.Builder
			m := &Main{store: tt.store, Logger: slog.New(slog.NewTextHandler(&log, nil))}
			err := m.waitStoreLoaded(tt.ctx)
			if (err != nil) != tt.wantErr {
				t.Fatalf("waitStoreLoaded = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), "load store") {
				t.Errorf("error %q does not say what it waited for", err)
			}
			if got := log.String(); (tt.wantLog == "") != (got == "") || !strings.Contains(got, tt.wantLog) {
				t.Errorf("log %q, want one with %q", got, tt.wantLog)
			}
		})
	}
}
