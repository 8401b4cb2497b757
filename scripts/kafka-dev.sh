#!/usr/bin/env bash
# A real Apache Kafka (KRaft, the version Strimzi runs) on 127.0.0.1 for tests and benchmarks: one node, or with
# KAFKA_DEV_NODES=3 three, each broker and controller as deploy/'s KafkaNodePool has them and with deploy/'s
# replication (RF 3, min.insync.replicas 2, the transaction state log's too).
#
#   scripts/kafka-dev.sh resolve  resolve the jars with Maven (once: cached by the pom's hash, see below)
#   scripts/kafka-dev.sh start    resolve the jars, format a fresh store, start every node, wait
#   scripts/kafka-dev.sh stop     stop every node cleanly (SIGTERM, then SIGKILL after a bound)
#   scripts/kafka-dev.sh restart  stop and start again on the same store (fault tests)
#   scripts/kafka-dev.sh status   exit 0 when every node runs and answers
#   scripts/kafka-dev.sh node I stop|kill|start   one node of a cluster (0-based): SIGTERM and wait, SIGKILL,
#                                 or start it again on its store and wait until it is up (fault tests)
#   scripts/kafka-dev.sh node I cut|heal   with KAFKA_DEV_NETWORK=namespaces: take node I's link down (cut off
#                                 from clients and the other nodes) or up again
#   scripts/kafka-dev.sh pid I    the process id of node I
#   scripts/kafka-dev.sh classpath   the Kafka jars' Java classpath (Kafka's own tools, run by the fault campaign)
#   scripts/kafka-dev.sh env      print the variables tests read (eval "$(scripts/kafka-dev.sh env)")
#   scripts/kafka-dev.sh topics   create tabs.orders, tabs.deliveries and tabs.dlq (if absent) for manual runs
#   scripts/kafka-dev.sh access < SPEC   create SCRAM users and replace their ACLs (format: kafka-dev/KafkaAccess.java)
#   scripts/kafka-dev.sh tool CLASS ARGS...   run a Kafka tool class with the broker's classpath
#
# Listeners, as the Strimzi cluster of deploy/ has them: PLAINTEXT on $KAFKA_DEV_PORT, where clients are
# ANONYMOUS and ANONYMOUS is a super user (on the cluster only the broker pods reach that listener); SASL_SSL
# (TLS, SCRAM-SHA-512) on the next port, where every user but the test harness's own (a super user) has only the
# ACLs `access` gives it (KRaft's StandardAuthorizer); the KRaft controller on the one after. The TLS certificate
# is signed by a CA of this store's own, $KAFKA_DEV_DIR/tls/ca.crt. Node I of a cluster listens on
# $KAFKA_DEV_PORT + 3*I and the two ports after, its store in $KAFKA_DEV_DIR/node-I. Safe to run twice: `start` on a
# running broker only reports it.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

: "${KAFKA_DEV_DIR:=${repo_root}/target/kafka-dev}"
# Below the kernel's ephemeral port range (32768-60999), where an outgoing connection may already hold a port.
: "${KAFKA_DEV_PORT:=29092}"
# The host name clients are told to connect to (the Kubernetes end-to-end test advertises the bootstrap Service's
# name, which its private /etc/hosts maps to 127.0.0.1).
: "${KAFKA_DEV_ADVERTISED_HOST:=127.0.0.1}"
# The address the clients' listeners bind (loopback mode; the controllers' stays on loopback): the Kubernetes
# end-to-end test binds every address of its namespace, so that pods on its real node reach the brokers too.
: "${KAFKA_DEV_LISTEN_HOST:=}"
: "${KAFKA_DEV_HEAP:=512m}"
: "${KAFKA_DEV_SCRAM_USER:=medicine-test}"
: "${KAFKA_DEV_SCRAM_PASSWORD:=medicine-test-secret}"
: "${KAFKA_DEV_START_TIMEOUT:=120}"
# DEBUG writes every request each broker answers, with the answer, to its server.log (Kafka's request log): how a
# client's requests and what the broker said to them are told apart from what the client says of them.
: "${KAFKA_DEV_REQUEST_LOG:=WARN}"
# How many nodes (each broker and controller); 3 is the cluster deploy/ ships. `start` writes it, and the network
# below, into the store, so later commands on the same KAFKA_DEV_DIR need not be told again.
if [[ -z "${KAFKA_DEV_NODES:-}" && -f "${KAFKA_DEV_DIR}/nodes" ]]; then
  KAFKA_DEV_NODES=$(<"${KAFKA_DEV_DIR}/nodes")
