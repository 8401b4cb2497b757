#!/usr/bin/env bash
# Builds the patient and medicine images into minikube's Docker, tagged as deploy/app expects
# (imagePullPolicy: IfNotPresent, so no registry is involved). See documentation/BUILD_INSTRUCTIONS.md.
set -euo pipefail

# shellcheck source=scripts/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/scripts/lib/common.sh"
cd "$(repo_root)"

: "${IMAGE_TAG:=dev}"

require_minikube_running
require_cmd docker "install the Docker CLI; the images are built by minikube's Docker daemon"

log "pointing docker at minikube's daemon"
eval "$(minikube -p "${MINIKUBE_PROFILE}" docker-env)"

for binary in patient medicine; do
  image="medicine-pubsub/${binary}:${IMAGE_TAG}"
  log "building ${image}"
  docker build -f docker/Dockerfile --target "${binary}" -t "${image}" .
done
docker image ls --filter reference='medicine-pubsub/*' --format '{{.Repository}}:{{.Tag}}  {{.Size}}'
log "next: ./make_deploy.sh"
