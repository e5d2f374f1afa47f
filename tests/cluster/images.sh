#!/usr/bin/env bash
# Builds the images the local environment runs, from Debian's packages only (no
# image is pulled from anywhere), and caches them outside the work tree like the
# cluster binaries:
#
#   debian   Debian 12 (bookworm), minbase: dpkg, apt, bash, coreutils, passwd
#            (useradd), ... The base image the tests build on.
#   builder  Debian 12 with Debian's buildah and ca-certificates: the default
#            builder image, which runs src/scripts/build.sh.
#   pause    the real node's sandbox image: node/pause/main.go, built static
#            with the local Go toolchain, alone in the image.
#
# Usage:
#   images.sh build                 # build every image that is not cached (idempotent)
#   images.sh push HOST:PORT FILE   # build if needed, push each image (plain HTTP) to
#                                   # HOST:PORT/coreforge/<name>:<tag> and write FILE:
#                                   #   DEBIAN_IMAGE=HOST:PORT/coreforge/debian@sha256:...
#                                   #   BUILDER_IMAGE=HOST:PORT/coreforge/builder@sha256:...
#                                   #   PAUSE_IMAGE=HOST:PORT/coreforge/pause@sha256:...
#   images.sh buildah NAME ARGS...  # run buildah on NAME's image store
#
# Each image lives in a buildah store of its own (vfs driver) in
# $CACHE_DIR/images/<name>-<key>/, where <key> hashes the image's recipe: the shell
# functions below that make it, the sources they read, and the Debian mirror. A
# changed recipe builds a new image (and deletes the old one); a failed build
# leaves nothing behind. The local image is localhost/coreforge/<name>:<key> and
# is pushed with the tag <key>; the same cached image always pushes to the same
# digest. Logs go to stderr. Needs root (mmdebstrap's root mode, buildah's vfs).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cluster/lib.sh
source "$here/lib.sh"

IMAGES_DIR="$CACHE_DIR/images"

# The images, in build order. Each NAME has rootfs_NAME OUT.tar (writes the root
# file system as a tarball) and configure_NAME CONTAINER (sets the image config
# with `bah config`); inputs_NAME, if defined, prints the sources it reads.
IMAGES=(debian builder pause)

DEBIAN_SUITE=bookworm
# Every file's mtime, and shadow's password-change dates, come from here, so the
# same packages give the same file system. 2024-01-01T00:00:00Z.
SOURCE_DATE_EPOCH=1704067200
export SOURCE_DATE_EPOCH

# dpkg leaves out documentation, man pages and translations (as Debian's -slim
# images do), also for packages installed later on top of these images. The
# copyright files stay.
SLIM_DPKG=(
  'path-exclude=/usr/share/doc/*'
  'path-include=/usr/share/doc/*/copyright'
  'path-exclude=/usr/share/man/*'
  'path-exclude=/usr/share/info/*'
  'path-exclude=/usr/share/locale/*'
  'path-include=/usr/share/locale/locale.alias'
  'path-exclude=/usr/share/lintian/*'
)

# debian_mirrors: sets DEBIAN_MIRROR and DEBIAN_SECURITY_MIRROR to the Debian
# archive and the security archive this machine's apt uses (which may be a proxy
# or a local mirror, and may be the only ones reachable). COREFORGE_DEBIAN_MIRROR
# and COREFORGE_DEBIAN_SECURITY_MIRROR override them.
# shellcheck disable=SC2016 # apt's format, not ours
debian_mirrors() {
  local origin label site sites
  sites=$(apt-get indextargets --format '$(ORIGIN)|$(LABEL)|$(SITE)' 'Created-By: Packages' 2>/dev/null | sort -u) || true
  DEBIAN_MIRROR=${COREFORGE_DEBIAN_MIRROR:-}
  DEBIAN_SECURITY_MIRROR=${COREFORGE_DEBIAN_SECURITY_MIRROR:-}
  while IFS='|' read -r origin label site; do
    [[ $origin == Debian ]] || continue
    case $label in
      Debian) DEBIAN_MIRROR=${DEBIAN_MIRROR:-$site} ;;
      Debian-Security) DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-$site} ;;
    esac
  done <<<"$sites"
  if [[ -z $DEBIAN_MIRROR ]]; then
    log "no Debian mirror in this machine's apt sources (run apt-get update?); using deb.debian.org"
    DEBIAN_MIRROR=http://deb.debian.org/debian
  fi
  if [[ -z $DEBIAN_SECURITY_MIRROR ]]; then
    DEBIAN_SECURITY_MIRROR=${DEBIAN_MIRROR%/debian}/debian-security
  fi
}

