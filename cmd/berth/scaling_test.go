package main

import (
	"strings"
	"testing"
)

// TestRun_DescribeQueueAndCapacity checks the two commands' requests and
// their tables.
func TestRun_DescribeQueueAndCapacity(t *testing.T) {
	fb := newFakeBroker(t)
	fb.answer("/berth/v1/queue", 200, `{"RequestId":"r","Queue":[
		{"Position":1,"SessionId":"s1","Owner":"alice","EnqueuedAt":"2026-01-02T03:04:05Z","Reason":"quota: user alice has 4 of 4 sessions (session-max-sessions-per-user)"},
		{"Position":2,"SessionId":"s2","Owner":"bob","Reason":"no server has room"}]}`)
	fb.answer("/berth/v1/capacity", 200, `{"RequestId":"r","CheckedAt":"2026-01-02T03:04:05Z","IdleServerMinutes":30,
		"Shortfall":[{"Class":"5b0e9f1c2a47","Type":"VIRTUAL","DcvGlEnabled":true,"Requirements":"server:Host.Gpus.Model = 'L4'","Count":3,"Queued":2,"Refused":1,"OldestWaitSeconds":720}],
		"IdleServers":[{"Id":"srv-7","Hostname":"desktop-7","Ec2InstanceId":"i-0abc","AwsRegion":"eu-west-1","IdleSince":"2026-01-02T02:34:05Z","IdleSeconds":1800}]}`)
	tests := []struct {
		args []string
		path string
		want []string
	}{
		{[]string{"describe-queue", "--output", "table"}, "/berth/v1/queue", []string{
			"POSITION  SESSION ID  OWNER  ENQUEUED              REASON",
			"1         s1          alice  2026-01-02T03:04:05Z  quota: user alice has 4 of 4 sessions (session-max-sessions-per-user)",
			"2         s2          bob    -                     no server has room",
			"(2 queued sessions)",
		}},
		{[]string{"describe-queue"}, "/berth/v1/queue", []string{`"SessionId": "s1"`}},
		{[]string{"describe-capacity", "--output", "table"}, "/berth/v1/capacity", []string{
			"5b0e9f1c2a47  VIRTUAL  true  server:Host.Gpus.Model = 'L4'  3      2       1        12m0s",
			"(1 shortfall)",
			"srv-7           desktop-7  i-0abc        eu-west-1  2026-01-02T02:34:05Z  30m0s",
			"(1 idle server)",
		}},
		{[]string{"describe-capacity"}, "/berth/v1/capacity", []string{`"Class": "5b0e9f1c2a47"`}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			before := len(fb.calls())
			out, stderr, code := runCLI(t, fb.env(t), tt.args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			calls := fb.calls()[before:]
			if len(calls) != 1 || calls[0].Method != "GET" || calls[0].Path != tt.path {
				t.Fatalf("calls = %+v, want one GET %s", calls, tt.path)
			}
			for _, w := range tt.want {
				if !strings.Contains(out, w) {
					t.Errorf("output lacks %q:\n%s", w, out)
				}
			}
		})
	}
}
