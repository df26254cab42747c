#!/usr/bin/env bash
# The whole test suite (make test; CI runs it through .ci/run):
#   1. as root, install the Debian packages the tests use if any is missing:
#      TigerVNC, openbox, xterm, noVNC and Chromium for real desktops and the
#      browser tests, XFCE's core (make run's desktop) for the desktop tests,
#      PostgreSQL for the PostgreSQL store and the cluster tests;
#   2. find a PostgreSQL for the tests: BERTH_TEST_PG_DSN if set, else the
#      local server at 127.0.0.1:5432 (trust auth, database test) if it
#      answers, else a private throw-away server started here and stopped on
#      exit;
#   3. go vet, the gofmt check and go test ./...
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
# go.mod asks for Go 1.27.3; the go command fetches it from the module proxy.
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3}
GO=${GO:-go}

pkgs="git make tigervnc-standalone-server tigervnc-tools openbox xterm novnc xauth x11-utils x11-xserver-utils xclip xdotool chromium postgresql postgresql-client gcc libc6-dev"
# The desktop make run installs (scripts/run.sh): TestE2E_Desktop and the vnc
# driver's desktop tests start it.
pkgs="$pkgs xfce4-session xfwm4 xfce4-panel xfdesktop4 xfce4-terminal xfce4-settings xfconf dbus-x11 adwaita-icon-theme fonts-dejavu-core"
if [ "$(id -u)" = 0 ] && command -v dpkg >/dev/null; then
  missing=$(for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
  if [ -n "$missing" ]; then
    echo "test.sh: installing" $missing
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
  fi
fi

pg_answers() { psql "$1" -Atqc 'SELECT 1' >/dev/null 2>&1; }
if [ -z "${BERTH_TEST_PG_DSN:-}" ]; then
  local_dsn='postgres://postgres@127.0.0.1:5432/test?sslmode=disable'
  if ! pg_answers "$local_dsn" && [ "$(id -u)" = 0 ] && command -v pg_ctlcluster >/dev/null; then
    # The Debian cluster may just be stopped (a fresh boot of a CI machine).
    for v in $(ls /etc/postgresql 2>/dev/null); do
      pg_ctlcluster --skip-systemctl-redirect "$v" main start 2>/dev/null || true
    done
    for _ in $(seq 1 20); do pg_answers "$local_dsn" && break; sleep 0.5; done
  fi
  if pg_answers "$local_dsn"; then
    export BERTH_TEST_PG_DSN="$local_dsn"
  else
    # A private server: initdb refuses root, so it runs as postgres then.
    bin=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)
    if [ -n "$bin" ]; then
      dir=$(mktemp -d /tmp/berth-test-pg.XXXXXX)
      as=()
      if [ "$(id -u)" = 0 ]; then chown postgres: "$dir"; as=(runuser -u postgres --); fi
      port=$(( 40000 + RANDOM % 20000 ))
      "${as[@]}" "$bin/initdb" -D "$dir/data" -U postgres --auth=trust --no-sync -E UTF8 >/dev/null
      "${as[@]}" "$bin/pg_ctl" -D "$dir/data" -l "$dir/log" -w -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=400" start >/dev/null
      trap '"${as[@]}" "$bin/pg_ctl" -D "$dir/data" -m immediate stop >/dev/null 2>&1; rm -rf "$dir"' EXIT
      psql "postgres://postgres@127.0.0.1:$port/postgres?sslmode=disable" -qc 'CREATE DATABASE test' >/dev/null
      export BERTH_TEST_PG_DSN="postgres://postgres@127.0.0.1:$port/test?sslmode=disable"
      echo "test.sh: started a private PostgreSQL for the tests on port $port"
    else
      echo "test.sh: no PostgreSQL found; the PostgreSQL tests will be skipped (set BERTH_TEST_PG_DSN)" >&2
    fi
  fi
fi
echo "test.sh: PostgreSQL tests use ${BERTH_TEST_PG_DSN:-(none)}"

$GO vet ./...
unformatted=$(gofmt -l $(git ls-files '*.go'))
if [ -n "$unformatted" ]; then echo "gofmt needed: $unformatted"; exit 1; fi
$GO test -count=1 -timeout 25m ./...
