#!/usr/bin/env bash
# A real Kubernetes control plane on this machine, without Docker: for the end-to-end test of the quickstart.
#
#   scripts/kube-dev.sh build    build (or find in the cache) etcd, kube-apiserver, kube-controller-manager,
#                                kube-scheduler, kubectl, kwok and the KEDA operator, and the real node's kubelet,
#                                containerd and CNI plugins; print the control plane's directory
#   scripts/kube-dev.sh up       start the control plane, the brokers' stand-in Node (kwok), the Strimzi stand-in
#                                and the brokers, all inside private mount and network namespaces; wait until ready
#   scripts/kube-dev.sh node     add the real node every scheduled pod runs on (scripts/kube-dev/node.sh: kubelet,
#                                containerd, runc, the CNI bridge, kube-proxy, CoreDNS, the operators' images)
#   scripts/kube-dev.sh exec -- COMMAND...   run COMMAND inside those namespaces, with KUBECONFIG set
#   scripts/kube-dev.sh status   exit 0 when the control plane runs and answers
#   scripts/kube-dev.sh env      print the variables a command run through `exec` gets
#   scripts/kube-dev.sh down     stop everything that runs inside the namespaces
#
# The namespaces keep the machine as it was: in-cluster names (medicine-pubsub-kafka-bootstrap) resolve through a
# private /etc/hosts bind-mounted over the machine's, and every port is on a loopback of its own, so the broker
# can listen on 9092 as the manifests expect and nothing collides with the machine's services. What in the test
# is real and what is a stand-in: documentation/TESTING.md.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

: "${KUBE_DEV_DIR:=${repo_root}/target/kube-dev}"
: "${KUBE_DEV_NODE:=kube-dev-node}"
: "${KUBE_DEV_START_TIMEOUT:=120}"
# What `minikube start --cpus=6 --memory=8g` gives the quickstart.
: "${KUBE_DEV_NODE_CPUS:=6}"
: "${KUBE_DEV_NODE_MEMORY:=8Gi}"

pki="${KUBE_DEV_DIR}/pki"
logs="${KUBE_DEV_DIR}/logs"
run_dir="${KUBE_DEV_DIR}/run"
holder_pid_file="${run_dir}/holder.pid"
kubeconfig="${KUBE_DEV_DIR}/admin.kubeconfig"
api_port=6443
api_server="https://127.0.0.1:${api_port}"
# The node's address, on the namespace's loopback from its start (the holder puts it there): the API server
# advertises it, the bootstrap Service leads to the brokers there, and the real node (scripts/kube-dev/node.sh)
# serves its kubelet there; its pods reach it through their bridge's gateway.
NODE_IP=172.30.0.1

die() {
  echo "kube-dev: $*" >&2
  exit 1
}

say() {
  echo "kube-dev: $*" >&2
}

require() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed; $2"
}

holder_pid() {
  [[ -f "${holder_pid_file}" ]] || return 1
  local pid
  pid=$(<"${holder_pid_file}")
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null || return 1
  echo "${pid}"
}

# inside COMMAND...: runs COMMAND in the namespaces, in the current directory.
inside() {
  local pid
  pid=$(holder_pid) || die "not running; start it first: $0 up"
  nsenter --target "${pid}" --mount --net --wd="${PWD}" -- env KUBECONFIG="${kubeconfig}" "$@"
}

kubectl_in() {
  inside "${bin_dir}/kubectl" "$@"
}

build() {
  require go "install Go 1.26+ (Debian: apt-get install golang-go); the control plane is built from the Go module proxy"
  bin_dir=$("${repo_root}/scripts/kube-dev/build.sh")
  "${repo_root}/scripts/kube-dev/build.sh" --node >/dev/null
}

