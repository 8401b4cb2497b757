//! The patient: publishes tab orders to `tabs.orders`, one per period for each simulated patient.
//!
//! One process simulates `--patients N` independent patients (ids `<id>-1` … `<id>-N`, or just `<id>` alone),
//! each on its own schedule, offset so they do not fire in lockstep. Orders are keyed by patient id, so one
//! patient's orders stay in one partition, in order; timestamps strictly increase per patient.
//!
//! Delivery: an idempotent producer with `acks=all`. An order is logged as `order acknowledged` only once Kafka
//! has it on every in-sync replica, so every order the log shows is in the topic. On SIGTERM/SIGINT ordering
//! stops and unacknowledged orders get `--flush-timeout` to be acknowledged; any left are reported.
//!
//! Run: `patient --bootstrap-servers 127.0.0.1:9092 --patients 100 --order-period 1`.

#![forbid(unsafe_code)]

mod config;
mod metrics;
mod ordering;
mod program;

pub use config::Config;
pub use ordering::Summary;
pub use program::{main, run};
