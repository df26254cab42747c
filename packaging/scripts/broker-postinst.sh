#!/bin/sh
# postinst of berth-broker: the berth system user and group, the broker's
# state and log directories, and the unit (enabled on a first install, not
# started: edit /etc/berth/broker.properties first).
set -e

case "$1" in
configure)
	if ! getent group berth >/dev/null; then
		groupadd --system berth
	fi
	if ! getent passwd berth >/dev/null; then
		useradd --system --gid berth --home-dir /var/lib/berth --no-create-home \
			--shell /usr/sbin/nologin --comment "berth broker" berth
	fi
	install -d -o berth -g berth -m 0750 /var/lib/berth /var/log/berth
	# The file may hold secrets (persistence-dsn): readable by the broker only,
	# unless the administrator chose its owner already.
	conf=/etc/berth/broker.properties
	if [ -f "$conf" ] && [ "$(stat -c %U:%G "$conf")" = root:root ]; then
		chgrp berth "$conf"
		chmod 0640 "$conf"
	fi
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload
		if [ -z "$2" ]; then
			systemctl enable berth-broker.service
		else
			systemctl try-restart berth-broker.service
		fi
	fi
	;;
esac
exit 0
