#!/usr/bin/env bash
# Shows what the local control plane is running: each component's pid,
# whether it is alive, its ports and health, then the server version and the
# nodes (the real node's pods and network too). Exits non-zero unless
# everything is up and healthy.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cluster/lib.sh
source "$here/lib.sh"

main() {
  load_ports
  if [[ ! -d $STATE_DIR ]]; then
    log "not running (no $STATE_DIR); start it with: make cluster-up"
    exit 1
  fi
  local ok=0 c pid state health ports p listening
  printf '%-24s %-8s %-6s %-14s %-8s %s\n' COMPONENT PID STATE PORTS HEALTH LOG
  for c in "${COMPONENTS[@]}"; do
    state=alive
    if ! pid=$(component_pid "$c"); then
      # Not running (or the pid now belongs to some other program).
      state=dead
      pid=$(cat "$(pid_file "$c")" 2>/dev/null || echo -)
      ok=1
    fi
    health=fail
    if probe "$c"; then health=ok; else ok=1; fi
    ports=
    for p in $(component_ports "$c"); do
      listening=$([[ -n $(port_holder "$p") ]] && echo "" || echo "(closed)")
      ports+="$p$listening "
    done
    printf '%-24s %-8s %-6s %-14s %-8s %s\n' "$c" "$pid" "$state" "$ports" "$health" "$(log_file "$c")"
  done
  echo
  if probe kube-apiserver; then
    echo "Kubernetes $(server_version) at https://127.0.0.1:$APISERVER_PORT"
    echo "KUBECONFIG=$STATE_DIR/kubeconfig"
    echo
    k get nodes -o wide -L type || ok=1
    echo
    echo "real node $NODE_NAME: bridge $NODE_BRIDGE $POD_GATEWAY_CIDR (pods $POD_SUBNET), containerd $CONTAINERD_SOCK"
    k get pods -A -o wide --field-selector "spec.nodeName=$NODE_NAME" 2>/dev/null || true
  else
    echo "the apiserver is not answering; see $(log_file kube-apiserver)"
  fi
  return "$ok"
}

main "$@"
