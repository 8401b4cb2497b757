//! The Kubernetes end-to-end test of medicine-pubsub, on a control plane built from source (`scripts/kube-dev.sh`):
//! the real kube-apiserver, controller-manager, scheduler, KEDA (its operator, metrics server and admission
//! webhooks, built from source into images) and a real node (kubelet, containerd, runc, kube-proxy, CoreDNS) for
//! every pod the scheduler places; kwok for the broker pods, and one piece of this crate:
//!
//! - [`strimzi`]: the stand-in for the Strimzi operator, which cannot run here: it turns the Kafka, KafkaNodePool,
//!   KafkaTopic and KafkaUser resources into the brokers' pods, Services, Secrets, topics, users and ACLs, on
//!   brokers that run beside the control plane.
//!
//! The test itself is `tests/quickstart.rs` (feature `e2e`), run by `./make_test.sh` inside the control plane's
//! namespaces. documentation/TESTING.md says what is real and what is not.

#![forbid(unsafe_code)]

pub mod strimzi;
