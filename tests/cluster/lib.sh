# Shared settings and helpers for the local environment scripts. Sourced, not run.
# shellcheck shell=bash
CLUSTER_SCRIPTS=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$CLUSTER_SCRIPTS/../.." && pwd)
# shellcheck source=tests/cluster/versions.env
source "$CLUSTER_SCRIPTS/versions.env"
CACHE_DIR=${COREFORGE_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/coreforge}
STATE_DIR=${COREFORGE_CLUSTER_DIR:-$REPO_ROOT/target/cluster}

log() { printf '[cluster] %s\n' "$*" >&2; }
die() { printf '[cluster] error: %s\n' "$*" >&2; exit 1; }

# ---------------------------------------------------------------------------
# Local control plane (used by up.sh, down.sh, status.sh, env.sh).

# Cached binaries of each pinned component, as laid out by build.sh.
# shellcheck disable=SC2034 # used by the scripts that source this file
ETCD_BIN_DIR="$CACHE_DIR/etcd-$ETCD_VERSION/bin"
# shellcheck disable=SC2034
KWOK_BIN_DIR="$CACHE_DIR/kwok-$KWOK_VERSION/bin"
KUBE_BIN_DIR="$CACHE_DIR/kubernetes-$KUBERNETES_VERSION/bin"
# shellcheck disable=SC2034
KUBELET_BIN_DIR="$CACHE_DIR/kubelet-$KUBERNETES_VERSION/bin"
# shellcheck disable=SC2034
CONTAINERD_BIN_DIR="$CACHE_DIR/containerd-$CONTAINERD_VERSION/bin"
# shellcheck disable=SC2034
RUNC_BIN_DIR="$CACHE_DIR/runc-$RUNC_VERSION/bin"

# The real node (kubelet, containerd, its bridge): node.sh.
# shellcheck source=tests/cluster/node.sh
source "$CLUSTER_SCRIPTS/node.sh"

# The components in start order. down.sh stops them in reverse order. The two
# registries are Debian's docker-registry (the CNCF distribution registry):
# `registry` is open, `registry-auth` requires the htpasswd credentials in
# $STATE_DIR/registry-auth/credentials (user:password). Prometheus (Debian's)
# scrapes every controller a test announces in $STATE_DIR/prometheus/targets/
# (file service discovery, job `coreforge`) and evaluates
# deploy/monitoring/rules.yaml. Then the real node (node.sh): forwarders from
# its bridge to the registries and the apiserver, containerd, the kubelet.
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok registry registry-auth prometheus
  "${NODE_COMPONENTS[@]}")

# Addresses, in one place. Services: SERVICE_CIDR, whose first address is the
# `kubernetes` Service. kwok gives its simulated pods IPs from KWOK_POD_CIDR.
# The real node's pods get IPs from POD_SUBNET (COREFORGE_POD_SUBNET, a
# private /24 used only here), on the bridge NODE_BRIDGE (COREFORGE_NODE_BRIDGE)
# whose address, the subnet's first, is POD_GATEWAY: the node's IP and where
# pods find the forwarders (see default_ports and node.sh).
# shellcheck disable=SC2034
SERVICE_CIDR=10.96.0.0/16
SERVICE_IP=10.96.0.1
# shellcheck disable=SC2034
KWOK_POD_CIDR=10.244.0.0/16

# Every port the environment listens on, in one place (on loopback; the
# kubelet and the forwarders on the real node's bridge address). The defaults
# sit away from the well-known Kubernetes ports (2379, 6443, 10250-10259) so a
# real cluster or kind on the same machine does not collide. Each one can be
# overridden from the environment; up.sh records the ports it used in
# $STATE_DIR/ports.env so that status.sh and down.sh find the running cluster
# even when the environment differs.
default_ports() {
  ETCD_PORT=${COREFORGE_ETCD_PORT:-12379}
  ETCD_PEER_PORT=${COREFORGE_ETCD_PEER_PORT:-12380}
  APISERVER_PORT=${COREFORGE_APISERVER_PORT:-16443}
  KCM_PORT=${COREFORGE_KCM_PORT:-16257}
  SCHEDULER_PORT=${COREFORGE_SCHEDULER_PORT:-16259}
  KWOK_PORT=${COREFORGE_KWOK_PORT:-16250}
  REGISTRY_PORT=${COREFORGE_REGISTRY_PORT:-15000}
  REGISTRY_AUTH_PORT=${COREFORGE_REGISTRY_AUTH_PORT:-15001}
  PROMETHEUS_PORT=${COREFORGE_PROMETHEUS_PORT:-19090}
  KUBELET_PORT=${COREFORGE_KUBELET_PORT:-16350}
  KUBELET_HEALTHZ_PORT=${COREFORGE_KUBELET_HEALTHZ_PORT:-16348}
  # The real node's network (recorded with the ports).
  POD_SUBNET=${COREFORGE_POD_SUBNET:-10.217.0.0/24}
  NODE_BRIDGE=${COREFORGE_NODE_BRIDGE:-cfbr0}
  node_names
}

