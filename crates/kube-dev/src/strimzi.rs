//! The stand-in for the Strimzi operator (which cannot run here: it is not on Maven Central and needs real broker
//! pods). The API server and Strimzi's real CRDs, with their CEL rules, decide what is accepted; this controller
//! then does the part of the operator the project depends on, against the one real broker of the test:
//!
//! - a `Kafka` with a `KafkaNodePool` gets its broker pods (`<cluster>-<pool>-<id>`, run by kwok), its bootstrap
//!   Service and `Ready`, and is refused (`Ready=False`) for a Kafka version Strimzi 1.2.0 does not run;
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
//! The broker has one node: topics are created with replication factor 1 and `min.insync.replicas` at most 1.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use k8s_openapi::ByteString;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::Client;
use rand::distr::{Alphanumeric, SampleString as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use serde_json::{json, Value};
use testkit::access::User;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::agent::process::rfc3339_nanos;

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

fn now() -> String {
    let full = rfc3339_nanos(std::time::SystemTime::now());
    // Strimzi's conditions carry seconds.
    format!("{}Z", &full[..19])
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

    async fn reconcile_kafka(
        &self,
        kafka: &DynamicObject,
        pools: &[DynamicObject],
    ) -> anyhow::Result<()> {
        let name = kafka.metadata.name.clone().unwrap_or_default();
        let generation = kafka.metadata.generation.unwrap_or(0);
        let version = kafka.data["spec"]["kafka"]["version"]
            .as_str()
            .unwrap_or("4.3.1");
        let api = self.api("Kafka");
        let patch_status = |status: Value| {
            let api = api.clone();
            let name = name.clone();
            async move {
                api.patch_status(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({ "status": status })),
                )
                .await
                .map(|_| ())
            }
        };
        let already = |reason: &str| {
            kafka.data["status"]["observedGeneration"] == json!(generation)
                && kafka.data["status"]["conditions"][0]["reason"] == json!(reason)
        };
        if !SUPPORTED_KAFKA_VERSIONS.contains(&version) {
            if !already("UnsupportedKafkaVersion") {
                patch_status(json!({
                    "observedGeneration": generation,
                    "conditions": ready(false, "UnsupportedKafkaVersion",
                        &format!("Kafka {version} is not supported by Strimzi 1.2.0 (supported: {SUPPORTED_KAFKA_VERSIONS:?})")),
                }))
                .await?;
            }
            return Ok(());
        }
        if let Err(difference) = served_security(&kafka.data["spec"]["kafka"]) {
            if !already("NotWhatTheBrokerServes") {
                patch_status(json!({
                    "observedGeneration": generation,
                    "conditions": ready(false, "NotWhatTheBrokerServes", &difference),
                }))
                .await?;
            }
            return Ok(());
        }
        let own_pools: Vec<&DynamicObject> = pools
            .iter()
            .filter(|p| {
                p.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get("strimzi.io/cluster"))
                    == Some(&name)
                    && p.metadata.deletion_timestamp.is_none()
            })
            .collect();
        if own_pools.is_empty() {
            if !already("NoNodePools") {
                patch_status(json!({
                    "observedGeneration": generation,
                    "conditions": ready(false, "NoNodePools", "no KafkaNodePool is labelled for this cluster"),
                }))
                .await?;
            }
            return Ok(());
        }
        let owner = json!([{
            "apiVersion": "kafka.strimzi.io/v1",
            "kind": "Kafka",
            "name": name,
            "uid": kafka.metadata.uid,
            "controller": true,
            "blockOwnerDeletion": false,
        }]);
        self.ensure_service(&name, &owner).await?;
        self.ensure_cluster_ca(&name, &owner).await?;
        let mut all_ready = true;
        let mut pool_names = Vec::new();
        for pool in own_pools {
            let pool_name = pool.metadata.name.clone().unwrap_or_default();
            let replicas = pool.data["spec"]["replicas"].as_u64().unwrap_or(0);
            let node_ids: Vec<u64> = (0..replicas).collect();
            for id in &node_ids {
                all_ready &= self
                    .ensure_broker_pod(&name, &pool_name, *id, &owner)
                    .await?;
            }
            if pool.data["status"]["observedGeneration"]
                != json!(pool.metadata.generation.unwrap_or(0))
            {
                self.api("KafkaNodePool")
                    .patch_status(
                        &pool_name,
                        &PatchParams::default(),
                        &Patch::Merge(json!({"status": {
                            "observedGeneration": pool.metadata.generation.unwrap_or(0),
                            "nodeIds": node_ids,
                            "replicas": replicas,
                            "roles": pool.data["spec"]["roles"],
                            "labelSelector": format!("strimzi.io/cluster={name},strimzi.io/name={name}-kafka,strimzi.io/kind=Kafka,strimzi.io/pool-name={pool_name}"),
                            "clusterId": "kube-dev",
                        }})),
                    )
                    .await?;
            }
            pool_names.push(json!({ "name": pool_name }));
        }
        if all_ready && !already("Ready") {
            info!(kafka = %name, "Kafka ready");
            patch_status(json!({
                "observedGeneration": generation,
                "conditions": ready(true, "Ready", "the stand-in's broker pods are running"),
                "kafkaVersion": version,
                "clusterId": "kube-dev",
                "kafkaNodePools": pool_names,
                "listeners": [{
                    "name": "plain",
                    "bootstrapServers": format!("{name}-kafka-bootstrap.{}.svc:{PLAIN_PORT}", self.settings.namespace),
                }, {
                    "name": "tls",
                    "bootstrapServers": format!("{name}-kafka-bootstrap.{}.svc:{TLS_PORT}", self.settings.namespace),
                }],
            }))
            .await?;
        }
        Ok(())
    }

    async fn ensure_service(&self, cluster: &str, owner: &Value) -> anyhow::Result<()> {
        let services: Api<Service> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let name = format!("{cluster}-kafka-bootstrap");
        if services.get_opt(&name).await?.is_some() {
            return Ok(());
        }
        let service: Service = serde_json::from_value(json!({
            "metadata": {"name": name, "ownerReferences": owner, "labels": {"strimzi.io/cluster": cluster}},
            "spec": {"selector": {"strimzi.io/cluster": cluster, "strimzi.io/broker-role": "true"},
                     "ports": [{"name": "tcp-clients", "port": PLAIN_PORT, "targetPort": PLAIN_PORT},
                               {"name": "tcp-clientstls", "port": TLS_PORT, "targetPort": TLS_PORT}]},
        }))?;
        services.create(&PostParams::default(), &service).await?;
        Ok(())
    }

    /// The Secret Strimzi publishes the cluster CA's certificate in, for clients to trust the brokers.
    async fn ensure_cluster_ca(&self, cluster: &str, owner: &Value) -> anyhow::Result<()> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let name = format!("{cluster}-cluster-ca-cert");
        if secrets.get_opt(&name).await?.is_some() {
            return Ok(());
        }
        let ca_file = self.settings.kafka_dev_dir.join("tls/ca.crt");
        let ca = std::fs::read(&ca_file)
            .with_context(|| format!("reading the broker's CA {}", ca_file.display()))?;
        let secret = Secret {
            metadata: serde_json::from_value(json!({
                "name": name,
                "ownerReferences": owner,
                "labels": {"strimzi.io/cluster": cluster, "strimzi.io/kind": "Kafka"},
            }))?,
            data: Some(BTreeMap::from([("ca.crt".to_owned(), ByteString(ca))])),
            ..Secret::default()
        };
        secrets.create(&PostParams::default(), &secret).await?;
        info!(secret = %name, "cluster CA published");
        Ok(())
    }

    /// Gives every user not yet reconciled at its generation (or whose Secret is gone) its credentials, ACLs,
    /// Secret and `Ready`. All of them go to the broker in one `access` run (one JVM start).
    async fn reconcile_users(&self, users: &[DynamicObject]) -> anyhow::Result<()> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let api = self.api("KafkaUser");
        let mut pending = Vec::new();
        let mut spec = String::new();
        for user in users {
            let name = user.metadata.name.clone().unwrap_or_default();
            let generation = user.metadata.generation.unwrap_or(0);
            let existing = secrets.get_opt(&name).await?;
            if user.data["status"]["observedGeneration"] == json!(generation) && existing.is_some()
            {
                continue;
            }
            let parsed = match User::from_kafka_user(&serde_json::to_value(user)?) {
                Ok(parsed) => parsed,
                Err(message) => {
                    if user.data["status"]["conditions"][0]["message"] != json!(message) {
                        api.patch_status(
                            &name,
                            &PatchParams::default(),
                            &Patch::Merge(json!({"status": {
                                "observedGeneration": generation,
                                "conditions": ready(false, "InvalidResourceException", &message),
                            }})),
                        )
                        .await?;
                    }
                    continue;
                }
            };
            // A user keeps its password across reconciliations, as with Strimzi.
            let password = existing
                .as_ref()
                .and_then(|s| s.data.as_ref()?.get("password"))
                .and_then(|p| String::from_utf8(p.0.clone()).ok())
                .unwrap_or_else(|| Alphanumeric.sample_string(&mut rand::rng(), 32));
            spec.push_str(&parsed.spec(&password));
            pending.push((user, password));
        }
        if pending.is_empty() {
            return Ok(());
        }
        let script = self.settings.kafka_dev_script.clone();
        let dir = self.settings.kafka_dev_dir.clone();
        let printed = tokio::task::spawn_blocking(move || {
            testkit::access::apply(&script, &dir, PLAIN_PORT, &spec)
        })
        .await?
        .map_err(|e| anyhow::anyhow!(e))?;
        info!(users = pending.len(), applied = %printed.trim(), "users and ACLs written to the broker");
        for (user, password) in pending {
            let name = user.metadata.name.clone().unwrap_or_default();
            let owner = json!([{
                "apiVersion": "kafka.strimzi.io/v1",
                "kind": "KafkaUser",
                "name": name,
                "uid": user.metadata.uid,
                "controller": true,
                "blockOwnerDeletion": false,
            }]);
            let cluster = user
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("strimzi.io/cluster"));
            let jaas = format!(
                "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{name}\" password=\"{password}\";"
            );
            let secret = Secret {
                metadata: serde_json::from_value(json!({
                    "name": name,
                    "ownerReferences": owner,
                    "labels": {"strimzi.io/cluster": cluster, "strimzi.io/kind": "KafkaUser"},
                }))?,
                data: Some(BTreeMap::from([
                    ("password".to_owned(), ByteString(password.into_bytes())),
                    ("sasl.jaas.config".to_owned(), ByteString(jaas.into_bytes())),
                ])),
                ..Secret::default()
            };
            secrets
                .patch(
                    &name,
                    &PatchParams::apply("kube-dev-strimzi").force(),
                    &Patch::Apply(&secret),
                )
                .await?;
            api.patch_status(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"status": {
                    "observedGeneration": user.metadata.generation.unwrap_or(0),
                    "username": name,
                    "secret": name,
                    "conditions": ready(true, "Ready", "credentials and ACLs are on the broker"),
                }})),
            )
            .await?;
            info!(user = %name, "user ready");
        }
        Ok(())
    }

    /// Creates the broker pod if absent; returns whether it is Ready.
    async fn ensure_broker_pod(
        &self,
        cluster: &str,
        pool: &str,
        id: u64,
        owner: &Value,
    ) -> anyhow::Result<bool> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let name = format!("{cluster}-{pool}-{id}");
        if let Some(pod) = pods.get_opt(&name).await? {
            return Ok(pod
                .status
                .and_then(|s| s.conditions)
                .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True")));
        }
        let labels: BTreeMap<&str, String> = BTreeMap::from([
            ("strimzi.io/cluster", cluster.to_owned()),
            ("strimzi.io/kind", "Kafka".to_owned()),
            ("strimzi.io/name", format!("{cluster}-kafka")),
            ("strimzi.io/pool-name", pool.to_owned()),
            ("strimzi.io/broker-role", "true".to_owned()),
            ("strimzi.io/controller-role", "true".to_owned()),
        ]);
        let pod: Pod = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": labels, "ownerReferences": owner},
            "spec": {"containers": [{"name": "kafka", "image": KAFKA_IMAGE}]},
        }))?;
        pods.create(&PostParams::default(), &pod).await?;
        Ok(false)
    }

    async fn reconcile_topic(&self, topic: &DynamicObject) -> anyhow::Result<()> {
        let name = topic.metadata.name.clone().unwrap_or_default();
        let api = self.api("KafkaTopic");
        let topic_name = topic.data["spec"]["topicName"]
            .as_str()
            .unwrap_or(&name)
            .to_owned();
        let finalizers = topic.metadata.finalizers.clone().unwrap_or_default();
        let has_finalizer = finalizers.iter().any(|f| f == TOPIC_FINALIZER);
        if topic.metadata.deletion_timestamp.is_some() {
            if has_finalizer {
                let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
                for result in self
                    .admin
                    .delete_topics(&[topic_name.as_str()], &options)
                    .await?
                {
                    if let Err((_, err)) = result {
                        if err != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition {
                            anyhow::bail!("deleting topic {topic_name}: {err}");
                        }
                    }
                }
                let remaining: Vec<String> = finalizers
                    .into_iter()
                    .filter(|f| f != TOPIC_FINALIZER)
                    .collect();
                api.patch(
                    &name,
                    &PatchParams::default(),
                    &Patch::Merge(json!({"metadata": {"finalizers": remaining}})),
                )
                .await?;
                info!(topic = %topic_name, "topic deleted");
            }
            return Ok(());
        }
        if !has_finalizer {
            let mut with = finalizers;
            with.push(TOPIC_FINALIZER.to_owned());
            api.patch(
                &name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": with}})),
            )
            .await?;
        }
        let generation = topic.metadata.generation.unwrap_or(0);
        if topic.data["status"]["observedGeneration"] == json!(generation) {
            return Ok(());
        }
        let partitions = topic.data["spec"]["partitions"].as_i64().unwrap_or(1) as i32;
        let mut config: Vec<(String, String)> = Vec::new();
        if let Some(entries) = topic.data["spec"]["config"].as_object() {
            for (key, value) in entries {
                let value = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                // One broker: no more than one in-sync replica can ever be asked for.
                let value = if key == "min.insync.replicas" {
                    "1".to_owned()
                } else {
                    value
                };
                config.push((key.clone(), value));
            }
        }
        let mut new_topic = NewTopic::new(&topic_name, partitions, TopicReplication::Fixed(1));
        for (key, value) in &config {
            new_topic = new_topic.set(key, value);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let (ready_now, reason, message) = match self
            .admin
            .create_topics([&new_topic], &options)
            .await?
            .remove(0)
        {
            Ok(_) => (
                true,
                "Ready",
                format!("topic {topic_name} created with {partitions} partitions"),
            ),
            Err((_, rdkafka::types::RDKafkaErrorCode::TopicAlreadyExists)) => {
                (true, "Ready", format!("topic {topic_name} exists"))
            }
            Err((_, err)) => (
                false,
                "KafkaError",
                format!("creating topic {topic_name}: {err}"),
            ),
        };
        info!(topic = %topic_name, partitions, ready = ready_now, "topic reconciled");
        api.patch_status(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {
                "observedGeneration": generation,
                "topicName": topic_name,
                "conditions": ready(ready_now, reason, &message),
            }})),
        )
        .await?;
        Ok(())
    }
}

