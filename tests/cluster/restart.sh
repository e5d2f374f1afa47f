#!/usr/bin/env bash
# Restarts one component of the running local cluster with the same command line,
# for fault tests (the API server restarted mid-flight): stops it (SIGTERM, then
# SIGKILL), keeps it down for DOWN_SECONDS, starts it again with its log appended
# to, and waits until it is healthy. Its state (etcd's data, the registries'
# storage) is kept; nothing else is touched.
#
# Usage: tests/cluster/restart.sh NAME [DOWN_SECONDS]
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cluster/lib.sh
source "$here/lib.sh"
load_ports

name=${1:?usage: restart.sh NAME [DOWN_SECONDS]}
down=${2:-0}
pid=$(component_pid "$name") || die "$name is not running in $STATE_DIR"
mapfile -d '' argv <"/proc/$pid/cmdline"
((${#argv[@]})) || die "cannot read the command line of $name (pid $pid)"

COREFORGE_STOP_GRACE=${COREFORGE_STOP_GRACE:-3} stop_pids "$pid"
log "$name stopped; down for ${down}s"
sleep "$down"
setsid "${argv[@]}" >>"$(log_file "$name")" 2>&1 </dev/null 9>&- &
echo $! >"$(pid_file "$name")"
deadline=$((SECONDS + 60))
until probe "$name"; do
  alive "$(<"$(pid_file "$name")")" || { log_tail "$name" 40; die "$name exited during its restart"; }
  ((SECONDS < deadline)) || { log_tail "$name" 40; die "$name was not healthy 60s after its restart"; }
  sleep 0.3
done
log "$name restarted"
