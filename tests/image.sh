#!/usr/bin/env bash
# Builds the controller image on this machine, without pulling any base image.
#
# The release binary is built on the host with cargo; the runtime file system (the
# binary, the shared libraries it loads, CA certificates, passwd/group with the
# nonroot user 65532) is assembled in target/image/context/rootfs; the Containerfile's
# "prebuilt" stage (FROM scratch, COPY rootfs/ /) turns it into an image with buildah:
# chroot isolation and the vfs driver, so no daemon and no kernel features beyond
# what root has in a container. In CI with registry access, build the Containerfile's
# default target instead (it builds the same binary in the Rust image).
#
#   tests/image.sh                          # build localhost/coreforge:<version>
#   tests/image.sh --push 127.0.0.1:15000   # ... and push it there (plain HTTP)
#   tests/image.sh buildah ARGS...          # run buildah on the same image store
#
# Prints the image name (and, with --push, the pushed reference@digest) on stdout.
# The image store is target/image/storage (COREFORGE_IMAGE_STORE moves it), apart
# from the system's, so its storage driver never conflicts with other buildah use.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
out=$root/target/image
store=${COREFORGE_IMAGE_STORE:-$out/storage}

log() { printf '[image] %s\n' "$*" >&2; }
die() {
  printf '[image] error: %s\n' "$*" >&2
  exit 1
}

bah() { buildah --root "$store/root" --runroot "$store/run" --storage-driver vfs "$@"; }

if [[ ${1:-} == buildah ]]; then
  shift
  bah "$@"
  exit
fi

push_to=
while [[ $# -gt 0 ]]; do
  case $1 in
    --push)
      [[ $# -ge 2 ]] || die "--push needs a registry (host:port)"
      push_to=$2
      shift 2
      ;;
    *) die "unknown argument '$1' (usage: $0 [--push HOST:PORT] | $0 buildah ARGS...)" ;;
  esac
done

command -v buildah >/dev/null || die "buildah is not installed (tests/deps.sh installs it)"
version=$(sed -n 's/^version = "\(.*\)"$/\1/p' "$root/Cargo.toml" | head -n1)
[[ -n $version ]] || die "no version in $root/Cargo.toml"
image=localhost/coreforge:$version

log "building the release binary"
(cd "$root" && cargo build --release --locked --bin coreforge >&2)
bin=${CARGO_TARGET_DIR:-$root/target}/release/coreforge
[[ -x $bin ]] || die "cargo built no $bin"

log "assembling the runtime file system"
context=$out/context
rootfs=$context/rootfs
rm -rf "$context"
mkdir -p "$rootfs/etc/ssl/certs" "$rootfs/tmp"
chmod 1777 "$rootfs/tmp"
install -m 0755 "$bin" "$rootfs/coreforge"
# The shared libraries the binary loads (and the dynamic loader), at the paths the
# loader looks in. A statically linked binary needs none.
if ldd "$bin" >/dev/null 2>&1; then
  ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' | sort -u |
    while read -r lib; do
      mkdir -p "$rootfs$(dirname "$lib")"
      cp -L "$lib" "$rootfs$lib"
    done
fi
# What distroless images provide besides the libraries.
cat >"$rootfs/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
EOF
cat >"$rootfs/etc/group" <<'EOF'
root:x:0:
nonroot:x:65532:
EOF
echo 'hosts: files dns' >"$rootfs/etc/nsswitch.conf"
certs=/etc/ssl/certs/ca-certificates.crt
[[ -f $certs ]] || die "no $certs on this machine (Debian's ca-certificates package provides it)"
cp -L "$certs" "$rootfs$certs"
cp "$root/Containerfile" "$context/Containerfile"

log "building $image (Containerfile, target prebuilt)"
mkdir -p "$store"
bah build --isolation chroot --target prebuilt -f "$context/Containerfile" -t "$image" "$context" >&2
# A rebuild leaves the previous image untagged; vfs keeps full copies, so drop it.
bah rmi --prune >/dev/null 2>&1 || true
echo "$image"

if [[ -n $push_to ]]; then
  ref=$push_to/coreforge:$version
  log "pushing $image to $ref"
  bah push --tls-verify=false --digestfile "$out/digest" "$image" "docker://$ref" >&2
  echo "$ref@$(cat "$out/digest")"
fi
