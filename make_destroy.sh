#!/usr/bin/env bash
# Removes what make_infra.sh and make_deploy.sh created: the application, the Kafka cluster (its volumes too),
# KEDA and the Strimzi operator. Safe to run again; what is already gone is skipped.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/lib/common.sh"
cd "$(repo_root)"

: "${DELETE_TIMEOUT:=300s}"

require_kubectl_on_minikube
require_cmd curl "install curl (Debian: apt-get install curl)"

log "deleting the application"
kubectl delete -k deploy/app --ignore-not-found --wait=true --timeout="${DELETE_TIMEOUT}"
log "deleting the Kafka cluster and its topics (its volumes are deleted with it)"
kubectl delete -k deploy/infra --ignore-not-found --wait=true --timeout="${DELETE_TIMEOUT}"
kubectl -n "${NAMESPACE}" wait pod -l strimzi.io/cluster=medicine-pubsub --for=delete --timeout="${DELETE_TIMEOUT}"
log "uninstalling KEDA ${KEDA_VERSION}"
kubectl delete -f "${KEDA_INSTALL_URL}" --ignore-not-found --timeout="${DELETE_TIMEOUT}"
log "uninstalling the Strimzi ${STRIMZI_VERSION} operator"
manifest=$(mktemp)
strimzi_manifest "${manifest}"
kubectl delete -n "${NAMESPACE}" --ignore-not-found --timeout="${DELETE_TIMEOUT}" -f - <"${manifest}"
rm -f "${manifest}"
log "done"
