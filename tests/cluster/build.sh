#!/usr/bin/env bash
# Builds the local control plane from the upstream Go modules and caches the
# binaries outside the work tree. A component whose binaries are already in the
# cache is not rebuilt. Usage:
# build.sh [kubernetes|kubelet|etcd|kwok|helm|containerd|runc|gitops-check|cosign ...]
# (default: all but gitops-check and cosign). `gitops-check` prints the path of
# its binary; `cosign` prints nothing (it is $CACHE_DIR/cosign-$COSIGN_VERSION/bin/cosign).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cluster/lib.sh
source "$here/lib.sh"

need_go() {
  command -v go >/dev/null 2>&1 || die "Go is not installed (needed once, to build the cluster binaries). Install Go >= 1.24 and retry."
}

# build_module NAME VERSION GOMOD_BODY "PKG..." [LDFLAGS] [TAGS] [CGO]
# Creates a throwaway wrapper module, resolves it, builds the packages into
# $CACHE/NAME-VERSION/bin and writes a stamp only when every binary is there.
# Static (CGO_ENABLED=0) unless CGO is 1.
build_module() {
  local name=$1 version=$2 gomod=$3 pkgs=$4 ldflags=${5:-} tags=${6:-} cgo=${7:-0}
  local dest="$CACHE_DIR/$name-$version"
  if [[ -f "$dest/.complete" ]]; then
    log "$name $version: cached in $dest"
    return 0
  fi
  need_go
  log "$name $version: building (first time only; see README for the cost)"
  local work
  work=$(mktemp -d "${TMPDIR:-/tmp}/coreforge-build-$name.XXXXXX")
  printf '%s\n' "$gomod" >"$work/go.mod"
  printf 'package tools\n\nimport (\n' >"$work/tools.go"
  local p
  for p in $pkgs; do printf '\t_ "%s"\n' "$p" >>"$work/tools.go"; done
  printf ')\n' >>"$work/tools.go"
  sed -i '1i //go:build tools\n' "$work/tools.go"
  (
    cd "$work"
    export GOFLAGS=-mod=mod GOTOOLCHAIN=local CGO_ENABLED=$cgo
    go mod tidy -e >"$work/tidy.log" 2>&1 || { cat "$work/tidy.log" >&2; exit 1; }
    mkdir -p "$dest/bin.tmp"
    # shellcheck disable=SC2086
    go build -trimpath -tags "$tags" -ldflags "-s -w $ldflags" -o "$dest/bin.tmp/" $pkgs
  ) || { rm -rf "$work" "$dest/bin.tmp"; die "$name $version: the Go build failed (output above). Nothing was cached; fix the cause and run again."; }
  rm -rf "$work"
  rm -rf "${dest:?}/bin"
  mv "$dest/bin.tmp" "$dest/bin"
  touch "$dest/.complete"
  log "$name $version: built into $dest/bin"
}

# kubernetes_module: sets $k8s_gomod (a wrapper module requiring
# k8s.io/kubernetes at KUBERNETES_VERSION) and $k8s_ldflags (the version
# stamps), shared by the control plane and the kubelet.
kubernetes_module() {
  local v=$KUBERNETES_VERSION minor
  minor=$(cut -d. -f2 <<<"$v")
  local staging_v="v0.${v#v1.}"
  # The kubernetes module replaces its staging modules with local paths; a
  # consumer must replace each one with its published v0.X.Y twin. The list is
  # read from kubernetes' own go.mod so it never goes stale.
  need_go
  local modfile
  modfile=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@$v" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
  [[ -f "$modfile" ]] || die "could not download k8s.io/kubernetes@$v from the Go module proxy"
  local replaces
  replaces=$(sed -n 's#^\s*\(k8s.io/[a-z0-9-]*\) => ./staging/src/.*#\1#p' "$modfile" | sort -u |
    while read -r m; do echo "replace $m => $m $staging_v"; done)
  k8s_gomod="module coreforge.local/kubernetes-build

go 1.24

require k8s.io/kubernetes $v

$replaces"
  local pkg=k8s.io/component-base/version cgo=k8s.io/client-go/pkg/version
  local date
  date=$(date -u +%Y-%m-%dT%H:%M:%SZ)
  k8s_ldflags=""
  for p in $pkg $cgo; do
    k8s_ldflags+=" -X $p.gitVersion=$v -X $p.gitMajor=1 -X $p.gitMinor=$minor -X $p.gitTreeState=clean -X $p.buildDate=$date"
  done
}

