#!/usr/bin/env bash
# A real, single-node Apache Kafka (KRaft, the version Strimzi runs) on 127.0.0.1 for tests and benchmarks.
#
#   scripts/kafka-dev.sh resolve  resolve the jars with Maven (once: cached by the pom's hash, see below)
#   scripts/kafka-dev.sh start    resolve the jars, format a fresh store, start, wait
#   scripts/kafka-dev.sh stop     stop the broker cleanly (SIGTERM, then SIGKILL after a bound)
#   scripts/kafka-dev.sh restart  stop it and start it again on the same store (fault tests)
#   scripts/kafka-dev.sh status   exit 0 when the broker runs and answers
#   scripts/kafka-dev.sh env      print the variables tests read (eval "$(scripts/kafka-dev.sh env)")
#   scripts/kafka-dev.sh topics   create tabs.orders, tabs.deliveries and tabs.dlq (if absent) for manual runs
#   scripts/kafka-dev.sh access < SPEC   create SCRAM users and replace their ACLs (format: kafka-dev/KafkaAccess.java)
#   scripts/kafka-dev.sh tool CLASS ARGS...   run a Kafka tool class with the broker's classpath
#
# Listeners, as the Strimzi cluster of deploy/ has them: PLAINTEXT on $KAFKA_DEV_PORT, where clients are
# ANONYMOUS and ANONYMOUS is a super user (on the cluster only the broker pods reach that listener); SASL_SSL
# (TLS, SCRAM-SHA-512) on the next port, where every user but the test harness's own (a super user) has only the
# ACLs `access` gives it (KRaft's StandardAuthorizer); the KRaft controller on the one after. The TLS certificate
# is signed by a CA of this store's own, $KAFKA_DEV_DIR/tls/ca.crt. Safe to run twice: `start` on a running
# broker only reports it.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

: "${KAFKA_DEV_DIR:=${repo_root}/target/kafka-dev}"
# Below the kernel's ephemeral port range (32768-60999), where an outgoing connection may already hold a port.
: "${KAFKA_DEV_PORT:=29092}"
# The host name clients are told to connect to (the Kubernetes end-to-end test advertises the bootstrap Service's
# name, which its private /etc/hosts maps to 127.0.0.1).
: "${KAFKA_DEV_ADVERTISED_HOST:=127.0.0.1}"
: "${KAFKA_DEV_HEAP:=512m}"
: "${KAFKA_DEV_SCRAM_USER:=medicine-test}"
: "${KAFKA_DEV_SCRAM_PASSWORD:=medicine-test-secret}"
: "${KAFKA_DEV_START_TIMEOUT:=120}"
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

sasl_port=$((KAFKA_DEV_PORT + 1))
controller_port=$((KAFKA_DEV_PORT + 2))
pom="${repo_root}/scripts/kafka-dev/pom.xml"
# The jars, shared by every broker directory (tests, the Kubernetes end-to-end test, local mode) and resolved once
# per version of the pom.
libs_dir="${MEDICINE_PUBSUB_CACHE}/kafka-dev/$(sha256sum "${pom}" | cut -c1-16)/libs"
data_dir="${KAFKA_DEV_DIR}/data"
config_file="${KAFKA_DEV_DIR}/server.properties"
log4j_file="${KAFKA_DEV_DIR}/log4j2.properties"
log_file="${KAFKA_DEV_DIR}/server.log"
console_file="${KAFKA_DEV_DIR}/console.log"
pid_file="${KAFKA_DEV_DIR}/kafka.pid"
tls_dir="${KAFKA_DEV_DIR}/tls"

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

port_open() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
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
  cat >"${config_file}" <<EOF
# Generated by scripts/kafka-dev.sh: a throwaway single-node KRaft broker for tests.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:${controller_port}
listeners=PLAINTEXT://127.0.0.1:${KAFKA_DEV_PORT},SASL_SSL://127.0.0.1:${sasl_port},CONTROLLER://127.0.0.1:${controller_port}
advertised.listeners=PLAINTEXT://${KAFKA_DEV_ADVERTISED_HOST}:${KAFKA_DEV_PORT},SASL_SSL://${KAFKA_DEV_ADVERTISED_HOST}:${sasl_port}
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
# One node: internal topics cannot be replicated.
offsets.topic.replication.factor=1
offsets.topic.num.partitions=8
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
transaction.state.log.num.partitions=8
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
${group_settings}
# Sized for a 2-core machine shared with the clients under test (Kafka's defaults are 3 and 8 threads).
num.network.threads=2
num.io.threads=2
log.retention.hours=1
log.segment.bytes=67108864
EOF
  cat >"${log4j_file}" <<EOF
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
EOF
}

