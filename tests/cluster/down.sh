#!/usr/bin/env bash
# Stops the local control plane started by up.sh and removes its state
# ($STATE_DIR, target/cluster by default). Safe to run when nothing is up.
# The real node goes completely: its containers, mounts, network namespaces,
# bridge, iptables chains and cgroups; the sysctls it changed are restored
# (node_clean_host in node.sh). Afterwards it checks that no process, mount,
# bridge, chain or cgroup of ours is left (and fails if one is) and warns
# when one of our ports is still listening.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cluster/lib.sh
source "$here/lib.sh"

main() {
  with_lock
  load_ports # the ports the cluster was started with, before the state goes
  stop_cluster

  local leftovers=0 pids c p holder left
  mapfile -t pids < <(our_processes)
  if ((${#pids[@]})); then
    log "error: processes of this cluster are still running: ${pids[*]}"
    leftovers=1
  fi
  mapfile -t left < <(node_leftovers)
  if ((${#left[@]})); then
    log "error: the real node left these behind:"
    printf '  %s\n' "${left[@]}" >&2
    leftovers=1
  fi
  ((leftovers == 0)) || die "could not stop and clean everything of the cluster (see above); $STATE_DIR is kept"
  remove_state_dir

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
  log "stopped; state removed ($STATE_DIR)"
}

main "$@"