build_kubernetes() {
  if [[ -f "$CACHE_DIR/kubernetes-$KUBERNETES_VERSION/.complete" ]]; then
    log "kubernetes $KUBERNETES_VERSION: cached in $CACHE_DIR/kubernetes-$KUBERNETES_VERSION"
    return 0
  fi
  kubernetes_module
  build_module kubernetes "$KUBERNETES_VERSION" "$k8s_gomod" \
    "k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl" \
    "$k8s_ldflags"
}

# The real node's kubelet: same module and version as the control plane, a
# cache entry of its own (kubelet-VERSION) so that adding it left existing
# kubernetes-VERSION entries valid. About 40 s once the control plane is built
# (the Go build cache is shared), 80 MB.
build_kubelet() {
  if [[ -f "$CACHE_DIR/kubelet-$KUBERNETES_VERSION/.complete" ]]; then
    log "kubelet $KUBERNETES_VERSION: cached in $CACHE_DIR/kubelet-$KUBERNETES_VERSION"
    return 0
  fi
  kubernetes_module
  build_module kubelet "$KUBERNETES_VERSION" "$k8s_gomod" "k8s.io/kubernetes/cmd/kubelet" "$k8s_ldflags"
}

build_etcd() {
  local v=$ETCD_VERSION
  build_module etcd "$v" "module coreforge.local/etcd-build

go 1.23

// Every etcd module at the same release, or tidy raises some to 3.6.
require (
	go.etcd.io/etcd/api/v3 $v
	go.etcd.io/etcd/client/pkg/v3 $v
	go.etcd.io/etcd/client/v3 $v
	go.etcd.io/etcd/pkg/v3 $v
	go.etcd.io/etcd/raft/v3 $v
	go.etcd.io/etcd/server/v3 $v
	go.etcd.io/etcd/etcdctl/v3 $v
)" \
    "go.etcd.io/etcd/server/v3 go.etcd.io/etcd/etcdctl/v3" \
    ""
}

build_kwok() {
  local v=$KWOK_VERSION
  build_module kwok "$v" "module coreforge.local/kwok-build

go 1.24

require sigs.k8s.io/kwok $v" \
    "sigs.k8s.io/kwok/cmd/kwok" \
    "-X sigs.k8s.io/kwok/pkg/consts.Version=$v"
}

# module_info MODULE VERSION: downloads the module from the Go module proxy and sets
# $modfile and $infofile (its go.mod and .info in the module cache) and $go_directive
# (the go line of its go.mod), in the caller's locals.
module_info() {
  local json
  json=$(cd /tmp && GOFLAGS=-mod=mod go mod download -json "$1@$2") ||
    die "could not download $1@$2 from the Go module proxy"
  modfile=$(sed -n 's/.*"GoMod": "\(.*\)".*/\1/p' <<<"$json")
  infofile=$(sed -n 's/.*"Info": "\(.*\)".*/\1/p' <<<"$json")
  [[ -f "$modfile" ]] || die "could not download $1@$2 from the Go module proxy"
  go_directive=$(sed -n 's/^go \([0-9.]*\)$/\1/p' "$modfile")
}

build_helm() {
  local v=$HELM_VERSION
  if [[ -f "$CACHE_DIR/helm-$v/.complete" ]]; then
    log "helm $v: cached in $CACHE_DIR/helm-$v"
    return 0
  fi
  need_go
  # helm's go.mod has no replace directives, so requiring helm alone resolves
  # every dependency at the version helm itself was tested with. Like helm's
  # Makefile, stamp the Kubernetes version its client libraries implement
  # (k8s.io/client-go v0.N -> 1.N): `helm template` reports it as the default
  # .Capabilities.KubeVersion and `helm lint` checks deprecations against it.
  local modfile infofile go_directive minor
  module_info helm.sh/helm/v3 "$v"
  minor=$(sed -n 's#^\s*k8s.io/client-go v0\.\([0-9]*\)\..*#\1#p' "$modfile" | head -n1)
  [[ -n $minor ]] || die "helm $v: no k8s.io/client-go requirement in $modfile"
  local hv=helm.sh/helm/v3/internal/version k=helm.sh/helm/v3/pkg
  build_module helm "$v" "module coreforge.local/helm-build

go ${go_directive:-1.24}

require helm.sh/helm/v3 $v" \
    "helm.sh/helm/v3/cmd/helm" \
    "-X $hv.version=$v -X $hv.gitTreeState=clean -X $k/lint/rules.k8sVersionMajor=1 -X $k/lint/rules.k8sVersionMinor=$minor -X $k/chartutil.k8sVersionMajor=1 -X $k/chartutil.k8sVersionMinor=$minor"
}

