// Package e2e holds berth's end-to-end tests: the real berth-broker and
// berth-agent binaries, built from this checkout, run together on loopback
// with the vnc driver, and the tests drive them only from the outside, the
// way a portal and a user do: the Session Manager API with an OAuth token
// (package api), the agent's web gateway over a real WebSocket, and a
// headless Chromium through the Chrome DevTools Protocol. Nothing is
// simulated: every session is a TigerVNC Xvnc run as a real local user.
//
// The package has no non-test code. Its tests need root (the agent starts
// desktops as the local users berthe2e1 and berthe2e2, created when
// missing), TigerVNC (tigervnc-standalone-server), openbox and xterm, and
// for the browser test Chromium; without root or Xvnc the whole package is
// skipped with a message, without Chromium the browser test is. -short
// skips the browser test only.
//
// Each test starts its own broker (SQLite in a temporary working path, both
// connectors on 127.0.0.1 with ports the broker picks) and agent
// (broker_update_interval = 2, web gateway on a free loopback port), and
// deletes every session it created before it stops them:
//
//	go test ./internal/e2e/                       # about a minute
//	go test -run '^$' -bench . ./internal/e2e/    # create-to-READY and idle agent numbers
package e2e
