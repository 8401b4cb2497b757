#!/usr/bin/env bash
# Builds the two images from docker/Dockerfile with buildah, as `make_build.sh` builds them with Docker: the same
# file, the same targets and tags, the build context with .dockerignore applied (buildah reads it as Docker does).
# The base images the Dockerfile names are made first by base-images.sh (no registry is reachable here), and the
# build never pulls (`--pull=never`). Layers are cached in buildah's store, outside the work tree, so a second build
# compiles only what changed. For the tests: harness/deploy-check/tests/images.rs runs what this builds.
set -euo pipefail

repo_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "${repo_root}"

"${repo_root}/scripts/images/base-images.sh"

# A build killed midway leaves its working container behind, holding its image: the prune below then failed on it
# ("image is in use by a container") in every later build. Only this script and base-images.sh (done by now) build
# in this store, one after the other.
buildah rm --all >/dev/null

# The build stage is named too: it holds the compiled dependencies, the cache of the next build, which the prune
# below would otherwise take as an image nobody uses.
for target in builder patient medicine; do
  echo "images: building medicine-pubsub/${target}:dev" >&2
  buildah build --quiet --layers --pull=never --network host -f docker/Dockerfile --target "${target}" \
    -t "medicine-pubsub/${target}:dev" . >/dev/null
done
# The images this build replaced (untagged, no child) go: each build otherwise left about 4 GB behind.
buildah rmi --prune >/dev/null
buildah images --filter reference='medicine-pubsub/patient' --filter reference='medicine-pubsub/medicine' --format '{{.Name}}:{{.Tag}}  {{.Size}}' >&2