# Loads the ports of the running (or last started) cluster, else the defaults.
load_ports() {
  default_ports
  if [[ -f "$STATE_DIR/ports.env" ]]; then
    # shellcheck source=/dev/null
    source "$STATE_DIR/ports.env"
  fi
  node_names
}

# component_ports NAME: the ports NAME listens on.
component_ports() {
  case $1 in
    etcd) echo "$ETCD_PORT $ETCD_PEER_PORT" ;;
    kube-apiserver) echo "$APISERVER_PORT" ;;
    kube-controller-manager) echo "$KCM_PORT" ;;
    kube-scheduler) echo "$SCHEDULER_PORT" ;;
    kwok) echo "$KWOK_PORT" ;;
    registry) echo "$REGISTRY_PORT" ;;
    registry-auth) echo "$REGISTRY_AUTH_PORT" ;;
    prometheus) echo "$PROMETHEUS_PORT" ;;
    kubelet) echo "$KUBELET_PORT $KUBELET_HEALTHZ_PORT" ;;
    # containerd: a unix socket; the forwarders: the ports of what they
    # forward, on the bridge address.
  esac
}

# component_health_url NAME: the endpoint that answers 2xx once NAME is healthy.
# The secure ports of the controller manager and scheduler serve a certificate
# from our own CA; /healthz is reachable without credentials on all of them.
component_health_url() {
  case $1 in
    etcd) echo "http://127.0.0.1:$ETCD_PORT/health" ;;
    kube-apiserver) echo "https://127.0.0.1:$APISERVER_PORT/readyz" ;;
    kube-controller-manager) echo "https://127.0.0.1:$KCM_PORT/healthz" ;;
    kube-scheduler) echo "https://127.0.0.1:$SCHEDULER_PORT/healthz" ;;
    kwok) echo "http://127.0.0.1:$KWOK_PORT/healthz" ;;
    registry) echo "http://127.0.0.1:$REGISTRY_PORT/v2/" ;;
    registry-auth) echo "http://127.0.0.1:$REGISTRY_AUTH_PORT/v2/" ;;
    prometheus) echo "http://127.0.0.1:$PROMETHEUS_PORT/-/ready" ;;
    fwd-registry) echo "http://$POD_GATEWAY:$REGISTRY_PORT/v2/" ;;
    fwd-registry-auth) echo "http://$POD_GATEWAY:$REGISTRY_AUTH_PORT/v2/" ;;
    fwd-apiserver) echo "https://$POD_GATEWAY:$APISERVER_PORT/readyz" ;;
    containerd) echo "unix://$CONTAINERD_SOCK (ctr version)" ;;
    kubelet) echo "http://127.0.0.1:$KUBELET_HEALTHZ_PORT/healthz" ;;
  esac
}

