#!/usr/bin/env bash
# Stops the local control plane started by up.sh and removes its state
# ($STATE_DIR, target/cluster by default). Safe to run when nothing is up.
# Afterwards it checks that no process of ours is left and that none of our
# ports is still listening.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cluster/lib.sh
source "$here/lib.sh"

main() {
  with_lock
  load_ports # the ports the cluster was started with, before the state goes
  stop_cluster
  rm -rf "${STATE_DIR:?}"

  local leftovers=0 pids c p holder
  mapfile -t pids < <(our_processes)
  if ((${#pids[@]})); then
    log "error: processes of this cluster are still running: ${pids[*]}"
    leftovers=1
  fi
  for c in "${COMPONENTS[@]}"; do
    for p in $(component_ports "$c"); do
      holder=$(port_holder "$p")
      if [[ -n $holder ]]; then
        # After stop_cluster nothing of ours can hold it: someone else does,
        # and the next up.sh would fail; say so now.
        log "warning: port $p ($c) is in use by another program: $holder"
      fi
    done
  done
  ((leftovers == 0)) || die "could not stop every process of the cluster (see above)"
  log "stopped; state removed ($STATE_DIR)"
}

main "$@"
