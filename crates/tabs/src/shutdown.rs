//! Shutdown: a SIGTERM/SIGINT listener that cancels a token every task selects on.

use tokio::signal::unix::{signal, SignalKind};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

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
