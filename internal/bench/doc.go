// Package bench holds the broker's fleet-scale benchmarks: placement throughput
// committed to SQLite, DescribeSessions over HTTPS against a bare TLS handler,
// and resident memory with a large fleet. It has no non-test code.
package bench