fi
if [[ -z "${KAFKA_DEV_NETWORK:-}" && -f "${KAFKA_DEV_DIR}/network" ]]; then
  KAFKA_DEV_NETWORK=$(<"${KAFKA_DEV_DIR}/network")
fi
: "${KAFKA_DEV_NODES:=1}"
# `loopback`: every node on 127.0.0.1. `namespaces` (root, iproute2): each node in a network namespace of its own,
# on a bridge with the host, at $KAFKA_DEV_SUBNET.1N (the host is .1), so that one node can be cut off (`node I cut`).
: "${KAFKA_DEV_NETWORK:=loopback}"
case "${KAFKA_DEV_NETWORK}" in
  loopback | namespaces) ;;
  *) echo "kafka-dev: KAFKA_DEV_NETWORK must be loopback or namespaces" >&2; exit 2 ;;
esac
: "${KAFKA_DEV_SUBNET:=10.77.0}"
[[ "${KAFKA_DEV_NODES}" =~ ^[1-9]$ ]] || { echo "kafka-dev: KAFKA_DEV_NODES must be 1 to 9" >&2; exit 2; }
# A process whose end stops the broker (the local mode sets its own pid, so a run killed with SIGKILL leaves no
# broker behind); unset, the broker runs until `stop`.
: "${KAFKA_DEV_STOP_WITH_PID:=}"
# `project`: the group and transaction settings the Strimzi cluster of deploy/ uses (below); `kafka-defaults`:
# Kafka's own (a KIP-848 session of 45 s, 5 s heartbeats, 3 s initial rebalance delay), where a user's own Kafka is.
: "${KAFKA_DEV_GROUP_SETTINGS:=project}"
case "${KAFKA_DEV_GROUP_SETTINGS}" in
  project | kafka-defaults) ;;
  *) echo "kafka-dev: KAFKA_DEV_GROUP_SETTINGS must be project or kafka-defaults" >&2; exit 2 ;;
esac
: "${MEDICINE_PUBSUB_CACHE:=${XDG_CACHE_HOME:-${HOME}/.cache}/medicine-pubsub}"

pom="${repo_root}/scripts/kafka-dev/pom.xml"
# The jars, shared by every broker directory (tests, the Kubernetes end-to-end test, local mode) and resolved once
# per version of the pom.
libs_dir="${MEDICINE_PUBSUB_CACHE}/kafka-dev/$(sha256sum "${pom}" | cut -c1-16)/libs"
tls_dir="${KAFKA_DEV_DIR}/tls"
cluster_id_file="${KAFKA_DEV_DIR}/cluster.id"

# node_host I: the address node I listens on.
node_host() {
  if [[ "${KAFKA_DEV_NETWORK}" == namespaces ]]; then
    echo "${KAFKA_DEV_SUBNET}.$((10 + $1))"
  else
    echo 127.0.0.1
  fi
}

# The network devices and namespaces of namespaces mode, named after the first port (one cluster per port).
bridge="kdev${KAFKA_DEV_PORT}"
netns_of() { echo "kdev${KAFKA_DEV_PORT}-n$1"; }
host_link_of() { echo "kd${KAFKA_DEV_PORT}h$1"; }

# select_node I: the ports and files of node I (a single node keeps its store in KAFKA_DEV_DIR itself).
select_node() {
  node=$1
  host=$(node_host "${node}")
  advertised=${host}
  listen=${host}
  if [[ "${KAFKA_DEV_NETWORK}" != namespaces ]]; then
    advertised=${KAFKA_DEV_ADVERTISED_HOST}
    listen=${KAFKA_DEV_LISTEN_HOST:-${host}}
  fi
  plain_port=$((KAFKA_DEV_PORT + 3 * node))
  sasl_port=$((plain_port + 1))
  controller_port=$((plain_port + 2))
  if ((KAFKA_DEV_NODES == 1)); then
    node_dir=${KAFKA_DEV_DIR}
    node_id=1
  else
    node_dir="${KAFKA_DEV_DIR}/node-${node}"
    # Strimzi numbers a node pool's nodes from 0, as its pods kafka-0, kafka-1, kafka-2.
    node_id=${node}
  fi
  data_dir="${node_dir}/data"
  config_file="${node_dir}/server.properties"
  log4j_file="${node_dir}/log4j2.properties"
  log_file="${node_dir}/server.log"
  console_file="${node_dir}/console.log"
  pid_file="${node_dir}/kafka.pid"
}
select_node 0

