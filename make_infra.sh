#!/usr/bin/env bash
# Prepares the cluster: the Strimzi operator and the Kafka cluster `medicine-pubsub` with its topics, and KEDA.
# Safe to run again: everything is applied declaratively and waited for. See documentation/PREPARE_INFRA.md.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/lib/common.sh"
cd "$(repo_root)"

# What `minikube start --cpus=6 --memory=8g` gives; Kafka, Strimzi, KEDA and a dozen makers need it.
: "${MIN_CPUS:=6}"
: "${MIN_MEMORY_MIB:=7000}"
: "${KAFKA_READY_TIMEOUT:=900s}"
: "${OPERATOR_TIMEOUT:=300s}"

check_prerequisites() {
  require_kubectl_on_minikube
  require_minikube_running
  require_cmd curl "install curl (Debian: apt-get install curl)"

  local capacity cpus memory memory_mib
  capacity=$(kubectl get nodes -o jsonpath='{.items[0].status.capacity.cpu} {.items[0].status.capacity.memory}')
  read -r cpus memory <<<"${capacity}"
  memory_mib=$(( ${memory%Ki} / 1024 ))
  if (( cpus < MIN_CPUS || memory_mib < MIN_MEMORY_MIB )); then
    die "the minikube node has ${cpus} CPUs and ${memory_mib} MiB; Kafka, Strimzi, KEDA and the makers need \
${MIN_CPUS} CPUs and ${MIN_MEMORY_MIB} MiB: minikube delete && minikube start --cpus=6 --memory=8g"
  fi
}

install_strimzi() {
  log "installing the Strimzi ${STRIMZI_VERSION} operator, watching namespace ${NAMESPACE}"
  local manifest
  manifest=$(mktemp)
  strimzi_manifest "${manifest}"
  kubectl apply --server-side --force-conflicts -n "${NAMESPACE}" -f - <"${manifest}"
  rm -f "${manifest}"
  kubectl -n "${NAMESPACE}" rollout status deployment/strimzi-cluster-operator --timeout="${OPERATOR_TIMEOUT}"
}

install_kafka() {
  log "applying the Kafka cluster medicine-pubsub and its topics (deploy/infra)"
  kubectl apply -k deploy/infra
}

install_keda() {
  log "installing KEDA ${KEDA_VERSION}"
  # Server-side apply: KEDA's CRDs are too large for the last-applied annotation of a client-side apply.
  kubectl apply --server-side --force-conflicts -f "${KEDA_INSTALL_URL}"
}

wait_for_kafka() {
  log "waiting for the Kafka cluster (first start pulls images: several minutes)"
  kubectl -n "${NAMESPACE}" wait kafka/medicine-pubsub --for=condition=Ready --timeout="${KAFKA_READY_TIMEOUT}"
  kubectl -n "${NAMESPACE}" wait kafkatopic -l strimzi.io/cluster=medicine-pubsub --for=condition=Ready \
    --timeout="${OPERATOR_TIMEOUT}"
}

wait_for_keda() {
  log "waiting for KEDA"
  local deployment
  for deployment in keda-operator keda-operator-metrics-apiserver keda-admission-webhooks; do
    kubectl -n keda rollout status "deployment/${deployment}" --timeout="${OPERATOR_TIMEOUT}"
  done
}

check_prerequisites
install_strimzi
install_kafka
# KEDA installs while Kafka starts.
install_keda
wait_for_kafka
wait_for_keda
log "infrastructure ready: Kafka medicine-pubsub (3 nodes), topics tabs.orders, tabs.deliveries, tabs.dlq, KEDA ${KEDA_VERSION}"
log "next: ./make_build.sh && ./make_deploy.sh"
