#!/usr/bin/env bash
# make vulncheck: govulncheck over every package of the module, against a Go
# vulnerability database built here from the golang.org/x/vulndb module (the
# public database, vuln.go.dev, is not reachable from every build machine).
# The database is built once per vulndb version into the cache directory
# (about 3 minutes) and reused. Exits non-zero when a vulnerability is
# reachable from berth's code.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH=/usr/local/go/bin:$PATH
export GOTOOLCHAIN=${GOTOOLCHAIN:-go1.27.3}
GO=${GO:-go}
VULNDB_VERSION=${VULNDB_VERSION:-v0.0.0-20261105234957-e22db6528018}
GOVULNCHECK_VERSION=${GOVULNCHECK_VERSION:-v1.9.0}
cache=${XDG_CACHE_HOME:-$HOME/.cache}/berth
db=$cache/vulndb-$VULNDB_VERSION

if [ ! -f "$db/index/db.json" ]; then
  echo "vulncheck: building the vulnerability database from golang.org/x/vulndb@$VULNDB_VERSION into $db"
  src=$($GO mod download -json "golang.org/x/vulndb@$VULNDB_VERSION" | sed -n 's/^\t"Dir": "\(.*\)",$/\1/p')
  [ -d "$src" ] || { echo "vulncheck: cannot download golang.org/x/vulndb@$VULNDB_VERSION" >&2; exit 1; }
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  # gendb reads a git repository: make one of the module's files.
  cp -r "$src" "$work/vulndb"
  chmod -R u+w "$work/vulndb"
  git -C "$work/vulndb" init -q
  git -C "$work/vulndb" add -A
  git -C "$work/vulndb" -c user.name=berth -c user.email=berth@localhost commit -qm "golang.org/x/vulndb@$VULNDB_VERSION"
  rm -rf "$db.tmp" && mkdir -p "$cache"
  (cd "$work/vulndb" && $GO run ./cmd/gendb -repo . -out "$db.tmp")
  mv "$db.tmp" "$db"
fi
echo "vulncheck: govulncheck@$GOVULNCHECK_VERSION, $($GO version), database golang.org/x/vulndb@$VULNDB_VERSION"
$GO run "golang.org/x/vuln/cmd/govulncheck@$GOVULNCHECK_VERSION" -db "file://$db" ./...