nodes() {
  seq 0 $((KAFKA_DEV_NODES - 1))
}

# The controller quorum: every node (each is broker and controller, as the KafkaNodePool's roles).
quorum_voters() {
  local i voters=()
  for i in $(nodes); do
    local id=$i
    ((KAFKA_DEV_NODES == 1)) && id=1
    voters+=("${id}@$(node_host "${i}"):$((KAFKA_DEV_PORT + 3 * i + 2))")
  done
  (IFS=,; echo "${voters[*]}")
}

bootstrap_list() {
  local i servers=()
  for i in $(nodes); do
    servers+=("$(node_host "${i}"):$((KAFKA_DEV_PORT + 3 * i + $1))")
  done
  (IFS=,; echo "${servers[*]}")
}

die() {
  echo "kafka-dev: $*" >&2
  exit 1
}

say() {
  echo "kafka-dev: $*" >&2
}

require() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed; $2"
}

# port_open PORT [HOST]
port_open() {
  (exec 3<>"/dev/tcp/${2:-127.0.0.1}/$1") 2>/dev/null
}

running_pid() {
  [[ -f "${pid_file}" ]] || return 1
  local pid
  pid=$(<"${pid_file}")
  [[ -n "${pid}" ]] && kill -0 "${pid}" 2>/dev/null || return 1
  echo "${pid}"
}

# A broker started from this store but whose pid file was lost (a killed script) is still ours to stop.
stray_pids() {
  pgrep -f -- "kafka.Kafka ${config_file}" || true
}

resolve_libs() {
  local stamp="${libs_dir}/.complete"
  if [[ -f "${stamp}" ]]; then
    return 0
  fi
  require mvn "install Maven (Debian: apt-get install maven) so the Kafka jars can be fetched from Maven Central"
  say "resolving Apache Kafka jars with Maven into ${libs_dir}"
  rm -rf "${libs_dir}"
  mvn -B -q -Dstyle.color=never -f "${pom}" dependency:copy-dependencies \
    -DincludeScope=runtime -DoutputDirectory="${libs_dir}" >&2 ||
    die "Maven could not resolve the Kafka jars (is Maven Central reachable?)"
  touch "${stamp}"
}

# The replication of internal topics and the defaults of new topics: deploy/'s on three nodes or more, none on one.
replication_settings() {
  if ((KAFKA_DEV_NODES >= 3)); then
    cat <<'SETTINGS'
# As deploy/infra/kafka.yaml: every partition on three nodes, a write acknowledged by two.
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
share.coordinator.state.topic.replication.factor=3
share.coordinator.state.topic.min.isr=2
SETTINGS
  else
    cat <<SETTINGS
# Fewer than three nodes: internal topics on every node, no more.
offsets.topic.replication.factor=${KAFKA_DEV_NODES}
transaction.state.log.replication.factor=${KAFKA_DEV_NODES}
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=${KAFKA_DEV_NODES}
share.coordinator.state.topic.min.isr=1
SETTINGS
  fi
}

