#!/usr/bin/env bash
# Deploys the application: the patient Deployment patient-0 and the makers' KEDA ScaledJob medicine-maker-0, the
# TriggerAuthentication KEDA signs in to Kafka with, and the application pods' NetworkPolicy.
# Run ./make_infra.sh and ./make_build.sh first. Safe to run again: a second run keeps the patients' replica count
# (what `kubectl scale` set) and restarts them so they pick up freshly built images.
# See documentation/DEPLOY_INSTRUCTIONS.md.
#
# APP_KUSTOMIZATION: deploy this kustomization instead of deploy/app (an overlay of it with your own settings).
# IMAGE_REGISTRY: the registry make_build.sh pushed the images to (clusters other than minikube, kind and k3d).
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/lib/common.sh"
cd "$(repo_root)"

: "${ROLLOUT_TIMEOUT:=180s}"
: "${APP_KUSTOMIZATION:=deploy/app}"

# The image names a node reports for an image built as NAME (container runtimes add Docker Hub's prefix).
image_on_nodes() {
  local image=$1 names
  if is_minikube; then
    names=$(minikube -p "${MINIKUBE_PROFILE}" image ls 2>/dev/null || true)
  else
    names=$(kubectl get nodes -o jsonpath='{range .items[*].status.images[*]}{range .names[*]}{@}{"\n"}{end}{end}')
  fi
  grep -qxF -e "${image}" -e "docker.io/${image}" -e "docker.io/library/${image}" <<<"${names}"
}

require_cluster
for crd in scaledjobs.keda.sh kafkas.kafka.strimzi.io; do
  crd_exists "${crd}" || die "KEDA or Strimzi is not installed (no CRD ${crd}); run ./make_infra.sh first"
done
# The pods sign in to Kafka with the passwords Strimzi's User Operator keeps in these Secrets, and trust the
# cluster CA it publishes: without them they would wait in CreateContainerConfigError.
for secret in medicine-patient medicine-maker medicine-keda medicine-pubsub-cluster-ca-cert; do
  kubectl -n "${NAMESPACE}" get secret "${secret}" >/dev/null 2>&1 ||
    die "secret ${secret} does not exist (Strimzi creates it for the Kafka users of deploy/infra); run ./make_infra.sh first"
done

app="${APP_KUSTOMIZATION}"
if [[ -n "${IMAGE_REGISTRY:-}" ]]; then
  # The same application, its images taken from the registry: an overlay kustomize can load (it refuses
  # absolute paths, so the overlay sits in the repository's target/ and names the application relatively).
  overlay=target/registry-overlay
  base=$(cd "${APP_KUSTOMIZATION}" && pwd)
  [[ "${base}" == "$(pwd)"/* ]] || die "with IMAGE_REGISTRY, APP_KUSTOMIZATION must be inside the repository"
  mkdir -p "${overlay}"
  {
    echo "apiVersion: kustomize.config.k8s.io/v1beta1"
    echo "kind: Kustomization"
    echo "resources:"
    echo "  - ../..${base#"$(pwd)"}"
    echo "images:"
    for image in "${IMAGES[@]}"; do
      echo "  - name: ${image%%:*}"
      echo "    newName: ${IMAGE_REGISTRY}/${image%%:*}"
    done
  } >"${overlay}/kustomization.yaml"
  app="${overlay}"
else
  for image in "${IMAGES[@]}"; do
    image_on_nodes "${image}" ||
      die "image ${image} is on no node of context ${CONTEXT}; build it there first: ./make_build.sh"
  done
fi

existed=false
if kubectl -n "${NAMESPACE}" get deployment patient-0 >/dev/null 2>&1; then
  existed=true
fi

log "applying the patient Deployment and the medicine ScaledJob (${APP_KUSTOMIZATION})"
# Server-side apply: deploy/ does not set the patients' replica count, so a re-run leaves `kubectl scale` alone.
kubectl apply --server-side --force-conflicts -k "${app}"
if [[ "${existed}" == true ]]; then
  # Same image tag, possibly new image: restart so the pods run what make_build.sh just built.
  kubectl -n "${NAMESPACE}" rollout restart deployment/patient-0
fi
kubectl -n "${NAMESPACE}" rollout status deployment/patient-0 --timeout="${ROLLOUT_TIMEOUT}"

# The Prometheus operator's PodMonitor and alert rules, where the operator's CRDs are installed; elsewhere the
# pods' prometheus.io/* annotations and deploy/monitoring/medicine-pubsub.rules.yaml serve a plain Prometheus.
if crd_exists podmonitors.monitoring.coreos.com && crd_exists prometheusrules.monitoring.coreos.com; then
  log "applying the PodMonitor and the alert rules for the Prometheus operator (deploy/monitoring)"
  kubectl apply --server-side -k deploy/monitoring
else
  log "no Prometheus operator CRDs (monitoring.coreos.com): deploy/monitoring not applied; see documentation/DEPLOY_INSTRUCTIONS.md, \"Monitoring\""
fi

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
