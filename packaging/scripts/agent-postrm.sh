#!/bin/sh
# postrm of berth-agent: on purge only, remove the agent's state
# (/var/lib/berth/agent: server-id, credentials, session records).
set -e

case "$1" in
purge)
	rm -rf /var/lib/berth/agent /run/berth-agent
	rmdir /var/lib/berth 2>/dev/null || true
	;;
esac
if [ "$1" = remove ] || [ "$1" = purge ]; then
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
	fi
fi
exit 0
