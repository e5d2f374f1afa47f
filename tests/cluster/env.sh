#!/usr/bin/env bash
# Prints the shell line that points kubectl (and kube-rs) at the local control
# plane:  eval "$(tests/cluster/env.sh)"   or   eval "$(make -s cluster-env)"
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cluster/lib.sh
source "$here/lib.sh"

if [[ ! -f $STATE_DIR/kubeconfig ]]; then
  log "note: $STATE_DIR/kubeconfig does not exist yet; start the cluster with: make cluster-up"
fi
printf 'export KUBECONFIG=%q\n' "$STATE_DIR/kubeconfig"
