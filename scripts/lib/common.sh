# shellcheck shell=bash
# Helpers shared by make_infra.sh, make_build.sh, make_deploy.sh and make_destroy.sh. Sourced, not run.

# Pinned platform versions (DESIGN.md): the offline schemas in ../shared/k8s-schemas are for exactly these.
STRIMZI_VERSION=1.2.0
KEDA_VERSION=2.20.2
# shellcheck disable=SC2034 # used by the scripts that source this file
STRIMZI_INSTALL_URL="https://github.com/strimzi/strimzi-kafka-operator/releases/download/${STRIMZI_VERSION}/strimzi-cluster-operator-${STRIMZI_VERSION}.yaml"
# shellcheck disable=SC2034 # used by the scripts that source this file
KEDA_INSTALL_URL="https://github.com/kedacore/keda/releases/download/v${KEDA_VERSION}/keda-${KEDA_VERSION}.yaml"

# The namespace of the app and the Kafka cluster (DESIGN.md), and the minikube profile the scripts target.
: "${NAMESPACE:=default}"
: "${MINIKUBE_PROFILE:=minikube}"

log() {
  printf '==> %s\n' "$*"
}

die() {
  printf 'error: %s\n' "$*" >&2
  exit 1
}

# require_cmd NAME HINT: fails with an actionable message when NAME is not on PATH.
require_cmd() {
  command -v "$1" >/dev/null 2>&1 || die "'$1' is not installed or not on PATH; $2"
}

require_minikube_running() {
  require_cmd minikube "install it from https://minikube.sigs.k8s.io/docs/start/"
  local host
  host=$(minikube -p "${MINIKUBE_PROFILE}" status --format '{{.Host}}' 2>/dev/null || true)
  if [[ "${host}" != "Running" ]]; then
    die "minikube (profile ${MINIKUBE_PROFILE}) is not running; start it with: minikube start --cpus=6 --memory=8g"
  fi
}

require_kubectl_on_minikube() {
  require_cmd kubectl "install it from https://kubernetes.io/docs/tasks/tools/"
  local context
  context=$(kubectl config current-context 2>/dev/null || true)
  if [[ "${context}" != "${MINIKUBE_PROFILE}" ]]; then
    die "kubectl's current context is '${context}', not '${MINIKUBE_PROFILE}'; run: kubectl config use-context ${MINIKUBE_PROFILE}"
  fi
}

# strimzi_manifest FILE: downloads Strimzi's pinned install manifest to FILE, with the operator's role bindings
# moved from the release's namespace `myproject` to ours. Downloaded first, applied after: a failed download
# never half-applies.
strimzi_manifest() {
  curl -fsSL "${STRIMZI_INSTALL_URL}" -o "$1.download" \
    || die "could not download ${STRIMZI_INSTALL_URL}; check the network"
  sed -E "s/namespace: myproject/namespace: ${NAMESPACE}/" "$1.download" >"$1"
  rm -f "$1.download"
}

# The directory of the repository, whatever the caller's working directory.
repo_root() {
  cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd
}
