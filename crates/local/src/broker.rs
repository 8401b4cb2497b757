//! The broker of a local run: librdkafka's in-process mock cluster by default, or a real one.

use std::time::Duration;

use anyhow::{bail, Context as _};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::DefaultProducerContext;
use rdkafka::types::RDKafkaErrorCode;
use tabs::kafka::KafkaArgs;

/// Where the run's Kafka is.
pub enum Broker {
    /// librdkafka's mock cluster in this process; children reach it over loopback TCP.
    Embedded(MockCluster<'static, DefaultProducerContext>),
    /// A real cluster.
    External(String),
    /// Apache Kafka started for this run.
    Dev(crate::dev_kafka::DevKafka),
}

impl Broker {
    /// Starts a one-broker mock cluster.
    pub fn embedded() -> anyhow::Result<Self> {
        Ok(Self::Embedded(
            MockCluster::new(1).context("starting librdkafka's mock cluster")?,
        ))
    }

    /// The bootstrap address children use.
    pub fn bootstrap_servers(&self) -> String {
        match self {
            Self::Embedded(cluster) => cluster.bootstrap_servers(),
            Self::External(servers) => servers.clone(),
            Self::Dev(kafka) => kafka.bootstrap_servers(),
        }
    }

    /// Whether this is the mock cluster.
    pub fn is_embedded(&self) -> bool {
        matches!(self, Self::Embedded(_))
    }

    /// How it is described to the user.
    pub fn describe(&self) -> String {
        match self {
            Self::Embedded(_) => "embedded (librdkafka mock cluster)".to_owned(),
            Self::External(servers) => format!("Kafka at {servers}"),
            Self::Dev(kafka) => format!(
                "Apache Kafka 4.3.1 at {}, started for this run",
                kafka.bootstrap_servers()
            ),
        }
    }

    /// Creates the topics that do not exist yet, with the given partition counts.
    pub async fn ensure_topics(&self, topics: &[(String, i32)]) -> anyhow::Result<()> {
        match self {
            Self::Embedded(cluster) => {
                for (name, partitions) in topics {
                    cluster
                        .create_topic(name, *partitions, 1)
                        .with_context(|| format!("creating topic {name} on the mock cluster"))?;
                }
                Ok(())
            }
            Self::External(servers) => create_missing_topics(servers, topics).await,
            Self::Dev(kafka) => create_missing_topics(&kafka.bootstrap_servers(), topics).await,
        }
    }
}

async fn create_missing_topics(servers: &str, topics: &[(String, i32)]) -> anyhow::Result<()> {
    let kafka = KafkaArgs::plaintext(servers);
    let probe: BaseConsumer<tabs::kafka::TabsContext> = tabs::kafka::create_reader(
        &kafka,
        &tabs::kafka::ReaderOptions::plain(false),
        tabs::kafka::TabsContext::default(),
    )
    .context("creating a Kafka client")?;
    let brokers =
        tokio::task::spawn_blocking(move || probe.fetch_metadata(None, Duration::from_secs(10)))
            .await?
            .map_err(|_| {
                anyhow::anyhow!(
                    "Kafka is unreachable at {servers} (no answer in 10 s): start it (for a test broker: \
                     scripts/kafka-dev.sh start), or leave out --bootstrap-servers to run on the embedded one"
                )
            })?
            .brokers()
            .len();
    // Three replicas as on the cluster, or as many as there are brokers.
    let replication = i32::try_from(brokers.clamp(1, 3)).unwrap_or(1);
    let admin: AdminClient<DefaultClientContext> =
        tabs::kafka::create_admin(&kafka, DefaultClientContext)
            .context("creating a Kafka admin client")?;
    let new_topics: Vec<NewTopic<'_>> = topics
        .iter()
        .map(|(name, partitions)| {
            NewTopic::new(name, *partitions, TopicReplication::Fixed(replication))
        })
        .collect();
    let results = admin
        .create_topics(
            &new_topics,
            &AdminOptions::new().operation_timeout(Some(Duration::from_secs(30))),
        )
        .await
        .with_context(|| format!("creating topics on {servers}"))?;
    for result in results {
        match result {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => bail!("creating topic {topic} on {servers}: {code}"),
        }
    }
    // A topic just created reaches the broker's metadata a moment later: wait until every one is there.
    let reader: std::sync::Arc<BaseConsumer<tabs::kafka::TabsContext>> = std::sync::Arc::new(
        tabs::kafka::create_reader(
            &kafka,
            &tabs::kafka::ReaderOptions::plain(false),
            tabs::kafka::TabsContext::default(),
        )
        .context("creating a Kafka client")?,
    );
    let names: Vec<&str> = topics.iter().map(|(name, _)| name.as_str()).collect();
    tabs::kafka::wait_for_topics(
        move |topic, timeout| reader.fetch_metadata(Some(topic), timeout),
        &tabs::kafka::ErrorTracker::default(),
        &kafka,
        &names,
        Duration::from_secs(30),
        &tokio_util::sync::CancellationToken::new(),
    )
    .await
    .with_context(|| format!("waiting for the topics on {servers}"))?;
    Ok(())
}