# mmdebstrap_tar OUT.tar MMDEBSTRAP_ARGS...: a Debian $DEBIAN_SUITE root file
# system from the machine's mirrors, without device nodes (the container runtime
# provides /dev), resolv.conf or hostname (the runtime provides those too). The
# hooks are run by mmdebstrap with the root file system as $1.
# shellcheck disable=SC2016
mmdebstrap_tar() {
  local tarball=$1 opt args=()
  shift
  for opt in "${SLIM_DPKG[@]}"; do args+=(--dpkgopt="$opt"); done
  # An apt proxy configured on this machine applies to mmdebstrap's apt too.
  local proxy
  proxy=$(apt-config dump --format '%v%n' Acquire::http::Proxy 2>/dev/null | head -n 1) || true
  [[ -z $proxy ]] || args+=(--aptopt="Acquire::http::Proxy \"$proxy\"")
  # merged-usr: the /usr merge set up directly (as Debian's images have it),
  # instead of by the usrmerge package, which would pull in perl.
  mmdebstrap --mode=root --format=tar --variant=minbase "${args[@]}" \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
    --customize-hook='rm -f "$1/etc/resolv.conf" "$1/etc/hostname"' \
    "$@" "$DEBIAN_SUITE" "$tarball.full" \
    "deb $DEBIAN_MIRROR $DEBIAN_SUITE main" \
    "deb $DEBIAN_MIRROR $DEBIAN_SUITE-updates main" \
    "deb $DEBIAN_SECURITY_MIRROR $DEBIAN_SUITE-security main"
  mmtarfilter --path-exclude='/dev/*' <"$tarball.full" >"$tarball"
  rm -f "$tarball.full"
}

rootfs_debian() {
  mmdebstrap_tar "$1"
}

configure_debian() {
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --cmd '["bash"]' --label org.opencontainers.image.title=debian \
    --label "org.opencontainers.image.version=12 ($DEBIAN_SUITE)" "$1"
}

# The builder runs src/scripts/build.sh with /bin/sh: buildah builds the blueprint
# (vfs storage, chroot isolation: no runc, no fuse) and pushes it, also to plain
# HTTP registries. Build pods run as uid 1000, the `build` user of the upstream
# buildah image, with the same subordinate id ranges for rootless use.
# shellcheck disable=SC2016
rootfs_builder() {
  # netavark and gpg satisfy buildah's dependencies on a network stack and on
  # gnupg|gpg with much less than the first choices (containernetworking-plugins,
  # 45 MB; gnupg and its agents).
  mmdebstrap_tar "$1" --include=buildah,ca-certificates,netavark,gpg \
    --aptopt='APT::Install-Recommends "false"' \
    --customize-hook='chroot "$1" useradd --uid 1000 --user-group --create-home --shell /bin/sh build' \
    --customize-hook='printf "build:1:999\nbuild:1001:64535\n" | tee "$1/etc/subuid" >"$1/etc/subgid"' \
    --customize-hook='install -d -o 1000 -g 1000 "$1/workspace"'
}

configure_builder() {
  bah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env BUILDAH_ISOLATION=chroot --env STORAGE_DRIVER=vfs \
    --workingdir /workspace --cmd '["/bin/sh"]' \
    --label org.opencontainers.image.title=coreforge-builder "$1"
}

# The sandbox ("pause") process of every pod on the real node. Nothing can be
# pulled from the internet, so containerd's sandbox_image is this one.
PAUSE_SRC="$here/node/pause/main.go"

inputs_pause() { cat "$PAUSE_SRC"; }

rootfs_pause() {
  command -v go >/dev/null 2>&1 || die "pause: Go is not installed (needed once, to build $PAUSE_SRC)"
  local work
  work=$(dirname "$1")/pause-root
  mkdir -p "$work"
  (cd "$(dirname "$PAUSE_SRC")" && GOTOOLCHAIN=local CGO_ENABLED=0 GO111MODULE=off GOFLAGS=''     go build -trimpath -ldflags '-s -w -buildid=' -o "$work/pause" main.go) ||
    die "pause: go build failed (output above)"
  chmod 0755 "$work/pause"
  tar --sort=name --mtime="@$SOURCE_DATE_EPOCH" --owner=0 --group=0 --numeric-owner -C "$work" -cf "$1" pause
  rm -rf "$work"
}

configure_pause() {
  bah config --entrypoint '["/pause"]' --user 65535:65535 --label org.opencontainers.image.title=coreforge-pause "$1"
}

# ---------------------------------------------------------------------------

# bah ARGS...: buildah on the store of the image being worked on ($store).
bah() { buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs "$@"; }

# image_key NAME: hash of NAME's recipe (its functions, the shared ones, the
# settings they read).
image_key() {
  {
    declare -p DEBIAN_SUITE SOURCE_DATE_EPOCH SLIM_DPKG DEBIAN_MIRROR DEBIAN_SECURITY_MIRROR
    declare -f mmdebstrap_tar import_image "rootfs_$1" "configure_$1"
    if declare -F "inputs_$1" >/dev/null; then "inputs_$1"; fi
  } | sha256sum | cut -c1-12
}

