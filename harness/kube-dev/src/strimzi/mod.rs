//! The stand-in for the Strimzi operator (which cannot run here: it is not on Maven Central and needs real broker
//! pods). The API server and Strimzi's real CRDs, with their CEL rules, decide what is accepted; this controller
//! then does the part of the operator the project depends on, against the real brokers of the test:
//!
//! - a `Kafka` with a `KafkaNodePool` gets its broker pods (`<cluster>-<pool>-<id>`, run by kwok), its bootstrap
//!   Service (leading to the brokers' address, `--broker-address`, by an EndpointSlice of its own) and `Ready`, and is refused (`Ready=False`) for a Kafka version Strimzi 1.2.0 does not run;
//! - a `KafkaTopic` labelled for that cluster gets the topic operator's finalizer, the topic created on the broker
//!   and `Ready`; deleting it deletes the topic and removes the finalizer, but only while its cluster exists: as
//!   with Strimzi, a topic whose cluster was deleted first keeps its finalizer and its deletion hangs.
//!
//! - the cluster's security is checked against what the broker serves (a plain listener on 9092 whose clients
//!   are the super user `ANONYMOUS`, SCRAM-SHA-512 over TLS on 9093, Kafka's StandardAuthorizer): a `Kafka`
//!   asking for anything else is `Ready=False`, as the applications would fail against a real one; the
//!   cluster CA's certificate, the broker's own CA, is published as `<cluster>-cluster-ca-cert`;
//! - with the user operator enabled in the `Kafka`, a `KafkaUser` gets its SCRAM credentials and its ACLs on the
//!   broker (through `testkit::access`, the same path as the ACL tests), a Secret of its name with `password`
//!   and `sasl.jaas.config`, owned by the user so that the garbage collector removes it with it, and `Ready`.
//!   The ACLs of a deleted user stay on the broker, which the test discards.
//!
//! The brokers are the three nodes deploy/'s node pool declares (`KAFKA_DEV_NODES=3 scripts/kafka-dev.sh`): topics
//! are created exactly as their `KafkaTopic` declares them (replicas, `min.insync.replicas` and all).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, ListParams};
use kube::Client;
use rdkafka::admin::AdminClient;
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

mod kafka;
mod topics;
mod users;

pub use kafka::served_security;

/// The Kafka versions Strimzi 1.2.0 runs (of those the project may name).
pub const SUPPORTED_KAFKA_VERSIONS: [&str; 1] = ["4.3.1"];
/// The topic operator's finalizer.
pub const TOPIC_FINALIZER: &str = "strimzi.io/topic-operator";
/// The image Strimzi 1.2.0 runs brokers with (kwok pretends to run it).
const KAFKA_IMAGE: &str = "quay.io/strimzi/kafka:1.2.0-kafka-4.3.1";

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("kafka.strimzi.io", "v1", kind))
}

/// The plain listener of the broker (`scripts/kafka-dev.sh`): no authentication, clients are `ANONYMOUS`.
pub const PLAIN_PORT: u16 = 9092;
/// Its TLS listener with SCRAM-SHA-512 (`scripts/kafka-dev.sh`: the plain port plus one).
pub const TLS_PORT: u16 = 9093;

/// The stand-in's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace it watches (Strimzi's cluster operator watches its own).
    pub namespace: String,
    /// The real broker's bootstrap address (its plain listener, on [`PLAIN_PORT`]).
    pub bootstrap_servers: String,
    /// `scripts/kafka-dev.sh`, which writes users and ACLs (`access`).
    pub kafka_dev_script: PathBuf,
    /// The broker's directory (`KAFKA_DEV_DIR`): its CA is `tls/ca.crt` there.
    pub kafka_dev_dir: PathBuf,
    /// The address the real node's pods reach the brokers at: the bootstrap Service leads there.
    pub broker_address: String,
    /// The Node the broker pods are placed on by name: the brokers are not the pods' containers, so no real
    /// kubelet may run them (kwok plays that Node's kubelet).
    pub broker_node: String,
}