write_config() {
  local group_settings=""
  if [[ "${KAFKA_DEV_GROUP_SETTINGS}" == project ]]; then
    group_settings=$(cat <<'SETTINGS'
# Same as the Strimzi cluster: a group's first member starts at once, and a killed maker's partitions move to
# another after 10 s (KIP-848 groups; classic groups set session.timeout.ms on the client).
group.initial.rebalance.delay.ms=0
group.consumer.min.session.timeout.ms=6000
group.consumer.session.timeout.ms=10000
# KIP-848 members learn of a new member's assignment at their next heartbeat: 250 ms instead of 5 s.
group.consumer.min.heartbeat.interval.ms=250
group.consumer.heartbeat.interval.ms=250
# KIP-848 assignments are recomputed at most every 100 ms instead of every second (Kafka 4.3's batching), so
# makers KEDA starts together get their partitions in one heartbeat instead of a second's rounds.
group.consumer.assignment.interval.ms=100
# Transactions of killed makers are aborted within 2 s of their timeout (Kafka's default: 10 s).
transaction.abort.timed.out.transaction.cleanup.interval.ms=2000
SETTINGS
)
  fi
  mkdir -p "${node_dir}"
  cat >"${config_file}" <<EOF2
# Generated by scripts/kafka-dev.sh: a throwaway KRaft node for tests (node ${node_id} of ${KAFKA_DEV_NODES}).
process.roles=broker,controller
node.id=${node_id}
controller.quorum.voters=$(quorum_voters)
listeners=PLAINTEXT://${listen}:${plain_port},SASL_SSL://${listen}:${sasl_port},CONTROLLER://${host}:${controller_port}
advertised.listeners=PLAINTEXT://${advertised}:${plain_port},SASL_SSL://${advertised}:${sasl_port}
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
sasl.enabled.mechanisms=SCRAM-SHA-512
listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required;
listener.name.sasl_ssl.ssl.keystore.type=PKCS12
listener.name.sasl_ssl.ssl.keystore.location=${tls_dir}/broker.p12
listener.name.sasl_ssl.ssl.keystore.password=kafka-dev
# Authorization as on the cluster (Strimzi's simple authorization): users have what their ACLs allow, no more.
authorizer.class.name=org.apache.kafka.metadata.authorizer.StandardAuthorizer
super.users=User:ANONYMOUS;User:${KAFKA_DEV_SCRAM_USER}
log.dirs=${data_dir}
# Topics are created on purpose (by tests or the KafkaTopic resources), as in the Strimzi deployment.
auto.create.topics.enable=false
num.partitions=1
offsets.topic.num.partitions=8
transaction.state.log.num.partitions=8
$(replication_settings)
${group_settings}
# Sized for a 2-core machine shared with the clients under test (Kafka's defaults are 3 and 8 threads).
num.network.threads=2
num.io.threads=2
num.replica.fetchers=1
log.retention.hours=1
log.segment.bytes=67108864
EOF2
  cat >"${log4j_file}" <<EOF2
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
appender.file.type = File
appender.file.name = FILE
appender.file.fileName = ${log_file}
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.apache.name = org.apache.kafka
logger.apache.level = INFO
logger.req.name = kafka.request.logger
logger.req.level = ${KAFKA_DEV_REQUEST_LOG}
EOF2
}

java_classpath() {
  echo "${libs_dir}/*"
}

run_tool() {
  local class=$1
  shift
  java -Xmx256m -Dlog4j2.configurationFile="${log4j_file}" -cp "$(java_classpath)" "${class}" "$@"
}

# A CA of this store's own and the brokers' certificate, valid for every name clients may use for them: loopback,
# and the advertised host's Service (its first label; the end-to-end test's bootstrap Service) by each of the
# names a pod may use for it.
make_tls() {
  require openssl "install OpenSSL (Debian: apt-get install openssl) to make the broker's TLS certificate"
  rm -rf "${tls_dir}"
  mkdir -p "${tls_dir}"
  local names="DNS:localhost,IP:127.0.0.1" host=${KAFKA_DEV_ADVERTISED_HOST} i
  if [[ "${KAFKA_DEV_NETWORK}" == namespaces ]]; then
    for i in $(nodes); do
      names+=",IP:$(node_host "${i}")"
    done
  fi
  if [[ "${host}" != 127.0.0.1 ]]; then
    local service=${host%%.*}
    names+=",DNS:${service},DNS:${service}.default,DNS:${service}.default.svc"
    names+=",DNS:${service}.default.svc.cluster.local"
  fi
  (
    cd "${tls_dir}"
    openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/O=kafka-dev/CN=kafka-dev CA" \
      -keyout ca.key -out ca.crt
    openssl req -newkey rsa:2048 -nodes -subj "/O=kafka-dev/CN=${host}" -keyout broker.key -out broker.csr
    openssl x509 -req -in broker.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 30 \
      -extfile <(printf 'subjectAltName=%s\n' "${names}") -out broker.crt
    openssl pkcs12 -export -in broker.crt -inkey broker.key -certfile ca.crt -name broker \
      -passout pass:kafka-dev -out broker.p12
    rm -f broker.csr ca.srl
  ) >/dev/null 2>&1 || die "making the broker's TLS certificate in ${tls_dir} failed"
}

