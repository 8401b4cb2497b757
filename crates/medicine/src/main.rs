//! `medicine`: the medicine maker. See the crate documentation of [`medicine`] for what it guarantees.

use std::process::ExitCode;

use medicine::Config;
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
    match medicine::run(config, shutdown).await {
        Ok(_) => ExitCode::SUCCESS,
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "maker failed");
            ExitCode::FAILURE
        }
    }
}