# certificate NAME SUBJECT [SANS]: a key and a certificate signed by the test CA.
certificate() {
  local name=$1 subject=$2 sans=${3:-}
  [[ -f "${pki}/${name}.crt" ]] && return 0
  openssl req -new -newkey rsa:2048 -nodes -keyout "${pki}/${name}.key" -subj "${subject}" \
    -out "${pki}/${name}.csr" 2>/dev/null
  local extensions="${pki}/${name}.ext"
  {
    echo "basicConstraints=CA:FALSE"
    echo "keyUsage=critical,digitalSignature,keyEncipherment"
    echo "extendedKeyUsage=serverAuth,clientAuth"
    if [[ -n "${sans}" ]]; then
      echo "subjectAltName=${sans}"
    fi
  } >"${extensions}"
  openssl x509 -req -in "${pki}/${name}.csr" -CA "${pki}/ca.crt" -CAkey "${pki}/ca.key" -CAcreateserial \
    -days 30 -extfile "${extensions}" -out "${pki}/${name}.crt" 2>/dev/null
  rm -f "${pki}/${name}.csr" "${extensions}"
}

make_pki() {
  require openssl "install OpenSSL (Debian: apt-get install openssl)"
  mkdir -p "${pki}"
  if [[ ! -f "${pki}/ca.crt" ]]; then
    openssl req -x509 -new -newkey rsa:2048 -nodes -keyout "${pki}/ca.key" -subj "/CN=kube-dev-ca" \
      -days 30 -out "${pki}/ca.crt" 2>/dev/null
  fi
  certificate apiserver "/CN=kube-apiserver" \
    "DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,IP:127.0.0.1,IP:10.96.0.1"
  certificate admin "/O=system:masters/CN=kube-dev-admin"
  certificate controller-manager "/CN=system:kube-controller-manager"
  certificate scheduler "/CN=system:kube-scheduler"
  certificate apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
  # The aggregator's client certificate, which extension API servers (KEDA's metrics server) trust for the user
  # it names in its headers: signed by the same CA, but only this name is allowed to (--requestheader-allowed-names).
  certificate front-proxy-client "/CN=front-proxy-client"
  certificate kubelet "/CN=system:node:${KUBE_DEV_NODE}" "IP:127.0.0.1,DNS:${KUBE_DEV_NODE}"
  if [[ ! -f "${pki}/sa.key" ]]; then
    openssl genrsa -out "${pki}/sa.key" 2048 2>/dev/null
    openssl rsa -in "${pki}/sa.key" -pubout -out "${pki}/sa.pub" 2>/dev/null
  fi
}

# write_kubeconfig FILE CERT: a kubeconfig for the client certificate CERT.
write_kubeconfig() {
  cat >"$1" <<EOF
apiVersion: v1
kind: Config
clusters:
  - name: kube-dev
    cluster:
      server: ${api_server}
      certificate-authority: ${pki}/ca.crt
users:
  - name: $2
    user:
      client-certificate: ${pki}/$2.crt
      client-key: ${pki}/$2.key
contexts:
  - name: kube-dev
    context:
      cluster: kube-dev
      user: $2
      namespace: default
current-context: kube-dev
EOF
}

# start NAME COMMAND...: starts COMMAND inside the namespaces in the background, its output in logs/NAME.log.
start() {
  local name=$1 pid
  shift
  pid=$(holder_pid)
  setsid nsenter --target "${pid}" --mount --net --wd="${repo_root}" -- \
    env KUBECONFIG="${kubeconfig}" "$@" >"${logs}/${name}.log" 2>&1 </dev/null &
  echo "$!" >"${run_dir}/${name}.pid"
}

# wait_for NAME SECONDS COMMAND...: retries COMMAND until it succeeds; fails with NAME's log otherwise.
wait_for() {
  local name=$1 timeout=$2 deadline
  shift 2
  deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ! kill -0 "$(<"${run_dir}/${name}.pid")" 2>/dev/null; then
      tail -n 40 "${logs}/${name}.log" >&2 || true
      die "${name} exited during start-up (log above, full log in ${logs}/${name}.log)"
    fi
    if ((SECONDS >= deadline)); then
      tail -n 40 "${logs}/${name}.log" >&2 || true
      die "${name} was not ready within ${timeout}s (log above, full log in ${logs}/${name}.log)"
    fi
    sleep 0.5
  done
}