# Formats node $node's store for the cluster id in $cluster_id_file.
format_store() {
  rm -rf "${data_dir}"
  run_tool kafka.tools.StorageTool format --config "${config_file}" --cluster-id "$(<"${cluster_id_file}")" \
    --add-scram "SCRAM-SHA-512=[name=${KAFKA_DEV_SCRAM_USER},password=${KAFKA_DEV_SCRAM_PASSWORD}]" \
    >/dev/null || die "formatting the KRaft store in ${data_dir} failed"
}

start() {
  local pid i
  select_node 0
  if pid=$(running_pid); then
    say "already running (pid ${pid}) on $(bootstrap_list 0)"
    return 0
  fi
  require java "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)"
  mkdir -p "${KAFKA_DEV_DIR}"
  stop_strays
  resolve_libs
  make_tls
  echo "${KAFKA_DEV_NODES}" >"${KAFKA_DEV_DIR}/nodes"
  echo "${KAFKA_DEV_NETWORK}" >"${KAFKA_DEV_DIR}/network"
  [[ "${KAFKA_DEV_NETWORK}" == loopback ]] || network_up
  for i in $(nodes); do
    select_node "${i}"
    stop_strays
    # A fresh store: the logs of an earlier cluster in this directory go too.
    rm -f "${node_dir}/server-earlier.log" "${node_dir}/server.log"
    write_config
  done
  run_tool kafka.tools.StorageTool random-uuid >"${cluster_id_file}"
  for i in $(nodes); do
    select_node "${i}"
    format_store
  done
  launch_all
}

# Launches every node on its store, then waits for each: a controller quorum needs a majority to start, so none is
# waited for before all are launched.
launch_all() {
  local i
  for i in $(nodes); do
    select_node "${i}"
    launch
  done
  for i in $(nodes); do
    select_node "${i}"
    wait_ready
  done
}

# namespaces mode: a bridge on the host at .1 and, per node, a namespace joined to it by a veth pair.
network_up() {
  require ip "install iproute2 (Debian: apt-get install iproute2) for KAFKA_DEV_NETWORK=namespaces"
  network_down
  ip link add "${bridge}" type bridge || die "cannot create the bridge ${bridge} (root is needed)"
  ip addr add "${KAFKA_DEV_SUBNET}.1/24" dev "${bridge}"
  ip link set "${bridge}" up
  local i ns link
  for i in $(nodes); do
    ns=$(netns_of "${i}")
    link=$(host_link_of "${i}")
    ip netns add "${ns}"
    ip link add "${link}" type veth peer name eth0 netns "${ns}"
    ip link set "${link}" master "${bridge}" up
    ip -n "${ns}" addr add "$(node_host "${i}")/24" dev eth0
    ip -n "${ns}" link set eth0 up
    ip -n "${ns}" link set lo up
  done
}

network_down() {
  local i
  for i in $(nodes); do
    ip link del "$(host_link_of "${i}")" 2>/dev/null || true
    ip netns del "$(netns_of "${i}")" 2>/dev/null || true
  done
  ip link del "${bridge}" 2>/dev/null || true
}

# Starts node $node on its existing store (its topics, offsets and transactions survive); does not wait.
launch() {
  if port_open "${plain_port}" "${host}"; then
    die "port ${plain_port} is taken by another process; set KAFKA_DEV_PORT to a free port"
  fi
  # The log of the node's earlier runs is kept (fault tests read what the broker said at each restart).
  if [[ -f "${log_file}" ]]; then
    cat "${log_file}" >>"${node_dir}/server-earlier.log"
    rm -f "${log_file}"
  fi
  say "starting Kafka node ${node_id} on ${host}:${plain_port} (TLS with SCRAM on ${sasl_port}), store ${data_dir}"
  local in_netns=()
  [[ "${KAFKA_DEV_NETWORK}" == loopback ]] || in_netns=(ip netns exec "$(netns_of "${node}")")
  # setsid: the broker gets its own session so a Ctrl-C aimed at the caller does not kill it half-way;
  # `stop` (or the caller's trap) is what ends it. JVM flags as Kafka's own start script sets them.
  setsid "${in_netns[@]}" java \
    "-Xms${KAFKA_DEV_HEAP}" "-Xmx${KAFKA_DEV_HEAP}" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -Djava.awt.headless=true -Duser.timezone=UTC -Dlog4j2.configurationFile="${log4j_file}" \
    -cp "$(java_classpath)" kafka.Kafka "${config_file}" >"${console_file}" 2>&1 </dev/null &
  echo "$!" >"${pid_file}"
  if [[ -n "${KAFKA_DEV_STOP_WITH_PID}" ]]; then
    stop_with "${KAFKA_DEV_STOP_WITH_PID}" "$!"
  fi
}

