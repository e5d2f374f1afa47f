#!/usr/bin/env bash
# Installs the Debian packages the tests and the demo need, once: a package that is
# already installed is not touched, and nothing runs apt when all are present.
# Everything else (cluster binaries, Rust crates) is built and cached by its own tooling.
set -euo pipefail

# Package → why.
packages=(
  openssl         # certificates of the local control plane
  shellcheck      # lints the shell scripts the Jobs and the tooling run
  docker-registry # the local OCI registry (staging and catalog repositories)
  apache2-utils   # htpasswd, for the registry that requires credentials
  prometheus      # the local Prometheus, and promtool for the alert rules
  buildah         # runs the default build script for real; builds the controller image
  busybox-static  # a tiny real base image for the real build
  mmdebstrap      # builds the Debian base and builder images (tests/cluster/images.sh)
  chromium-headless-shell # renders the consumers' catalog page in tests/browse.rs
  # The real node of the local environment (tests/cluster/node.sh):
  libseccomp-dev              # runc is built with seccomp (containerd and runc: tests/cluster/build.sh)
  pkg-config                  # ... which finds libseccomp with it
  containernetworking-plugins # CNI bridge, host-local and loopback in /usr/lib/cni
  socat                       # forwards the registries and the apiserver to the pods' gateway
  iptables                    # DNAT of the kubernetes Service IP, the pods' firewall
  iproute2                    # ip: the bridge, veths
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null | grep -q '^ii' || missing+=("$p")
done
((${#missing[@]} == 0)) && exit 0

if [[ $(id -u) -ne 0 ]]; then
  echo "[deps] missing Debian packages: ${missing[*]}; install them (as root: apt-get install ${missing[*]})" >&2
  exit 1
fi
echo "[deps] installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
