# The real node beside the kwok nodes: a kubelet (built from the same
# Kubernetes module) with containerd 2 and runc (built from their modules: recent
# enough for user-namespaced pods) and Debian's CNI plugins, on a Linux
# bridge of its own. Sourced by lib.sh; README.md ("The real node") explains
# the wiring. Every host resource it creates outside $STATE_DIR is named after
# the bridge (cgroup root, iptables chains, CNI network) so node_clean_host can
# remove exactly it, and recorded state (host.before) says what to restore.
# shellcheck shell=bash

NODE_NAME=coreforge-node
# shellcheck disable=SC2034 # lib.sh appends them to COMPONENTS
NODE_COMPONENTS=(fwd-registry fwd-registry-auth fwd-apiserver containerd kubelet)
# Pods land on the real node only if they ask: nodeSelector type=real and a
# toleration of this taint. Everything else (the kwok-based tests) never does.
NODE_LABEL_KEY="type"
NODE_LABEL_VALUE=real
NODE_TAINT_KEY=coreforge.dev/real-node
# The sysctls the kubelet sets (pkg/kubelet/cm: setupKernelTunables) and the
# one the bridge plugin turns on; saved before the node starts, restored after.
NODE_SYSCTLS=(vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
  kernel.keys.root_maxkeys kernel.keys.root_maxbytes net.ipv4.ip_forward)
# Host directories the node's programs create outside $STATE_DIR (hard-wired in
# them): removed again if they did not exist before and are empty.
#   /var/log/containers: the kubelet's symlinks to container logs;
#   /var/lib/cni: libcni's result cache (containerd's CRI cannot move it);
#   /run/containerd: containerd puts its shims' sockets in /run/containerd/s.
NODE_HOST_DIRS=(/var/log/containers /var/lib/cni/results /var/lib/cni /run/containerd/s /run/containerd)

