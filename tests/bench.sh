#!/usr/bin/env bash
# `make bench`: coreforge at scale on the local environment, against a floor (the same
# Jobs run by a bare client), for N = 100 and 1000 releases over 10 CoreBuilds. Prints a
# Markdown table and saves it, with the raw numbers, in target/bench/. The driver is
# benches/scale/ (cargo bench: the release build), whose main.rs says how it measures.
#
#   BENCH_N="100 1000"       numbers of releases, one measurement each
#   BENCH_COREBUILDS=10      CoreBuilds the releases are spread over
#   BENCH_IDLE_SECONDS=60    the idle window after the last release is Published
#   BENCH_TIMEOUT_SECONDS    bound of each wait (default: 300 + 3 per release)
set -euo pipefail
cd "$(dirname "$0")/.."

export COREFORGE_CLUSTER_DIR=${COREFORGE_CLUSTER_DIR:-$PWD/target/cluster}
export KUBECONFIG=$COREFORGE_CLUSTER_DIR/kubeconfig
# Errors carry their message and causes; a backtrace would bury them.
export RUST_LIB_BACKTRACE=0
kubectl=$COREFORGE_CLUSTER_DIR/bin/kubectl

# An environment that answers is used as it is, whoever started it: up.sh replaces a
# cluster it judges stale, which would cut off everyone else using it.
if [[ -x $kubectl && -f $KUBECONFIG ]] && $kubectl get --raw /readyz >/dev/null 2>&1; then
  echo "== using the running local environment ($COREFORGE_CLUSTER_DIR)"
  $kubectl wait --for=condition=Ready node -l type=kwok --timeout=30s >/dev/null ||
    { echo "the simulated (kwok) nodes are not Ready: see tests/cluster/status.sh" >&2; exit 1; }
else
  tests/deps.sh
  tests/cluster/up.sh
fi

echo "== installing the CRDs"
$kubectl apply --server-side --force-conflicts --field-manager coreforge-tests -f crds/ >/dev/null
$kubectl wait --for=condition=Established --timeout=60s crd/corebuilds.coreforge.dev crd/imagereleases.coreforge.dev >/dev/null

echo "== building coreforge and the bench (release)"
cargo bench --locked --bench scale --no-run
cargo bench --locked --bench scale
