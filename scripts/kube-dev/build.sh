#!/usr/bin/env bash
# Builds the Kubernetes control plane, etcd, kwok and the KEDA operator from the Go module proxy into a cache keyed
# by their versions, so the end-to-end test runs real Kubernetes code without Docker or internet. Called by
# `scripts/kube-dev.sh build`; prints the directory of the binaries on stdout.
#
# With --node, builds instead a node's programs into a cache of their own (their versions are their key): kubelet
# and kube-proxy (the same Kubernetes), containerd 2 with its runc shim and ctr, the CNI plugins the node's
# network uses (bridge, host-local, loopback, portmap), CoreDNS (the cluster's DNS, at the version kubeadm of
# this Kubernetes deploys) and crane (go-containerregistry's, whose registry serves the node the images that
# registries it cannot reach would); prints their directory.
#
# With --print (or --node --print), only prints the directory (fails when the binaries are not built yet).
#
# A module whose go.mod has replace directives cannot be `go install`ed; it is built from a scratch module that
# requires it and repeats its replaces (local paths such as `./staging/src/k8s.io/api` become the published module
# at the matching version).
set -euo pipefail

: "${KUBERNETES_VERSION:=v1.35.4}"
: "${ETCD_VERSION:=v3.6.6}"
: "${KEDA_VERSION:=v2.20.2}"
: "${KWOK_VERSION:=v0.8.0}"
: "${CONTAINERD_VERSION:=v2.2.10}"
: "${CNI_PLUGINS_VERSION:=v1.9.0}"
# kubeadm's CoreDNS for Kubernetes 1.35 (cmd/kubeadm/app/constants: CoreDNSVersion).
: "${COREDNS_VERSION:=v1.13.1}"
# go-containerregistry's crane, whose `registry serve` is the node's image registry.
: "${GGCR_VERSION:=v0.22.1}"
: "${MEDICINE_PUBSUB_CACHE:=${XDG_CACHE_HOME:-${HOME}/.cache}/medicine-pubsub}"

# The recipe's own version: bump it when the way the binaries are built changes.
recipe=2
key="k8s-${KUBERNETES_VERSION}_etcd-${ETCD_VERSION}_keda-${KEDA_VERSION}_kwok-${KWOK_VERSION}_r${recipe}"
bin_dir="${MEDICINE_PUBSUB_CACHE}/kube/${key}/bin"
work_dir="${MEDICINE_PUBSUB_CACHE}/kube/${key}/work"

say() {
  echo "kube-dev: $*" >&2
}

die() {
  echo "kube-dev: $*" >&2
  exit 1
}

binaries=(kube-apiserver kube-controller-manager kube-scheduler kubectl etcd keda-operator keda-adapter keda-admission-webhooks
  kwok kwok-logs-crd.yaml)

node=false
if [[ "${1:-}" == "--node" ]]; then
  node=true
  shift
  key="node_k8s-${KUBERNETES_VERSION}_containerd-${CONTAINERD_VERSION}_cni-${CNI_PLUGINS_VERSION}_coredns-${COREDNS_VERSION}_ggcr-${GGCR_VERSION}_r${recipe}"
  bin_dir="${MEDICINE_PUBSUB_CACHE}/kube/${key}/bin"
  work_dir="${MEDICINE_PUBSUB_CACHE}/kube/${key}/work"
  binaries=(kubelet kube-proxy containerd containerd-shim-runc-v2 ctr bridge host-local loopback portmap coredns crane)
fi

have() {
  local binary
  for binary in "$@"; do
    [[ -f "${bin_dir}/${binary}" ]] || return 1
  done
}

if [[ "${1:-}" == "--print" ]]; then
  have "${binaries[@]}" || die "the control plane is not built; run: scripts/kube-dev.sh build"
  echo "${bin_dir}"
  exit 0
fi

command -v go >/dev/null 2>&1 || die "'go' is not installed; install Go 1.26+ (Debian: apt-get install golang-go) to build the control plane"

# Pure Go (no cgo: nothing here needs it, and it compiles faster), and no debugging information: none is shipped
# (`-s -w`), so none is generated either.
export CGO_ENABLED=0
gcflags="all=-dwarf=false"

# The staging modules of k8s.io/kubernetes are published as k8s.io/<name> v0.<minor>.<patch>.
staging_version="v0.${KUBERNETES_VERSION#v1.}"

