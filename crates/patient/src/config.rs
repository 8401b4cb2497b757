//! The patient's command line and environment ([`Config`]), checked.

use std::time::Duration;

use clap::Parser;
use tabs::config::{
    parse_duration, parse_positive_duration, OrdersTopic, TabsCountArgs, TelemetryArgs,
};
use tabs::kafka::KafkaArgs;

/// Command line and environment of `patient`.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "patient",
    version,
    about = "Orders medicine tabs: publishes tab orders to Kafka."
)]
pub struct Config {
    #[command(flatten)]
    pub kafka: KafkaArgs,

    #[command(flatten)]
    pub topics: OrdersTopic,

    /// Patient id (default: a new UUID). With --patients N > 1, the patients are `<id>-1` … `<id>-N`.
    #[arg(long, env = "ORBITAL_PATIENT_ID", help_heading = "Ordering")]
    pub patient_id: Option<String>,

    #[command(flatten, next_help_heading = "Ordering")]
    pub tabs_count: TabsCountArgs,

    /// Time between two orders of one patient: seconds (fractions allowed) or a duration such as 500ms.
    #[arg(long, env = "ORBITAL_ORDER_PERIOD_SECONDS", default_value = "1", value_parser = parse_positive_duration,
          help_heading = "Ordering")]
    pub order_period: Duration,

    /// Simulated patients in this process, each with its own id and schedule.
    #[arg(long, env = "MEDECINEPUBSUB_PATIENTS", default_value_t = 1,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000), help_heading = "Ordering")]
    pub patients: u32,

    /// Stop after this many orders per patient; 0 orders until stopped.
    #[arg(
        long,
        env = "MEDECINEPUBSUB_ORDERS_PER_PATIENT",
        default_value_t = 0,
        help_heading = "Ordering"
    )]
    pub orders: u64,

    /// Most orders awaiting acknowledgement at once; patients wait while it is reached (the broker is slow or
    /// down), so memory stays bounded.
    #[arg(long, env = "MEDECINEPUBSUB_MAX_PENDING_ORDERS", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(1..), help_heading = "Ordering")]
    pub max_pending_orders: u32,

    /// Give up (exit 1) when Kafka or the orders topic cannot be reached within this time.
    #[arg(long, env = "MEDECINEPUBSUB_STARTUP_TIMEOUT", default_value = "60s", value_parser = parse_duration,
          help_heading = "Lifecycle")]
    pub startup_timeout: Duration,

    /// On shutdown, wait at most this long for orders not yet acknowledged.
    #[arg(long, env = "MEDECINEPUBSUB_FLUSH_TIMEOUT", default_value = "10s", value_parser = parse_duration,
          help_heading = "Lifecycle")]
    pub flush_timeout: Duration,

    #[command(flatten)]
    pub telemetry: TelemetryArgs,
}

impl Config {
    /// Checks what the parser cannot, before any network call.
    pub fn validate(&self) -> Result<(), String> {
        self.kafka.validate()?;
        if let Some(id) = &self.patient_id {
            if id.trim().is_empty() {
                return Err(
                    "--patient-id (ORBITAL_PATIENT_ID) is empty; unset it for a random id".into(),
                );
            }
            if id.len() + 8 > tabs::messages::MAX_PATIENT_ID_BYTES {
                return Err(format!(
                    "--patient-id (ORBITAL_PATIENT_ID) is {} bytes; keep it under {}",
                    id.len(),
                    tabs::messages::MAX_PATIENT_ID_BYTES - 8
                ));
            }
        }
        if self.topics.orders_topic.is_empty() {
            return Err("--orders-topic is empty".into());
        }
        Ok(())
    }

    /// The ids of the simulated patients.
    pub fn patient_ids(&self) -> Vec<String> {
        let base = self
            .patient_id
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        match self.patients {
            1 => vec![base],
            n => (1..=n).map(|k| format!("{base}-{k}")).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(args: &[&str]) -> Config {
        Config::try_parse_from(std::iter::once("patient").chain(args.iter().copied())).unwrap()
    }

    #[test]
    fn one_patient_keeps_its_id_and_many_get_suffixes() {
        assert_eq!(config(&["--patient-id", "p"]).patient_ids(), vec!["p"]);
        assert_eq!(
            config(&["--patient-id", "p", "--patients", "3"]).patient_ids(),
            vec!["p-1", "p-2", "p-3"]
        );
        let random = config(&[]).patient_ids();
        assert!(uuid::Uuid::parse_str(&random[0]).is_ok());
    }

    #[test]
    fn order_period_accepts_fractional_seconds() {
        assert_eq!(
            config(&["--order-period", "0.25"]).order_period,
            Duration::from_millis(250)
        );
        assert_eq!(config(&[]).order_period, Duration::from_secs(1));
    }

    #[test]
    fn rejects_zero_period_zero_patients_and_zero_max_tabs() {
        for args in [
            ["--order-period", "0"],
            ["--patients", "0"],
            ["--max-tabs-count", "0"],
        ] {
            let parsed = Config::try_parse_from(std::iter::once("patient").chain(args));
            assert!(parsed.is_err(), "{args:?}");
        }
    }

    #[test]
    fn rejects_an_empty_patient_id() {
        let err = config(&["--patient-id", " "]).validate().unwrap_err();
        assert!(err.contains("ORBITAL_PATIENT_ID"), "{err}");
    }
}
