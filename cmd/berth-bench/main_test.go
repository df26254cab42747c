package main

import (
	"context"
	"strings"
	"testing"
)

// TestRun_Refusals checks the exit codes and messages of the command's
// refusals, which return before any broker starts.
func TestRun_Refusals(t *testing.T) {
	tests := []struct {
		name string
		args []string
		code int
		want string // in stderr
	}{
		{"help", []string{"-h"}, 0, "Usage: berth-bench"},
		{"unknown flag", []string{"-nope"}, 2, "flag provided but not defined: -nope"},
		{"stray argument", []string{"extra"}, 2, `unexpected argument "extra"`},
		{"unknown scenario", []string{"-scenarios", "connect,nope"}, 2, `unknown scenario "nope"`},
		{"postgres without a DSN", []string{"-store", "postgres"}, 2, "needs a DSN"},
		{"unknown store", []string{"-store", "mysql"}, 2, `store "mysql"`},
		{"no broker binary", []string{"-broker", "/nonexistent/berth-broker"}, 2, "broker binary"},
		{"broker property without =", []string{"-broker-property", "log-level"}, 2, `want KEY=VALUE on one line, got "log-level"`},
		{"broker property with a newline", []string{"-broker-property", "a=b\nc=d"}, 2, "want KEY=VALUE on one line"},
	}
	for _, tt := range tests {
		var stdout, stderr strings.Builder
		code := run(context.Background(), tt.args, &stdout, &stderr)
		if code != tt.code || !strings.Contains(stderr.String(), tt.want) {
			t.Errorf("%s: exit %d, stderr %q; want exit %d and %q", tt.name, code, stderr.String(), tt.code, tt.want)
		}
		if stdout.Len() > 0 {
			t.Errorf("%s: printed %q on stdout", tt.name, stdout.String())
		}
	}
}
