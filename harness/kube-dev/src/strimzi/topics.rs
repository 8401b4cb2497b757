//! The topic operator's part: each `KafkaTopic` created on the broker (and deleted with its finalizer).

use std::time::Duration;

use kube::api::{DynamicObject, Patch, PatchParams};
use rdkafka::admin::{AdminOptions, NewTopic, TopicReplication};
use serde_json::{json, Value};
use tracing::info;

use super::{ready, Controller, TOPIC_FINALIZER};

impl Controller {
    pub(super) async fn reconcile_topic(&self, topic: &DynamicObject) -> anyhow::Result<()> {
        let name = topic.metadata.name.clone().unwrap_or_default();
        let topic_name = topic.data["spec"]["topicName"]
            .as_str()
            .unwrap_or(&name)
            .to_owned();
        let finalizers = topic.metadata.finalizers.clone().unwrap_or_default();
        let has_finalizer = finalizers.iter().any(|f| f == TOPIC_FINALIZER);
        if topic.metadata.deletion_timestamp.is_some() {
            if has_finalizer {
                self.delete_topic(&topic_name).await?;
                let remaining: Vec<String> = finalizers
                    .into_iter()
                    .filter(|f| f != TOPIC_FINALIZER)
                    .collect();
                self.set_finalizers(&name, remaining).await?;
                info!(topic = %topic_name, "topic deleted");
            }
            return Ok(());
        }
        if !has_finalizer {
            let mut with = finalizers;
            with.push(TOPIC_FINALIZER.to_owned());
            self.set_finalizers(&name, with).await?;
        }
        let generation = topic.metadata.generation.unwrap_or(0);
        if topic.data["status"]["observedGeneration"] == json!(generation) {
            return Ok(());
        }
        let (ready_now, reason, message) =
            self.create_topic(&topic_name, &topic.data["spec"]).await?;
        self.api("KafkaTopic")
            .patch_status(
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

    async fn set_finalizers(&self, name: &str, finalizers: Vec<String>) -> anyhow::Result<()> {
        self.api("KafkaTopic")
            .patch(
                name,
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"finalizers": finalizers}})),
            )
            .await?;
        Ok(())
    }

    /// Deletes the topic from the broker (gone already is fine).
    async fn delete_topic(&self, topic_name: &str) -> anyhow::Result<()> {
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in self.admin.delete_topics(&[topic_name], &options).await? {
            if let Err((_, err)) = result {
                if err != rdkafka::types::RDKafkaErrorCode::UnknownTopicOrPartition {
                    anyhow::bail!("deleting topic {topic_name}: {err}");
                }
            }
        }
        Ok(())
    }

    /// Creates the topic as its `spec` declares it (deploy/: three replicas, min.insync.replicas 2, on the three
    /// brokers); whether it is ready, the condition's reason and message.
    async fn create_topic(
        &self,
        topic_name: &str,
        spec: &Value,
    ) -> anyhow::Result<(bool, &'static str, String)> {
        let partitions = spec["partitions"].as_i64().unwrap_or(1) as i32;
        let config: Vec<(String, String)> = spec["config"]
            .as_object()
            .into_iter()
            .flatten()
            .map(|(key, value)| {
                let value = match value {
                    Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                (key.clone(), value)
            })
            .collect();
        let replicas = spec["replicas"].as_i64().unwrap_or(-1) as i32;
        let mut new_topic =
            NewTopic::new(topic_name, partitions, TopicReplication::Fixed(replicas));
        for (key, value) in &config {
            new_topic = new_topic.set(key, value);
        }
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        let outcome = match self
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
        info!(topic = %topic_name, partitions, ready = outcome.0, "topic reconciled");
        Ok(outcome)
    }
}