# The real node's container runtime. Debian 12's containerd 1.6 and runc 1.1 cannot
# run user-namespaced pods (hostUsers: false needs containerd 2 and runc 1.2 or
# later, for idmapped mounts), so both are built from their modules. containerd is
# static (no btrfs, which needs cgo); runc links Debian's libseccomp, as its own
# release builds do, so that pods get their seccomp profiles.
build_containerd() {
  local v=$CONTAINERD_VERSION
  build_module containerd "$v" "module coreforge.local/containerd-build

go 1.24

require github.com/containerd/containerd/v2 $v" \
    "github.com/containerd/containerd/v2/cmd/containerd github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 github.com/containerd/containerd/v2/cmd/ctr" \
    "-X github.com/containerd/containerd/v2/version.Version=$v -X github.com/containerd/containerd/v2/version.Revision=module" \
    "no_btrfs no_devmapper no_zfs"
}

build_runc() {
  local v=$RUNC_VERSION
  pkg-config --exists libseccomp 2>/dev/null || die "runc needs libseccomp's headers (Debian: libseccomp-dev; tests/deps.sh installs it)"
  build_module runc "$v" "module coreforge.local/runc-build

go 1.24

require github.com/opencontainers/runc $v" \
    "github.com/opencontainers/runc" \
    "-X main.version=${v#v} -X main.gitCommit=module" \
    "seccomp urfave_cli_no_docs" 1
}

# The Argo CD health and kstatus harness of tests/gitops.rs, built from our own module
# in tests/gitops (its go.mod and go.sum are committed, so -mod=readonly: the build never
# rewrites them). Its version is a hash of its source: an edit builds a new entry, and the
# entries of older sources are deleted. Prints the path of the binary on stdout.
build_gitops_check() {
  local src="$REPO_ROOT/tests/gitops" version
  version=$(cd "$src" && sha256sum -- *.go go.mod go.sum | sha256sum | cut -c1-16)
  local dest="$CACHE_DIR/gitops-check-$version"
  if [[ -f "$dest/.complete" ]]; then
    log "gitops-check $version: cached in $dest"
  else
    need_go
    log "gitops-check $version: building"
    (
      cd "$src"
      mkdir -p "$dest/bin.tmp"
      GOFLAGS=-mod=readonly GOTOOLCHAIN=local CGO_ENABLED=0 \
        go build -trimpath -ldflags "-s -w" -o "$dest/bin.tmp/gitops-check" .
    ) || { rm -rf "$dest/bin.tmp"; die "gitops-check $version: the Go build failed (output above). Nothing was cached."; }
    rm -rf "${dest:?}/bin"
    mv "$dest/bin.tmp" "$dest/bin"
    touch "$dest/.complete"
    local old
    for old in "$CACHE_DIR"/gitops-check-*; do
      [[ $old == "$dest" ]] || rm -rf "$old"
    done
    log "gitops-check $version: built into $dest/bin"
  fi
  echo "$dest/bin/gitops-check"
}

# The real cosign CLI (sigstore), built on demand (`build.sh cosign`), never by
# default: the reference that the signatures and attestations we produce are
# checked against. cosign's go.mod has no replace directives, so requiring it
# alone resolves every dependency at the version cosign was released with. The
# module path carries the major version (github.com/sigstore/cosign/v2 for
# v2.x). Version stamps as cosign's Makefile sets them, with the release time
# the module proxy reports as the build date (cosign's SOURCE_DATE_EPOCH).
build_cosign() {
  local v=$COSIGN_VERSION
  if [[ -f "$CACHE_DIR/cosign-$v/.complete" ]]; then
    log "cosign $v: cached in $CACHE_DIR/cosign-$v"
    return 0
  fi
  need_go
  local mod="github.com/sigstore/cosign/${v%%.*}" modfile infofile go_directive date
  module_info "$mod" "$v"
  date=$(sed -n 's/.*"Time": *"\([^"]*\)".*/\1/p' "$infofile" 2>/dev/null)
  local rv=sigs.k8s.io/release-utils/version
  build_module cosign "$v" "module coreforge.local/cosign-build

go ${go_directive:-1.25.0}

require $mod $v" \
    "$mod/cmd/cosign" \
    "-X $rv.gitVersion=$v -X $rv.gitTreeState=clean${date:+ -X $rv.buildDate=$date}"
}

main() {
  local targets=("$@")
  [[ ${#targets[@]} -gt 0 ]] || targets=(etcd kwok kubernetes kubelet helm containerd runc)
  mkdir -p "$CACHE_DIR"
  for t in "${targets[@]}"; do
    case $t in
      kubernetes | kubelet | etcd | kwok | helm | containerd | runc) "build_$t" ;;
      gitops-check) build_gitops_check ;;
      cosign) build_cosign ;;
      *) die "unknown component '$t' (known: kubernetes kubelet etcd kwok helm containerd runc gitops-check cosign)" ;;
    esac
  done
}
main "$@"
