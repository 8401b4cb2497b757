//! `patient`: orders medicine tabs. See the crate documentation of [`patient`] for what it guarantees.

use std::process::ExitCode;

use patient::Config;
use tabs::{config, shutdown, telemetry};
use tokio_util::sync::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = config::parse_or_exit();
    if let Err(message) = config.validate() {
        config::usage_exit(message);
    }
    telemetry::init(config.telemetry.log_format);

    let shutdown = CancellationToken::new();
    tokio::spawn(shutdown::shutdown_signal(shutdown.clone()));
    match patient::run(config, shutdown).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "patient failed");
            ExitCode::FAILURE
        }
    }
}