# Watches process $1 from a session of its own and sends the broker ($2) SIGTERM when it is gone.
stop_with() {
  # shellcheck disable=SC2016 # the watcher's script expands its own arguments
  setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; kill "$2" 2>/dev/null || true' \
    kafka-dev-watch "$1" "$2" </dev/null >/dev/null 2>&1 &
}

# Stops every node and starts them again on the same store: a broker restart as clients see it.
restart() {
  select_node 0
  [[ -f "${data_dir}/meta.properties" ]] || die "no store in ${data_dir}; start the broker first: $0 start"
  stop
  launch_all
}

wait_ready() {
  local deadline=$((SECONDS + KAFKA_DEV_START_TIMEOUT)) pid
  pid=$(<"${pid_file}")
  until port_open "${plain_port}" "${host}" && grep -q 'Kafka Server started' "${log_file}" 2>/dev/null; do
    if ! kill -0 "${pid}" 2>/dev/null; then
      tail -n 30 "${console_file}" "${log_file}" >&2 2>/dev/null || true
      rm -f "${pid_file}"
      die "node ${node_id} exited during start-up (logs above, full log in ${log_file})"
    fi
    if ((SECONDS >= deadline)); then
      stop
      die "node ${node_id} did not answer on ${host}:${plain_port} within ${KAFKA_DEV_START_TIMEOUT}s (see ${log_file})"
    fi
    sleep 0.5
  done
  say "ready on ${host}:${plain_port}"
}

# Waits up to 30 s for a pid to be gone.
wait_gone() {
  local deadline=$((SECONDS + 30))
  while kill -0 "$1" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.05
  done
}

# Sends SIGTERM to the given pids, waits for them to exit, and SIGKILLs what is left after 30 s.
terminate() {
  local pid deadline=$((SECONDS + 30))
  kill "$@" 2>/dev/null || true
  for pid in "$@"; do
    while kill -0 "${pid}" 2>/dev/null; do
      if ((SECONDS >= deadline)); then
        say "pid ${pid} ignored SIGTERM for 30s; killing it"
        kill -9 "${pid}" 2>/dev/null || true
        # Gone only once the kernel has closed its sockets: a node started next must find its ports free.
        wait_gone "${pid}" || die "pid ${pid} still there 30s after SIGKILL"
        break
      fi
      sleep 0.2
    done
  done
}

stop_strays() {
  local strays
  strays=$(stray_pids)
  if [[ -n "${strays}" ]]; then
    say "stopping a broker left over from an earlier run: ${strays//$'\n'/ }"
    # shellcheck disable=SC2086 # one pid per word
    terminate ${strays}
  fi
}

# Stops every node: SIGTERM to all at once (a cluster shuts down faster than one by one), then waits.
stop() {
  local i pid pids=()
  for i in $(nodes); do
    select_node "${i}"
    if pid=$(running_pid); then
      say "stopping node ${node_id} (pid ${pid})"
      pids+=("${pid}")
    fi
  done
  ((${#pids[@]} == 0)) || terminate "${pids[@]}"
  for i in $(nodes); do
    select_node "${i}"
    rm -f "${pid_file}"
    stop_strays
  done
  [[ "${KAFKA_DEV_NETWORK}" == loopback ]] || network_down
}

# node I stop|kill|start: one node of the cluster, for fault tests.
node_action() {
  local index=${1:-} action=${2:-} pid
  if ! [[ "${index}" =~ ^[0-9]+$ ]] || ((index >= KAFKA_DEV_NODES)); then
    die "usage: $0 node I stop|kill|start|cut|heal, with I from 0 to $((KAFKA_DEV_NODES - 1))"
  fi
  select_node "${index}"
  [[ -f "${data_dir}/meta.properties" ]] || die "no store in ${data_dir}; start the cluster first: $0 start"
  case "${action}" in
    stop)
      if pid=$(running_pid); then
        say "stopping node ${node_id} (pid ${pid})"
        terminate "${pid}"
      fi
      rm -f "${pid_file}"
      ;;
    kill)
      if pid=$(running_pid); then
        say "killing node ${node_id} (pid ${pid})"
        kill -9 "${pid}" 2>/dev/null || true
        wait_gone "${pid}" || die "node ${node_id} (pid ${pid}) still there 30s after SIGKILL"
      fi
      rm -f "${pid_file}"
      ;;
    start)
      if pid=$(running_pid); then
        say "node ${node_id} already running (pid ${pid})"
        return 0
      fi
      launch
      wait_ready
      ;;
    cut | heal)
      [[ "${KAFKA_DEV_NETWORK}" == namespaces ]] || die "cutting a node off needs KAFKA_DEV_NETWORK=namespaces"
      local state=down
      [[ "${action}" == heal ]] && state=up
      say "node ${node_id}: link ${state}"
      ip link set "$(host_link_of "${index}")" "${state}"
      ;;
    *) die "usage: $0 node I stop|kill|start|cut|heal" ;;
  esac
}

