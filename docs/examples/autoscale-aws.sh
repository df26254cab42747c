#!/usr/bin/env bash
# autoscale-aws.sh: an example autoscaler acting on berth's scaling signals
# (docs/autoscaling.md) with the aws CLI and EC2 Auto Scaling groups.
#
# Each pass reads GET /berth/v1/capacity and:
#   - scale out: for the classes with a shortfall, grouped by DCV GL (one
#     Auto Scaling group each), raises the group's desired capacity by
#     ceil(Count / SESSIONS_PER_SERVER), less the instances already launching,
#     at most MAX_STEP at a time and at most the group's MaxSize;
#   - scale in: each idle server that reported an EC2 instance ID is closed
#     in berth first (POST /closeServers without Force: the broker refuses if
#     a session landed meanwhile, and places nothing more on it), then
#     terminated with the group's desired capacity decremented, as long as
#     the group stays at or above its MinSize.
#
# An example to read and adapt, not a product: try it with DRY_RUN=1 first.
#
# Environment:
#   BERTH_BROKER_URL     the broker, e.g. https://broker.example.com:8443
#   BERTH_TOKEN          an access token, or
#   BERTH_CLIENT_ID, BERTH_CLIENT_SECRET  an API client's credentials
#                        (berth-broker register-api-client); the token comes
#                        from $BERTH_BROKER_URL/oauth2/token
#   ASG_DEFAULT          the Auto Scaling group of classes without DCV GL
#   ASG_GL               the group of DCV GL classes (default: ASG_DEFAULT)
#   SESSIONS_PER_SERVER  sessions one new server takes (default 4)
#   MAX_STEP             most instances added to a group per pass (default 5)
#   INTERVAL             seconds between passes (default 60)
#   DRY_RUN=1            print the aws commands that change something
#   CURL_CA_BUNDLE       curl's CA bundle, e.g. the broker's CA
#
# Usage: autoscale-aws.sh [--once]
set -euo pipefail

: "${BERTH_BROKER_URL:?set BERTH_BROKER_URL}"
: "${ASG_DEFAULT:?set ASG_DEFAULT}"
ASG_GL=${ASG_GL:-$ASG_DEFAULT}
SESSIONS_PER_SERVER=${SESSIONS_PER_SERVER:-4}
MAX_STEP=${MAX_STEP:-5}
INTERVAL=${INTERVAL:-60}

log() { printf '%s autoscale: %s\n' "$(date -u +%FT%TZ)" "$*" >&2; }

# token prints a bearer token for the broker.
token() {
	if [[ -n ${BERTH_TOKEN:-} ]]; then
		printf '%s' "$BERTH_TOKEN"
		return
	fi
	curl -fsS -u "${BERTH_CLIENT_ID:?}:${BERTH_CLIENT_SECRET:?}" \
		-d grant_type=client_credentials "$BERTH_BROKER_URL/oauth2/token" | jq -er .access_token
}

# berth METHOD PATH [BODY] calls the broker's API and prints the answer.
berth() {
	local args=(-fsS -X "$1" -H "Authorization: Bearer $(token)")
	if [[ $# -gt 2 ]]; then
		args+=(-H 'Content-Type: application/json' --data "$3")
	fi
	curl "${args[@]}" "$BERTH_BROKER_URL$2"
}

# change runs an aws command that changes something (printed with DRY_RUN=1).
change() {
	if [[ ${DRY_RUN:-0} == 1 ]]; then
		printf 'DRY_RUN: aws %s\n' "$*"
		return
	fi
	aws "$@"
}

# The jq filters over the capacity answer (docs/autoscaling.md).
# needs: one line per group kind with a shortfall: "gl|default <count>".
JQ_NEEDS='.Shortfall | map(select(.Count > 0)) | group_by(.DcvGlEnabled)[]
	| "\(if .[0].DcvGlEnabled then "gl" else "default" end) \(map(.Count) | add)"'
# idle: one line per idle server on EC2: "<server id> <instance id>".
JQ_IDLE='.IdleServers[] | select((.Ec2InstanceId // "") != "") | "\(.Id) \(.Ec2InstanceId)"'

# group_state GROUP prints "desired max min in-service" of an Auto Scaling group.
group_state() {
	aws autoscaling describe-auto-scaling-groups --auto-scaling-group-names "$1" \
		--query 'AutoScalingGroups[0].[DesiredCapacity,MaxSize,MinSize,length(Instances[?LifecycleState==`InService`])]' \
		--output text
}

scale_out() { # kind count
	local group=$ASG_DEFAULT desired max min inservice
	[[ $1 == gl ]] && group=$ASG_GL
	read -r desired max min inservice < <(group_state "$group")
	local servers=$(( ($2 + SESSIONS_PER_SERVER - 1) / SESSIONS_PER_SERVER ))
	local launching=$(( desired - inservice ))
	local add=$(( servers - launching ))
	(( add > MAX_STEP )) && add=$MAX_STEP
	local target=$(( desired + add ))
	(( target > max )) && target=$max
	if (( target <= desired )); then
		log "group $group: shortfall of $2 sessions, $launching instances launching, at $desired of $max: nothing to add"
		return
	fi
	log "group $group: shortfall of $2 sessions: desired capacity $desired -> $target"
	change autoscaling set-desired-capacity --auto-scaling-group-name "$group" --desired-capacity "$target"
}

scale_in() { # server-id instance-id
	local group desired max min inservice
	group=$(aws autoscaling describe-auto-scaling-instances --instance-ids "$2" \
		--query 'AutoScalingInstances[0].AutoScalingGroupName' --output text)
	if [[ -z $group || $group == None ]]; then
		log "server $1 ($2) is in no Auto Scaling group: left alone"
		return
	fi
	read -r desired max min inservice < <(group_state "$group")
	if (( desired <= min )); then
		log "group $group at its minimum $min: idle server $1 kept"
		return
	fi
	if [[ ${DRY_RUN:-0} == 1 ]]; then
		printf 'DRY_RUN: close server %s\n' "$1"
	elif ! berth POST /closeServers "[{\"ServerId\":$(jq -Rn --arg id "$1" '$id')}]" |
		jq -e '.SuccessfulList | length == 1' >/dev/null; then
		log "server $1 could not be closed (a session landed?): kept"
		return
	fi
	log "group $group: terminating idle server $1 ($2)"
	change autoscaling terminate-instance-in-auto-scaling-group --instance-id "$2" --should-decrement-desired-capacity
}

pass() {
	local capacity kind count id instance
	capacity=$(berth GET /berth/v1/capacity)
	while read -r kind count; do
		scale_out "$kind" "$count"
	done < <(jq -r "$JQ_NEEDS" <<<"$capacity")
	while read -r id instance; do
		scale_in "$id" "$instance"
	done < <(jq -r "$JQ_IDLE" <<<"$capacity")
}

if [[ ${1:-} == --once ]]; then
	pass
	exit
fi
while :; do
	pass || log "pass failed"
	sleep "$INTERVAL"
done
