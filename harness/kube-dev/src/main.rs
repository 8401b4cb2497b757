//! `kube-dev`: the Strimzi stand-in of the Kubernetes end-to-end test (see the crate docs).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tabs::config::{LogFormat, TelemetryArgs};

/// Command line of `kube-dev`.
#[derive(Debug, Parser)]
#[command(
    name = "kube-dev",
    version,
    about = "Strimzi stand-in of the Kubernetes end-to-end test."
)]
struct Cli {
    #[command(subcommand)]
    command: Mode,

    #[command(flatten)]
    telemetry: TelemetryArgs,
}

#[derive(Debug, Subcommand)]
enum Mode {
    /// Play the Strimzi operator's part against a real broker (see documentation/TESTING.md).
    Strimzi {
        /// Namespace of the Kafka resources.
        #[arg(long, default_value = "default")]
        namespace: String,
        /// The broker the topics are created on (its plain listener).
        #[arg(long, default_value = "127.0.0.1:9092")]
        bootstrap_servers: String,
        /// scripts/kafka-dev.sh, which writes users and ACLs to that broker.
        #[arg(long)]
        kafka_dev_script: PathBuf,
        /// That broker's directory (KAFKA_DEV_DIR), where its CA is.
        #[arg(long)]
        kafka_dev_dir: PathBuf,
        /// The IPv4 address pods reach the brokers at (not loopback): the bootstrap Service's endpoint.
        #[arg(long)]
        broker_address: std::net::Ipv4Addr,
        /// The Node the broker pods are placed on (one whose kubelet runs no container: kwok's).
        #[arg(long)]
        broker_node: String,
    },
}

fn main() -> ExitCode {
    let cli: Cli = tabs::config::parse_or_exit();
    // Its logs go to files: text, unless asked otherwise.
    let telemetry = TelemetryArgs {
        log_format: match cli.telemetry.log_format {
            LogFormat::Auto => LogFormat::Text,
            other => other,
        },
        metrics_addr: None,
    };
    match cli.command {
        Mode::Strimzi {
            namespace,
            bootstrap_servers,
            kafka_dev_script,
            kafka_dev_dir,
            broker_address,
            broker_node,
        } => tabs::shutdown::run_service("Strimzi stand-in", &telemetry, |service| {
            kube_dev::strimzi::run(
                kube_dev::strimzi::Settings {
                    namespace,
                    bootstrap_servers,
                    kafka_dev_script,
                    kafka_dev_dir,
                    broker_address: broker_address.to_string(),
                    broker_node,
                },
                service.shutdown,
            )
        }),
    }
}
