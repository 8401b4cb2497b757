//! `tabs-audit`: audits deliveries. Exit codes: 0 the audit passed, 1 something is missing, duplicated or wrong,
//! 2 invalid flags, 3 the topics could not be read.

use std::process::ExitCode;

use audit::Config;
use tabs::{config, telemetry};

#[tokio::main]
async fn main() -> ExitCode {
    let config: Config = config::parse_or_exit();
    if let Err(message) = config.kafka.validate() {
        config::usage_exit(message);
    }
    telemetry::init(config.telemetry.log_format);
    let json = config.json;
    match audit::run(config).await {
        Ok(outcome) => {
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&outcome).unwrap_or_default()
                );
            } else {
                print!("{}", audit::render(&outcome));
            }
            if outcome.passed {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(err) => {
            tracing::error!(error = format!("{err:#}"), "audit failed");
            ExitCode::from(3)
        }
    }
}
