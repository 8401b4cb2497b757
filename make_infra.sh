#!/usr/bin/env bash
# Prepares the cluster of kubectl's current context: the Strimzi operator and the Kafka cluster `medicine-pubsub`
# with its topics and users, and KEDA. Safe to run again: everything is applied declaratively and waited for.
# See documentation/PREPARE_INFRA.md.
#
# STRIMZI_INSTALL_MANIFEST, KEDA_INSTALL_MANIFEST: take the operators' release YAMLs from these files instead of
# downloading them (air-gapped clusters).
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/lib/common.sh"
cd "$(repo_root)"

# What `minikube start --cpus=6 --memory=8g` gives; Kafka, Strimzi, KEDA and a dozen makers need it.
: "${MIN_CPUS:=6}"
: "${MIN_MEMORY_MIB:=7000}"
: "${KAFKA_READY_TIMEOUT:=900s}"
: "${OPERATOR_TIMEOUT:=300s}"

# cpu_millis QUANTITY: a Kubernetes CPU quantity (6, 5800m) in millicores.
cpu_millis() {
  case "$1" in
    *m) echo "${1%m}" ;;
    *) echo $(($1 * 1000)) ;;
  esac
}

# memory_mib QUANTITY: a Kubernetes memory quantity (8Gi, 8010284Ki, 8G, bytes) in MiB.
memory_mib() {
  local q=$1
  case "${q}" in
    *Ki) echo $((${q%Ki} / 1024)) ;;
    *Mi) echo "${q%Mi}" ;;
    *Gi) echo $((${q%Gi} * 1024)) ;;
    *K | *k) echo $((${q%[Kk]} * 1000 / 1048576)) ;;
    *M) echo $((${q%M} * 1000000 / 1048576)) ;;
    *G) echo $((${q%G} * 1000000000 / 1048576)) ;;
    *) echo $((q / 1048576)) ;;
  esac
}

# Sets CPUS and MEMORY_MIB to what the cluster offers. On minikube, its profile's size: with the docker driver
# the node reports the host's CPUs and memory, not the container's limits.
cluster_size() {
  if is_minikube; then
    local json rest
    json=$(minikube profile list -o json 2>/dev/null | tr -d ' \n\t' || true)
    rest=${json#*\"Config\":\{\"Name\":\""${MINIKUBE_PROFILE}"\"}
    if [[ "${rest}" != "${json}" ]]; then
      CPUS=$(grep -o '"CPUs":[0-9]*' <<<"${rest}" | head -n 1 | cut -d: -f2)
      MEMORY_MIB=$(grep -o '"Memory":[0-9]*' <<<"${rest}" | head -n 1 | cut -d: -f2)
      if [[ -n "${CPUS}" && -n "${MEMORY_MIB}" ]]; then
        return 0
      fi
    fi
    echo "warning: could not read the size of minikube profile ${MINIKUBE_PROFILE}; using the nodes' capacity" >&2
  fi
  local millis=0 mib=0 cpu memory
  while read -r cpu memory; do
    [[ -n "${cpu}" ]] || continue
    millis=$((millis + $(cpu_millis "${cpu}")))
    mib=$((mib + $(memory_mib "${memory}")))
  done < <(kubectl get nodes -o jsonpath='{range .items[*]}{.status.allocatable.cpu} {.status.allocatable.memory}{"\n"}{end}')
  CPUS=$((millis / 1000))
  MEMORY_MIB=${mib}
}

check_prerequisites() {
  require_cluster
  cluster_size
  if ((CPUS < MIN_CPUS || MEMORY_MIB < MIN_MEMORY_MIB)); then
    local fix="give the cluster more room"
    if is_minikube; then
      fix="minikube delete -p ${MINIKUBE_PROFILE} && minikube start -p ${MINIKUBE_PROFILE} --cpus=6 --memory=8g"
    fi
    die "the cluster (context ${CONTEXT}) has ${CPUS} CPUs and ${MEMORY_MIB} MiB; Kafka, Strimzi, KEDA and the \
makers need ${MIN_CPUS} CPUs and ${MIN_MEMORY_MIB} MiB: ${fix}"
  fi
  log "cluster ${CONTEXT}: ${CPUS} CPUs, ${MEMORY_MIB} MiB"
}

install_strimzi() {
  log "installing the Strimzi ${STRIMZI_VERSION} operator, watching namespace ${NAMESPACE}"
  strimzi_manifest "${SCRATCH}/strimzi.yaml"
  kubectl apply --server-side --force-conflicts -n "${NAMESPACE}" -f "${SCRATCH}/strimzi.yaml"
  kubectl -n "${NAMESPACE}" rollout status deployment/strimzi-cluster-operator --timeout="${OPERATOR_TIMEOUT}"
}

install_kafka() {
  log "applying the Kafka cluster medicine-pubsub, its topics and its users (deploy/infra)"
  kubectl apply -k deploy/infra
}

install_keda() {
  log "installing KEDA ${KEDA_VERSION}"
  keda_manifest "${SCRATCH}/keda.yaml"
  # Server-side apply: KEDA's CRDs are too large for the last-applied annotation of a client-side apply.
  kubectl apply --server-side --force-conflicts -f "${SCRATCH}/keda.yaml"
}

wait_for_kafka() {
  log "waiting for the Kafka cluster (first start pulls images: several minutes)"
  kubectl -n "${NAMESPACE}" wait kafka/medicine-pubsub --for=condition=Ready --timeout="${KAFKA_READY_TIMEOUT}"
  kubectl -n "${NAMESPACE}" wait kafkatopic -l strimzi.io/cluster=medicine-pubsub --for=condition=Ready \
    --timeout="${OPERATOR_TIMEOUT}"
  # Ready once the User Operator has written each user's credentials and ACLs and its Secret (the password the
  # pods and KEDA read).
  kubectl -n "${NAMESPACE}" wait kafkauser -l strimzi.io/cluster=medicine-pubsub --for=condition=Ready \
    --timeout="${OPERATOR_TIMEOUT}"
}

wait_for_keda() {
  log "waiting for KEDA"
  local deployment
  for deployment in "${KEDA_DEPLOYMENTS[@]}"; do
    kubectl -n keda rollout status "deployment/${deployment}" --timeout="${OPERATOR_TIMEOUT}"
  done
}

scratch_dir
check_prerequisites
install_strimzi
install_kafka
# KEDA installs while Kafka starts.
install_keda
wait_for_kafka
wait_for_keda
log "infrastructure ready: Kafka medicine-pubsub (3 nodes), topics tabs.orders, tabs.deliveries, tabs.dlq, users medicine-patient, medicine-maker, medicine-keda, medicine-auditor, KEDA ${KEDA_VERSION}"
log "next: ./make_build.sh && ./make_deploy.sh"