# probe NAME: one quick health request, quiet. The apiserver's /readyz needs a
# client certificate (anonymous requests are rejected), the others do not.
probe() {
  if [[ $1 == containerd ]]; then
    CTR_TIMEOUT=3 ctr_ version >/dev/null 2>&1
    return
  fi
  local url
  url=$(component_health_url "$1")
  local args=(-fsS --max-time 3 -o /dev/null)
  if [[ $url == https://* ]]; then args+=(--cacert "$STATE_DIR/pki/ca.crt"); fi
  if [[ $1 == kube-apiserver || $1 == fwd-apiserver ]]; then
    args+=(--cert "$STATE_DIR/pki/admin.crt" --key "$STATE_DIR/pki/admin.key")
  fi
  if [[ $1 == registry-auth || $1 == fwd-registry-auth ]]; then
    args+=(-u "$(cat "$STATE_DIR/registry-auth/credentials" 2>/dev/null)")
  fi
  curl "${args[@]}" "$url" 2>/dev/null
}

pid_file() { echo "$STATE_DIR/pids/$1.pid"; }
log_file() { echo "$STATE_DIR/logs/$1.log"; }

# alive PID: the process exists and is not a zombie.
alive() {
  local stat
  stat=$(ps -o stat= -p "$1" 2>/dev/null) || return 1
  [[ -n $stat && $stat != Z* ]]
}

# is_ours PID: PID is one of our control plane processes: its executable is a
# cached component binary (never kubectl, so a user's `kubectl -w` survives)
# and its command line points into $STATE_DIR (so another checkout's cluster,
# which uses another state dir, is left alone).
is_ours() {
  local pid=$1 exe cache
  exe=$(readlink "/proc/$pid/exe" 2>/dev/null) || return 1
  exe=${exe% (deleted)}
  cache=$(realpath -m "$CACHE_DIR")
  case $exe in
    "$cache"/*/server | "$cache"/*/kube-apiserver | "$cache"/*/kube-controller-manager | "$cache"/*/kube-scheduler | "$cache"/*/kwok) ;;
    "$cache"/*/kubelet) ;;
    # The real node's runtime, built from its Go module (a shim's -address
    # names our socket).
    "$cache"/*/containerd | "$cache"/*/containerd-shim-runc-v2) ;;
    /usr/bin/docker-registry | /usr/bin/prometheus) ;; # from Debian's packages
    # Also Debian's: the forwarders (-lf names their log).
    /usr/bin/socat) ;;
    *) return 1 ;;
  esac
  tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$STATE_DIR/"
}

# component_pid NAME: prints the pid of NAME if it is running and ours.
component_pid() {
  local f pid
  f=$(pid_file "$1")
  [[ -f $f ]] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  alive "$pid" && is_ours "$pid" || return 1
  echo "$pid"
}

# our_processes: pids of every control plane process of this state dir,
# whether or not a pid file still names it (pid files can be lost).
our_processes() {
  local pid
  for pid in $(pgrep -f -- "$STATE_DIR/" || true); do
    if alive "$pid" && is_ours "$pid"; then echo "$pid"; fi
  done
}

# port_holder PORT: who listens on TCP PORT (any address), e.g.
# `python3 (pid 123: python3 -m http.server 16443)`; empty when nobody does.
port_holder() {
  local lines line pid cmd out=()
  lines=$(ss -ltnpH "( sport = :$1 )" 2>/dev/null) || return 0
  [[ -n $lines ]] || return 0
  while read -r line; do
    pid=$(grep -o 'pid=[0-9]*' <<<"$line" | head -n 1 | cut -d= -f2)
    if [[ -n $pid ]]; then
      cmd=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120)
      out+=("$(ps -o comm= -p "$pid" 2>/dev/null || echo '?') (pid $pid: ${cmd% })")
    else
      out+=("an unknown process (run as root to see which)")
    fi
  done <<<"$lines"
  printf '%s\n' "${out[@]}" | sort -u | paste -sd ';' -
}

# log_tail NAME [LINES]: the end of a component's log, for error messages.
log_tail() {
  local f
  f=$(log_file "$1")
  if [[ -s $f ]]; then
    printf -- '--- last %s lines of %s ---\n' "${2:-25}" "$f" >&2
    tail -n "${2:-25}" "$f" >&2
    printf -- '--- end of %s ---\n' "$f" >&2
  else
    printf '(no log output in %s)\n' "$f" >&2
  fi
}

