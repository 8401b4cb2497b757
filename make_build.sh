#!/usr/bin/env bash
# Builds the patient and medicine images where the cluster of kubectl's current context finds them, tagged as
# deploy/app expects (imagePullPolicy IfNotPresent):
#   minikube   built by minikube's own Docker daemon (minikube must use the docker container runtime)
#   kind-*     built locally, then `kind load docker-image`
#   k3d-*      built locally, then `k3d image import`
#   other      built locally and pushed to IMAGE_REGISTRY (make_deploy.sh then deploys from there)
# See documentation/BUILD_INSTRUCTIONS.md.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/lib/common.sh"
cd "$(repo_root)"

require_cluster
require_cmd docker "install the Docker CLI (https://docs.docker.com/get-docker/)"

push=false
if is_minikube; then
  log "pointing docker at minikube's daemon (profile ${MINIKUBE_PROFILE})"
  # Captured first: a failing docker-env must stop the build, not leave docker pointed at the wrong daemon.
  if ! docker_env=$(minikube -p "${MINIKUBE_PROFILE}" docker-env --shell bash 2>&1); then
    die "minikube docker-env failed: ${docker_env##*$'\n'}
the images are built by minikube's Docker daemon, which needs the docker container runtime:
  minikube delete -p ${MINIKUBE_PROFILE} && minikube start -p ${MINIKUBE_PROFILE} --cpus=6 --memory=8g --container-runtime=docker"
  fi
  eval "${docker_env}"
elif [[ "${CONTEXT}" == kind-* ]]; then
  require_cmd kind "install kind (https://kind.sigs.k8s.io/), which loads the images into the cluster"
elif [[ "${CONTEXT}" == k3d-* ]]; then
  require_cmd k3d "install k3d (https://k3d.io/), which imports the images into the cluster"
elif [[ -n "${IMAGE_REGISTRY:-}" ]]; then
  push=true
else
  die "kubectl context '${CONTEXT}' is not minikube, kind or k3d: its nodes cannot see locally built images.
Set IMAGE_REGISTRY to a registry the cluster pulls from (e.g. IMAGE_REGISTRY=registry.example.com/team) and run
./make_build.sh and ./make_deploy.sh again with it."
fi

for image in "${IMAGES[@]}"; do
  target=${image#medicine-pubsub/}
  target=${target%%:*}
  log "building ${image}"
  docker build -f docker/Dockerfile --target "${target}" -t "${image}" .
  if [[ "${CONTEXT}" == kind-* ]]; then
    kind load docker-image "${image}" --name "${CONTEXT#kind-}"
  elif [[ "${CONTEXT}" == k3d-* ]]; then
    k3d image import "${image}" -c "${CONTEXT#k3d-}"
  elif [[ "${push}" == true ]]; then
    docker tag "${image}" "${IMAGE_REGISTRY}/${image}"
    docker push "${IMAGE_REGISTRY}/${image}"
  fi
done
docker image ls --filter reference='medicine-pubsub/*' --format '{{.Repository}}:{{.Tag}}  {{.Size}}'
log "next: ./make_deploy.sh"
