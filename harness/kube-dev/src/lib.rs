//! The Kubernetes end-to-end test of medicine-pubsub, on a control plane built from source (`scripts/kube-dev.sh`):
//! the real kube-apiserver, controller-manager, scheduler and KEDA operator, a real node (kubelet, containerd,
//! kube-proxy, CoreDNS) for the application's pods, kwok for the pods nothing here can run, and two pieces of this
//! crate:
//!
//! - [`agent`]: a node agent that runs the KEDA operator's pod as a local process (its images are not built here
//!   yet), with its environment, volumes, probes, exit codes and grace periods;
//! - [`strimzi`]: the one stand-in, for the Strimzi operator, which cannot run here.
//!
//! The test itself is `tests/quickstart.rs` (feature `e2e`), run by `./make_test.sh` inside the control plane's
//! namespaces. documentation/TESTING.md says what is real and what is not.

#![forbid(unsafe_code)]

pub mod agent;
pub mod strimzi;
