#!/usr/bin/env bash
# Deploys the application: the patient Deployment patient-0 and the makers' KEDA ScaledJob medicine-maker-0.
# Run ./make_infra.sh and ./make_build.sh first. Safe to run again: a second run also restarts the patient so it
# picks up freshly built images. See documentation/DEPLOY_INSTRUCTIONS.md.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/lib/common.sh"
cd "$(repo_root)"

: "${ROLLOUT_TIMEOUT:=180s}"

require_kubectl_on_minikube
kubectl get crd scaledjobs.keda.sh kafkas.kafka.strimzi.io >/dev/null 2>&1 \
  || die "KEDA or Strimzi is not installed; run ./make_infra.sh first"

existed=false
if kubectl -n "${NAMESPACE}" get deployment patient-0 >/dev/null 2>&1; then
  existed=true
fi

log "applying the patient Deployment and the medicine ScaledJob (deploy/app)"
kubectl apply -k deploy/app
if [[ "${existed}" == true ]]; then
  # Same image tag, possibly new image: restart so the pods run what make_build.sh just built.
  kubectl -n "${NAMESPACE}" rollout restart deployment/patient-0
fi
kubectl -n "${NAMESPACE}" rollout status deployment/patient-0 --timeout="${ROLLOUT_TIMEOUT}"

cat <<'TXT'
==> deployed: one patient ordering; makers start from the lag of group tabs_makers

See it work:
  kubectl exec -it medicine-pubsub-kafka-0 -- bin/kafka-topics.sh --list --bootstrap-server medicine-pubsub-kafka-bootstrap:9092
  kubectl exec -it medicine-pubsub-kafka-1 -- bin/kafka-console-consumer.sh --bootstrap-server medicine-pubsub-kafka-bootstrap:9092 --topic tabs.orders
  kubectl exec -it medicine-pubsub-kafka-1 -- bin/kafka-console-consumer.sh --bootstrap-server medicine-pubsub-kafka-bootstrap:9092 --topic tabs.deliveries --isolation-level read_committed
  kubectl get pods -l app.kubernetes.io/part-of=medicine-pubsub
  kubectl logs -f deployment/patient-0
  kubectl logs -f <medicine-maker-0 pod name>
Add patients:
  kubectl scale -n default deployment patient-0 --replicas=10
TXT
