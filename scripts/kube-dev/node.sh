# shellcheck shell=bash
# shellcheck disable=SC2154 # run_dir, pki, repo_root, bin_dir, KUBE_DEV_DIR, NODE_IP: set by scripts/kube-dev.sh, which sources this
# A real node for scripts/kube-dev.sh, sourced by it: kubelet (the control plane's Kubernetes), containerd 2 with
# runc, the CNI bridge, kube-proxy, the cluster's DNS (CoreDNS) and an image registry. It runs inside the control
# plane's namespaces, as everything else, with an address of its own there (NODE_IP, where the API server and the
# brokers are reached), and registers as Node ${REAL_NODE}: every pod the scheduler places runs here (the stand-in
# Node of kube-dev.sh is cordoned and keeps only the broker pods, which name it).
#
# The operators' images: KEDA's Deployments pull theirs from ghcr.io on every start (imagePullPolicy Always) and
# Strimzi's from quay.io, registries this machine cannot reach. containerd mirrors both to the node's own registry
# (crane's, on ${REGISTRY}), which holds KEDA's three images built here from its source as its Dockerfiles build
# them, and a stand-in of Strimzi's operator image (scripts/kube-dev/strimzi-operator). The application's images
# are not there: they are loaded later, as `kind load` would, by the end-to-end test (after make_deploy.sh is
# refused for their absence).

REAL_NODE=kube-dev-kubelet
POD_SUBNET=10.244.0.0/24
# The cluster DNS Service's address: the tenth of the Service range (kube-dev.sh: 10.96.0.0/16), as kubeadm's.
DNS_IP=10.96.0.10
REGISTRY=127.0.0.1:5000
MIRRORED_REGISTRIES=(ghcr.io quay.io)
# The images containerd imports at start: the pod sandbox's, and CoreDNS's (added by node_up).
NODE_IMAGES=(registry.k8s.io/pause:3.10.1)

node_dir="${KUBE_DEV_DIR}/node"

# node_certificates: the kubelet's client certificate (a member of system:nodes, for the Node authorizer) and its
# serving certificate for NODE_IP.
node_certificates() {
  certificate kubelet-client "/O=system:nodes/CN=system:node:${REAL_NODE}"
  certificate kubelet-serving "/CN=system:node:${REAL_NODE}" "IP:${NODE_IP},DNS:${REAL_NODE}"
  # kube-proxy's user, which Kubernetes' default RBAC binds to system:node-proxier.
  certificate kube-proxy "/CN=system:kube-proxy"
}

