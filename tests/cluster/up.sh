#!/usr/bin/env bash
# Starts the local Kubernetes control plane on loopback, as plain processes:
# etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok, which
# simulates the kubelets of a few fake nodes (see stages/ and README.md), and
# two OCI registries (open, and with htpasswd credentials) and Prometheus, and
# one real node: a kubelet with containerd, on a bridge of its own (node.sh).
#
# Idempotent: a healthy cluster is reused; a half-started or crashed one is
# stopped and replaced by a fresh one. Every wait is bounded and a failure
# names the component and shows the end of its log.
#
# State (pids, logs, certificates, etcd data, kubeconfig) lives in $STATE_DIR
# (target/cluster by default). Ports: see default_ports in lib.sh.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=tests/cluster/lib.sh
source "$here/lib.sh"

NODE_COUNT=${COREFORGE_NODES:-2}

started_at=$SECONDS

# --- building -------------------------------------------------------------

# Only call build.sh for components that are not cached: build.sh resolves the
# kubernetes module before it looks at the cache, which needs Go and the
# module proxy, and a warm start should need neither.
missing_components() {
  local c stamp
  for c in etcd kwok kubernetes kubelet containerd runc; do
    case $c in
      etcd) stamp="$CACHE_DIR/etcd-$ETCD_VERSION/.complete" ;;
      kwok) stamp="$CACHE_DIR/kwok-$KWOK_VERSION/.complete" ;;
      kubernetes) stamp="$CACHE_DIR/kubernetes-$KUBERNETES_VERSION/.complete" ;;
      kubelet) stamp="$CACHE_DIR/kubelet-$KUBERNETES_VERSION/.complete" ;;
      containerd) stamp="$CACHE_DIR/containerd-$CONTAINERD_VERSION/.complete" ;;
      runc) stamp="$CACHE_DIR/runc-$RUNC_VERSION/.complete" ;;
    esac
    [[ -f $stamp ]] || echo "$c"
  done
}

