#!/usr/bin/env bash
# Makes the base images docker/Dockerfile names, in buildah's local image store, under the names the Dockerfile
# uses. No registry is reachable from the test machine, so these are stand-ins, each made the way its publisher
# makes it, from Debian's packages and the pinned Rust toolchain:
#   docker.io/library/debian:bookworm-slim    debootstrap --variant=minbase bookworm, as a rootfs tarball `ADD`ed to
#                                             scratch (the official image's own recipe, without its slimming),
#                                             plus this machine's own certificate authorities (below)
#   docker.io/library/rust:1.95.0-slim-bookworm   the official slim recipe on the above (rust.Containerfile)
#   gcr.io/distroless/static-debian12:nonroot the files distroless assembles from Debian 12 packages (base-files,
#                                             netbase, tzdata, the CA bundle) and its users, user 65532
#   registry.k8s.io/pause:3.10.1              the pod sandbox's image, from the Kubernetes module's own pause.c
#                                             and Dockerfile, built as its Makefile builds it (gcc -static)
# Each image carries the annotation io.medicine-pubsub.stand-in=<recipe> (an annotation, which images built on it do
# not inherit, unlike a label); an image with the current recipe is kept, so a
# second run takes a second. Nothing here runs where a registry is reachable: `docker build` pulls the real ones.
#
# One difference a real image does not have: where this machine reaches the internet through a TLS-inspecting
# proxy, its authorities (the certificates in /usr/local/share/ca-certificates) go into the Debian stand-in's
# /usr/local/share/ca-certificates, where Debian's ca-certificates adds them to the bundle when it is installed, so
# that rustup, apt and cargo inside the builds trust what the machine trusts. The runtime images get none of them.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# The recipe's own version: bump it when the way an image is made changes.
recipe=3
label="io.medicine-pubsub.stand-in"
: "${DEBIAN_MIRROR:=http://deb.debian.org/debian}"
: "${KUBERNETES_VERSION:=v1.35.4}"

say() {
  echo "base-images: $*" >&2
}

die() {
  echo "base-images: $*" >&2
  exit 1
}

for tool in buildah debootstrap dpkg-deb apt-get; do
  command -v "${tool}" >/dev/null 2>&1 ||
    die "'${tool}' is missing; on Debian: apt-get install buildah debootstrap"
done

