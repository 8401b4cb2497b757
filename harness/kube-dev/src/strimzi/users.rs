//! The user operator's part: each `KafkaUser`'s SCRAM credentials and ACLs on the broker, its Secret, `Ready`.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use rand::distr::{Alphanumeric, SampleString as _};
use serde_json::json;
use testkit::access::User;
use tracing::info;

use super::{owned_by, owned_meta, ready, Controller, PLAIN_PORT};

impl Controller {
    /// Gives every user not yet reconciled at its generation (or whose Secret is gone) its credentials, ACLs,
    /// Secret and `Ready`. All of them go to the broker in one `access` run (one JVM start).
    pub(super) async fn reconcile_users(&self, users: &[DynamicObject]) -> anyhow::Result<()> {
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
            self.publish_user(user, password).await?;
        }
        Ok(())
    }

    /// The user's Secret (its password and JAAS line, as Strimzi writes them) and its `Ready`.
    async fn publish_user(&self, user: &DynamicObject, password: String) -> anyhow::Result<()> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), &self.settings.namespace);
        let name = user.metadata.name.clone().unwrap_or_default();
        let owner = owned_by("KafkaUser", user);
        let cluster = user
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get("strimzi.io/cluster"));
        let mut labels = vec![("strimzi.io/kind", "KafkaUser")];
        labels.extend(cluster.map(|cluster| ("strimzi.io/cluster", cluster.as_str())));
        let jaas = format!(
            "org.apache.kafka.common.security.scram.ScramLoginModule required username=\"{name}\" password=\"{password}\";"
        );
        let secret = Secret {
            metadata: owned_meta(&name, &labels, &owner),
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
        self.api("KafkaUser")
            .patch_status(
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
        Ok(())
    }
}