ensure_binaries() {
  local missing others deadline=$((SECONDS + ${COREFORGE_BUILD_WAIT:-3600}))
  while true; do
    mapfile -t missing < <(missing_components)
    ((${#missing[@]})) || return 0
    # build.sh takes no lock of its own, and two concurrent builds of the
    # same component would fight over its output directory. If one is
    # already running (another checkout, a manual run), wait for it and look
    # again. The pattern matches `bash .../tests/cluster/build.sh`, not an
    # editor that has the file open.
    others=$(pgrep -f '^([^ ]*/)?bash [^ ]*tests/cluster/build\.sh' | xargs || true)
    [[ -n $others ]] || break
    ((SECONDS < deadline)) || die "timed out waiting for the running build (pids: $others)"
    log "a build is already running (pids: $others); waiting for it (the first build of kubernetes takes 20-30 min)"
    sleep 20
  done
  "$here/build.sh" "${missing[@]}" || die "building the cluster binaries failed (see above)"
}

# --- certificates and kubeconfigs -----------------------------------------

# issue NAME SUBJECT EXTENSIONS: an EC P-256 key and a certificate signed by
# our CA. P-256 keeps generation fast; both Go and rustls accept it.
issue() {
  local name=$1 subj=$2 ext=$3 pki="$STATE_DIR/pki"
  openssl req -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$pki/$name.key" -out "$pki/$name.csr" -subj "$subj" 2>/dev/null
  openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" \
    -set_serial "0x$(openssl rand -hex 16)" -days 825 -out "$pki/$name.crt" \
    -extfile <(printf '%s\n' "$ext") 2>/dev/null
  rm -f "$pki/$name.csr"
}

make_pki() {
  local pki="$STATE_DIR/pki"
  mkdir -p "$pki"
  # rustls (webpki) insists on a proper v3 CA: basicConstraints CA:TRUE and
  # keyCertSign; leaf certificates need the matching extended key usage.
  openssl req -x509 -new -nodes -newkey ec -pkeyopt ec_paramgen_curve:P-256 \
    -keyout "$pki/ca.key" -out "$pki/ca.crt" -days 3650 -subj "/CN=coreforge-local-ca" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null

  local leaf="basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid"
  # One serving certificate for every loopback endpoint (apiserver, controller
  # manager, scheduler). The in-cluster names are there so a kubeconfig that
  # says https://kubernetes.default.svc would verify too; POD_GATEWAY is where
  # pods on the real node reach the apiserver (its forwarder, or SERVICE_IP).
  issue serving "/CN=kube-apiserver" "$leaf
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost,IP:$SERVICE_IP,IP:$POD_GATEWAY,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
  local client="$leaf
extendedKeyUsage=clientAuth"
  # Cluster-admin for people, tests and kwok: the system:masters group.
  issue admin "/O=system:masters/CN=coreforge-admin" "$client"
  issue kwok "/O=system:masters/CN=kwok-controller" "$client"
  # The controller manager and scheduler get their real identities so the
  # bootstrap RBAC roles apply to them as on a real cluster.
  issue kube-controller-manager "/CN=system:kube-controller-manager" "$client"
  issue kube-scheduler "/CN=system:kube-scheduler" "$client"
  # The apiserver's identity towards aggregated API servers. Configuring the
  # request-header CA also gives the controller manager and scheduler a
  # complete extension-apiserver-authentication ConfigMap (else they log an
  # error every few seconds).
  issue front-proxy-client "/CN=front-proxy-client" "$client"
  # The real node: the kubelet's identity (the Node authorizer needs nothing
  # more), its serving certificate for the node's address, and the
  # apiserver's client certificate towards it (kubectl logs, exec).
  issue kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
  issue kubelet-serving "/CN=$NODE_NAME" "$leaf
extendedKeyUsage=serverAuth
subjectAltName=IP:$POD_GATEWAY,DNS:$NODE_NAME"
  issue apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  # Service account token signing key pair (apiserver signs and verifies,
  # the token controller signs too). RSA: what every consumer supports.
  openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:2048 -out "$pki/sa.key" 2>/dev/null
  openssl pkey -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
  chmod 600 "$pki"/*.key
}

# kubeconfig FILE USER: a kubeconfig with the CA and the user's credentials
# embedded, so it keeps working when copied and needs no relative paths.
kubeconfig() {
  local file=$1 user=$2 pki="$STATE_DIR/pki"
  cat >"$file" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: coreforge-local
  cluster:
    server: https://127.0.0.1:$APISERVER_PORT
    certificate-authority-data: $(base64 -w0 "$pki/ca.crt")
users:
- name: $user
  user:
    client-certificate-data: $(base64 -w0 "$pki/$user.crt")
    client-key-data: $(base64 -w0 "$pki/$user.key")
contexts:
- name: coreforge-local
  context:
    cluster: coreforge-local
    user: $user
current-context: coreforge-local
EOF
  chmod 600 "$file"
}

# --- processes --------------------------------------------------------------

# start NAME BINARY ARGS...: runs a component in the background, detached in
# its own session (so Ctrl-C in the terminal or the end of `cargo test` does
# not take it down), with all output in its log and the lock fd closed (or the
# daemon would hold the up.sh lock for ever).
start() {
  local name=$1
  shift
  setsid "$@" >"$(log_file "$name")" 2>&1 </dev/null 9>&- &
  echo $! >"$(pid_file "$name")"
}

# wait_healthy NAME TIMEOUT: polls NAME's health endpoint; fails early if the
# process dies, and on timeout, with the end of its log either way.
wait_healthy() {
  local name=$1 timeout=$2 pid deadline
  pid=$(<"$(pid_file "$name")")
  deadline=$((SECONDS + timeout))
  until probe "$name"; do
    if ! alive "$pid"; then
      log_tail "$name" 40
      fail "$name exited during start (log: $(log_file "$name"))"
    fi
    if ((SECONDS >= deadline)); then
      log_tail "$name" 40
      fail "$name was not healthy after ${timeout}s ($(component_health_url "$name"); log: $(log_file "$name"))"
    fi
    sleep 0.3
  done
}

# fail MESSAGE: stops whatever this run started (ports stay free for the next
# attempt), keeps the logs for inspection, and exits.
fail() {
  log "error: $*"
  log "stopping the partially started cluster; logs are kept in $STATE_DIR/logs"
  stop_cluster >/dev/null 2>&1 || true
  exit 1
}

# wait_until WHAT TIMEOUT LOGNAME COMMAND...: retries COMMAND until it succeeds.
wait_until() {
  local what=$1 timeout=$2 logname=$3 deadline
  shift 3
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      "$@" || true # show the last error
      log_tail "$logname" 30
      fail "timed out after ${timeout}s waiting for $what"
    fi
    sleep 0.5
  done
}

# fingerprint: identifies what a cluster was started from (pinned versions,
# stages, this script). A running cluster with another fingerprint is stale:
# e.g. kwok only reads the stages at start, and a bumped KUBERNETES_VERSION
# must not keep serving the old apiserver.
fingerprint() {
  # node.sh writes the real node's configs (containerd, CNI, kubelet).
  cat "$CLUSTER_SCRIPTS/versions.env" "$CLUSTER_SCRIPTS"/stages/*.yaml "$CLUSTER_SCRIPTS/audit-policy.yaml" "$CLUSTER_SCRIPTS/lib.sh" \
    "$CLUSTER_SCRIPTS/up.sh" "$CLUSTER_SCRIPTS/node.sh" "$CLUSTER_SCRIPTS/images.sh" "$CLUSTER_SCRIPTS/node/pause/main.go" |
    sha256sum | cut -c1-16
}

# healthy: whether the cluster in $STATE_DIR is complete and working; if not,
# $unhealthy says why.
unhealthy=
healthy() {
  if [[ ! -f $STATE_DIR/ready ]]; then
    unhealthy="no completely started cluster in $STATE_DIR"
    return 1
  fi
  if [[ $(<"$STATE_DIR/ready") != "$(fingerprint)" ]]; then
    unhealthy="versions.env, stages/, up.sh or node.sh changed since it started"
    return 1
  fi
  local c
  for c in "${COMPONENTS[@]}"; do
    if ! component_pid "$c" >/dev/null; then
      unhealthy="$c is not running"
      return 1
    fi
    if ! probe "$c"; then
      unhealthy="$c is running but not healthy ($(component_health_url "$c"))"
      return 1
    fi
  done
  # Only our simulated nodes: tests may create Node objects of their own.
  if ! k wait --for=condition=Ready node -l type=kwok --timeout=5s >/dev/null 2>&1; then
    unhealthy="the simulated nodes are not Ready"
    return 1
  fi
  if ! k wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s >/dev/null 2>&1; then
    unhealthy="the real node $NODE_NAME is not Ready"
    return 1
  fi
}

check_ports_free() {
  local c p holder busy=0 seen=" "
  for c in "${COMPONENTS[@]}"; do
    for p in $(component_ports "$c"); do
      [[ $seen != *" $p "* ]] || die "port $p is configured twice (check the COREFORGE_*_PORT variables)"
      seen+="$p "
      holder=$(port_holder "$p")
      if [[ -n $holder ]]; then
        log "error: port 127.0.0.1:$p (for $c) is already in use by: $holder"
        busy=1
      fi
    done
  done
  ((busy == 0)) || die "free the port(s) above, or pick others with the COREFORGE_*_PORT variables (see tests/cluster/README.md)"
}

nodes_manifest() {
  local i
  for ((i = 0; i < NODE_COUNT; i++)); do
    cat <<EOF
---
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations:
    # kwok manages only nodes with this annotation (--manage-nodes-with-annotation-selector).
    kwok.x-k8s.io/node: fake
    node.alpha.kubernetes.io/ttl: "0"
  labels:
    type: kwok
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: kwok-node-$i
    kubernetes.io/os: linux
    node-role.kubernetes.io/agent: ""
# No taints: any pod schedules here without tolerations.
spec: {}
status:
  allocatable: &res
    cpu: "32"
    ephemeral-storage: 1Ti
    memory: 256Gi
    pods: "110"
  capacity: *res
  nodeInfo:
    architecture: amd64
    operatingSystem: linux
    kubeletVersion: $KUBERNETES_VERSION
  phase: Running
EOF
  done
}

nodes_untainted() {
  # The TaintNodesByCondition admission plugin creates nodes with a
  # not-ready taint; the node lifecycle controller lifts it once kwok reports
  # Ready. Pods created before that would sit Pending for a while.
  [[ -z $(k get nodes -l type=kwok -o jsonpath='{range .items[*]}{.spec.taints}{end}') ]]
}

nodes_registered() {
  [[ $(k get nodes -l type=kwok -o name | wc -l) -ge $NODE_COUNT ]]
}

main() {
  with_lock
  load_ports
  if healthy; then
    log "already up and healthy: $(server_version) at https://127.0.0.1:$APISERVER_PORT"
    log "export KUBECONFIG=$STATE_DIR/kubeconfig"
    exit 0
  fi

  ensure_binaries

  # Whatever is left of a previous run (crashed, half started, killed) goes:
  # stop our processes, then start from a clean state directory.
  if [[ -d $STATE_DIR ]]; then
    if [[ -f $STATE_DIR/ready ]]; then
      log "replacing the cluster in $STATE_DIR with a fresh one: $unhealthy"
    else
      log "cleaning up after an incomplete start ($STATE_DIR)"
    fi
    stop_cluster
  else
    node_clean_host # a real node whose state dir was deleted by hand
  fi
  remove_state_dir
  default_ports # the new cluster uses the current environment's ports
  check_ports_free
  node_check_host

  mkdir -p "$STATE_DIR"/{bin,pids,logs,kwok-home}
  mkdir -m 700 "$STATE_DIR/etcd" # etcd warns about anything more open
  cat >"$STATE_DIR/ports.env" <<EOF
ETCD_PORT=$ETCD_PORT
ETCD_PEER_PORT=$ETCD_PEER_PORT
APISERVER_PORT=$APISERVER_PORT
KCM_PORT=$KCM_PORT
SCHEDULER_PORT=$SCHEDULER_PORT
KWOK_PORT=$KWOK_PORT
REGISTRY_PORT=$REGISTRY_PORT
REGISTRY_AUTH_PORT=$REGISTRY_AUTH_PORT
PROMETHEUS_PORT=$PROMETHEUS_PORT
KUBELET_PORT=$KUBELET_PORT
KUBELET_HEALTHZ_PORT=$KUBELET_HEALTHZ_PORT
POD_SUBNET=$POD_SUBNET
NODE_BRIDGE=$NODE_BRIDGE
EOF
  # The real node's network first: its address is in the serving certificate
  # and a conflict should fail before anything runs.
  node_record_host
  node_network || fail "could not set up the real node's network (bridge $NODE_BRIDGE, iptables; see above)"
  # Convenience links; the components are started through them too, so `ps`
  # shows meaningful names (the etcd server binary is called `server`).
  ln -s "$ETCD_BIN_DIR/server" "$STATE_DIR/bin/etcd"
  ln -s "$ETCD_BIN_DIR/etcdctl" "$STATE_DIR/bin/etcdctl"
  ln -s "$KWOK_BIN_DIR/kwok" "$STATE_DIR/bin/kwok"
  ln -s "$KUBELET_BIN_DIR/kubelet" "$STATE_DIR/bin/kubelet"
  ln -s "$RUNC_BIN_DIR/runc" "$STATE_DIR/bin/runc"
  local b
  for b in containerd containerd-shim-runc-v2 ctr; do
    ln -s "$CONTAINERD_BIN_DIR/$b" "$STATE_DIR/bin/$b"
  done
  for b in kube-apiserver kube-controller-manager kube-scheduler kubectl; do
    ln -s "$KUBE_BIN_DIR/$b" "$STATE_DIR/bin/$b"
  done

  make_pki
  local pki="$STATE_DIR/pki" bin="$STATE_DIR/bin"
  kubeconfig "$STATE_DIR/kubeconfig" admin
  kubeconfig "$pki/kwok.kubeconfig" kwok
  kubeconfig "$pki/kube-controller-manager.kubeconfig" kube-controller-manager
  kubeconfig "$pki/kube-scheduler.kubeconfig" kube-scheduler
  kubeconfig "$pki/kubelet.kubeconfig" kubelet

  log "starting etcd on 127.0.0.1:$ETCD_PORT"
  # --unsafe-no-fsync: throwaway test data; fsync is the slowest part of etcd.
  start etcd "$bin/etcd" \
    --name coreforge \
    --data-dir "$STATE_DIR/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "coreforge=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync \
    --log-level warn
  wait_healthy etcd 30

  log "starting kube-apiserver on https://127.0.0.1:$APISERVER_PORT"
  # --endpoint-reconciler-type=none: the `kubernetes` Service would point at
  # 127.0.0.1, which Endpoints validation rejects; nothing runs in-cluster
  # that could use it anyway.
  start kube-apiserver "$bin/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_PORT" \
    --bind-address 127.0.0.1 \
    --advertise-address 127.0.0.1 \
    --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$pki/serving.crt" \
    --tls-private-key-file "$pki/serving.key" \
    --client-ca-file "$pki/ca.crt" \
    --authorization-mode Node,RBAC \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "$pki/sa.pub" \
    --service-account-signing-key-file "$pki/sa.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --endpoint-reconciler-type none \
    --requestheader-client-ca-file "$pki/ca.crt" \
    --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User \
    --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "$pki/front-proxy-client.crt" \
    --proxy-client-key-file "$pki/front-proxy-client.key" \
    --kubelet-client-certificate "$pki/apiserver-kubelet-client.crt" \
    --kubelet-client-key "$pki/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "$pki/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --allow-privileged=true \
    --audit-policy-file "$here/audit-policy.yaml" \
    --audit-log-path "$STATE_DIR/logs/audit.log" \
    --audit-log-maxsize 200 \
    --profiling=false
  wait_healthy kube-apiserver 90

  log "registering $NODE_COUNT simulated nodes"
  nodes_manifest | k apply -f - >/dev/null || fail "could not create the nodes (see above)"

  log "starting kube-controller-manager, kube-scheduler and kwok"
  # Leader election off: a single instance, and a restarted cluster must not
  # wait out the lease of a killed predecessor.
  start kube-controller-manager "$bin/kube-controller-manager" \
    --kubeconfig "$pki/kube-controller-manager.kubeconfig" \
    --authentication-kubeconfig "$pki/kube-controller-manager.kubeconfig" \
    --authorization-kubeconfig "$pki/kube-controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 \
    --secure-port "$KCM_PORT" \
    --tls-cert-file "$pki/serving.crt" \
    --tls-private-key-file "$pki/serving.key" \
    --client-ca-file "$pki/ca.crt" \
    --leader-elect=false \
    --controllers '*' \
    --use-service-account-credentials=true \
    --service-account-private-key-file "$pki/sa.key" \
    --root-ca-file "$pki/ca.crt" \
    --cluster-signing-cert-file "$pki/ca.crt" \
    --cluster-signing-key-file "$pki/ca.key" \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    --flex-volume-plugin-dir "$STATE_DIR/flexvolume" \
    --profiling=false
  start kube-scheduler "$bin/kube-scheduler" \
    --kubeconfig "$pki/kube-scheduler.kubeconfig" \
    --authentication-kubeconfig "$pki/kube-scheduler.kubeconfig" \
    --authorization-kubeconfig "$pki/kube-scheduler.kubeconfig" \
    --bind-address 127.0.0.1 \
    --secure-port "$SCHEDULER_PORT" \
    --tls-cert-file "$pki/serving.crt" \
    --tls-private-key-file "$pki/serving.key" \
    --client-ca-file "$pki/ca.crt" \
    --leader-elect=false \
    --profiling=false
  # HOME points into the state dir so a personal ~/.kwok/kwok.yaml (which
  # kwok loads implicitly) cannot change the simulation.
  HOME="$STATE_DIR/kwok-home" start kwok "$bin/kwok" \
    --kubeconfig "$pki/kwok.kubeconfig" \
    --config "$here/stages/node.yaml" \
    --config "$here/stages/pod.yaml" \
    --manage-all-nodes=false \
    --manage-nodes-with-annotation-selector kwok.x-k8s.io/node=fake \
    --server-address "127.0.0.1:$KWOK_PORT" \
    --cidr "$KWOK_POD_CIDR" \
    --node-lease-duration-seconds 40
  log "starting the registries on 127.0.0.1:$REGISTRY_PORT (open) and 127.0.0.1:$REGISTRY_AUTH_PORT (htpasswd)"
  start registry /usr/bin/docker-registry serve "$(registry_config registry "$REGISTRY_PORT")"
  mkdir -p "$STATE_DIR/registry-auth"
  echo "coreforge:$(openssl rand -hex 12)" >"$STATE_DIR/registry-auth/credentials"
  htpasswd -Bbn coreforge "$(cut -d: -f2 "$STATE_DIR/registry-auth/credentials")" >"$STATE_DIR/registry-auth/htpasswd"
  start registry-auth /usr/bin/docker-registry serve \
    "$(registry_config registry-auth "$REGISTRY_AUTH_PORT" "$STATE_DIR/registry-auth/htpasswd")"
  log "starting Prometheus on http://127.0.0.1:$PROMETHEUS_PORT"
  start prometheus /usr/bin/prometheus \
    --config.file "$(prometheus_config)" \
    --storage.tsdb.path "$STATE_DIR/prometheus/data" \
    --storage.tsdb.retention.time 1d \
    --web.listen-address "127.0.0.1:$PROMETHEUS_PORT" \
    --log.level warn
  wait_healthy kube-controller-manager 60
  wait_healthy kube-scheduler 60
  wait_healthy kwok 60
  wait_healthy registry 30
  wait_healthy registry-auth 30
  wait_healthy prometheus 60

  log "starting the real node $NODE_NAME: forwarders on $POD_GATEWAY, containerd, kubelet"
  node_start_forwarders
  wait_healthy fwd-registry 10
  wait_healthy fwd-registry-auth 10
  wait_healthy fwd-apiserver 10
  # The images pods run (the sandbox, the Debian base, the builder), built once
  # and cached, pushed where pods and the node's containerd pull them from.
  "$here/images.sh" push "$POD_GATEWAY:$REGISTRY_PORT" "$STATE_DIR/images.env" ||
    fail "could not build or push the images (see above)"
  node_configs "$(pushed_image PAUSE_IMAGE)"
  node_env
  node_start
  wait_healthy kubelet 60

  log "waiting for the nodes to be Ready"
  wait_until "$NODE_COUNT nodes to register" 30 kwok nodes_registered
  wait_until "the nodes to be Ready" 60 kwok k wait --for=condition=Ready node -l type=kwok --timeout=5s
  wait_until "the not-ready taints to be lifted" 60 kube-controller-manager nodes_untainted
  wait_until "the real node $NODE_NAME to be Ready" 60 kubelet k wait --for=condition=Ready "node/$NODE_NAME" --timeout=5s
  wait_until "the default ServiceAccount" 60 kube-controller-manager k -n default get serviceaccount default

  fingerprint >"$STATE_DIR/ready"
  log "up in $((SECONDS - started_at))s: Kubernetes $KUBERNETES_VERSION at https://127.0.0.1:$APISERVER_PORT with $NODE_COUNT simulated nodes and the real node $NODE_NAME (pods: $POD_SUBNET; $STATE_DIR/node.env)"
  log "export KUBECONFIG=$STATE_DIR/kubeconfig   # or: eval \"\$(make -s cluster-env)\""
}

main "$@"