# current NAME: the image NAME exists with this recipe.
current() {
  [[ "$(buildah inspect --type image --format "{{index .ImageAnnotations \"${label}\"}}" "$1" 2>/dev/null)" == "${recipe}" ]]
}

scratch=$(mktemp -d)
trap 'rm -rf "${scratch}"' EXIT

debian() {
  local name=docker.io/library/debian:bookworm-slim
  current "${name}" && return 0
  say "making ${name} (debootstrap from ${DEBIAN_MIRROR})"
  local rootfs="${scratch}/debian"
  debootstrap --variant=minbase bookworm "${rootfs}" "${DEBIAN_MIRROR}" >"${scratch}/debootstrap.log" 2>&1 ||
    { tail -n 20 "${scratch}/debootstrap.log" >&2; die "debootstrap failed"; }
  rm -rf "${rootfs}"/var/cache/apt/archives/*.deb "${rootfs}"/var/lib/apt/lists/*
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    mkdir -p "${rootfs}/usr/local/share/ca-certificates"
    cp /usr/local/share/ca-certificates/*.crt "${rootfs}/usr/local/share/ca-certificates/"
  fi
  tar -C "${rootfs}" --numeric-owner -cf "${scratch}/rootfs.tar" .
  rm -rf "${rootfs}"
  printf 'FROM scratch\nADD rootfs.tar /\nCMD ["bash"]\n' >"${scratch}/Containerfile"
  buildah build --quiet --pull=never --network host --annotation "${label}=${recipe}" -t "${name}" "${scratch}" >/dev/null
  rm -f "${scratch}/rootfs.tar"
}

rust() {
  local name=docker.io/library/rust:1.95.0-slim-bookworm
  current "${name}" && return 0
  say "making ${name} (the official slim recipe; rustup from static.rust-lang.org)"
  buildah build --quiet --pull=never --network host --annotation "${label}=${recipe}" -t "${name}" \
    -f "${here}/rust.Containerfile" "${here}" >/dev/null
}

distroless() {
  local name=gcr.io/distroless/static-debian12:nonroot
  current "${name}" && return 0
  say "making ${name} (Debian 12's base-files, netbase, tzdata and CA certificates)"
  local debs="${scratch}/debs" rootfs="${scratch}/distroless/rootfs"
  mkdir -p "${debs}" "${rootfs}"
  (cd "${debs}" && apt-get download -q base-files netbase tzdata ca-certificates >/dev/null)
  local deb
  for deb in "${debs}"/*.deb; do
    dpkg-deb -x "${deb}" "${scratch}/distroless/all"
  done
  local all="${scratch}/distroless/all"
  mkdir -p "${rootfs}"/{etc/ssl/certs,usr/share,usr/lib,tmp,home/nonroot,root,var/lib}
  # What distroless keeps of each package: the OS identity, the network databases, the zone files, one CA bundle.
  cp -a "${all}/usr/lib/os-release" "${rootfs}/usr/lib/os-release"
  ln -s ../usr/lib/os-release "${rootfs}/etc/os-release"
  cp -a "${all}"/etc/{debian_version,issue,issue.net,host.conf,services,protocols,rpc,ethertypes} "${rootfs}/etc/" 2>/dev/null ||
    cp -a "${all}"/etc/{debian_version,services,protocols} "${rootfs}/etc/"
  cp -a "${all}/usr/share/zoneinfo" "${rootfs}/usr/share/zoneinfo"
  cat "${all}"/usr/share/ca-certificates/mozilla/*.crt >"${rootfs}/etc/ssl/certs/ca-certificates.crt"
  cat >"${rootfs}/etc/passwd" <<'PASSWD'
root:x:0:0:root:/root:/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin
nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin
PASSWD
  cat >"${rootfs}/etc/group" <<'GROUP'
root:x:0:
nobody:x:65534:
tty:x:5:
staff:x:50:
nonroot:x:65532:
GROUP
  printf 'hosts: files dns\nnetworks: files\n' >"${rootfs}/etc/nsswitch.conf"
  chmod 1777 "${rootfs}/tmp"
  chmod 700 "${rootfs}/home/nonroot" "${rootfs}/root"
  chown 65532:65532 "${rootfs}/home/nonroot"
  cat >"${scratch}/distroless/Containerfile" <<'CONTAINERFILE'
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
USER 65532
WORKDIR /home/nonroot
CONTAINERFILE
  buildah build --quiet --pull=never --annotation "${label}=${recipe}" -t "${name}" "${scratch}/distroless" >/dev/null
}

pause() {
  local version=3.10.1 name=registry.k8s.io/pause:3.10.1
  current "${name}" && return 0
  say "making ${name} (build/pause of k8s.io/kubernetes@${KUBERNETES_VERSION})"
  local source
  source=$(go mod download -json "k8s.io/kubernetes@${KUBERNETES_VERSION}" |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')/build/pause
  mkdir -p "${scratch}/pause/bin"
  gcc -Os -Wall -Werror -static "-DVERSION=v${version}-${KUBERNETES_VERSION}" \
    -o "${scratch}/pause/bin/pause-linux-amd64" "${source}/linux/pause.c"
  buildah build --quiet --pull=never --annotation "${label}=${recipe}" --build-arg BASE=scratch --build-arg ARCH=amd64 \
    -f "${source}/Dockerfile" -t "${name}" "${scratch}/pause" >/dev/null
}

debian
rust
distroless
pause
for image in docker.io/library/debian:bookworm-slim docker.io/library/rust:1.95.0-slim-bookworm \
  gcr.io/distroless/static-debian12:nonroot registry.k8s.io/pause:3.10.1; do
  buildah images --format 'base-images: {{.Name}}:{{.Tag}}  {{.Size}}' "${image}" >&2
done
