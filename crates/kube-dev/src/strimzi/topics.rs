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
                config.push((key.clone(), value));
            }
        }
        // As the topic declares it (deploy/: three replicas, min.insync.replicas 2), on the three brokers.
        let replicas = topic.data["spec"]["replicas"].as_i64().unwrap_or(-1) as i32;
        let mut new_topic =
            NewTopic::new(&topic_name, partitions, TopicReplication::Fixed(replicas));
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
