#!/usr/bin/env bash
# Builds and checks everything: formatting, lints, the Rust tests against a real Kafka broker (started here from
# Maven Central jars unless KAFKA_BOOTSTRAP_SERVERS names one), the quickstart end to end on a real Kubernetes
# control plane with the real KEDA operator (scripts/kube-dev.sh, built from the Go module proxy and cached), then
# the checks of scripts and manifests. Stops at the first failing step, prints a summary with each step's time,
# and exits non-zero if anything failed.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"

# Tests that need a broker fail (never skip) when CI is set; this script always provides one.
export CI="${CI:-true}"
: "${CARGO_TERM_COLOR:=never}"
export CARGO_TERM_COLOR

summary=()
started_broker=false
started_control_plane=false

print_summary() {
  echo
  echo "==================== make_test.sh summary ===================="
  local line
  for line in "${summary[@]}"; do
    echo "  ${line}"
  done
  echo "=============================================================="
}

cleanup() {
  local status=$?
  if [[ "${started_broker}" == true ]]; then
    scripts/kafka-dev.sh stop || true
  fi
  if [[ "${started_control_plane}" == true ]]; then
    scripts/kube-dev.sh down || true
  fi
  if [[ -n "${kube_build_pid:-}" ]] && kill -0 "${kube_build_pid}" 2>/dev/null; then
    kill "${kube_build_pid}" 2>/dev/null || true
  fi
  print_summary
  exit "${status}"
}
trap cleanup EXIT

# step NAME COMMAND...: runs one check, records its outcome and duration, stops everything on failure.
step() {
  local name=$1 begin=${SECONDS}
  shift
  echo
  echo "==> ${name}"
  if "$@"; then
    summary+=("ok    ${name} ($((SECONDS - begin))s)")
  else
    summary+=("FAIL  ${name} ($((SECONDS - begin))s)")
    exit 1
  fi
}

# shellcheck source=scripts/lib/setup.sh
source scripts/lib/setup.sh

start_kafka() {
  if [[ -n "${KAFKA_BOOTSTRAP_SERVERS:-}" ]]; then
    echo "using the broker at ${KAFKA_BOOTSTRAP_SERVERS} (KAFKA_BOOTSTRAP_SERVERS)"
    return 0
  fi
  # A dev broker someone already runs is reused and left running; one started here is stopped on exit.
  if ! scripts/kafka-dev.sh status >/dev/null 2>&1; then
    started_broker=true
    scripts/kafka-dev.sh start || return 1
  fi
  eval "$(scripts/kafka-dev.sh env)"
}

set_up() {
  setup_tools && link_build_cache && mkdir -p target
}
step "set up what this machine lacks (Debian packages, kubeconform; the build cache)" set_up

# The control plane takes long to compile the first time (it is cached by version after): it builds beside the
# Rust builds, and is waited for before the tests: no build shares the machine with them (the fault campaign's
# liveness bounds are seconds).
kube_build_log=target/kube-dev-build.log
scripts/kube-dev.sh build >"${kube_build_log}" 2>&1 &
kube_build_pid=$!

wait_for_control_plane_build() {
  if wait "${kube_build_pid}"; then
    tail -n 2 "${kube_build_log}"
  else
    tail -n 40 "${kube_build_log}" >&2
    return 1
  fi
}

start_control_plane() {
  started_control_plane=true
  scripts/kube-dev.sh up
}

# The one Go program of the repository, the Strimzi operator pod's stand-in: formatted and vetted as Go's own
# tools have it.
go_checks() {
  local unformatted
  unformatted=$(gofmt -l scripts/kube-dev/strimzi-operator)
  [[ -z "${unformatted}" ]] || { echo "not gofmt-formatted: ${unformatted}" >&2; return 1; }
  (cd scripts/kube-dev/strimzi-operator && go vet ./...)
}

# The quickstart end to end, inside the control plane's namespaces (built first: they have no network).
kubernetes_e2e() {
  local test=(cargo test --locked -p kube-dev --features e2e --test contexts --test quickstart)
  "${test[@]}" --no-run &&
    scripts/kube-dev.sh exec -- "${test[@]}" --offline -- --nocapture
}

step "cargo fmt --check" cargo fmt --all -- --check
step "cargo clippy (all targets and test features, warnings denied)" cargo clippy --workspace --all-targets --locked \
  --features kube-dev/e2e,deploy-check/images -- -D warnings
step "build release binaries" cargo build --workspace --release --locked
step "start Kafka (KRaft, single node)" start_kafka
step "build the Kubernetes control plane, KEDA and a node (Go module proxy; cached by version)" wait_for_control_plane_build
step "cargo test --workspace" cargo test --workspace --locked
# kubectl v1.35.4 from here on (check-manifests renders deploy/ with it).
PATH="$(scripts/kube-dev/build.sh --print):${PATH}"
export PATH
step "build the images from docker/Dockerfile (buildah; the base images made here, cached in buildah's store)" \
  scripts/images/build.sh
step "the images run as deploy/ runs them (umoci and runc: user, read-only root, no capabilities, memory limit)" \
  cargo test --locked -p deploy-check --features images --test images
step "start the Kubernetes control plane (apiserver, controllers, kwok for the broker pods, the brokers)" start_control_plane
step "start the real node (kubelet, containerd, runc, CNI bridge, kube-proxy, CoreDNS, the operators' images)" scripts/kube-dev.sh node
step "Kubernetes end to end: the quickstart on the real API server, KEDA and node" kubernetes_e2e
step "manifests against the pinned schemas (kubeconform, strict)" scripts/check-manifests.sh
step "gofmt and go vet (scripts/kube-dev/strimzi-operator)" go_checks
step "shellcheck" shellcheck -x make_*.sh .ci/run scripts/*.sh scripts/lib/*.sh scripts/*/*.sh bench/*.sh