/// Reconciles every half second until `shutdown`.
pub async fn run(settings: Settings, shutdown: CancellationToken) -> anyhow::Result<()> {
    let client = Client::try_default()
        .await
        .context("connecting to the API server (KUBECONFIG)")?;
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", &settings.bootstrap_servers)
        .create()
        .context("creating the Kafka admin client")?;
    let controller = Controller {
        client,
        admin,
        settings,
    };
    info!(namespace = %controller.settings.namespace, "Strimzi stand-in running");
    loop {
        if let Err(err) = controller.reconcile().await {
            warn!(error = format!("{err:#}"), "reconcile failed; retrying");
        }
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            () = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
}

struct Controller {
    client: Client,
    admin: AdminClient<DefaultClientContext>,
    settings: Settings,
}

/// The time of a condition, as Strimzi writes it: RFC 3339 in UTC, to the second.
fn now() -> String {
    k8s_openapi::jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

/// The `ownerReferences` that make `object` (of `kind`) own what the stand-in creates for it: the garbage
/// collector deletes those with it, as it does what Strimzi creates.
fn owned_by(kind: &str, object: &DynamicObject) -> Vec<OwnerReference> {
    vec![OwnerReference {
        api_version: "kafka.strimzi.io/v1".to_owned(),
        kind: kind.to_owned(),
        name: object.metadata.name.clone().unwrap_or_default(),
        uid: object.metadata.uid.clone().unwrap_or_default(),
        controller: Some(true),
        block_owner_deletion: Some(false),
    }]
}

/// The metadata of an object the stand-in creates: its name, its labels, and the custom resource owning it.
fn owned_meta(name: &str, labels: &[(&str, &str)], owner: &[OwnerReference]) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_owned()),
        labels: Some(label_map(labels)),
        owner_references: Some(owner.to_vec()),
        ..ObjectMeta::default()
    }
}

fn label_map(labels: &[(&str, &str)]) -> BTreeMap<String, String> {
    labels
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn ready(status: bool, reason: &str, message: &str) -> Value {
    json!([{
        "type": "Ready",
        "status": if status { "True" } else { "False" },
        "reason": reason,
        "message": message,
        "lastTransitionTime": now(),
    }])
}

impl Controller {
    fn api(&self, kind: &str) -> Api<DynamicObject> {
        Api::namespaced_with(
            self.client.clone(),
            &self.settings.namespace,
            &resource(kind),
        )
    }

    async fn reconcile(&self) -> anyhow::Result<()> {
        let kafkas = self.api("Kafka").list(&ListParams::default()).await?.items;
        let pools = self
            .api("KafkaNodePool")
            .list(&ListParams::default())
            .await?
            .items;
        let topics = self
            .api("KafkaTopic")
            .list(&ListParams::default())
            .await?
            .items;
        for kafka in &kafkas {
            if kafka.metadata.deletion_timestamp.is_none() {
                self.reconcile_kafka(kafka, &pools).await?;
            }
        }
        let cluster_of = |object: &DynamicObject| {
            let cluster = object
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("strimzi.io/cluster"))
                .cloned()
                .unwrap_or_default();
            kafkas
                .iter()
                .find(|k| {
                    k.metadata.name.as_deref() == Some(cluster.as_str())
                        && k.metadata.deletion_timestamp.is_none()
                })
                .cloned()
        };
        for topic in &topics {
            // The topic operator runs with its cluster: without one, nothing happens to the topic.
            if cluster_of(topic).is_some() {
                self.reconcile_topic(topic).await?;
            }
        }
        // The user operator runs with its cluster, and only where the Kafka enables it.
        let users: Vec<DynamicObject> = self
            .api("KafkaUser")
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|u| u.metadata.deletion_timestamp.is_none())
            .filter(|u| {
                cluster_of(u)
                    .is_some_and(|k| k.data["spec"]["entityOperator"]["userOperator"].is_object())
            })
            .collect();
        self.reconcile_users(&users).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions_carry_utc_seconds_as_strimzi_writes_them() {
        let time = now();
        let parsed: k8s_openapi::jiff::Timestamp = time.parse().unwrap();
        assert_eq!(time.len(), "2026-11-28T08:03:59Z".len(), "{time}");
        assert_eq!(parsed.subsec_nanosecond(), 0, "{time}");
        let age = k8s_openapi::jiff::Timestamp::now().duration_since(parsed);
        assert!(age.as_secs() < 5, "{time} is now");
    }
}