java_classpath() {
  echo "${libs_dir}/*"
}

run_tool() {
  local class=$1
  shift
  java -Xmx256m -Dlog4j2.configurationFile="${log4j_file}" -cp "$(java_classpath)" "${class}" "$@"
}

# A CA of this store's own and the broker's certificate, valid for every name clients may use for it: loopback,
# and the advertised host as a Kubernetes Service is named (the end-to-end test's bootstrap Service).
make_tls() {
  require openssl "install OpenSSL (Debian: apt-get install openssl) to make the broker's TLS certificate"
  rm -rf "${tls_dir}"
  mkdir -p "${tls_dir}"
  local names="DNS:localhost,IP:127.0.0.1" host=${KAFKA_DEV_ADVERTISED_HOST}
  if [[ "${host}" != 127.0.0.1 ]]; then
    names+=",DNS:${host},DNS:${host}.default.svc,DNS:${host}.default.svc.cluster.local"
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

format_store() {
  local cluster_id
  rm -rf "${data_dir}"
  cluster_id=$(run_tool kafka.tools.StorageTool random-uuid)
  run_tool kafka.tools.StorageTool format --config "${config_file}" --cluster-id "${cluster_id}" \
    --add-scram "SCRAM-SHA-512=[name=${KAFKA_DEV_SCRAM_USER},password=${KAFKA_DEV_SCRAM_PASSWORD}]" \
    >/dev/null || die "formatting the KRaft store in ${data_dir} failed"
}

start() {
  local pid
  if pid=$(running_pid); then
    say "already running (pid ${pid}) on 127.0.0.1:${KAFKA_DEV_PORT}"
    return 0
  fi
  require java "install a Java 17+ runtime (Debian: apt-get install openjdk-17-jre-headless)"
  mkdir -p "${KAFKA_DEV_DIR}"
  stop_strays
  resolve_libs
  write_config
  make_tls
  format_store
  launch
}

# Starts the broker on the existing store (its topics, offsets and transactions survive).
launch() {
  if port_open "${KAFKA_DEV_PORT}"; then
    die "port ${KAFKA_DEV_PORT} is taken by another process; set KAFKA_DEV_PORT to a free port"
  fi
  rm -f "${log_file}"
  say "starting Kafka on 127.0.0.1:${KAFKA_DEV_PORT} (TLS with SCRAM on ${sasl_port}), store ${data_dir}"
  # setsid: the broker gets its own session so a Ctrl-C aimed at the caller does not kill it half-way;
  # `stop` (or the caller's trap) is what ends it. JVM flags as Kafka's own start script sets them.
  setsid java \
    "-Xms${KAFKA_DEV_HEAP}" "-Xmx${KAFKA_DEV_HEAP}" \
    -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -XX:InitiatingHeapOccupancyPercent=35 -XX:+ExplicitGCInvokesConcurrent \
    -Djava.awt.headless=true -Dlog4j2.configurationFile="${log4j_file}" \
    -cp "$(java_classpath)" kafka.Kafka "${config_file}" >"${console_file}" 2>&1 </dev/null &
  echo "$!" >"${pid_file}"
  if [[ -n "${KAFKA_DEV_STOP_WITH_PID}" ]]; then
    stop_with "${KAFKA_DEV_STOP_WITH_PID}" "$!"
  fi
  wait_ready
}

# Watches process $1 from a session of its own and sends the broker ($2) SIGTERM when it is gone.
stop_with() {
  # shellcheck disable=SC2016 # the watcher's script expands its own arguments
  setsid bash -c 'while kill -0 "$1" 2>/dev/null; do sleep 1; done; kill "$2" 2>/dev/null || true' \
    kafka-dev-watch "$1" "$2" </dev/null >/dev/null 2>&1 &
}

# Stops the broker and starts it again on the same store: a broker restart as clients see it.
restart() {
  [[ -f "${data_dir}/meta.properties" ]] || die "no store in ${data_dir}; start the broker first: $0 start"
  stop
  launch
}

wait_ready() {
  local deadline=$((SECONDS + KAFKA_DEV_START_TIMEOUT)) pid
  pid=$(<"${pid_file}")
  until port_open "${KAFKA_DEV_PORT}" && grep -q 'Kafka Server started' "${log_file}" 2>/dev/null; do
    if ! kill -0 "${pid}" 2>/dev/null; then
      tail -n 30 "${console_file}" "${log_file}" >&2 2>/dev/null || true
      rm -f "${pid_file}"
      die "the broker exited during start-up (logs above, full log in ${log_file})"
    fi
    if ((SECONDS >= deadline)); then
      stop
      die "the broker did not answer on 127.0.0.1:${KAFKA_DEV_PORT} within ${KAFKA_DEV_START_TIMEOUT}s (see ${log_file})"
    fi
    sleep 0.5
  done
  say "ready on 127.0.0.1:${KAFKA_DEV_PORT}"
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

stop() {
  local pid
  if pid=$(running_pid); then
    say "stopping (pid ${pid})"
    terminate "${pid}"
  fi
  rm -f "${pid_file}"
  stop_strays
}

status() {
  local pid
  if pid=$(running_pid) && port_open "${KAFKA_DEV_PORT}"; then
    echo "running (pid ${pid}) on 127.0.0.1:${KAFKA_DEV_PORT}"
  else
    echo "not running"
    return 1
  fi
}

print_env() {
  cat <<EOF
export KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:${KAFKA_DEV_PORT}
export KAFKA_TEST_SASL_BOOTSTRAP_SERVERS=127.0.0.1:${sasl_port}
export KAFKA_TEST_SASL_USERNAME=${KAFKA_DEV_SCRAM_USER}
export KAFKA_TEST_SASL_PASSWORD=${KAFKA_DEV_SCRAM_PASSWORD}
export KAFKA_TEST_SASL_CA_LOCATION=${tls_dir}/ca.crt
export KAFKA_DEV_DIR=${KAFKA_DEV_DIR}
EOF
}

create_topics() {
  running_pid >/dev/null || die "not running; start it first: $0 start"
  local spec topic partitions
  for spec in tabs.orders:12 tabs.deliveries:12 tabs.dlq:1; do
    topic=${spec%%:*}
    partitions=${spec##*:}
    run_tool org.apache.kafka.tools.TopicCommand --bootstrap-server "127.0.0.1:${KAFKA_DEV_PORT}" \
      --create --if-not-exists --topic "${topic}" --partitions "${partitions}" --replication-factor 1 >&2
  done
  say "topics ready: tabs.orders (12 partitions), tabs.deliveries (12), tabs.dlq (1)"
}

# Creates SCRAM users and replaces their ACLs, as read from standard input (kafka-dev/KafkaAccess.java says how):
# one JVM for all of them, through the admin API on the PLAINTEXT listener (a super user there).
apply_access() {
  running_pid >/dev/null || die "not running; start it first: $0 start"
  java -Xmx256m -Dlog4j2.configurationFile="${log4j_file}" -cp "$(java_classpath)" \
    "${repo_root}/scripts/kafka-dev/KafkaAccess.java" "127.0.0.1:${KAFKA_DEV_PORT}"
}

case "${1:-}" in
  resolve) resolve_libs ;;
  access) apply_access ;;
  start) start ;;
  restart) restart ;;
  topics) create_topics ;;
  stop) stop ;;
  status) status ;;
  env) print_env ;;
  tool)
    shift
    [[ $# -ge 1 ]] || die "usage: $0 tool CLASS [ARGS...]"
    resolve_libs
    [[ -f "${log4j_file}" ]] || { mkdir -p "${KAFKA_DEV_DIR}"; write_config; }
    run_tool "$@"
    ;;
  *)
    echo "usage: $0 resolve|start|stop|restart|status|env|topics|access|tool CLASS [ARGS...]" >&2
    exit 2
    ;;
esac
