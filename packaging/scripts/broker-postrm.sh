#!/bin/sh
# postrm of berth-broker: on purge only, remove the broker's state (its
# working path /var/lib/berth: database, keys, CA), its logs and the berth
# user and group. /var/lib/berth/agent belongs to berth-agent and stays.
set -e

case "$1" in
purge)
	if [ -d /var/lib/berth ]; then
		find /var/lib/berth -mindepth 1 -maxdepth 1 ! -name agent -exec rm -rf {} +
		if ! rmdir /var/lib/berth 2>/dev/null; then
			chown root:root /var/lib/berth
			chmod 0755 /var/lib/berth
		fi
	fi
	rm -rf /var/log/berth
	if getent passwd berth >/dev/null; then
		userdel berth || echo "berth-broker: could not remove the user berth" >&2
	fi
	if getent group berth >/dev/null; then
		groupdel berth || echo "berth-broker: could not remove the group berth" >&2
	fi
	;;
esac
if [ "$1" = remove ] || [ "$1" = purge ]; then
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload || true
	fi
fi
exit 0
