package hostinfo

import (
	"context"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/berth-dev/berth/internal/agentproto"
	"github.com/google/go-cmp/cmp"
)

// fakeIMDS is an IMDSv2 server: a PUT for a token, then GETs that must carry it.
type fakeIMDS struct {
	*httptest.Server
	data     map[string]string // meta-data path → value
	tokenErr int               // status for the token request; 0: OK
	requests atomic.Int32
}

func newFakeIMDS(t *testing.T, data map[string]string) *fakeIMDS {
	t.Helper()
	f := &fakeIMDS{data: data}
	f.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.requests.Add(1)
		if r.URL.Path == "/latest/api/token" {
			if r.Method != http.MethodPut || r.Header.Get("X-aws-ec2-metadata-token-ttl-seconds") == "" {
				http.Error(w, "bad token request", http.StatusBadRequest)
				return
			}
			if f.tokenErr != 0 {
				http.Error(w, "no", f.tokenErr)
				return
			}
			w.Write([]byte("TOKEN"))
			return
		}
		if r.Method != http.MethodGet || r.Header.Get("X-aws-ec2-metadata-token") != "TOKEN" {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		v, ok := f.data[r.URL.Path[len("/latest/meta-data/"):]]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(v))
	}))
	t.Cleanup(f.Close)
	return f
}

func TestProbeAWS(t *testing.T) {
	ctx := context.Background()
	t.Run("ec2", func(t *testing.T) {
		f := newFakeIMDS(t, map[string]string{
			"instance-id": "i-0123456789abcdef0", "instance-type": "g4dn.xlarge",
			"ami-id": "ami-0abcdef1234567890", "placement/region": "eu-west-1",
		})
		p := &Prober{IMDSURL: f.URL + "/"}
		want := &agentproto.AWS{Region: "eu-west-1", InstanceType: "g4dn.xlarge", InstanceID: "i-0123456789abcdef0", ImageID: "ami-0abcdef1234567890"}
		for range 3 {
			var r agentproto.HostReport
			if err := probeAWS(ctx, p, &r); err != nil {
				t.Fatal(err)
			}
			if diff := cmp.Diff(want, r.AWS); diff != "" {
				t.Fatalf("AWS (-want +got):\n%s", diff)
			}
		}
		if n := f.requests.Load(); n != 5 {
			t.Errorf("%d IMDS requests for three reports, want 5 (one lookup)", n)
		}
	})
	t.Run("region from availability zone", func(t *testing.T) {
		f := newFakeIMDS(t, map[string]string{
			"instance-id": "i-1", "instance-type": "t3.micro", "ami-id": "ami-1",
			"placement/availability-zone": "us-east-1b",
		})
		var r agentproto.HostReport
		if err := probeAWS(ctx, &Prober{IMDSURL: f.URL}, &r); err != nil {
			t.Fatal(err)
		}
		if r.AWS == nil || r.AWS.Region != "us-east-1" {
			t.Errorf("AWS = %+v, want region us-east-1", r.AWS)
		}
	})
	t.Run("token refused", func(t *testing.T) {
		f := newFakeIMDS(t, nil)
		f.tokenErr = http.StatusForbidden
		p := &Prober{IMDSURL: f.URL}
		for range 2 {
			var r agentproto.HostReport
			if err := probeAWS(ctx, p, &r); err != nil || r.AWS != nil {
				t.Errorf("AWS %+v, err %v; want none and no error (IMDS off)", r.AWS, err)
			}
		}
		if n := f.requests.Load(); n != 1 {
			t.Errorf("%d IMDS requests, want 1 (the failure is cached)", n)
		}
	})
	t.Run("metadata fails after the token", func(t *testing.T) {
		f := newFakeIMDS(t, map[string]string{"instance-id": "i-1"})
		f.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			f.requests.Add(1)
			if r.URL.Path == "/latest/api/token" {
				w.Write([]byte("TOKEN"))
				return
			}
			http.Error(w, "boom", http.StatusInternalServerError)
		})
		p := &Prober{IMDSURL: f.URL}
		var r agentproto.HostReport
		if err := probeAWS(ctx, p, &r); err == nil || r.AWS != nil {
			t.Errorf("AWS %+v, err %v; want an error", r.AWS, err)
		}
		if err := probeAWS(ctx, p, &r); err != nil || r.AWS != nil {
			t.Errorf("second probe: AWS %+v, err %v; want the cached failure", r.AWS, err)
		}
		if n := f.requests.Load(); n != 2 {
			t.Errorf("%d IMDS requests, want 2 (one lookup)", n)
		}
	})
	t.Run("no imds", func(t *testing.T) {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		url := "http://" + ln.Addr().String()
		ln.Close() // connection refused from now on
		p := &Prober{IMDSURL: url}
		var r agentproto.HostReport
		if err := probeAWS(ctx, p, &r); err != nil || r.AWS != nil {
			t.Errorf("AWS %+v, err %v; want none and no error off EC2", r.AWS, err)
		}
	})
	t.Run("imds hangs", func(t *testing.T) {
		block := make(chan struct{})
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-block }))
		defer srv.Close()
		defer close(block)
		p := &Prober{IMDSURL: srv.URL, IMDSTimeout: 200 * time.Millisecond}
		for i := range 2 {
			start := time.Now()
			var r agentproto.HostReport
			if err := probeAWS(ctx, p, &r); err != nil || r.AWS != nil {
				t.Errorf("AWS %+v, err %v; want none and no error", r.AWS, err)
			}
			d := time.Since(start)
			if i == 0 && d > time.Second {
				t.Errorf("first lookup took %v, want about the timeout", d)
			}
			if i == 1 && d > 50*time.Millisecond {
				t.Errorf("second lookup took %v, want the cached failure at once", d)
			}
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		f := newFakeIMDS(t, map[string]string{"instance-id": "i-1"})
		p := &Prober{IMDSURL: f.URL}
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		var r agentproto.HostReport
		_ = probeAWS(cctx, p, &r)
		if err := probeAWS(ctx, p, &r); err != nil || r.AWS == nil || r.AWS.InstanceID != "i-1" {
			t.Errorf("after a cancelled lookup: AWS %+v, err %v; want a fresh lookup", r.AWS, err)
		}
	})
}