start_holder() {
  local hosts="${run_dir}/hosts"
  cat >"${hosts}" <<EOF
127.0.0.1 localhost ${KUBE_DEV_NODE} $(hostname)
::1 localhost
# The names the manifests use, for the broker this test runs on loopback.
127.0.0.1 medicine-pubsub-kafka-bootstrap medicine-pubsub-kafka-bootstrap.default medicine-pubsub-kafka-bootstrap.default.svc medicine-pubsub-kafka-bootstrap.default.svc.cluster.local
EOF
  rm -f "${holder_pid_file}"
  # The holder owns the namespaces; everything else joins them with nsenter. (Its script expands in the holder.)
  # It puts the node's address (NODE_IP) on the namespace's loopback (the machine's kernel has no dummy links).
  # shellcheck disable=SC2016
  setsid unshare --mount --net -- bash -c '
    set -e
    mount --bind "$1" /etc/hosts
    ip link set lo up
    ip addr add "$3/32" dev lo
    echo "$$" >"$2"
    exec sleep infinity
  ' kube-dev-holder "${hosts}" "${holder_pid_file}" "${NODE_IP}" >"${logs}/holder.log" 2>&1 </dev/null &
  local deadline=$((SECONDS + 10))
  until holder_pid >/dev/null; do
    ((SECONDS < deadline)) || { cat "${logs}/holder.log" >&2; die "could not create the namespaces (is this root, with unshare and iproute2?)"; }
    sleep 0.1
  done
}