# node_names: the names derived from the node's network settings (called by
# default_ports and load_ports once POD_SUBNET and NODE_BRIDGE are known).
node_names() {
  [[ $POD_SUBNET =~ ^([0-9]+\.[0-9]+\.[0-9]+\.)([0-9]+)/([0-9]+)$ ]] ||
    die "COREFORGE_POD_SUBNET=$POD_SUBNET is not an IPv4 subnet like 10.217.0.0/24"
  POD_GATEWAY=${BASH_REMATCH[1]}$((BASH_REMATCH[2] + 1)) # the bridge's address
  POD_GATEWAY_CIDR=$POD_GATEWAY/${BASH_REMATCH[3]}
  ((${#NODE_BRIDGE} <= 15)) || die "COREFORGE_NODE_BRIDGE=$NODE_BRIDGE: interface names have at most 15 characters"
  NODE_DIR="$STATE_DIR/node"
  CONTAINERD_SOCK="$NODE_DIR/containerd.sock"
  CNI_NETWORK="coreforge-$NODE_BRIDGE"
  NODE_CGROUP_ROOT="/coreforge-$NODE_BRIDGE"
  CHAIN_SVC="CF-SVC-$NODE_BRIDGE" # nat: the `kubernetes` Service IP -> the apiserver forwarder
  CHAIN_IN="CF-IN-$NODE_BRIDGE"   # filter: what pods may reach on the host
  CHAIN_FWD="CF-FWD-$NODE_BRIDGE" # filter: nothing is routed out of the bridge
  # An interface alias marks the bridge as this state dir's.
  BRIDGE_ALIAS="coreforge:$STATE_DIR"
}

# pushed_image VAR: a reference by digest from $STATE_DIR/images.env, which
# `images.sh push` writes at every start (PAUSE_IMAGE, DEBIAN_IMAGE, BUILDER_IMAGE).
pushed_image() { sed -n "s/^$1=//p" "$STATE_DIR/images.env"; }

ctr_() { timeout "${CTR_TIMEOUT:-10}" "$STATE_DIR/bin/ctr" --address "$CONTAINERD_SOCK" --namespace k8s.io "$@"; }

# ---------------------------------------------------------------------------
# Start (called by up.sh).

# node_check_host: fails early, before anything starts, when the machine cannot
# run the node or its addresses are taken.
node_check_host() {
  [[ $(id -u) -eq 0 ]] || die "the real node (kubelet, containerd, a bridge, iptables) needs root"
  local b
  for b in socat iptables ip /usr/lib/cni/bridge /usr/lib/cni/host-local /usr/lib/cni/loopback; do
    command -v "$b" >/dev/null 2>&1 || die "$b is missing (run tests/deps.sh)"
  done
  ((${#CONTAINERD_SOCK} < 100)) || die "$CONTAINERD_SOCK is too long for a unix socket; move the state with COREFORGE_CLUSTER_DIR"
  if ip link show "$NODE_BRIDGE" >/dev/null 2>&1; then
    die "a network interface $NODE_BRIDGE already exists ($(ip -o link show "$NODE_BRIDGE" | grep -o 'alias .*' || echo 'not ours')); another cluster's real node? Pick another with COREFORGE_NODE_BRIDGE and COREFORGE_POD_SUBNET"
  fi
  local taken
  taken=$(ip -o -4 addr show | awk -v gw="$POD_GATEWAY" '{split($4, a, "/"); if (a[1] == gw) print $2}')
  [[ -z $taken ]] || die "$POD_GATEWAY (COREFORGE_POD_SUBNET=$POD_SUBNET) is already assigned to $taken; pick another subnet"
}

# node_record_host: what node_clean_host restores, saved before the node
# changes anything.
node_record_host() {
  mkdir -p "$NODE_DIR"
  local f="$NODE_DIR/host.before" s d t tool
  : >"$f"
  for s in "${NODE_SYSCTLS[@]}"; do echo "sysctl $s $(sysctl -n "$s")" >>"$f"; done
  for d in "${NODE_HOST_DIRS[@]}"; do [[ -e $d ]] && echo "dir $d" >>"$f"; done
  for tool in iptables ip6tables; do
    for t in filter nat mangle; do
      "$tool" -t "$t" -S 2>/dev/null | awk -v tool="$tool" -v t="$t" '$1 == "-N" {print "chain", tool, t, $2}' >>"$f"
    done
  done
}

# node_network: the bridge with the pods' gateway address, the cgroup root the
# kubelet puts pods under, and the iptables rules of README.md's wiring.
# Returns non-zero at the first failure (up.sh then cleans up).
node_network() {
  ip link add "$NODE_BRIDGE" type bridge || return 1
  ip link set "$NODE_BRIDGE" alias "$BRIDGE_ALIAS" || return 1
  ip addr add "$POD_GATEWAY_CIDR" dev "$NODE_BRIDGE" || return 1
  ip link set "$NODE_BRIDGE" up || return 1

  local h
  for h in $(cgroup_v1_mounts); do
    mkdir -p "$h$NODE_CGROUP_ROOT" || return 1
    if [[ -f $h/cpuset.cpus ]]; then # a new cpuset cgroup starts empty
      cat "$h/cpuset.cpus" >"$h$NODE_CGROUP_ROOT/cpuset.cpus" || return 1
      cat "$h/cpuset.mems" >"$h$NODE_CGROUP_ROOT/cpuset.mems" || return 1
    fi
  done

  # In-cluster clients dial the `kubernetes` Service (SERVICE_IP:443); there is
  # no kube-proxy, so send that to the apiserver's forwarder on the bridge.
  iptables -t nat -N "$CHAIN_SVC" || return 1
  iptables -t nat -A "$CHAIN_SVC" -s "$POD_SUBNET" -d "$SERVICE_IP/32" -p tcp --dport 443 \
    -j DNAT --to-destination "$POD_GATEWAY:$APISERVER_PORT" || return 1
  iptables -t nat -I PREROUTING 1 -i "$NODE_BRIDGE" -j "$CHAIN_SVC" || return 1
  # Pods may reach the host only at the forwarders (and answer the kubelet).
  iptables -N "$CHAIN_IN" || return 1
  iptables -A "$CHAIN_IN" -m conntrack --ctstate ESTABLISHED,RELATED -j ACCEPT || return 1
  iptables -A "$CHAIN_IN" -d "$POD_GATEWAY/32" -p tcp -m multiport \
    --dports "$REGISTRY_PORT,$REGISTRY_AUTH_PORT,$APISERVER_PORT" -j ACCEPT || return 1
  iptables -A "$CHAIN_IN" -j DROP || return 1
  iptables -I INPUT 1 -i "$NODE_BRIDGE" -j "$CHAIN_IN" || return 1
  # Pods reach each other (bridged) and nothing beyond the bridge, even one
  # that adds a default route of its own (the bridge plugin turns on ip_forward).
  iptables -N "$CHAIN_FWD" || return 1
  iptables -A "$CHAIN_FWD" -o "$NODE_BRIDGE" -j ACCEPT || return 1
  iptables -A "$CHAIN_FWD" -j DROP || return 1
  iptables -I FORWARD 1 -i "$NODE_BRIDGE" -j "$CHAIN_FWD" || return 1
}

# node_configs SANDBOX_IMAGE: containerd's config, the CNI network, the
# registry hosts, the kubelet's config and kubeconfig, all in $NODE_DIR.
node_configs() {
  local sandbox_image=$1 pki="$STATE_DIR/pki" d="$NODE_DIR"
  mkdir -p "$d"/{containerd/root,containerd/state,containerd/opt,containerd/runc,cni/net.d,cni/ipam,certs.d,kubelet,pod-logs,volume-plugins}
  # Plain HTTP to both registries, under the names pods and the host use.
  local host port
  for host in 127.0.0.1 "$POD_GATEWAY"; do
    for port in "$REGISTRY_PORT" "$REGISTRY_AUTH_PORT"; do
      mkdir -p "$d/certs.d/$host:$port"
      cat >"$d/certs.d/$host:$port/hosts.toml" <<EOF
server = "http://$host:$port"

[host."http://$host:$port"]
  capabilities = ["pull", "resolve", "push"]
  skip_verify = true
EOF
    done
  done
  # containerd 2 (config version 3). The CRI settings these machines need:
  # restrict_oom_score_adj (root lacks CAP_SYS_RESOURCE), no AppArmor, cgroupfs.
  # NRI is off (its socket would be a host path). Every path is ours, so a system
  # containerd is not disturbed.
  cat >"$d/containerd.toml" <<EOF
version = 3
root = "$d/containerd/root"
state = "$d/containerd/state"

[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  address = ""
  level = "info"
[metrics]
  address = ""

[plugins."io.containerd.internal.v1.opt"]
  path = "$d/containerd/opt"
[plugins."io.containerd.nri.v1.nri"]
  disable = true
[plugins."io.containerd.transfer.v1.local"]
  config_path = "$d/certs.d"
[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "$sandbox_image"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "$d/certs.d"
[plugins."io.containerd.cri.v1.runtime"]
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".containerd]
    default_runtime_name = "runc"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      runtime_path = "$STATE_DIR/bin/containerd-shim-runc-v2"
      [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
        BinaryName = "$STATE_DIR/bin/runc"
        Root = "$d/containerd/runc"
        SystemdCgroup = false
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["/usr/lib/cni"]
    conf_dir = "$d/cni/net.d"
    max_conf_num = 1
[plugins."io.containerd.grpc.v1.cri"]
  stream_server_address = "127.0.0.1"
  stream_server_port = "0"
EOF
  # No default route in pods: they reach the subnet, and SERVICE_IP through
  # the gateway (DNAT to the apiserver forwarder); nothing is masqueraded.
  cat >"$d/cni/net.d/10-$CNI_NETWORK.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$NODE_BRIDGE",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$d/cni/ipam",
        "ranges": [[{"subnet": "$POD_SUBNET", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "$SERVICE_IP/32", "gw": "$POD_GATEWAY"}]
      }
    },
    {"type": "loopback"}
  ]
}
EOF
  cat >"$d/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# Served on the bridge address only (the apiserver dials the node's InternalIP);
# health on loopback; no read-only port.
address: $POD_GATEWAY
port: $KUBELET_PORT
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: $KUBELET_HEALTHZ_PORT
tlsCertFile: $pki/kubelet-serving.crt
tlsPrivateKeyFile: $pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization:
  mode: Webhook
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
imageServiceEndpoint: unix://$CONTAINERD_SOCK
cgroupDriver: cgroupfs
cgroupRoot: $NODE_CGROUP_ROOT
failSwapOn: false
failCgroupV1: false
volumePluginDir: $d/volume-plugins
podLogsDir: $d/pod-logs
registerWithTaints:
- {key: $NODE_TAINT_KEY, value: "true", effect: NoSchedule}
# No iptables chains of the kubelet's (KUBE-FIREWALL, canaries): nothing here
# needs them, and node_clean_host removes any that appear anyway.
makeIPTablesUtilChains: false
# Pods get no name servers: nothing outside is reachable.
resolvConf: ""
serializeImagePulls: false
rotateCertificates: false
serverTLSBootstrap: false
# A throwaway node on a shared disk: evict late, collect images late.
evictionHard: {memory.available: 100Mi, nodefs.available: 2%, imagefs.available: 2%, nodefs.inodesFree: 2%}
imageGCHighThresholdPercent: 98
imageGCLowThresholdPercent: 95
EOF
}

# node_start: containerd, then the kubelet (up.sh waits for them).
node_start() {
  local pki="$STATE_DIR/pki" bin="$STATE_DIR/bin"
  start containerd "$bin/containerd" --config "$NODE_DIR/containerd.toml"
  wait_healthy containerd 30
  start kubelet "$bin/kubelet" \
    --config "$NODE_DIR/kubelet.yaml" \
    --kubeconfig "$pki/kubelet.kubeconfig" \
    --root-dir "$NODE_DIR/kubelet" \
    --hostname-override "$NODE_NAME" \
    --node-ip "$POD_GATEWAY" \
    --node-labels "$NODE_LABEL_KEY=$NODE_LABEL_VALUE" \
    --pod-infra-container-image "$(pushed_image PAUSE_IMAGE)" \
    --v 1
}

# node_start_forwarders: pods cannot reach the host's 127.0.0.1, so the open
# registry, the registry with credentials and the apiserver are forwarded from
# the bridge address, same ports.
node_start_forwarders() {
  local name port
  for name in fwd-registry fwd-registry-auth fwd-apiserver; do
    case $name in
      fwd-registry) port=$REGISTRY_PORT ;;
      fwd-registry-auth) port=$REGISTRY_AUTH_PORT ;;
      fwd-apiserver) port=$APISERVER_PORT ;;
    esac
    # -lf: socat's own messages go to the log, and put $STATE_DIR in its
    # command line (how is_ours recognises our processes).
    start "$name" /usr/bin/socat -lf "$(log_file "$name")" \
      "TCP-LISTEN:$port,bind=$POD_GATEWAY,reuseaddr,fork" "TCP:127.0.0.1:$port"
  done
}

# node_env: what tests and tools need to put pods on the node, as a sourceable
# file ($STATE_DIR/node.env). REGISTRY is the open registry as the host (and
# containerd, which pulls) sees it; POD_* are the addresses pods use.
node_env() {
  cat >"$STATE_DIR/node.env" <<EOF
NODE_NAME=$NODE_NAME
NODE_SELECTOR=$NODE_LABEL_KEY=$NODE_LABEL_VALUE
NODE_TAINT=$NODE_TAINT_KEY=true:NoSchedule
REGISTRY=127.0.0.1:$REGISTRY_PORT
POD_SUBNET=$POD_SUBNET
POD_GATEWAY=$POD_GATEWAY
POD_REGISTRY=$POD_GATEWAY:$REGISTRY_PORT
POD_REGISTRY_AUTH=$POD_GATEWAY:$REGISTRY_AUTH_PORT
POD_APISERVER=https://$POD_GATEWAY:$APISERVER_PORT
EOF
}

# ---------------------------------------------------------------------------
# Stop and clean (called by stop_cluster, i.e. down.sh, a failed up.sh, and
# up.sh before it replaces a cluster).

# cgroup_mounts [TYPE...]: mount points of the cgroup hierarchies (the file
# system type follows the " - " separator in mountinfo).
cgroup_mounts() {
  awk -v types="${*:-cgroup cgroup2}" 'BEGIN { n = split(types, t, " "); for (i = 1; i <= n; i++) want[t[i]] = 1 }
    { for (i = 7; i < NF; i++) if ($i == "-") { if ($(i + 1) in want) print $5; break } }' /proc/self/mountinfo
}
cgroup_v1_mounts() { cgroup_mounts cgroup; }

# mounts_under DIR: mount points at or below DIR, innermost (newest) first.
mounts_under() {
  local dir
  dir=$(realpath -m "$1")
  awk -v d="$dir" '{ p = $5; gsub(/\\040/, " ", p); if (p == d || index(p, d "/") == 1) print p }' /proc/self/mountinfo | tac
}

# node_remove_containers: kills and deletes every container and pod sandbox
# (their shims exit, their rootfs mounts go) while containerd still runs.
node_remove_containers() {
  probe containerd || return 0
  local ids id tries
  ids=$(ctr_ tasks ls -q 2>/dev/null || true)
  # SIGKILL, then delete; the CRI plugin deletes the tasks of containers it
  # sees exit by itself, so "not found" from ctr is success too.
  for id in $ids; do ctr_ tasks kill --signal SIGKILL "$id" >/dev/null 2>&1 || true; done
  for ((tries = 0; tries < 100; tries++)); do
    for id in $(ctr_ tasks ls -q 2>/dev/null || true); do
      ctr_ tasks delete --force "$id" >/dev/null 2>&1 || true
    done
    [[ -n $(ctr_ tasks ls -q 2>/dev/null || true) ]] || break
    sleep 0.2
  done
  id=$(ctr_ tasks ls -q 2>/dev/null || true)
  [[ -z $id ]] || log "warning: containerd still has tasks (killed after it stops): $(xargs <<<"$id")"
  ids=$(ctr_ containers ls -q 2>/dev/null || true)
  for id in $ids; do ctr_ containers delete "$id" >/dev/null 2>&1 || true; done
  [[ -z $ids ]] || log "removed $(wc -w <<<"$ids") containers and pod sandboxes"
}

# node_cgroup_pids: processes still in the node's cgroups (containers whose
# shim died, e.g. after a crash).
node_cgroup_pids() {
  local h
  for h in $(cgroup_mounts); do
    [[ -d $h$NODE_CGROUP_ROOT ]] || continue
    find "$h$NODE_CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null
  done | sort -un
}

# ipt_remove_chain TOOL TABLE CHAIN: every rule that jumps to CHAIN, then CHAIN.
ipt_remove_chain() {
  local tool=$1 table=$2 chain=$3 rule
  "$tool" -t "$table" -S "$chain" >/dev/null 2>&1 || return 0
  while read -r rule; do
    # shellcheck disable=SC2086 # a rule as iptables -S prints it, re-split on purpose
    "$tool" -t "$table" -D ${rule#-A } 2>/dev/null || log "warning: could not delete '$rule' ($tool -t $table)"
  done < <("$tool" -t "$table" -S | grep -E -- "^-A .* -j $chain( |\$)")
  "$tool" -t "$table" -F "$chain"
  "$tool" -t "$table" -X "$chain"
}

# node_clean_host: removes everything the node left on the machine and
# restores what it changed. Idempotent; safe when nothing is there. Runs after
# every process of the cluster has stopped.
node_clean_host() {
  local before="$NODE_DIR/host.before" pids p tries h d tool t c

  # Container processes whose shims are gone.
  mapfile -t pids < <(node_cgroup_pids)
  if ((${#pids[@]})); then
    log "killing leftover container processes: ${pids[*]}"
    kill -KILL "${pids[@]}" 2>/dev/null || true
    for ((tries = 0; tries < 50; tries++)); do
      [[ -n $(node_cgroup_pids) ]] || break
      sleep 0.1
    done
  fi

  # Mounts: container root file systems, pod volumes (tmpfs), the pods'
  # network namespaces (bind mounts; unmounting one ends the namespace and its
  # veth pair), shm. Innermost first; lazily if busy.
  local mps
  for ((tries = 0; tries < 3; tries++)); do
    mapfile -t mps < <(mounts_under "$STATE_DIR")
    ((${#mps[@]})) || break
    for p in "${mps[@]}"; do umount "$p" 2>/dev/null || umount -l "$p" 2>/dev/null || true; done
  done

  # The bridge and any veth still on it, if it is ours.
  if [[ $(cat "/sys/class/net/$NODE_BRIDGE/ifalias" 2>/dev/null) == "$BRIDGE_ALIAS" ]]; then
    for p in $(ip -o link show master "$NODE_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
      ip link del "$p" 2>/dev/null || true
    done
    ip link del "$NODE_BRIDGE" || log "warning: could not delete the bridge $NODE_BRIDGE"
  fi

  # iptables: our chains, and chains of the kubelet's that were not there before.
  ipt_remove_chain iptables nat "$CHAIN_SVC"
  ipt_remove_chain iptables filter "$CHAIN_IN"
  ipt_remove_chain iptables filter "$CHAIN_FWD"
  if [[ -f $before ]]; then
    for tool in iptables ip6tables; do
      for t in filter nat mangle; do
        for c in $("$tool" -t "$t" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^KUBE-/ {print $2}'); do
          grep -qxF "chain $tool $t $c" "$before" || ipt_remove_chain "$tool" "$t" "$c"
        done
      done
    done
  fi

  # cgroups the kubelet and runc created under our root.
  for h in $(cgroup_mounts); do
    [[ -d $h$NODE_CGROUP_ROOT ]] || continue
    find "$h$NODE_CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null ||
      log "warning: could not remove the cgroup $h$NODE_CGROUP_ROOT"
  done

  # Files outside the state dir: the kubelet's log symlinks, libcni's cache.
  if [[ -d /var/log/containers ]]; then
    find /var/log/containers -maxdepth 1 -type l -lname "$STATE_DIR/*" -delete 2>/dev/null || true
  fi
  # libcni caches each sandbox's result twice: our network, and the CRI's own
  # loopback network (cni-loopback, shared with any other containerd: only
  # our sandboxes' entries go).
  local f id
  for f in /var/lib/cni/results/"$CNI_NETWORK"-*; do
    [[ -e $f ]] || continue
    id=${f#/var/lib/cni/results/"$CNI_NETWORK"-}
    id=${id%-*}
    rm -f "$f" "/var/lib/cni/results/cni-loopback-$id-lo"
  done

  if [[ -f $before ]]; then
    local kind key value cur
    while read -r kind key value; do
      case $kind in
        sysctl)
          cur=$(sysctl -n "$key" 2>/dev/null) || continue
          [[ $cur == "$value" ]] || sysctl -qw "$key=$value" || log "warning: could not restore $key=$value"
          ;;
      esac
    done <"$before"
    for d in "${NODE_HOST_DIRS[@]}"; do
      [[ -d $d ]] && ! grep -qxF "dir $d" "$before" && rmdir "$d" 2>/dev/null
    done
  elif [[ -d $STATE_DIR ]] && [[ -d $NODE_DIR ]]; then
    log "warning: $before is missing: the sysctls the kubelet changed are not restored"
  fi
  return 0
}

# node_leftovers: what node_clean_host could not remove, one line each (for
# down.sh's final check).
node_leftovers() {
  local p
  while read -r p; do [[ -n $p ]] && echo "mount $p"; done < <(mounts_under "$STATE_DIR")
  if [[ $(cat "/sys/class/net/$NODE_BRIDGE/ifalias" 2>/dev/null) == "$BRIDGE_ALIAS" ]]; then
    echo "network interface $NODE_BRIDGE"
  fi
  for p in "nat $CHAIN_SVC" "filter $CHAIN_IN" "filter $CHAIN_FWD"; do
    # shellcheck disable=SC2086
    iptables -t ${p% *} -S ${p#* } >/dev/null 2>&1 && echo "iptables chain $p"
  done
  while read -r p; do [[ -n $p ]] && echo "container process $p"; done < <(node_cgroup_pids)
  for p in $(cgroup_mounts); do [[ -d $p$NODE_CGROUP_ROOT ]] && echo "cgroup $p$NODE_CGROUP_ROOT"; done
  return 0
}
