//! Shutdown: a SIGTERM/SIGINT listener that cancels a token every task selects on, and the runner of a service
//! that stops on it.

use std::fmt;
use std::future::Future;
use std::process::ExitCode;
use std::time::Duration;

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

/// Exit code used when a second signal forces an immediate exit (128 + SIGINT, as shells report it).
pub const EXIT_FORCED: i32 = 130;

/// Waits for SIGTERM or SIGINT, logs which one came, and cancels `token`. A second signal exits the process at
/// once: whatever was in flight is not acknowledged and will be redone, so nothing is lost.
///
/// Returns (without cancelling) if the token is cancelled by someone else first.
pub async fn shutdown_signal(token: CancellationToken) {
    let (mut term, mut int) = match (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) {
        (Ok(term), Ok(int)) => (term, int),
        (Err(err), _) | (_, Err(err)) => {
            warn!(error = %err, "cannot listen for SIGTERM/SIGINT; stop the process with SIGKILL");
            return;
        }
    };
    let name = tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
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
        };
        warn!(signal = again, "second signal; exiting now");
        std::process::exit(EXIT_FORCED);
    });
}

/// How long a service's runtime may take to wind down after the service returned.
const RUNTIME_SHUTDOWN: Duration = Duration::from_millis(500);

/// Runs a service to its end and maps the outcome to an exit code: the shape of every long-running binary's
/// `main`. `service` gets a token cancelled on SIGTERM/SIGINT; an error is logged as `<name> failed` and exits 1.
///
/// A blocking Kafka call left behind (a transaction given up at a drain deadline) does not hold the exit: the
/// runtime gets [`RUNTIME_SHUTDOWN`] to wind down, where dropping it would wait for that call.
pub fn run_service<F, Fut, T, E>(name: &str, service: F) -> ExitCode
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: Future<Output = Result<T, E>>,
    E: fmt::Display,
{
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
        match service(shutdown).await {
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
