#!/usr/bin/env bash
# `make demo`: coreforge end to end on the local environment, for real. Starts the local
# control plane, registry and real node (building them once), installs the CRDs, runs
# the controller, applies a CoreBuild and a release, and shows the release built by
# buildah in a pod on the real node, tested inside the exact image it built, published
# into the catalog, and pulled back by the node's containerd. Everything stays up
# afterwards for exploring; `make demo-stop` stops the controller and the cluster.
set -euo pipefail
cd "$(dirname "$0")/.."
state=target/demo
mkdir -p "$state"

tests/deps.sh
tests/cluster/up.sh
export KUBECONFIG=$PWD/target/cluster/kubeconfig
kubectl=target/cluster/bin/kubectl
# The real node's settings and the images the environment made (tests/cluster/README.md).
# shellcheck source=/dev/null
source target/cluster/node.env
# shellcheck source=/dev/null
source target/cluster/images.env

echo "== building coreforge"
cargo build --locked --quiet
echo "== installing the CRDs"
$kubectl apply --server-side -f crds/ >/dev/null
$kubectl wait --for=condition=Established --timeout=60s crd/corebuilds.coreforge.dev crd/imagereleases.coreforge.dev >/dev/null

if [[ -f $state/controller.pid ]] && kill -0 "$(cat "$state/controller.pid")" 2>/dev/null; then
  kill "$(cat "$state/controller.pid")"
fi
ns=coreforge-demo
# Only the demo's namespace: the tests' own controllers may share this cluster. Its
# default builder is the buildah image the environment built from Debian's packages.
echo "== starting the controller for namespace $ns (log: $state/controller.log)"
target/debug/coreforge controller --namespace "$ns" --http-addr 127.0.0.1:18080 \
  --builder-image "$BUILDER_IMAGE" >"$state/controller.log" 2>&1 &
echo $! >"$state/controller.pid"

$kubectl create namespace "$ns" --dry-run=client -o yaml | $kubectl apply -f - >/dev/null
$kubectl -n "$ns" delete imagerelease --all --wait=true >/dev/null
# A rebuild makes a new digest (buildah stamps the time into the image), and a published
# version is never overwritten: a new run starts from an empty catalog. Deleting a
# manifest deletes every tag on it.
manifest_digest() {
  curl -fsSI -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$POD_REGISTRY/v2/$1/manifests/$2" 2>/dev/null |
    tr -d '\r' | sed -n 's/^[Dd]ocker-[Cc]ontent-[Dd]igest: //p'
}
for repo in demo/core/debian demo/staging/debian; do
  tags=$(curl -fsS "http://$POD_REGISTRY/v2/$repo/tags/list" 2>/dev/null | grep -o '"tags":\[[^]]*\]' | grep -o '"[^"]*"' | tr -d '"' | grep -vx tags || true)
  for tag in $tags; do
    digest=$(manifest_digest "$repo" "$tag" || true)
    [[ -z $digest ]] || curl -fsS -X DELETE "http://$POD_REGISTRY/v2/$repo/manifests/$digest" >/dev/null 2>&1 || true
  done
done

echo "== applying tests/demo/ in namespace $ns (base $DEBIAN_IMAGE)"
sed -e "s|BASE_IMAGE|$DEBIAN_IMAGE|" -e "s|REGISTRY|$POD_REGISTRY|g" tests/demo/corebuild.yaml | $kubectl -n "$ns" apply -f -
$kubectl -n "$ns" apply -f tests/demo/releases.yaml

release=demo-debian-12-7-0
echo "== watching the release (Pending → Building → Testing → Verified → Published)"
$kubectl -n "$ns" get ir --watch &
watcher=$!
trap 'kill "$watcher" 2>/dev/null || true' EXIT
# Ready, or Stalled (the release needs a person): whichever comes first ends the wait.
condition() { $kubectl -n "$ns" get ir "$release" -o jsonpath="{.status.conditions[?(@.type==\"$1\")].status}"; }
for ((i = 0; i < 600; i++)); do
  [[ $(condition Ready) == True || $(condition Stalled) == True ]] && break
  sleep 1
done
kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true
if [[ $(condition Ready) != True ]]; then
  echo >&2
  echo "the release did not become Ready:" >&2
  $kubectl -n "$ns" get ir "$release" \
    -o jsonpath='{range .status.conditions[?(@.type=="Ready")]}  {.reason}: {.message}{"\n"}{end}' >&2
  echo "controller log: $state/controller.log" >&2
  exit 1
fi
$kubectl -n "$ns" wait cb/demo-debian --for=jsonpath='{.status.latestVersion}'=12.7.0 --timeout=60s >/dev/null
digest=$($kubectl -n "$ns" get ir "$release" -o jsonpath='{.status.digest}')

echo
echo "== the build, for real: the end of its log (kubectl logs job/$release-a1-build)"
$kubectl -n "$ns" logs "job/$release-a1-build" | tail -n 12 | sed 's/^/  /'
echo
echo "== the contract, observed inside the built image (status.checks)"
$kubectl -n "$ns" get ir "$release" \
  -o jsonpath='{range .status.checks[*]}  {.name}{"\t"}{.passed}{"\t"}{.observed}{"\n"}{end}'
echo
echo "== the catalog: version tag and channels, straight from the registry"
for tag in 12.7.0 12 latest; do
  printf '  %s/demo/core/debian:%-8s -> %s\n' "$POD_REGISTRY" "$tag" \
    "$(manifest_digest demo/core/debian "$tag")"
done
echo
echo "== pulled back from the catalog by the node's containerd (ctr images pull)"
# (ctr wants the socket's absolute path: a relative one reads as a URL's authority.)
ctr_() { target/cluster/bin/ctr --address "$PWD/target/cluster/node/containerd.sock" --namespace k8s.io "$@"; }
ctr_ images pull --plain-http "$POD_REGISTRY/demo/core/debian:12.7.0" >/dev/null
pulled=$(ctr_ images ls \
  "name==$POD_REGISTRY/demo/core/debian:12.7.0" | awk 'NR == 2 { print $3 }')
echo "  $POD_REGISTRY/demo/core/debian:12.7.0 -> $pulled"
if [[ $pulled != "$digest" ]]; then
  echo "containerd pulled $pulled, but the release recorded $digest" >&2
  exit 1
fi
echo
echo "== kubectl get coreforge -n $ns"
$kubectl -n "$ns" get coreforge
echo
echo "== the catalog consumers read (coreforge catalog; the page: http://127.0.0.1:18080/catalog)"
target/debug/coreforge catalog -n "$ns"
echo "== kubectl describe ir $release -n $ns (events)"
$kubectl -n "$ns" describe ir "$release" | sed -n '/^Events:/,$p'
cat <<MSG

The demo is still running; its controller watches namespace $ns. Explore it with:
  export KUBECONFIG=$KUBECONFIG
  kubectl -n $ns get coreforge
  kubectl -n $ns get ir $release -o yaml
  kubectl -n $ns logs job/$release-a1-build
  target/debug/coreforge catalog -n $ns          # or open http://127.0.0.1:18080/catalog
  target/debug/coreforge notes $release -n $ns
Stop it with: make demo-stop
MSG
