#!/usr/bin/env bash
# Stand-in for kubectl, minikube, docker and curl in the script tests (linked under those names): records each
# call in $STANDIN_STATE/calls.log and answers as the real tool would on a healthy minikube. Knobs:
# STANDIN_MINIKUBE (Running|Stopped), STANDIN_CONTEXT, STANDIN_CPUS, STANDIN_MEMORY.
set -euo pipefail

name=$(basename "$0")
state=${STANDIN_STATE:?STANDIN_STATE must name the state directory of the test}
echo "${name} $*" >>"${state}/calls.log"

case "${name}" in
  minikube)
    case " $* " in
      *" status "*)
        if [[ "${STANDIN_MINIKUBE:-Running}" == Running ]]; then
          echo Running
        else
          echo Stopped
          exit 7
        fi
        ;;
      *" docker-env "*)
        echo 'export DOCKER_HOST="tcp://192.168.49.2:2376"'
        echo 'export MINIKUBE_ACTIVE_DOCKERD="minikube"'
        ;;
    esac
    ;;
  kubectl)
    # A manifest piped in is kept for the test to inspect.
    if [[ " $* " == *" -f - "* ]]; then
      cat >"${state}/stdin-$(wc -l <"${state}/calls.log").yaml"
    fi
    case "$*" in
      "config current-context") echo "${STANDIN_CONTEXT:-minikube}" ;;
      "get nodes -o jsonpath="*) echo "${STANDIN_CPUS:-6} ${STANDIN_MEMORY:-8148236Ki}" ;;
      "get crd "*) [[ -f "${state}/crds-installed" ]] || { echo 'Error from server (NotFound)' >&2; exit 1; } ;;
      "apply --server-side --force-conflicts -f https://github.com/kedacore/"*) touch "${state}/crds-installed" ;;
      "-n default get deployment patient-0")
        [[ -f "${state}/patient-deployed" ]] || { echo 'Error from server (NotFound)' >&2; exit 1; }
        ;;
      "apply -k deploy/app") touch "${state}/patient-deployed" ;;
      "delete -k deploy/app "*) rm -f "${state}/patient-deployed" ;;
    esac
    ;;
  docker)
    echo "DOCKER_HOST=${DOCKER_HOST:-}" >>"${state}/docker-env.log"
    ;;
  curl)
    # The shape of Strimzi's install manifest that matters: bindings in namespace myproject. Honours -o FILE.
    out=/dev/stdout
    args=("$@")
    for ((i = 0; i < ${#args[@]}; i++)); do
      if [[ "${args[i]}" == -o ]]; then
        out=${args[i + 1]}
      fi
    done
    {
      printf 'apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata:\n  name: strimzi-cluster-operator\n'
      printf 'subjects:\n  - kind: ServiceAccount\n    name: strimzi-cluster-operator\n    namespace: myproject\n'
    } >"${out}"
    ;;
esac