write_node_config() {
  local node_bin=$1
  mkdir -p "${node_dir}/cni" "${node_dir}/containerd" "${node_dir}/kubelet"
  cat >"${node_dir}/containerd.toml" <<EOF
version = 3
root = "${node_dir}/containerd/root"
state = "${run_dir}/containerd"

[grpc]
  address = "${run_dir}/containerd.sock"

[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".registry]
    config_path = "${node_dir}/certs.d"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "registry.k8s.io/pause:3.10.1"

[plugins."io.containerd.cri.v1.runtime"]
  # Root here lacks CAP_SYS_RESOURCE (not in its bounding set), so no process may get a negative oom_score_adj
  # (the kubelet asks -998 for every pod's sandbox): containerd's own option raises such requests to its own score.
  restrict_oom_score_adj = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["${node_bin}"]
    conf_dir = "${node_dir}/cni"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.runc.options]
      BinaryName = "$(command -v runc)"
      SystemdCgroup = false
EOF
  cat >"${node_dir}/cni/10-bridge.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "kube-dev",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "${node_dir}/ipam",
        "ranges": [[{"subnet": "${POD_SUBNET}"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  local mirrored
  for mirrored in "${MIRRORED_REGISTRIES[@]}"; do
    mkdir -p "${node_dir}/certs.d/${mirrored}"
    cat >"${node_dir}/certs.d/${mirrored}/hosts.toml" <<EOF
# ${mirrored}'s images come from the node's registry (it holds only what scripts/kube-dev/node.sh pushed there).
server = "https://${mirrored}"
[host."http://${REGISTRY}"]
  capabilities = ["pull", "resolve"]
EOF
  done
  : >"${node_dir}/resolv.conf"
  cat >"${node_dir}/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# The test machines have cgroup v1 only: Kubernetes 1.35 refuses it unless told (KEP-5573).
failCgroupV1: false
cgroupDriver: cgroupfs
containerRuntimeEndpoint: unix://${run_dir}/containerd.sock
address: ${NODE_IP}
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: ${pki}/kubelet-serving.crt
tlsPrivateKeyFile: ${pki}/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: ${pki}/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [${DNS_IP}]
resolvConf: ${node_dir}/resolv.conf
failSwapOn: false
# The machine's disk is shared with everything else: no eviction or image collection for its fill level.
evictionHard: {memory.available: "100Mi"}
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
serializeImagePulls: false
podLogsDir: ${node_dir}/pod-logs
EOF
  write_kubeconfig "${node_dir}/kubelet.kubeconfig" kubelet-client
  write_kubeconfig "${node_dir}/kube-proxy.kubeconfig" kube-proxy
  # kube-proxy in iptables mode, as kubeadm's default. It leaves the kernel's connection-tracking limits and
  # timeouts as they are (the namespace shares them with the machine) and serves no NodePort on loopback.
  cat >"${node_dir}/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: ${node_dir}/kube-proxy.kubeconfig
hostnameOverride: ${REAL_NODE}
mode: iptables
clusterCIDR: ${POD_SUBNET}
bindAddress: ${NODE_IP}
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
iptables:
  localhostNodePorts: false
conntrack:
  maxPerCore: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
}

# coredns_image NODE_BIN: the CoreDNS image, built from scratch around the binary built with the node (as CoreDNS's
# own image is), tagged with its version as registry.k8s.io names it; prints its name.
coredns_image() {
  local node_bin=$1 version image container
  version=$("${node_bin}/coredns" -version | sed -n 's/^CoreDNS-/v/p')
  image="registry.k8s.io/coredns/coredns:${version}"
  if ! buildah inspect --type image "${image}" >/dev/null 2>&1; then
    container=$(buildah from scratch)
    buildah copy --quiet "${container}" "${node_bin}/coredns" /coredns >/dev/null
    buildah config --entrypoint '["/coredns"]' --user 65532:65532 --port 53/udp --port 53/tcp "${container}"
    buildah commit --quiet "${container}" "${image}" >/dev/null
    buildah rm "${container}" >/dev/null
  fi
  echo "${image}"
}

# cluster_dns IMAGE: CoreDNS in kube-system on this node (scripts/kube-dev/coredns.yaml), ready.
cluster_dns() {
  sed -e "s|\${IMAGE}|$1|" -e "s|\${NODE}|${REAL_NODE}|" -e "s|\${DNS_IP}|${DNS_IP}|" \
    "${repo_root}/scripts/kube-dev/coredns.yaml" | kubectl_in apply -f - >/dev/null
  kubectl_in -n kube-system rollout status deployment coredns --timeout "${KUBE_DEV_START_TIMEOUT}s" >/dev/null
}

# pinned NAME: a platform version pinned in scripts/lib/common.sh (the versions make_infra.sh installs).
pinned() {
  sed -n "s/^$1=//p" "${repo_root}/scripts/lib/common.sh"
}

# binary_image NAME FROM BINARY PATH USER [ENTRYPOINT_ARGS...]: the image NAME, FROM with BINARY at PATH, run as
# USER with PATH as its entrypoint; rebuilt only when BINARY changed (its digest is the image's annotation).
binary_image() {
  local name=$1 from=$2 binary=$3 path=$4 user=$5 digest container entrypoint
  shift 5
  digest=$(sha256sum "${binary}" | cut -d' ' -f1)
  [[ "$(buildah inspect --type image --format '{{index .ImageAnnotations "io.medicine-pubsub.binary"}}' "${name}" \
    2>/dev/null)" == "${digest}" ]] && return 0
  container=$(buildah from --pull=never "${from}")
  buildah copy --quiet --chmod 0755 "${container}" "${binary}" "${path}" >/dev/null
  entrypoint=$(printf '"%s",' "${path}" "$@")
  buildah config --workingdir / --user "${user}" --entrypoint "[${entrypoint%,}]" \
    --annotation "io.medicine-pubsub.binary=${digest}" "${container}"
  buildah commit --quiet "${container}" "${name}" >/dev/null
  buildah rm "${container}" >/dev/null
}

# operator_images: KEDA's three images (its Dockerfiles: distroless static, user 65532, the binary at
# the root) and the Strimzi operator's stand-in image, built and pushed to the node's registry; prints their names.
operator_images() {
  local keda strimzi standin image
  keda=$(pinned KEDA_VERSION)
  strimzi=$(pinned STRIMZI_VERSION)
  local distroless=gcr.io/distroless/static-debian12:nonroot
  binary_image "ghcr.io/kedacore/keda:${keda}" "${distroless}" "${bin_dir}/keda-operator" /keda 65532:65532 \
    --zap-log-level=info --zap-encoder=console
  binary_image "ghcr.io/kedacore/keda-metrics-apiserver:${keda}" "${distroless}" "${bin_dir}/keda-adapter" \
    /keda-adapter 65532:65532 --secure-port=6443 --zap-log-level=info --zap-encoder=console
  binary_image "ghcr.io/kedacore/keda-admission-webhooks:${keda}" "${distroless}" \
    "${bin_dir}/keda-admission-webhooks" /keda-admission-webhooks 65532:65532 --zap-log-level=info \
    --zap-encoder=console
  # Strimzi's images run as user 1001; the released Deployment passes the operator's start script as an argument.
  standin="${node_dir}/strimzi-operator"
  (cd "${repo_root}/scripts/kube-dev/strimzi-operator" && CGO_ENABLED=0 go build -trimpath -ldflags="-s -w" -o "${standin}" .)
  binary_image "quay.io/strimzi/operator:${strimzi}" scratch "${standin}" /strimzi-operator-stand-in 1001:1001
  for image in "ghcr.io/kedacore/keda:${keda}" "ghcr.io/kedacore/keda-metrics-apiserver:${keda}" \
    "ghcr.io/kedacore/keda-admission-webhooks:${keda}" "quay.io/strimzi/operator:${strimzi}"; do
    inside buildah push --quiet --tls-verify=false "${image}" "docker://${REGISTRY}/${image#*/}" >/dev/null
  done
}

# import_images: NODE_IMAGES from buildah's store into containerd's `k8s.io` namespace.
import_images() {
  local node_bin=$1 image archive
  for image in "${NODE_IMAGES[@]}"; do
    archive="${node_dir}/image.tar"
    buildah push --quiet "${image}" "oci-archive:${archive}:${image}" >/dev/null ||
      die "${image} is not in buildah's store; build it first: scripts/images/build.sh"
    inside "${node_bin}/ctr" --address "${run_dir}/containerd.sock" -n k8s.io images import \
      --no-unpack=false --snapshotter overlayfs "${archive}" >/dev/null
    rm -f "${archive}"
  done
}

real_node_ready() {
  [[ "$(kubectl_in get node "${REAL_NODE}" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" == True ]]
}

# node_up: starts containerd and the kubelet in the namespaces and waits until the Node is Ready.
node_up() {
  local node_bin began=${SECONDS}
  node_bin=$("${repo_root}/scripts/kube-dev/build.sh" --node --print)
  holder_pid >/dev/null || die "the control plane is not running; start it first: $0 up"
  require runc "install runc (Debian: apt-get install runc)"
  require buildah "install buildah (Debian: apt-get install buildah)"
  require iptables "install iptables (Debian: apt-get install iptables); kube-proxy writes the Services' rules with it"
  require curl "install curl (Debian: apt-get install curl); it asks kube-proxy whether it is ready"
  # The pods' traffic is routed by the node; it leaves through no other link (the namespace has none).
  inside sysctl -q -w net.ipv4.ip_forward=1
  node_certificates
  # A fresh node each time: no image, container or address lease of an earlier run.
  rm -rf "${node_dir}"
  write_node_config "${node_bin}"
  NODE_IMAGES+=("$(coredns_image "${node_bin}")")
  start containerd env PATH="${node_bin}:${PATH}" "${node_bin}/containerd" --config "${node_dir}/containerd.toml"
  wait_for containerd 60 inside "${node_bin}/ctr" --address "${run_dir}/containerd.sock" version
  import_images "${node_bin}"
  mkdir -p "${node_dir}/registry"
  start registry "${node_bin}/crane" registry serve --address "${REGISTRY}" --disk "${node_dir}/registry"
  wait_for registry 30 inside curl -fsS "http://${REGISTRY}/v2/"
  operator_images
  start kubelet "${node_bin}/kubelet" --config "${node_dir}/kubelet.yaml" \
    --kubeconfig "${node_dir}/kubelet.kubeconfig" --root-dir "${node_dir}/kubelet" \
    --hostname-override "${REAL_NODE}" --node-ip "${NODE_IP}" --v=1
  wait_for kubelet "${KUBE_DEV_START_TIMEOUT}" real_node_ready
  start kube-proxy "${node_bin}/kube-proxy" --config "${node_dir}/kube-proxy.yaml" --v=1
  wait_for kube-proxy "${KUBE_DEV_START_TIMEOUT}" inside curl -fsS http://127.0.0.1:10256/healthz
  cluster_dns "${NODE_IMAGES[-1]}"
  say "real node ${REAL_NODE} Ready after $((SECONDS - began))s (kubelet, containerd, runc, kube-proxy, CoreDNS on ${DNS_IP}, the registry on ${REGISTRY}; pods on ${POD_SUBNET})"
}

# node_down: stops the pods' containers (they live in namespaces of their own, which stopping the control plane's
# processes does not reach), then the kubelet and containerd are stopped with everything else.
node_down() {
  local runc_root=/run/containerd/runc/k8s.io id
  [[ -d "${node_dir}" ]] || return 0
  if [[ -f "${run_dir}/kubelet.pid" ]]; then
    kill "$(<"${run_dir}/kubelet.pid")" 2>/dev/null || true
  fi
  if [[ -d "${runc_root}" ]] && command -v runc >/dev/null 2>&1; then
    for id in $(runc --root "${runc_root}" list -q 2>/dev/null); do
      runc --root "${runc_root}" kill --all "${id}" KILL 2>/dev/null || true
    done
  fi
  return 0
}
