#!/bin/sh
# prerm of berth-agent: stop and disable the service when the package is
# removed. Running sessions are left alone (KillMode=process).
set -e

case "$1" in
remove)
	if [ -d /run/systemd/system ]; then
		systemctl stop berth-agent.service || true
	fi
	if command -v systemctl >/dev/null; then
		systemctl disable berth-agent.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
