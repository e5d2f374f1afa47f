#!/usr/bin/env bash
# `make demo`: coreforge end to end on the local environment. Starts the local control
# plane and registry (building them once), installs the CRDs, runs the controller,
# applies a CoreBuild and a release, and shows the release move through its lifecycle
# into the catalog. Everything stays up
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
ns=coreforge-demo
# Only the demo's namespace: the tests' own controllers may share this cluster.
echo "== starting the controller for namespace $ns (log: $state/controller.log)"
target/debug/coreforge controller --namespace "$ns" --http-addr 127.0.0.1:18080 >"$state/controller.log" 2>&1 &
echo $! >"$state/controller.pid"

echo "== pushing a small real image to staging (what the simulated build reports)"
store=$state/buildah
bah() { buildah --storage-driver vfs --root "$store/root" --runroot "$store/run" "$@"; }
ctr=$(bah from scratch)
bah copy "$ctr" /bin/busybox /bin/busybox >/dev/null
bah run --isolation chroot "$ctr" -- /bin/busybox --install -s /bin
# A fixed timestamp makes the image, and so its digest, the same on every run: a second
# `make demo` publishes the same digest again instead of colliding with the version tag.
bah commit -q --timestamp 0 "$ctr" coreforge-demo >/dev/null
bah rm "$ctr" >/dev/null
bah push -q --tls-verify=false --digestfile "$state/digest" coreforge-demo docker://127.0.0.1:15000/demo/library/busybox:1
bah push -q --tls-verify=false coreforge-demo docker://127.0.0.1:15000/demo/staging/debian:demo
digest=$(cat "$state/digest")

$kubectl create namespace "$ns" --dry-run=client -o yaml | $kubectl apply -f - >/dev/null
$kubectl -n "$ns" delete imagerelease --all --wait=true >/dev/null
echo "== applying tests/demo/ in namespace $ns"
sed "s/DIGEST/$digest/g" tests/demo/corebuild.yaml | $kubectl -n "$ns" apply -f -
$kubectl -n "$ns" apply -f tests/demo/releases.yaml

echo "== watching the release (Pending → Building → Testing → Verified → Published)"
$kubectl -n "$ns" get ir --watch &
watcher=$!
trap 'kill "$watcher" 2>/dev/null || true' EXIT
# Ready, or Stalled (the release needs a person): whichever comes first ends the wait.
condition() { $kubectl -n "$ns" get ir demo-debian-12-7-0 -o jsonpath="{.status.conditions[?(@.type==\"$1\")].status}"; }
for ((i = 0; i < 120; i++)); do
  [[ $(condition Ready) == True || $(condition Stalled) == True ]] && break
  sleep 1
done
kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true
if [[ $(condition Ready) != True ]]; then
  echo >&2
  echo "the release did not become Ready:" >&2
  $kubectl -n "$ns" get ir demo-debian-12-7-0 \
    -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}  {.reason}: {.message}{"\n"}{end}' >&2
  echo "controller log: $state/controller.log" >&2
  exit 1
fi

$kubectl -n "$ns" wait cb/demo-debian --for=jsonpath='{.status.latestVersion}'=12.7.0 --timeout=60s >/dev/null
echo
echo "== the catalog: version tag and channels, straight from the registry"
for tag in 12.7.0 12 latest; do
  printf '  127.0.0.1:15000/demo/core/debian:%-8s -> %s\n' "$tag" \
    "$(curl -sI -H 'Accept: application/vnd.oci.image.manifest.v1+json' \
      "http://127.0.0.1:15000/v2/demo/core/debian/manifests/$tag" | tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p')"
done
echo
echo "== kubectl get coreforge -n $ns"
$kubectl -n "$ns" get coreforge
echo
echo "== kubectl describe ir demo-debian-12-7-0 -n $ns (events)"
$kubectl -n "$ns" describe ir demo-debian-12-7-0 | sed -n '/^Events:/,$p'
cat <<MSG

The demo is still running; its controller watches namespace $ns. Explore it with:
  export KUBECONFIG=$KUBECONFIG
  kubectl -n $ns get coreforge
  kubectl -n $ns get ir demo-debian-12-7-0 -o yaml
Stop it with: make demo-stop
MSG
