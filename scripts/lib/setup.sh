# shellcheck shell=bash
# What make_test.sh needs and a fresh Debian machine lacks, installed before the first build; sourced by make_test.sh.
# Each tool is checked first, so on a machine that has them all this takes a second and installs nothing.

# apt_install PACKAGE...: installs the Debian packages not installed yet (as root, or through sudo).
apt_install() {
  local missing=() package
  for package in "$@"; do
    dpkg -s "${package}" >/dev/null 2>&1 || missing+=("${package}")
  done
  ((${#missing[@]} > 0)) || return 0
  local sudo=()
  if [[ "$(id -u)" != 0 ]]; then
    if ! command -v sudo >/dev/null 2>&1; then
      echo "make_test.sh: ${missing[*]} missing and this user cannot install them; as root: apt-get install ${missing[*]}" >&2
      return 1
    fi
    sudo=(sudo)
  fi
  echo "make_test.sh: installing ${missing[*]}"
  "${sudo[@]}" apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
}

# setup_tools: the linter of the scripts, Java and Maven (the test broker), the C build's tools (vendored librdkafka
# and OpenSSL), the namespaces and certificates of the control plane, Prometheus and promtool (the dashboard's and
# the alert rules' tests), the image builder and runtime (buildah, debootstrap for the base images' stand-ins, umoci
# and runc to run the images), iptables (the real node's kube-proxy), Go, kubeconform, rustfmt and clippy.
setup_tools() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "make_test.sh: Rust is missing; install it with rustup (https://rustup.rs), then run ./make_test.sh again" >&2
    return 1
  fi
  if command -v dpkg >/dev/null 2>&1; then
    apt_install shellcheck perl make gcc curl iproute2 iptables util-linux openssl prometheus \
      buildah debootstrap umoci runc || return 1
    # The JDK, not only the runtime: scripts/kafka-dev.sh access runs a single-file Java program (compiled at launch).
    { command -v java && command -v javac; } >/dev/null 2>&1 || apt_install openjdk-17-jdk-headless || return 1
    command -v mvn >/dev/null 2>&1 || apt_install maven || return 1
  fi
  local tool
  for tool in shellcheck java javac mvn perl make cc curl ip iptables unshare nsenter openssl prometheus promtool \
    buildah debootstrap umoci runc; do
    if ! command -v "${tool}" >/dev/null 2>&1; then
      echo "make_test.sh: '${tool}' is missing and this is not Debian; install it (README, Prerequisites) and run again" >&2
      return 1
    fi
  done

  # Go builds the control plane, KEDA and kubeconform from the module proxy; they need Go 1.26 (Debian's is older).
  if ! go version 2>/dev/null | grep -Eq 'go1\.(2[6-9]|[3-9][0-9])'; then
    echo "make_test.sh: Go 1.26 or newer is needed (found: $(go version 2>&1)); install it from https://go.dev/dl/" >&2
    return 1
  fi

  # kubeconform validates the manifests offline (Debian has no package).
  local gobin
  gobin="$(go env GOPATH)/bin"
  PATH="${PATH}:${gobin}"
  export PATH
  if ! command -v kubeconform >/dev/null 2>&1; then
    echo "make_test.sh: installing kubeconform v0.7.0"
    go install github.com/yannh/kubeconform/cmd/kubeconform@v0.7.0 || return 1
  fi

  if command -v rustup >/dev/null 2>&1; then
    rustup component add rustfmt clippy >/dev/null || return 1
  fi
}

# link_build_cache: in a clone without target/, the Rust builds go outside the work tree, one set per toolchain and
# clone, so a second run compiles only what changed (the dependencies, vendored librdkafka and OpenSSL among them,
# are most of the build): `target/debug` and `target/release` are links to them; the rest of `target/` (brokers'
# stores, the control plane's state and the overlays it applies, which name deploy/ by relative paths) stays in the
# clone. One set per clone, not shared: cargo takes a test built in another clone for fresh, and its
# CARGO_MANIFEST_DIR still names that clone's files (two clones on one machine once failed so). They are under
# /var/tmp, not the home directory: the end-to-end test runs pods as their own non-root users from binaries in
# target/release, so every directory on the way must be traversable by them (a root home is not).
link_build_cache() {
  [[ ! -e target ]] || return 0
  local cache="${MEDICINE_PUBSUB_TARGET_CACHE:-/var/tmp/medicine-pubsub/cargo-target}" key
  key=$({ rustc -vV && pwd -P; } | sha256sum | cut -c1-16)
  (umask 022 && mkdir -p "${cache}/${key}/debug" "${cache}/${key}/release") || return 1
  find "${cache}/${key}" -mindepth 1 -maxdepth 1 ! -name debug ! -name release -exec rm -rf {} +
  mkdir target
  ln -s "${cache}/${key}/debug" target/debug
  ln -s "${cache}/${key}/release" target/release
  echo "make_test.sh: Rust builds in ${cache}/${key} (target/debug and target/release link to them)"
}
