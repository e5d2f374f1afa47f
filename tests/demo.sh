#!/usr/bin/env bash
# `make demo`: coreforge end to end on the local environment. Starts the local control
# plane (building it once), installs the CRDs, runs the controller, applies a CoreBuild
# and a release, and shows the release move through its lifecycle. Everything stays up
# afterwards for exploring; `make demo-stop` stops the controller and the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
state=target/demo
mkdir -p "$state"

tests/deps.sh
tests/cluster/up.sh
export KUBECONFIG=$PWD/target/cluster/kubeconfig
kubectl=target/cluster/bin/kubectl

echo "== building coreforge"
cargo build --locked --quiet
echo "== installing the CRDs"
$kubectl apply --server-side -f crds/ >/dev/null
$kubectl wait --for=condition=Established --timeout=60s crd/corebuilds.coreforge.dev crd/imagereleases.coreforge.dev >/dev/null

if [[ -f $state/controller.pid ]] && kill -0 "$(cat "$state/controller.pid")" 2>/dev/null; then
  kill "$(cat "$state/controller.pid")"
fi
echo "== starting the controller (log: $state/controller.log)"
target/debug/coreforge controller >"$state/controller.log" 2>&1 &
echo $! >"$state/controller.pid"

ns=coreforge-demo
$kubectl create namespace "$ns" --dry-run=client -o yaml | $kubectl apply -f - >/dev/null
$kubectl -n "$ns" delete imagerelease --all --wait=true >/dev/null
echo "== applying tests/demo/ in namespace $ns"
$kubectl -n "$ns" apply -f tests/demo/corebuild.yaml -f tests/demo/releases.yaml

echo "== watching the release (Pending → Building → Testing → Verified)"
$kubectl -n "$ns" get ir --watch &
watcher=$!
$kubectl -n "$ns" wait ir/demo-debian-12-7-0 --for=condition=Ready --timeout=120s >/dev/null
kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true

echo
echo "== kubectl get coreforge -n $ns"
$kubectl -n "$ns" get coreforge
echo
echo "== kubectl describe ir demo-debian-12-7-0 -n $ns (events)"
$kubectl -n "$ns" describe ir demo-debian-12-7-0 | sed -n '/^Events:/,$p'
cat <<MSG

The demo is still running. Explore it with:
  export KUBECONFIG=$KUBECONFIG
  kubectl -n $ns get coreforge
  kubectl -n $ns get ir demo-debian-12-7-0 -o yaml
Stop it with: make demo-stop
MSG