status() {
  local i pid
  for i in $(nodes); do
    select_node "${i}"
    if pid=$(running_pid) && port_open "${plain_port}" "${host}"; then
      echo "node ${node_id}: running (pid ${pid}) on ${host}:${plain_port}"
    else
      echo "node ${node_id}: not running"
      return 1
    fi
  done
}

print_env() {
  cat <<EOF2
export KAFKA_BOOTSTRAP_SERVERS=$(bootstrap_list 0)
export KAFKA_TEST_SASL_BOOTSTRAP_SERVERS=$(bootstrap_list 1)
export KAFKA_TEST_SASL_USERNAME=${KAFKA_DEV_SCRAM_USER}
export KAFKA_TEST_SASL_PASSWORD=${KAFKA_DEV_SCRAM_PASSWORD}
export KAFKA_TEST_SASL_CA_LOCATION=${tls_dir}/ca.crt
export KAFKA_DEV_DIR=${KAFKA_DEV_DIR}
EOF2
}

create_topics() {
  running_pid >/dev/null || die "not running; start it first: $0 start"
  local spec topic partitions replicas=$((KAFKA_DEV_NODES < 3 ? KAFKA_DEV_NODES : 3))
  for spec in tabs.orders:12 tabs.deliveries:12 tabs.dlq:1; do
    topic=${spec%%:*}
    partitions=${spec##*:}
    run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "$(bootstrap_list 0)" \
      --create --if-not-exists --topic "${topic}" --partitions "${partitions}" --replication-factor "${replicas}" >&2
  done
  say "topics ready: tabs.orders (12 partitions), tabs.deliveries (12), tabs.dlq (1), ${replicas} replicas each"
}

# Creates SCRAM users and replaces their ACLs, as read from standard input (kafka-dev/KafkaAccess.java says how):
# one JVM for all of them, through the admin API on the PLAINTEXT listener (a super user there).
apply_access() {
  running_pid >/dev/null || die "not running; start it first: $0 start"
  java -Xmx256m -Dlog4j2.configurationFile="${log4j_file}" -cp "$(java_classpath)" \
    "${repo_root}/scripts/kafka-dev/KafkaAccess.java" "$(bootstrap_list 0)"
}

case "${1:-}" in
  resolve) resolve_libs ;;
  classpath)
    resolve_libs
    java_classpath
    ;;
  access) apply_access ;;
  start) start ;;
  restart) restart ;;
  topics) create_topics ;;
  stop) stop ;;
  status) status ;;
  env) print_env ;;
  node)
    shift
    node_action "$@"
    ;;
  pid)
    [[ "${2:-}" =~ ^[0-9]+$ ]] || die "usage: $0 pid I"
    select_node "$2"
    running_pid
    ;;
  tool)
    shift
    [[ $# -ge 1 ]] || die "usage: $0 tool CLASS [ARGS...]"
    resolve_libs
    [[ -f "${log4j_file}" ]] || write_config
    run_tool "$@"
    ;;
  *)
    echo "usage: $0 resolve|classpath|start|stop|restart|status|env|topics|access|node I stop|kill|start|pid I|tool CLASS [ARGS...]" >&2
    exit 2
    ;;
esac
