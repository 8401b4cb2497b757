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
//! The broker has one node: topics are created with replication factor 1 and `min.insync.replicas` at most 1.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::Context as _;
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams, PostParams,
};
use kube::Client;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use serde_json::{json, Value};
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

/// The stand-in's settings.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Namespace it watches (Strimzi's cluster operator watches its own).
    pub namespace: String,
    /// The real broker's bootstrap address.
    pub bootstrap_servers: String,
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
        for topic in &topics {
            let cluster = topic
                .metadata
                .labels
                .as_ref()
                .and_then(|l| l.get("strimzi.io/cluster"))
                .cloned()
                .unwrap_or_default();
            let alive = kafkas.iter().any(|k| {
                k.metadata.name.as_deref() == Some(cluster.as_str())
                    && k.metadata.deletion_timestamp.is_none()
            });
            // The topic operator runs with its cluster: without one, nothing happens to the topic.
            if alive {
                self.reconcile_topic(topic).await?;
            }
        }
        Ok(())
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
                    "bootstrapServers": format!("{name}-kafka-bootstrap.{}.svc:9092", self.settings.namespace),
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
                     "ports": [{"name": "tcp-clients", "port": 9092, "targetPort": 9092}]},
        }))?;
        services.create(&PostParams::default(), &service).await?;
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
