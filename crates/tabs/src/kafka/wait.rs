//! Start-up: waiting until the brokers answer and the topics exist, with the address in every report.

use std::time::{Duration, Instant};

use rdkafka::error::KafkaResult;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaRespErr;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::args::KafkaArgs;
use super::errors::ErrorTracker;
use crate::{Error, Result};

/// Waits until the cluster at `kafka.bootstrap_servers` answers and every one of `topics` exists, retrying with
/// backoff. `fetch_metadata` is one blocking metadata request for one topic, with a timeout (for example
/// `move |topic, t| producer.client().fetch_metadata(Some(topic), t)`); it runs on the blocking pool, once per
/// topic and attempt. One topic per request, because a request for all topics leaves out those the user may not
/// see, where a request for one names the refusal.
///
/// Logs each failed attempt with the address tried. Fails fast when the brokers refuse the credentials or deny
/// the user a topic ([`Error::NotAuthorized`]: waiting would not change an ACL), and with [`Error::Unreachable`]
/// or [`Error::TopicMissing`] once `timeout` has passed.
pub async fn wait_for_topics<F>(
    fetch_metadata: F,
    errors: &ErrorTracker,
    kafka: &KafkaArgs,
    topics: &[&str],
    timeout: Duration,
    shutdown: &CancellationToken,
) -> Result<()>
where
    F: Fn(&str, Duration) -> KafkaResult<Metadata> + Clone + Send + 'static,
{
    let started = Instant::now();
    let mut backoff = Duration::from_millis(200);
    loop {
        let remaining = timeout.saturating_sub(started.elapsed());
        let attempt = remaining.clamp(Duration::from_millis(100), Duration::from_secs(1));
        let fetch = fetch_metadata.clone();
        let names: Vec<String> = topics.iter().map(|&t| t.to_owned()).collect();
        let outcome = tokio::task::spawn_blocking(move || {
            names
                .iter()
                .map(|topic| fetch(topic, attempt))
                .collect::<KafkaResult<Vec<Metadata>>>()
        })
        .await
        .map_err(|e| Error::Internal(format!("metadata task failed: {e}")))?;
        if let Some(client_error) = errors.authentication_failure() {
            return Err(Error::Authentication {
                servers: kafka.bootstrap_servers.clone(),
                user: kafka.sasl_username.clone().unwrap_or_default(),
                reason: client_error.reason,
            });
        }
        let missing = match outcome {
            Ok(answers) => match missing_topic(&answers, topics, kafka)? {
                None => return Ok(()),
                Some(topic) => {
                    warn!(servers = %kafka.bootstrap_servers, topic, "topic does not exist yet; waiting for it");
                    Some(topic)
                }
            },
            Err(err) => {
                warn!(servers = %kafka.bootstrap_servers, error = %err, "Kafka is not reachable yet; retrying");
                None
            }
        };
        if started.elapsed() >= timeout {
            return Err(match missing {
                Some(topic) => Error::TopicMissing {
                    servers: kafka.bootstrap_servers.clone(),
                    topic: topic.to_owned(),
                    waited: timeout,
                },
                None => Error::Unreachable {
                    servers: kafka.bootstrap_servers.clone(),
                    waited: timeout,
                },
            });
        }
        let pause = backoff.min(timeout.saturating_sub(started.elapsed()));
        tokio::select! {
            () = tokio::time::sleep(pause) => {}
            () = shutdown.cancelled() => return Err(Error::Cancelled),
        }
        backoff = (backoff * 2).min(Duration::from_secs(4));
    }
}

/// What one round of answers says of `topics`: all there (`None`), the first still missing, or (an error) one the
/// user may not see.
fn missing_topic<'t>(
    answers: &[Metadata],
    topics: &[&'t str],
    kafka: &KafkaArgs,
) -> Result<Option<&'t str>> {
    let seen: Vec<_> = answers.iter().flat_map(Metadata::topics).collect();
    let denied = seen.iter().find(|t| {
        topics.contains(&t.name())
            && t.error() == Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_TOPIC_AUTHORIZATION_FAILED)
    });
    if let Some(topic) = denied {
        return Err(Error::NotAuthorized {
            servers: kafka.bootstrap_servers.clone(),
            user: kafka.principal().to_owned(),
            resource: format!("topic `{}`", topic.name()),
            code: "TopicAuthorizationFailed",
        });
    }
    Ok(topics.iter().copied().find(|&topic| {
        !seen
            .iter()
            .any(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
    }))
}
