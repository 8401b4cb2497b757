#!/usr/bin/env bash
# STAND-IN for minikube, docker, kind and k3d in tests/contexts.rs: none of them can run here (no VM, no Docker
# engine). kubectl is never stood in: the scripts talk to the real API server. Linked under the tool's name, it
# records each call (with the DOCKER_HOST it was made with) in $STANDIN_LOG and answers as the real tool does:
#   minikube status --format {{.Host}}   $STANDIN_HOST (default Running; anything else exits 7, as minikube does)
#   minikube profile list -o json        $STANDIN_PROFILE_JSON
#   minikube docker-env --shell bash     the exports of minikube's daemon, or $STANDIN_DOCKER_ENV_ERROR and exit 14
#   minikube image ls                    $STANDIN_IMAGES (one per line)
set -euo pipefail

name=$(basename "$0")
echo "${name} $* [DOCKER_HOST=${DOCKER_HOST:-}]" >>"${STANDIN_LOG:?the test names the call log}"

if [[ "${name}" == minikube ]]; then
  case " $* " in
    *" status "*)
      echo "${STANDIN_HOST:-Running}"
      [[ "${STANDIN_HOST:-Running}" == Running ]] || exit 7
      ;;
    *" profile list "*) echo "${STANDIN_PROFILE_JSON:-}" ;;
    *" docker-env "*)
      if [[ -n "${STANDIN_DOCKER_ENV_ERROR:-}" ]]; then
        echo "${STANDIN_DOCKER_ENV_ERROR}" >&2
        exit 14
      fi
      echo 'export DOCKER_TLS_VERIFY="1"'
      echo 'export DOCKER_HOST="tcp://192.168.49.2:2376"'
      echo 'export MINIKUBE_ACTIVE_DOCKERD="minikube"'
      ;;
    *" image ls "*) printf '%s\n' "${STANDIN_IMAGES:-}" ;;
  esac
fi
