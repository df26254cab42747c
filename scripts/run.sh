#!/usr/bin/env bash
# make run: the quick start. As root on Debian 12 it installs the desktop
# packages if missing (TigerVNC, noVNC and a light XFCE desktop), starts a
# broker on embedded SQLite and a local agent with the vnc driver, registers an
# API client, creates a demo user and a session (the host's desktop, XFCE,
# with a terminal open and the user's home as its storage root), and prints
# the session's browser URL. Ctrl-C deletes the session and stops everything.
# State lives in ./run (BERTH_RUN_DIR).
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "make run needs root: the agent starts desktops as local users" >&2; exit 1; }

pkgs="tigervnc-standalone-server tigervnc-tools openbox xterm novnc xauth x11-utils"
# XFCE's core, without recommends: session manager, window manager, panel
# (with its applications menu), desktop, terminal, settings daemon, a session
# bus and an icon theme and font (about 45 MB).
pkgs="$pkgs xfce4-session xfwm4 xfce4-panel xfdesktop4 xfce4-terminal xfce4-settings xfconf dbus-x11 adwaita-icon-theme fonts-dejavu-core"
missing=$(for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || echo "$p"; done)
if [ -n "$missing" ]; then
  echo "Installing: $missing"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Everything written below (logs, configuration, credentials) is for root's
# eyes only.
umask 077
state=$(realpath -m "${BERTH_RUN_DIR:-$PWD/run}")
user=${BERTH_DEMO_USER:-berth-demo}
# Session users run the init and autorun programs as themselves, so their
# folders must be reachable by them: the checkout may sit in root's 0700 home,
# so they live under /var/lib (BERTH_RUN_FOLDERS), root-owned, world-readable.
folders=$(realpath -m "${BERTH_RUN_FOLDERS:-/var/lib/berth-quickstart}")
mkdir -p "$state/agent/tags"
install -d -m 755 "$folders" "$folders/init" "$folders/autorun"
# The session's autorun program: a terminal on the new desktop.
cat >"$folders/autorun/terminal.sh" <<'SH'
#!/bin/sh
# Opens a terminal on the new desktop (berth quick start).
exec x-terminal-emulator
SH
chmod 755 "$folders/autorun/terminal.sh"
cat >"$state/broker.properties" <<CONF
# berth quick-start broker; every key is described in docs/config.md
session-manager-working-path = $state/broker
client-to-broker-connector-https-port = 8443
agent-to-broker-connector-https-port = 8445
log-format = text
CONF
cat >"$state/agent.conf" <<CONF
# berth quick-start agent; every key is described in docs/agent-config.md
version = '0.1'
[agent]
broker_host = 'localhost'
broker_port = 8445
ca_file = '$state/broker/ca.pem'
software_statement_path = '$state/broker/agent-software-statement'
driver = 'vnc'
state_dir = '$state/agent'
init_folder = '$folders/init'
autorun_folder = '$folders/autorun'
tags_folder = '$state/agent/tags'
broker_update_interval = 10
[vnc]
web_port = 8444
[log]
level = 'info'
CONF

pids=()
session=""
cleanup() {
  trap - EXIT INT TERM
  if [ -n "$session" ]; then
    echo "Deleting session $session"
    ./bin/berth "${cli[@]}" delete-session --session-id "$session" --owner "$user" >/dev/null || true
    for _ in $(seq 50); do
      ./bin/berth "${cli[@]}" describe-sessions --session-ids "$session" 2>/dev/null | grep -q '"State": "DELETED"' && break
      sleep 0.2
    done
  fi
  for ((i=${#pids[@]}-1; i>=0; i--)); do kill "${pids[i]}" 2>/dev/null || true; wait "${pids[i]}" 2>/dev/null || true; done
  echo "Stopped."
}
trap cleanup EXIT INT TERM

# Own process groups: Ctrl-C reaches only this script, which then cleans up.
setsid ./bin/berth-broker --config "$state/broker.properties" 2>"$state/broker.log" &
pids+=($!)
for _ in $(seq 100); do [ -f "$state/broker/ca.pem" ] && curl -fsS --cacert "$state/broker/ca.pem" https://localhost:8443/health >/dev/null 2>&1 && break; sleep 0.1; done
setsid ./bin/berth-agent --config "$state/agent.conf" 2>"$state/agent.log" &
pids+=($!)

creds=$(./bin/berth-broker register-api-client --config "$state/broker.properties" --client-name quickstart)
export BERTH_CLIENT_ID=$(sed -n 's/^client-id: //p' <<<"$creds")
export BERTH_CLIENT_PASSWORD=$(sed -n 's/^client-password: //p' <<<"$creds")
cli=(--broker-url https://localhost:8443 --ca-bundle "$state/broker/ca.pem")

id "$user" >/dev/null 2>&1 || useradd -m -s /bin/bash "$user"
for _ in $(seq 100); do
  ./bin/berth "${cli[@]}" describe-servers 2>/dev/null | grep -q '"Availability": "AVAILABLE"' && break; sleep 0.2
done
out=$(./bin/berth "${cli[@]}" create-session --name demo --owner "$user" --type Virtual \
  --autorun-file terminal.sh --storage-root %home% --wait)
session=$(sed -n 's/.*"Id": "\([0-9a-f-]\{36\}\)".*/\1/p' <<<"$out" | head -1)
url=$(./bin/berth "${cli[@]}" get-session-connection-data --session-id "$session" --user "$user" --url)

echo "Broker:  https://localhost:8443 (CA $state/broker/ca.pem; logs in $state/*.log)"
echo "Client:  BERTH_CLIENT_ID=$BERTH_CLIENT_ID (password in $state/client.env)"
printf 'BERTH_CLIENT_ID=%s\nBERTH_CLIENT_PASSWORD=%s\n' "$BERTH_CLIENT_ID" "$BERTH_CLIENT_PASSWORD" >"$state/client.env"
chmod 600 "$state/client.env"
echo "Session: $session (owner $user)"
echo "URL: $url"
echo "Portal: $(./bin/berth-broker portal-link --config "$state/broker.properties" --user "$user" --expires-in 15m --base-url https://localhost:8443) (single use, 15 min; accept the broker's certificate)"
echo "Open the URL in a browser. To avoid the certificate warning, trust $state/broker/gateway-ca.pem in it"
echo "  (the web gateway CA, which may certify only your fleet's names; never trust ca.pem in a browser). Ctrl-C stops everything."
wait "${pids[0]}"
