#!/usr/bin/env bash
# make run: start a broker on embedded SQLite in ./run/ and register an API client.
# (The local agent with the vnc driver joins this script with the agent issue.)
set -euo pipefail
cd "$(dirname "$0")/.."
state=${BERTH_RUN_DIR:-$PWD/run}
mkdir -p "$state"
conf=$state/broker.properties
if [ ! -f "$conf" ]; then
  cat >"$conf" <<CONF
# berth quick-start broker (see docs/config.md for every key)
session-manager-working-path = $state/broker
client-to-broker-connector-https-port = 8443
agent-to-broker-connector-https-port = 8445
log-format = text
CONF
fi
creds=$(./bin/berth-broker register-api-client --config "$conf" --client-name quickstart)
./bin/berth-broker --config "$conf" &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null' EXIT INT TERM
echo "Broker:      https://localhost:8443  (CA: $state/broker/ca.pem)"
echo "API client:  $creds" | sed 's/^/             /;1s/^ *//'
echo "Token:       curl --cacert $state/broker/ca.pem -u ID:PASSWORD -X POST 'https://localhost:8443/oauth2/token?grant_type=client_credentials'"
echo "Ctrl-C stops the broker."
wait $broker
