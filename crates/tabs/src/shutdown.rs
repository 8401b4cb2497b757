//! Shutdown and the life of a service: a SIGTERM/SIGINT listener that cancels a token every task selects on, and
//! the one runner every long-running binary's `main` calls (runtime, signals, metrics endpoint, exit code).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::registry::Registry;
use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use crate::config::TelemetryArgs;
use crate::metrics::{self, Health};

/// Exit code used when a second signal forces an immediate exit (128 + SIGINT, as shells report it).
pub const EXIT_FORCED: i32 = 130;

/// Waits for SIGTERM, SIGINT or SIGHUP (the terminal closed), logs which one came, and cancels `token`. A second
/// signal exits the process at once: whatever was in flight is not acknowledged and will be redone, so nothing is
/// lost.
///
/// Returns (without cancelling) if the token is cancelled by someone else first.
pub async fn shutdown_signal(token: CancellationToken) {
    let (mut term, mut int, mut hup) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) {
        (Ok(term), Ok(int), Ok(hup)) => (term, int, hup),
        (Err(err), _, _) | (_, Err(err), _) | (_, _, Err(err)) => {
            warn!(error = %err, "cannot listen for SIGTERM/SIGINT/SIGHUP; stop the process with SIGKILL");
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
        _ = hup.recv() => "SIGHUP",
        () = token.cancelled() => return,
    };
    info!(
        signal = name,
        "shutdown requested; finishing in-flight work"
    );
    token.cancel();
    tokio::spawn(async move {
        let again = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
            _ = hup.recv() => "SIGHUP",
        };
        warn!(signal = again, "second signal; exiting now");
        std::process::exit(EXIT_FORCED);
    });
}

/// How long a service's runtime may take to wind down after the service returned.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);

/// What a service gets from [`run_service`].
pub struct Service {
    /// Cancelled on SIGTERM or SIGINT.
    pub shutdown: CancellationToken,
    /// What `/readyz` answers.
    pub health: Arc<Health>,
    metrics_addr: Option<SocketAddr>,
}

impl Service {
    /// A service without a metrics endpoint, stopped by `shutdown` (tests that run a service in-process).
    pub fn detached(shutdown: CancellationToken) -> Self {
        Self {
            shutdown,
            health: Arc::default(),
            metrics_addr: None,
        }
    }

    /// Serves `registry` and the probes on `--metrics-addr`, if one was given, until shutdown. Returns the bound
    /// address.
    pub async fn serve_metrics(&self, registry: Registry) -> crate::Result<Option<SocketAddr>> {
        let Some(addr) = self.metrics_addr else {
            return Ok(None);
        };
        let (bound, _task) = metrics::serve(
            addr,
            Arc::new(registry),
            Arc::clone(&self.health),
            self.shutdown.clone(),
        )
        .await?;
        Ok(Some(bound))
    }
}

/// Runs a service to its end and maps the outcome to an exit code: the shape of every long-running binary's
/// `main`. Logging is set up from `telemetry`; `service` gets a token cancelled on SIGTERM/SIGINT and its
/// metrics endpoint to start; an error is logged as `<name> failed` and exits 1.
///
/// A blocking Kafka call left behind (a transaction given up at a drain deadline) does not hold the exit: the
/// runtime gets [`RUNTIME_SHUTDOWN`] to wind down, where dropping it would wait for that call.
pub fn run_service<F, Fut, T, E>(name: &str, telemetry: &TelemetryArgs, service: F) -> ExitCode
where
    F: FnOnce(Service) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: fmt::Display,
{
    crate::telemetry::init(telemetry.log_format);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(err) => {
            error!(error = %err, "cannot start the async runtime");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(async {
        let shutdown = CancellationToken::new();
        tokio::spawn(shutdown_signal(shutdown.clone()));
        let context = Service {
            shutdown,
            health: Arc::default(),
            metrics_addr: telemetry.metrics_addr,
        };
        match service(context).await {
            Ok(_) => ExitCode::SUCCESS,
            Err(err) => {
                error!(error = format!("{err:#}"), "{name} failed");
                ExitCode::FAILURE
            }
        }
    });
    runtime.shutdown_timeout(RUNTIME_SHUTDOWN);
    code
}