# The broker pods' "image": Kafka's own tools under bin/, as in Strimzi's image, so the original README's
# `kubectl exec medicine-pubsub-kafka-1 -- bin/kafka-console-consumer.sh ...` runs them (through kwok's exec).
write_broker_image() {
  local image="${KUBE_DEV_DIR}/broker-image" tool class
  mkdir -p "${image}/bin"
  for tool in kafka-topics:org.apache.kafka.tools.TopicCommand \
    kafka-console-consumer:org.apache.kafka.tools.consumer.ConsoleConsumer \
    kafka-console-producer:org.apache.kafka.tools.ConsoleProducer \
    kafka-consumer-groups:org.apache.kafka.tools.consumer.group.ConsumerGroupCommand; do
    class=${tool#*:}
    cat >"${image}/bin/${tool%%:*}.sh" <<EOF
#!/usr/bin/env bash
# The broker image's ${tool%%:*}.sh: Kafka's ${class##*.}, on the broker's own jars.
exec env KAFKA_DEV_DIR="${KUBE_DEV_DIR}/kafka" "${repo_root}/scripts/kafka-dev.sh" tool ${class} "\$@"
EOF
    chmod +x "${image}/bin/${tool%%:*}.sh"
  done
}

write_kwok_config() {
  cat >"${KUBE_DEV_DIR}/kwok.yaml" <<EOF
# kwok plays the kubelet of the brokers' stand-in Node (zero delays): the broker pods, which kube-dev strimzi
# places there by name, and exec into them.
apiVersion: kwok.x-k8s.io/v1alpha1
kind: ClusterExec
metadata:
  name: broker-tools
spec:
  selector:
    matchNamespaces: [default]
    matchNames: [medicine-pubsub-kafka-0, medicine-pubsub-kafka-1, medicine-pubsub-kafka-2]
  execs:
    - local:
        workDir: ${KUBE_DEV_DIR}/broker-image
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: node-initialize
spec:
  resourceRef: {apiGroup: v1, kind: Node}
  selector:
    matchExpressions:
      - key: '.status.conditions.[] | select( .type == "Ready" ) | .status'
        operator: NotIn
        values: ["True"]
  next:
    statusTemplate: |
      {{ \$now := Now }}
      conditions:
      {{ range NodeConditions }}
      - lastHeartbeatTime: {{ \$now | Quote }}
        lastTransitionTime: {{ \$now | Quote }}
        message: {{ .message | Quote }}
        reason: {{ .reason | Quote }}
        status: {{ .status | Quote }}
        type: {{ .type | Quote }}
      {{ end }}
      addresses:
      - address: 127.0.0.1
        type: InternalIP
      - address: {{ NodeName | Quote }}
        type: Hostname
      daemonEndpoints:
        kubeletEndpoint:
          Port: 10250
      nodeInfo:
        architecture: amd64
        operatingSystem: linux
        kubeletVersion: kwok-{{ Version }}
        kubeProxyVersion: kwok-{{ Version }}
        containerRuntimeVersion: kwok-{{ Version }}
        kernelVersion: kwok-{{ Version }}
      phase: Running
EOF
  local stage
  for stage in create ready delete; do
    cat >>"${KUBE_DEV_DIR}/kwok.yaml" <<EOF
---
apiVersion: kwok.x-k8s.io/v1alpha1
kind: Stage
metadata:
  name: pod-${stage}
spec:
  resourceRef: {apiGroup: v1, kind: Pod}
  selector:
    matchExpressions:
$(pod_stage_${stage})
EOF
  done
}

pod_stage_create() {
  cat <<'EOF'
      - key: '.metadata.deletionTimestamp'
        operator: DoesNotExist
      - key: '.status.podIP'
        operator: DoesNotExist
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "False", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "False", lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - {image: {{ .image | Quote }}, name: {{ .name | Quote }}, ready: false, restartCount: 0, started: false, state: {waiting: {reason: ContainerCreating}}}
      {{ end }}
      hostIP: 127.0.0.1
      podIP: {{ PodIPWith .spec.nodeName ( or .spec.hostNetwork false ) ( or .metadata.uid "" ) ( or .metadata.name "" ) ( or .metadata.namespace "" ) | Quote }}
      phase: Pending
EOF
}

pod_stage_ready() {
  cat <<'EOF'
      - key: '.metadata.deletionTimestamp'
        operator: DoesNotExist
      - key: '.status.phase'
        operator: In
        values: [Pending]
      - key: '.status.containerStatuses.[].state.running.startedAt'
        operator: DoesNotExist
  next:
    statusTemplate: |
      {{ $now := Now }}
      conditions:
      - {type: Initialized, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: Ready, status: "True", lastTransitionTime: {{ $now | Quote }}}
      - {type: ContainersReady, status: "True", lastTransitionTime: {{ $now | Quote }}}
      containerStatuses:
      {{ range .spec.containers }}
      - {image: {{ .image | Quote }}, name: {{ .name | Quote }}, ready: true, restartCount: 0, started: true, state: {running: {startedAt: {{ $now | Quote }}}}}
      {{ end }}
      phase: Running
      startTime: {{ $now | Quote }}
EOF
}

pod_stage_delete() {
  cat <<'EOF'
      - key: '.metadata.deletionTimestamp'
        operator: Exists
      - key: '.metadata.finalizers'
        operator: DoesNotExist
  next:
    delete: true
EOF
}

up() {
  if holder_pid >/dev/null && status >/dev/null 2>&1; then
    say "already running; KUBECONFIG=${kubeconfig}"
    return 0
  fi
  require unshare "install util-linux"
  require nsenter "install util-linux"
  require ip "install iproute2 (Debian: apt-get install iproute2)"
  [[ "$(id -u)" == 0 ]] || die "creating mount and network namespaces needs root"
  build
  # Everything fetched from the network is fetched before the namespaces, which have none.
  "${repo_root}/scripts/kafka-dev.sh" resolve
  for binary in kube-dev tabs-audit; do
    [[ -x "${repo_root}/target/release/${binary}" ]] ||
      die "target/release/${binary} is missing; build it first: cargo build --release --locked --workspace"
  done
  down_quietly
  # A start that fails half-way stops what it started.
  trap 'code=$?; if ((code != 0)); then say "start-up failed; stopping what was started"; down_quietly; fi' EXIT
  rm -rf "${KUBE_DEV_DIR:?}/etcd" "${logs}" "${run_dir}"
  mkdir -p "${logs}" "${run_dir}"
  make_pki
  write_kubeconfig "${kubeconfig}" admin
  write_kubeconfig "${KUBE_DEV_DIR}/controller-manager.kubeconfig" controller-manager
  write_kubeconfig "${KUBE_DEV_DIR}/scheduler.kubeconfig" scheduler
  start_holder
  local began=${SECONDS}

  start etcd "${bin_dir}/etcd" --name kube-dev --data-dir "${KUBE_DEV_DIR}/etcd" \
    --listen-client-urls http://127.0.0.1:2379 --advertise-client-urls http://127.0.0.1:2379 \
    --listen-peer-urls http://127.0.0.1:2380 --initial-advertise-peer-urls http://127.0.0.1:2380 \
    --initial-cluster kube-dev=http://127.0.0.1:2380 --unsafe-no-fsync --log-level warn
  # Aggregation (KEDA's metrics server) as kubeadm sets it up, and routed to the endpoints' addresses: the
  # namespaces have no route to the Service range, whose addresses only kube-proxy's rules give meaning (the API
  # server's calls to admission webhooks take the same way).
  start kube-apiserver "${bin_dir}/kube-apiserver" \
    --etcd-servers http://127.0.0.1:2379 \
    --bind-address 0.0.0.0 --advertise-address "${NODE_IP}" --secure-port "${api_port}" \
    --tls-cert-file "${pki}/apiserver.crt" --tls-private-key-file "${pki}/apiserver.key" \
    --client-ca-file "${pki}/ca.crt" \
    --service-account-issuer https://kubernetes.default.svc.cluster.local \
    --service-account-key-file "${pki}/sa.pub" --service-account-signing-key-file "${pki}/sa.key" \
    --service-account-max-token-expiration 48h \
    --service-cluster-ip-range 10.96.0.0/16 \
    --authorization-mode Node,RBAC \
    --kubelet-client-certificate "${pki}/apiserver-kubelet-client.crt" \
    --kubelet-client-key "${pki}/apiserver-kubelet-client.key" \
    --kubelet-certificate-authority "${pki}/ca.crt" \
    --kubelet-preferred-address-types InternalIP \
    --requestheader-client-ca-file "${pki}/ca.crt" --requestheader-allowed-names front-proxy-client \
    --requestheader-username-headers X-Remote-User --requestheader-group-headers X-Remote-Group \
    --requestheader-extra-headers-prefix X-Remote-Extra- \
    --proxy-client-cert-file "${pki}/front-proxy-client.crt" --proxy-client-key-file "${pki}/front-proxy-client.key" \
    --enable-aggregator-routing=true \
    --allow-privileged=true --profiling=false
  wait_for kube-apiserver "${KUBE_DEV_START_TIMEOUT}" kubectl_in get --raw /readyz
  say "API server ready after $((SECONDS - began))s"

  start kube-controller-manager "${bin_dir}/kube-controller-manager" \
    --kubeconfig "${KUBE_DEV_DIR}/controller-manager.kubeconfig" \
    --authentication-kubeconfig "${KUBE_DEV_DIR}/controller-manager.kubeconfig" \
    --authorization-kubeconfig "${KUBE_DEV_DIR}/controller-manager.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file "${pki}/sa.key" --root-ca-file "${pki}/ca.crt" \
    --cluster-signing-cert-file "${pki}/ca.crt" --cluster-signing-key-file "${pki}/ca.key"
  start kube-scheduler "${bin_dir}/kube-scheduler" \
    --kubeconfig "${KUBE_DEV_DIR}/scheduler.kubeconfig" \
    --authentication-kubeconfig "${KUBE_DEV_DIR}/scheduler.kubeconfig" \
    --authorization-kubeconfig "${KUBE_DEV_DIR}/scheduler.kubeconfig" \
    --bind-address 127.0.0.1 --leader-elect=false

  # The brokers' stand-in Node; kwok keeps it Ready. Cordoned: the scheduler places every pod on the real node
  # (scripts/kube-dev/node.sh); the broker pods name this one. Its size is what `minikube start --cpus=6
  # --memory=8g` gives the quickstart, which make_infra.sh checks.
  kubectl_in apply -f - >/dev/null <<EOF
apiVersion: v1
kind: Node
metadata:
  name: ${KUBE_DEV_NODE}
  labels:
    kubernetes.io/os: linux
    kubernetes.io/arch: amd64
    kubernetes.io/hostname: ${KUBE_DEV_NODE}
spec:
  unschedulable: true
status:
  capacity: {cpu: "${KUBE_DEV_NODE_CPUS}", memory: ${KUBE_DEV_NODE_MEMORY}, pods: "110"}
  allocatable: {cpu: "${KUBE_DEV_NODE_CPUS}", memory: ${KUBE_DEV_NODE_MEMORY}, pods: "110"}
EOF
  kubectl_in apply -f "${bin_dir}/kwok-logs-crd.yaml" >/dev/null
  write_broker_image
  write_kwok_config
  start kwok "${bin_dir}/kwok" --kubeconfig "${kubeconfig}" --config "${KUBE_DEV_DIR}/kwok.yaml" --enable-crds Logs \
    --manage-single-node "${KUBE_DEV_NODE}" --node-ip 127.0.0.1 --node-port 10250 --node-lease-duration-seconds 40 \
    --server-address 127.0.0.1:10250 \
    --tls-cert-file "${pki}/kubelet.crt" --tls-private-key-file "${pki}/kubelet.key"

  # The cluster's three brokers (deploy/'s node pool, RF 3, min.insync.replicas 2), where the manifests expect
  # them: medicine-pubsub-kafka-bootstrap:9092 (plain) and :9093 (TLS with SCRAM-SHA-512, signed by the brokers'
  # own CA, which the stand-in publishes as the cluster CA); the other nodes on the ports after (9095/9096,
  # 9098/9099). Each advertises the Service's name in its namespace (`….default.svc`), which a pod of any
  # namespace resolves, as Strimzi's brokers advertise theirs (KEDA's operator, in namespace keda, reads the lag
  # through them). They listen on every address of the namespaces: the real node's pods reach them at the node's
  # address (scripts/kube-dev/node.sh).
  inside env KAFKA_DEV_DIR="${KUBE_DEV_DIR}/kafka" KAFKA_DEV_PORT=9092 KAFKA_DEV_NODES=3 KAFKA_DEV_HEAP=400m \
    KAFKA_DEV_ADVERTISED_HOST=medicine-pubsub-kafka-bootstrap.default.svc KAFKA_DEV_LISTEN_HOST=0.0.0.0 \
    "${repo_root}/scripts/kafka-dev.sh" start
  start strimzi "${repo_root}/target/release/kube-dev" --log-format text strimzi --bootstrap-servers 127.0.0.1:9092 \
    --broker-address "${NODE_IP}" --broker-node "${KUBE_DEV_NODE}" \
    --kafka-dev-script "${repo_root}/scripts/kafka-dev.sh" --kafka-dev-dir "${KUBE_DEV_DIR}/kafka"

  wait_for kwok "${KUBE_DEV_START_TIMEOUT}" node_ready
  wait_for kube-controller-manager "${KUBE_DEV_START_TIMEOUT}" kubectl_in get serviceaccount default
  say "up after $((SECONDS - began))s: the brokers' Node ${KUBE_DEV_NODE} Ready (${KUBE_DEV_NODE_CPUS} CPUs, ${KUBE_DEV_NODE_MEMORY}), brokers on medicine-pubsub-kafka-bootstrap:9092 and :9093"
  say "run commands inside with: $0 exec -- kubectl get pods -A"
}

node_ready() {
  [[ "$(kubectl_in get node "${KUBE_DEV_NODE}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

status() {
  holder_pid >/dev/null || { echo "not running"; return 1; }
  bin_dir=$("${repo_root}/scripts/kube-dev/build.sh" --print)
  if kubectl_in get --raw /readyz >/dev/null 2>&1; then
    echo "running; KUBECONFIG=${kubeconfig} (through: $0 exec -- ...)"
  else
    echo "namespaces exist but the API server does not answer"
    return 1
  fi
}

# Every process in the namespaces (they share the holder's network namespace).
namespace_pids() {
  local pid=$1 target entry
  target=$(readlink "/proc/${pid}/ns/net") || return 0
  for entry in /proc/[0-9]*; do
    [[ "$(readlink "${entry}/ns/net" 2>/dev/null)" == "${target}" ]] && echo "${entry#/proc/}"
  done
  return 0
}

down_quietly() {
  local pid pids deadline
  pid=$(holder_pid) || return 0
  node_down
  mapfile -t pids < <(namespace_pids "${pid}" | grep -vx "${pid}" || true)
  if ((${#pids[@]} > 0)); then
    kill "${pids[@]}" 2>/dev/null || true
    deadline=$((SECONDS + 20))
    while ((SECONDS < deadline)) && kill -0 "${pids[@]}" 2>/dev/null; do
      sleep 0.2
    done
    kill -9 "${pids[@]}" 2>/dev/null || true
  fi
  kill "${pid}" 2>/dev/null || true
  rm -f "${holder_pid_file}"
}

down() {
  if holder_pid >/dev/null; then
    say "stopping the control plane, the node and the brokers"
  fi
  down_quietly
}

print_env() {
  cat <<EOF
export KUBECONFIG=${kubeconfig}
export KUBE_DEV_DIR=${KUBE_DEV_DIR}
export KUBE_DEV_BIN=$("${repo_root}/scripts/kube-dev/build.sh" --print)
export KAFKA_BOOTSTRAP_SERVERS=medicine-pubsub-kafka-bootstrap:9092
EOF
}

# shellcheck source=scripts/kube-dev/node.sh
source "${repo_root}/scripts/kube-dev/node.sh"

case "${1:-}" in
  build) build && echo "${bin_dir}" ;;
  up) up ;;
  node)
    bin_dir=$("${repo_root}/scripts/kube-dev/build.sh" --print)
    node_up
    ;;
  down) down ;;
  status) status ;;
  env) print_env ;;
  exec)
    shift
    [[ "${1:-}" == "--" ]] && shift
    [[ $# -ge 1 ]] || die "usage: $0 exec -- COMMAND [ARGS...]"
    bin_dir=$("${repo_root}/scripts/kube-dev/build.sh" --print)
    export KUBE_DEV_DIR
    # Inside, the broker is the cluster's: the machine's (a test broker on 127.0.0.1) is not reachable there.
    node_bin=$("${repo_root}/scripts/kube-dev/build.sh" --node --print)
    KAFKA_BOOTSTRAP_SERVERS=medicine-pubsub-kafka-bootstrap:9092 PATH="${bin_dir}:${node_bin}:${PATH}" inside "$@"
    ;;
  *)
    echo "usage: $0 build|up|node|down|status|env|exec -- COMMAND..." >&2
    exit 2
    ;;
esac
