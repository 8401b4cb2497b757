#!/usr/bin/env bash
# Removes what make_infra.sh and make_deploy.sh created, in the order that lets each operator clean up after
# itself: the application (while KEDA runs), the topics and users (while the cluster's entity operator runs), the
# Kafka cluster (its volumes too), then KEDA and the Strimzi operator. Safe to run again: what is gone is skipped,
# including resources whose kind no longer exists.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/lib/common.sh"
cd "$(repo_root)"

: "${DELETE_TIMEOUT:=300s}"

require_cluster
scratch_dir

log "deleting the application"
kubectl -n "${NAMESPACE}" delete deployment patient-0 --ignore-not-found --wait=true --timeout="${DELETE_TIMEOUT}"
if crd_exists scaledjobs.keda.sh; then
  # KEDA removes its finalizer from the ScaledJob; the makers' Jobs go with it.
  kubectl -n "${NAMESPACE}" delete scaledjob medicine-maker-0 --ignore-not-found --wait=true \
    --timeout="${DELETE_TIMEOUT}"
fi
kubectl -n "${NAMESPACE}" wait pod -l app.kubernetes.io/part-of=medicine-pubsub --for=delete \
  --timeout="${DELETE_TIMEOUT}"
if crd_exists triggerauthentications.keda.sh; then
  kubectl -n "${NAMESPACE}" delete triggerauthentication medicine-keda --ignore-not-found
fi
kubectl -n "${NAMESPACE}" delete configmap medicine-keda-kafka-user --ignore-not-found
kubectl -n "${NAMESPACE}" delete networkpolicy medicine-pubsub-apps --ignore-not-found
if crd_exists podmonitors.monitoring.coreos.com; then
  kubectl -n "${NAMESPACE}" delete podmonitor medicine-pubsub --ignore-not-found
fi
if crd_exists prometheusrules.monitoring.coreos.com; then
  kubectl -n "${NAMESPACE}" delete prometheusrule medicine-pubsub --ignore-not-found
fi

if crd_exists kafkatopics.kafka.strimzi.io; then
  # Before the cluster: the topic operator that removes the topics' finalizers runs with the cluster.
  log "deleting the topics"
  kubectl delete -f deploy/infra/topics.yaml --ignore-not-found --wait=true --timeout="${DELETE_TIMEOUT}"
fi
if crd_exists kafkausers.kafka.strimzi.io; then
  # Also while the cluster runs: its user operator removes the users' credentials and ACLs from the brokers;
  # their Secrets go with them.
  log "deleting the users"
  kubectl delete -f deploy/infra/users.yaml --ignore-not-found --wait=true --timeout="${DELETE_TIMEOUT}"
fi
if crd_exists kafkas.kafka.strimzi.io; then
  log "deleting the Kafka cluster (its volumes are deleted with it)"
  kubectl delete -f deploy/infra/kafka.yaml -f deploy/infra/kafka-nodepool.yaml --ignore-not-found \
    --wait=true --timeout="${DELETE_TIMEOUT}"
  kubectl -n "${NAMESPACE}" wait pod -l strimzi.io/cluster=medicine-pubsub --for=delete --timeout="${DELETE_TIMEOUT}"
fi

log "uninstalling KEDA ${KEDA_VERSION}"
keda_manifest "${SCRATCH}/keda.yaml"
kubectl delete -f "${SCRATCH}/keda.yaml" --ignore-not-found --wait=true --timeout="${DELETE_TIMEOUT}"
log "uninstalling the Strimzi ${STRIMZI_VERSION} operator"
strimzi_manifest "${SCRATCH}/strimzi.yaml"
kubectl delete -n "${NAMESPACE}" -f "${SCRATCH}/strimzi.yaml" --ignore-not-found --wait=true \
  --timeout="${DELETE_TIMEOUT}"
log "done"