image_dir() { echo "$IMAGES_DIR/$1-$(image_key "$1")"; }
image_ref() { echo "localhost/coreforge/$1:$(image_key "$1")"; }

# import_image NAME ROOTFS.tar: a one-layer image of the tarball, configured by
# configure_NAME, committed with every timestamp at 0.
import_image() {
  local name=$1 tar=$2 ctr
  ctr=$(bah from scratch)
  bah add "$ctr" "$tar" / >/dev/null
  bah config --os linux --arch "$(dpkg --print-architecture)" \
    --created-by "coreforge tests/cluster/images.sh ($name)" "$ctr"
  "configure_$name" "$ctr"
  bah commit --quiet --rm --timestamp 0 "$ctr" "$(image_ref "$name")" >/dev/null
}

building=
# shellcheck disable=SC2317 # called by the trap
cleanup() {
  if [[ -n $building ]]; then
    log "$(basename "$building"): build failed; nothing was cached"
    rm -rf "$building"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# build_image NAME: builds NAME unless its current recipe is cached.
build_image() {
  local name=$1 dir start
  dir=$(image_dir "$name")
  store=$dir/storage
  if [[ -f $dir/.complete ]]; then
    log "$name: cached in $dir"
    return 0
  fi
  start=$SECONDS
  log "$name: building $(image_ref "$name") (first time only, about a minute)"
  rm -rf "$dir"
  mkdir -p "$dir"
  building=$dir
  "rootfs_$name" "$dir/rootfs.tar"
  import_image "$name" "$dir/rootfs.tar"
  rm -f "$dir/rootfs.tar"
  touch "$dir/.complete"
  building=
  # Older recipes of the same image are never used again.
  local old
  for old in "$IMAGES_DIR/$name"-*; do
    [[ $old == "$dir" || ! -d $old ]] || rm -rf "$old"
  done
  log "$name: built in $((SECONDS - start))s ($(du -sh "$store" | cut -f1) in $dir)"
}

# lock: one build at a time on this cache (parallel callers wait); pushes share it.
lock() {
  mkdir -p "$IMAGES_DIR"
  exec 9>"$IMAGES_DIR/.lock"
  if ! flock -n 9; then
    log "waiting for another images.sh to finish building"
    flock -w "${COREFORGE_LOCK_TIMEOUT:-3600}" 9 || die "timed out waiting for the lock $IMAGES_DIR/.lock"
  fi
}

build_all() {
  [[ $(id -u) -eq 0 ]] || die "images.sh needs root (mmdebstrap's root mode and buildah's vfs store)"
  local tool
  for tool in mmdebstrap mmtarfilter buildah; do
    command -v "$tool" >/dev/null || die "$tool is not installed (tests/deps.sh installs it)"
  done
  debian_mirrors
  lock
  local name
  for name in "${IMAGES[@]}"; do build_image "$name"; done
  flock -s 9 # builds done: pushes of other callers may run alongside
}

# push_all HOST:PORT FILE
push_all() {
  local registry=$1 file=$2 name dir ref digest lines=()
  for name in "${IMAGES[@]}"; do
    dir=$(image_dir "$name")
    store=$dir/storage
    ref=$registry/coreforge/$name:$(image_key "$name")
    log "$name: pushing to $ref"
    bah push --quiet --tls-verify=false --digestfile "$dir/digest.$$" "$(image_ref "$name")" "docker://$ref" >&2
    digest=$(<"$dir/digest.$$")
    rm -f "$dir/digest.$$"
    [[ $digest == sha256:* ]] || die "$name: buildah push wrote no digest"
    lines+=("$(tr '[:lower:]-' '[:upper:]_' <<<"$name")_IMAGE=$registry/coreforge/$name@$digest")
  done
  mkdir -p "$(dirname "$file")"
  printf '%s\n' "${lines[@]}" >"$file.tmp.$$"
  mv "$file.tmp.$$" "$file"
  log "wrote $file"
}

main() {
  case ${1:-} in
    build)
      [[ $# -eq 1 ]] || die "usage: $0 build"
      build_all
      ;;
    push)
      [[ $# -eq 3 ]] || die "usage: $0 push HOST:PORT FILE"
      build_all
      push_all "$2" "$3"
      ;;
    buildah)
      [[ $# -ge 2 ]] || die "usage: $0 buildah NAME ARGS..."
      debian_mirrors
      store=$(image_dir "$2")/storage
      shift 2
      bah "$@"
      ;;
    *) die "usage: $0 build | push HOST:PORT FILE | buildah NAME ARGS..." ;;
  esac
}
main "$@"