/// Whether a `Kafka`'s `spec.kafka` asks for the security the broker serves; otherwise what differs. The
/// applications connect as the manifests say: a cluster declared differently would refuse them, so the stand-in
/// does not pretend it would not.
pub fn served_security(kafka: &Value) -> Result<(), String> {
    let mut wanted: Vec<(u64, bool, Option<&str>)> = kafka["listeners"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|l| {
            (
                l["port"].as_u64().unwrap_or(0),
                l["tls"].as_bool().unwrap_or(false),
                l["authentication"]["type"].as_str(),
            )
        })
        .collect();
    wanted.sort_unstable();
    let served = vec![
        (u64::from(PLAIN_PORT), false, None),
        (u64::from(TLS_PORT), true, Some("scram-sha-512")),
    ];
    if wanted != served {
        return Err(format!(
            "the stand-in's broker serves plain on {PLAIN_PORT} (no authentication) and TLS on {TLS_PORT} \
             with scram-sha-512; the Kafka asks for (port, tls, authentication) {wanted:?}"
        ));
    }
    let authorization = &kafka["authorization"];
    let super_users: Vec<&str> = authorization["superUsers"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if authorization["type"] != "simple" || !super_users.contains(&"ANONYMOUS") {
        return Err(format!(
            "the stand-in's broker runs Kafka's StandardAuthorizer with super user ANONYMOUS (the plain \
             listener's clients); the Kafka asks for authorization {authorization}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shipped() -> Value {
        let text = std::fs::read_to_string(
            std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/infra/kafka.yaml"),
        )
        .unwrap();
        let kafka: Value = serde_norway::from_str(&text).unwrap();
        kafka["spec"]["kafka"].clone()
    }

    #[test]
    fn the_shipped_cluster_asks_for_what_the_broker_serves() {
        assert_eq!(served_security(&shipped()), Ok(()));
    }

    #[test]
    fn a_cluster_declared_otherwise_is_refused() {
        let mut open = shipped();
        open["listeners"][1]
            .as_object_mut()
            .unwrap()
            .remove("authentication");
        assert!(served_security(&open)
            .unwrap_err()
            .contains("scram-sha-512"));

        let mut without_acls = shipped();
        without_acls
            .as_object_mut()
            .unwrap()
            .remove("authorization");
        assert!(served_security(&without_acls)
            .unwrap_err()
            .contains("StandardAuthorizer"));

        let mut no_anonymous = shipped();
        no_anonymous["authorization"]["superUsers"] = json!(["admin"]);
        assert!(served_security(&no_anonymous).is_err());
    }
}
