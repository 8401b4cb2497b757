#!/usr/bin/env bash
# Validates Kubernetes manifests offline and strictly (unknown fields and duplicate keys are errors) with
# kubeconform against the pinned schemas in ../shared/k8s-schemas (Strimzi 1.2.0, KEDA 2.20.2, the Prometheus
# operator 0.93.0, Kubernetes 1.35).
#
#   scripts/check-manifests.sh           every manifest under deploy/, and the kustomize renderings of deploy/ and
#                                        deploy/monitoring/ if kubectl exists
#   scripts/check-manifests.sh FILE...   just those files (the tests use it to prove a broken manifest is caught)
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
: "${K8S_SCHEMAS:=${repo_root}/../shared/k8s-schemas}"

if [[ ! -d "${K8S_SCHEMAS}" ]]; then
  if [[ -n "${CI:-}" ]]; then
    echo "check-manifests: no schemas at ${K8S_SCHEMAS} (../shared is absent); set K8S_SCHEMAS" >&2
    exit 1
  fi
  echo "check-manifests: SKIPPED: no schemas at ${K8S_SCHEMAS} (../shared is absent); set K8S_SCHEMAS to validate"
  exit 0
fi

kubeconform=$(command -v kubeconform || true)
if [[ -z "${kubeconform}" ]] && command -v go >/dev/null 2>&1 && [[ -x "$(go env GOPATH)/bin/kubeconform" ]]; then
  kubeconform="$(go env GOPATH)/bin/kubeconform"
fi
if [[ -z "${kubeconform}" ]]; then
  echo "check-manifests: kubeconform is missing; install it with:" >&2
  echo "  go install github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0" >&2
  exit 1
fi

# kubeconform reads `.json` locations as Go templates; this one names files as k8s-schemas/README.md describes.
schema_location="${K8S_SCHEMAS}/{{ .ResourceKind }}{{ .KindSuffix }}.json"
validate() {
  "${kubeconform}" -strict -summary -schema-location "${schema_location}" "$@"
}

if [[ $# -gt 0 ]]; then
  validate "$@"
  exit
fi

cd "${repo_root}"
# Not Kubernetes resources: Grafana's dashboard, Prometheus' rules file and its unit tests (promtool checks those).
validate -ignore-filename-pattern 'kustomization\.yaml$' -ignore-filename-pattern 'dashboards/' \
  -ignore-filename-pattern 'monitoring/medicine-pubsub\.rules\.yaml$' -ignore-filename-pattern 'monitoring/tests/' deploy/
if command -v kubectl >/dev/null 2>&1; then
  kubectl kustomize deploy/ | validate -
  kubectl kustomize deploy/monitoring/ | validate -
else
  echo "check-manifests: kubectl is missing; the kustomize rendering of deploy/ was not validated"
fi
