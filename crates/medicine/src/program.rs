//! The program around the loop: parse, check, run as a service, and say plainly what the brokers' ACLs denied.

use std::sync::Arc;

use prometheus_client::registry::Registry;
use tabs::shutdown::Service;
use tracing::info;

use crate::config::Config;
use crate::stats::{self, Summary};
use crate::{live, worker};

/// The whole `medicine` program: parses `args` (program name first), sets up logging and signals, runs, and
/// maps the outcome to an exit code (0 done, 1 failed, 2 invalid configuration). The `medicine` binary and the
/// local mode's child processes both run exactly this.
pub fn main<I, T>(args: I) -> std::process::ExitCode
where
    I: IntoIterator<Item = T>,
    T: Into<std::ffi::OsString> + Clone,
{
    let config: Config = tabs::config::parse_checked_or_exit(args, Config::validate);
    let telemetry = config.telemetry.clone();
    tabs::shutdown::run_service("maker", &telemetry, |service| run(config, service))
}

/// Runs the maker until it is idle, has done `--max-orders`, or is shut down and has drained.
pub async fn run(config: Config, service: Service) -> anyhow::Result<Summary> {
    let maker_id = config.maker_id();
    let mut registry = Registry::default();
    let stats = Arc::new(stats::Stats::register(&mut registry));
    service.serve_metrics(registry).await?;
    info!(
        maker = %maker_id,
        servers = %config.kafka.bootstrap_servers,
        user = config.kafka.principal(),
        topic = %config.topics.orders(),
        group = %config.group,
        protocol = ?config.group_protocol,
        guarantee = config.guarantee.as_str(),
        max_in_flight_orders = config.max_in_flight_orders,
        tab_making_time = ?config.making.tab_making_time,
        lag_threshold = config.lag_threshold,
        "maker starting"
    );
    let started = async {
        let broker = live::Live::connect(&config, &maker_id, &service.shutdown).await?;
        service.health.set_ready(true);
        worker::Worker::new(
            config.settings(maker_id.clone()),
            broker,
            stats,
            Arc::clone(&service.health),
            service.shutdown,
        )
        .run()
        .await
    };
    started
        .await
        .map_err(|err| explain_denial(err, &config, &maker_id))
}

/// An error the brokers' ACLs caused, said as what this maker's user may not do and where to grant it; any
/// other error as it is.
fn explain_denial(err: anyhow::Error, config: &Config, maker_id: &str) -> anyhow::Error {
    let Some((code, kind)) = tabs::kafka::denial(err.as_ref()) else {
        return err;
    };
    let resource = match kind {
        "group" => format!("group `{}`", config.group),
        "transactional id" => format!("transactional ids starting `{maker_id}`"),
        "topic" => format!(
            "topics `{}`, `{}` or `{}`",
            config.topics.orders(),
            config.topics.deliveries_topic,
            config.topics.dlq_topic
        ),
        other => other.to_owned(),
    };
    err.context(tabs::Error::NotAuthorized {
        servers: config.kafka.bootstrap_servers.clone(),
        user: config.kafka.principal().to_owned(),
        resource,
        code,
    })
}
