#!/bin/sh
# postinst of berth-agent: the agent's state directory and the unit (enabled
# on a first install, not started: set broker_host and the rest in
# /etc/berth/agent.conf first). The agent runs as root: no user to create.
set -e

case "$1" in
configure)
	# /var/lib/berth belongs to berth-broker when both are installed.
	if [ ! -d /var/lib/berth ]; then
		install -d -m 0755 /var/lib/berth
	fi
	install -d -m 0700 /var/lib/berth/agent
	if [ -d /run/systemd/system ]; then
		systemctl daemon-reload
		if [ -z "$2" ]; then
			systemctl enable berth-agent.service
		else
			# Sessions survive the restart (KillMode=process) and are re-adopted.
			systemctl try-restart berth-agent.service
		fi
	fi
	;;
esac
exit 0
