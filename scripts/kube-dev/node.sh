# shellcheck shell=bash
# shellcheck disable=SC2154 # run_dir, pki, repo_root, KUBE_DEV_DIR, NODE_IP: set by scripts/kube-dev.sh, which sources this
# A real node for scripts/kube-dev.sh, sourced by it: kubelet (the control plane's Kubernetes), containerd 2 with
# runc, the CNI bridge, kube-proxy and the cluster's DNS (CoreDNS), and the images built from docker/Dockerfile
# imported into containerd. It runs inside the control plane's namespaces, as everything else, with an address of
# its own there (NODE_IP, where the API server and the brokers are reached), and registers as Node ${REAL_NODE},
# tainted so that the operators' pods, which make_infra.sh installs first, stay on the stand-in Node; the
# quickstart then lifts the taint and cordons the stand-in Node, so that the application's pods run here.

REAL_NODE=kube-dev-kubelet
REAL_NODE_TAINT=medicine-pubsub.dev/real-node
POD_SUBNET=10.244.0.0/24
# The cluster DNS Service's address: the tenth of the Service range (kube-dev.sh: 10.96.0.0/16), as kubeadm's.
DNS_IP=10.96.0.10
# The images the node starts with: the pod sandbox's, and CoreDNS's (added by node_up). The project's are loaded
# later, as `kind load` would, by the end-to-end test (harness/kube-dev/tests/quickstart.rs, after make_deploy.sh
# is refused for their absence).
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
registerWithTaints:
  - {key: ${REAL_NODE_TAINT}, effect: NoSchedule}
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
  sed -e "s|\${IMAGE}|$1|" -e "s|\${NODE}|${REAL_NODE}|" -e "s|\${TAINT}|${REAL_NODE_TAINT}|" \
    -e "s|\${DNS_IP}|${DNS_IP}|" "${repo_root}/scripts/kube-dev/coredns.yaml" | kubectl_in apply -f - >/dev/null
  kubectl_in -n kube-system rollout status deployment coredns --timeout "${KUBE_DEV_START_TIMEOUT}s" >/dev/null
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
  start kubelet "${node_bin}/kubelet" --config "${node_dir}/kubelet.yaml" \
    --kubeconfig "${node_dir}/kubelet.kubeconfig" --root-dir "${node_dir}/kubelet" \
    --hostname-override "${REAL_NODE}" --node-ip "${NODE_IP}" --v=1
  wait_for kubelet "${KUBE_DEV_START_TIMEOUT}" real_node_ready
  start kube-proxy "${node_bin}/kube-proxy" --config "${node_dir}/kube-proxy.yaml" --v=1
  wait_for kube-proxy "${KUBE_DEV_START_TIMEOUT}" inside curl -fsS http://127.0.0.1:10256/healthz
  cluster_dns "${NODE_IMAGES[-1]}"
  say "real node ${REAL_NODE} Ready after $((SECONDS - began))s (kubelet, containerd, runc, kube-proxy, CoreDNS on ${DNS_IP}; pods on ${POD_SUBNET}; taint ${REAL_NODE_TAINT})"
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