# stop_pids PID...: SIGTERM, then SIGKILL whatever is still there after a grace
# period. Waits until every process is gone; never blocks for long.
stop_pids() {
  local pids=("$@") pid deadline
  ((${#pids[@]})) || return 0
  kill -TERM "${pids[@]}" 2>/dev/null || true
  deadline=$((SECONDS + ${COREFORGE_STOP_GRACE:-15}))
  while ((SECONDS < deadline)); do
    local left=()
    for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
    ((${#left[@]})) || return 0
    sleep 0.2
  done
  for pid in "${pids[@]}"; do
    if alive "$pid"; then
      log "pid $pid did not stop within ${COREFORGE_STOP_GRACE:-15}s; sending SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
  done
  deadline=$((SECONDS + 5))
  while ((SECONDS < deadline)); do
    local left=()
    for pid in "${pids[@]}"; do alive "$pid" && left+=("$pid"); done
    ((${#left[@]})) || return 0
    sleep 0.2
  done
  die "processes still alive after SIGKILL: ${pids[*]}"
}

# stop_cluster: stops every process of ours, newest component first so that
# nothing logs a storm of errors about a dependency that went away; the real
# node's containers go before containerd, and what the node left on the
# machine after every process (node_clean_host).
stop_cluster() {
  local i name pid pids=()
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    name=${COMPONENTS[i]}
    [[ $name != containerd ]] || node_remove_containers
    if pid=$(component_pid "$name"); then
      log "stopping $name (pid $pid)"
      stop_pids "$pid"
    fi
    rm -f "$(pid_file "$name")"
  done
  # Leftovers without a pid file, e.g. from an up.sh that was killed mid-way.
  mapfile -t pids < <(our_processes)
  if ((${#pids[@]})); then
    log "stopping leftover processes of this cluster: ${pids[*]}"
    stop_pids "${pids[@]}"
  fi
  node_clean_host
}

# remove_state_dir: rm -rf $STATE_DIR, but never through a mount point (a
# container's root file system or a pod volume could lead into the host's
# files): if node_clean_host could not unmount everything, stop and say so.
remove_state_dir() {
  local mps
  mps=$(mounts_under "$STATE_DIR")
  [[ -z $mps ]] || die "not removing $STATE_DIR: still mounted below it (unmount these, then rerun):
$mps"
  rm -rf "${STATE_DIR:?}"
}

# with_lock: serialises up.sh and down.sh (parallel test binaries may all try
# to start the cluster). The lock lives next to the state dir, which down.sh
# deletes.
with_lock() {
  mkdir -p "$(dirname "$STATE_DIR")"
  exec 9>"$STATE_DIR.lock"
  if ! flock -n 9; then
    log "waiting for another up.sh/down.sh on $STATE_DIR to finish"
    flock -w "${COREFORGE_LOCK_TIMEOUT:-3600}" 9 || die "timed out waiting for the lock $STATE_DIR.lock"
  fi
}

kubectl_bin() { echo "$KUBE_BIN_DIR/kubectl"; }
# server_version: the apiserver's gitVersion, e.g. v1.33.13.
server_version() {
  k get --raw /version 2>/dev/null | sed -n 's/.*"gitVersion": *"\([^"]*\)".*/\1/p'
}
# k ARGS...: kubectl against the local control plane, never hanging forever.
k() { "$(kubectl_bin)" --kubeconfig "$STATE_DIR/kubeconfig" --request-timeout=15s "$@"; }

# registry_config NAME PORT [htpasswd]: writes the config of a local registry
# (deletes enabled, storage in the state dir) and prints its path.
registry_config() {
  local name=$1 port=$2 htpasswd=${3:-} dir="$STATE_DIR/$1"
  mkdir -p "$dir/data"
  {
    cat <<EOF
version: 0.1
log:
  level: info
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$port
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    if [[ -n $htpasswd ]]; then
      cat <<EOF
auth:
  htpasswd:
    realm: coreforge-local
    path: $htpasswd
EOF
    fi
  } >"$dir/config.yml"
  echo "$dir/config.yml"
}

# prometheus_config: writes the local Prometheus's config and prints its path.
prometheus_config() {
  local dir="$STATE_DIR/prometheus"
  mkdir -p "$dir/targets" "$dir/data"
  cat >"$dir/prometheus.yml" <<EOF
# Scrapes fast so tests see series within seconds.
global:
  scrape_interval: 2s
  evaluation_interval: 2s
rule_files:
  - $REPO_ROOT/deploy/monitoring/rules.yaml
scrape_configs:
  - job_name: coreforge
    file_sd_configs:
      - files: ["$dir/targets/*.json"]
        refresh_interval: 2s
EOF
  echo "$dir/prometheus.yml"
}
