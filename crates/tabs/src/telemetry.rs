//! Logging setup: `tracing` to stderr, text on a terminal or JSON lines in containers, filtered by `RUST_LOG`.

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;

use crate::config::LogFormat;

/// Filter used when `RUST_LOG` is unset: our info lines, librdkafka's warnings.
pub const DEFAULT_FILTER: &str = "info,rdkafka=warn,librdkafka=warn";

/// Installs the global subscriber. Call once, first thing in `main`.
pub fn init(format: LogFormat) {
    init_with_writer(format, std::io::stderr().is_terminal(), std::io::stderr);
}

/// Installs the global subscriber writing to `writer` (colours when `ansi`): for a program that shows its own
/// screen and must keep log lines off it.
pub fn init_with_writer<W>(format: LogFormat, ansi: bool, writer: W)
where
    W: for<'w> tracing_subscriber::fmt::MakeWriter<'w> + Send + Sync + 'static,
{
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(DEFAULT_FILTER));
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::stderr().is_terminal(),
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer)
        // A log line that cannot be written (the terminal was closed) is dropped; by default tracing reports it
        // with eprintln!, which panics when stderr is gone.
        .log_internal_errors(false);
    // A second init (tests calling `run` twice) keeps the first subscriber; that is fine.
    let _ = if json {
        builder
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .try_init()
    } else {
        builder.with_target(false).try_init()
    };
}
