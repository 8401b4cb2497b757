# shellcheck shell=bash
# Helpers shared by make_infra.sh, make_build.sh, make_deploy.sh and make_destroy.sh. Sourced, not run.
#
# The scripts work on kubectl's current context: minikube, kind, k3d or any other cluster. Steps that only make
# sense on minikube (its profile's size, its Docker daemon) run only when the context is minikube's.

# Pinned platform versions (DESIGN.md): the offline schemas in ../shared/k8s-schemas are for exactly these.
STRIMZI_VERSION=1.2.0
KEDA_VERSION=2.20.2
STRIMZI_INSTALL_URL="https://github.com/strimzi/strimzi-kafka-operator/releases/download/${STRIMZI_VERSION}/strimzi-cluster-operator-${STRIMZI_VERSION}.yaml"
KEDA_INSTALL_URL="https://github.com/kedacore/keda/releases/download/v${KEDA_VERSION}/keda-${KEDA_VERSION}.yaml"
# KEDA's Deployments as its release YAML names them (the Helm chart names two of them differently).
# shellcheck disable=SC2034 # used by the scripts that source this file
KEDA_DEPLOYMENTS=(keda-operator keda-metrics-apiserver keda-admission)

# The namespace of the app and the Kafka cluster: fixed by the contract (DESIGN.md), written in deploy/.
# shellcheck disable=SC2034 # used by the scripts that source this file
NAMESPACE=default
# The images deploy/app runs (imagePullPolicy IfNotPresent: built into the cluster's nodes by make_build.sh).
# shellcheck disable=SC2034 # used by the scripts that source this file
IMAGES=(medicine-pubsub/patient:dev medicine-pubsub/medicine:dev)
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

# A directory for this run's temporary files, removed however the script ends.
scratch_dir() {
  if [[ -z "${SCRATCH:-}" ]]; then
    SCRATCH=$(mktemp -d)
    trap 'rm -rf "${SCRATCH}"' EXIT
  fi
}

# Sets CONTEXT to kubectl's current context and checks the cluster answers.
require_cluster() {
  require_cmd kubectl "install it from https://kubernetes.io/docs/tasks/tools/"
  CONTEXT=$(kubectl config current-context 2>/dev/null || true)
  [[ -n "${CONTEXT}" ]] ||
    die "kubectl has no current context; start a cluster (minikube start --cpus=6 --memory=8g) or pick one: kubectl config use-context NAME"
  if is_minikube; then
    require_minikube_running
  fi
  local problem
  if ! problem=$(kubectl get --raw /readyz 2>&1); then
    die "the cluster of kubectl context '${CONTEXT}' does not answer (${problem%%$'\n'*}); start it, or pick another: kubectl config use-context NAME"
  fi
}

# Whether the current context is minikube's (minikube names its context after the profile).
is_minikube() {
  [[ "${CONTEXT}" == "${MINIKUBE_PROFILE}" ]]
}

require_minikube_running() {
  require_cmd minikube "install it from https://minikube.sigs.k8s.io/docs/start/"
  local host
  host=$(minikube -p "${MINIKUBE_PROFILE}" status --format '{{.Host}}' 2>/dev/null || true)
  if [[ "${host}" != "Running" ]]; then
    die "minikube (profile ${MINIKUBE_PROFILE}) is not running; start it with: minikube start --cpus=6 --memory=8g"
  fi
}

# crd_exists NAME: whether the cluster knows the CustomResourceDefinition NAME.
crd_exists() {
  kubectl get crd "$1" >/dev/null 2>&1
}

# install_manifest NAME URL LOCAL FILE: the release manifest NAME into FILE, from the local file LOCAL when set
# (air-gapped clusters, tests), else downloaded from URL. Fetched first, applied after: a failed download never
# half-applies.
install_manifest() {
  local name=$1 url=$2 local_file=$3 file=$4
  if [[ -n "${local_file}" ]]; then
    [[ -r "${local_file}" ]] || die "${name}: ${local_file} is not a readable file"
    cp "${local_file}" "${file}"
  else
    require_cmd curl "install curl (Debian: apt-get install curl), or give the manifest as a file"
    curl -fsSL "${url}" -o "${file}" ||
      die "could not download ${url}; check the network, or download it elsewhere and give it as a file"
  fi
}

# strimzi_manifest FILE: Strimzi's pinned install manifest (STRIMZI_INSTALL_MANIFEST, or downloaded), with the
# operator's role bindings moved from the release's namespace `myproject` to ours.
strimzi_manifest() {
  install_manifest "STRIMZI_INSTALL_MANIFEST" "${STRIMZI_INSTALL_URL}" "${STRIMZI_INSTALL_MANIFEST:-}" "$1.release"
  sed -E "s/namespace: myproject/namespace: ${NAMESPACE}/" "$1.release" >"$1"
}

# keda_manifest FILE: KEDA's pinned install manifest (KEDA_INSTALL_MANIFEST, or downloaded).
keda_manifest() {
  install_manifest "KEDA_INSTALL_MANIFEST" "${KEDA_INSTALL_URL}" "${KEDA_INSTALL_MANIFEST:-}" "$1"
}

# The directory of the repository, whatever the caller's working directory.
repo_root() {
  cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd
}
