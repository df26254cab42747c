#!/bin/sh
# prerm of berth-broker: stop and disable the service when the package is
# removed (an upgrade restarts it in postinst instead).
set -e

case "$1" in
remove)
	if [ -d /run/systemd/system ]; then
		systemctl stop berth-broker.service || true
	fi
	if command -v systemctl >/dev/null; then
		systemctl disable berth-broker.service >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