# replaces MODULE_DIR LOCAL_VERSION: prints `go mod edit -replace` flags for every replace of the module's go.mod,
# with local-path targets turned into the published module at LOCAL_VERSION.
replaces() {
  local mod_dir=$1 local_version=$2
  go mod edit -json "${mod_dir}/go.mod" | python3 -c '
import json, sys
local_version = sys.argv[1]
for r in json.load(sys.stdin).get("Replace") or []:
    old, new = r["Old"], r["New"]
    source = old["Path"] + ("@" + old["Version"] if old.get("Version") else "")
    if new["Path"].startswith("."):
        if "FORBIDDEN" in new["Path"]:
            continue
        target = old["Path"] + "@" + local_version
    else:
        target = new["Path"] + "@" + new["Version"]
    print("-replace=" + source + "=" + target)
' "${local_version}"
}

# build_scratch NAME MODULE VERSION LOCAL_VERSION LDFLAGS PACKAGE=BINARY...: builds the packages of MODULE@VERSION
# through a scratch module named NAME.
build_scratch() {
  local name=$1 module=$2 version=$3 local_version=$4 ldflags=$5
  shift 5
  local dir="${work_dir}/${name}" mod_dir spec
  mkdir -p "${dir}"
  (
    cd "${dir}"
    rm -f go.mod go.sum
    go mod init "medicine-pubsub.dev/build/${name}" >/dev/null 2>&1
    mod_dir=$(go mod download -json "${module}@${version}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
    local -a flags
    mapfile -t flags < <(replaces "${mod_dir}" "${local_version}")
    if ((${#flags[@]} > 0)); then
      go mod edit "${flags[@]}"
    fi
    go mod edit -require="${module}@${version}"
    for spec in "$@"; do
      say "building ${spec##*=} (${module}@${version})"
      GOFLAGS=-mod=mod go build -trimpath -gcflags="${gcflags}" -ldflags="${ldflags}" \
        -o "${bin_dir}/${spec##*=}.tmp" "${spec%%=*}"
      mv "${bin_dir}/${spec##*=}.tmp" "${bin_dir}/${spec##*=}"
    done
  )
}

mkdir -p "${bin_dir}"

# build_coredns: CoreDNS with the plugins of the node's Corefile (scripts/kube-dev/coredns.yaml), in CoreDNS's
# order, chosen at compile time as CoreDNS documents it (a main that sets dnsserver.Directives): its full plugin
# set would compile every cloud provider's SDK for nothing.
build_coredns() {
  local dir="${work_dir}/coredns" module=github.com/coredns/coredns
  mkdir -p "${dir}"
  (
    cd "${dir}"
    rm -f go.mod go.sum
    go mod init medicine-pubsub.dev/build/coredns >/dev/null 2>&1
    go mod edit -require="${module}@${COREDNS_VERSION}"
    cat >main.go <<GO
// CoreDNS ${COREDNS_VERSION} with the plugins of the node's Corefile (written by scripts/kube-dev/build.sh).
package main

import (
	"${module}/core/dnsserver"
	"${module}/coremain"

	_ "${module}/plugin/cache"
	_ "${module}/plugin/errors"
	_ "${module}/plugin/health"
	_ "${module}/plugin/kubernetes"
	_ "${module}/plugin/loadbalance"
	_ "${module}/plugin/ready"
)

func init() {
	dnsserver.Directives = []string{"ready", "health", "errors", "loadbalance", "cache", "kubernetes"}
}

func main() { coremain.Run() }
GO
    say "building coredns (${module}@${COREDNS_VERSION})"
    GOFLAGS=-mod=mod go build -trimpath -gcflags="${gcflags}" \
      -ldflags="-s -w -X ${module}/coremain.GitCommit=${COREDNS_VERSION}" -o "${bin_dir}/coredns.tmp" .
    mv "${bin_dir}/coredns.tmp" "${bin_dir}/coredns"
  )
}

# k8s_ldflags: the version stamp of the Kubernetes binaries.
k8s_ldflags() {
  local minor=${KUBERNETES_VERSION#v1.} version_pkg=k8s.io/component-base/version
  minor=${minor%%.*}
  echo "-s -w -X ${version_pkg}.gitVersion=${KUBERNETES_VERSION} -X ${version_pkg}.gitMajor=1 -X ${version_pkg}.gitMinor=${minor} -X ${version_pkg}.gitTreeState=clean"
}

if [[ "${node}" == true ]]; then
  if ! have kubelet kube-proxy; then
    build_scratch kubernetes k8s.io/kubernetes "${KUBERNETES_VERSION}" "${staging_version}" "$(k8s_ldflags)" \
      k8s.io/kubernetes/cmd/kubelet=kubelet \
      k8s.io/kubernetes/cmd/kube-proxy=kube-proxy
  fi
  if ! have containerd containerd-shim-runc-v2 ctr; then
    build_scratch containerd github.com/containerd/containerd/v2 "${CONTAINERD_VERSION}" "${CONTAINERD_VERSION}" \
      "-s -w -X github.com/containerd/containerd/v2/version.Version=${CONTAINERD_VERSION}" \
      github.com/containerd/containerd/v2/cmd/containerd=containerd \
      github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2=containerd-shim-runc-v2 \
      github.com/containerd/containerd/v2/cmd/ctr=ctr
  fi
  if ! have bridge host-local loopback portmap; then
    plugins=github.com/containernetworking/plugins
    build_scratch cni-plugins "${plugins}" "${CNI_PLUGINS_VERSION}" "${CNI_PLUGINS_VERSION}" "-s -w" \
      "${plugins}/plugins/main/bridge=bridge" "${plugins}/plugins/ipam/host-local=host-local" \
      "${plugins}/plugins/main/loopback=loopback" "${plugins}/plugins/meta/portmap=portmap"
  fi
  if ! have coredns; then
    build_coredns
  fi
  if ! have crane; then
    say "building crane (github.com/google/go-containerregistry@${GGCR_VERSION})"
    GOBIN="${bin_dir}" go install -trimpath -gcflags="${gcflags}" -ldflags="-s -w" \
      "github.com/google/go-containerregistry/cmd/crane@${GGCR_VERSION}"
  fi
  echo "${bin_dir}"
  exit 0
fi

if ! have kube-apiserver kube-controller-manager kube-scheduler kubectl; then
  build_scratch kubernetes k8s.io/kubernetes "${KUBERNETES_VERSION}" "${staging_version}" "$(k8s_ldflags)" \
    k8s.io/kubernetes/cmd/kube-apiserver=kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager=kube-controller-manager \
    k8s.io/kubernetes/cmd/kube-scheduler=kube-scheduler \
    k8s.io/kubernetes/cmd/kubectl=kubectl
fi

if ! have etcd; then
  build_scratch etcd go.etcd.io/etcd/server/v3 "${ETCD_VERSION}" "${ETCD_VERSION}" "-s -w" \
    go.etcd.io/etcd/server/v3=etcd
fi

# KEDA's three programs, as its Dockerfile builds them (cmd/operator is /keda, cmd/adapter /keda-adapter,
# cmd/webhooks /keda-admission-webhooks): the node runs them as images of KEDA's names (scripts/kube-dev/node.sh).
if ! have keda-operator keda-adapter keda-admission-webhooks; then
  build_scratch keda github.com/kedacore/keda/v2 "${KEDA_VERSION}" "${KEDA_VERSION}" \
    "-s -w -X github.com/kedacore/keda/v2/version.Version=${KEDA_VERSION#v}" \
    github.com/kedacore/keda/v2/cmd/operator=keda-operator \
    github.com/kedacore/keda/v2/cmd/adapter=keda-adapter \
    github.com/kedacore/keda/v2/cmd/webhooks=keda-admission-webhooks
fi

if ! have kwok kwok-logs-crd.yaml; then
  say "building kwok (sigs.k8s.io/kwok@${KWOK_VERSION})"
  GOBIN="${bin_dir}" go install -trimpath -gcflags="${gcflags}" -ldflags="-s -w" "sigs.k8s.io/kwok/cmd/kwok@${KWOK_VERSION}"
  # kwok serves `kubectl logs` from the files its Logs resources name; their CRD comes with its module.
  kwok_dir=$(go mod download -json "sigs.k8s.io/kwok@${KWOK_VERSION}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["Dir"])')
  cp "${kwok_dir}/kustomize/crd/bases/kwok.x-k8s.io_logs.yaml" "${bin_dir}/kwok-logs-crd.yaml"
  chmod 644 "${bin_dir}/kwok-logs-crd.yaml"
fi

echo "${bin_dir}"
