//! A container's readiness and liveness probes: when each is due, and whether it has failed.

use std::time::Duration;

use http_body_util::Empty;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client as HttpClient;

use super::spec::Probe;

/// The schedule and the result of one probe.
pub(super) struct ProbeState {
    probe: Option<Probe>,
    next: tokio::time::Instant,
    failures: u32,
}

impl ProbeState {
    pub(super) fn new(probe: Option<Probe>) -> Self {
        let next = tokio::time::Instant::now()
            + probe.as_ref().map_or(Duration::ZERO, |p| p.initial_delay);
        Self {
            probe,
            next,
            failures: 0,
        }
    }

    /// Resolves when the probe is due; never without a probe.
    pub(super) async fn due(&self) {
        if self.probe.is_some() {
            tokio::time::sleep_until(self.next).await;
        } else {
            std::future::pending::<()>().await;
        }
    }

    pub(super) async fn check(
        &mut self,
        http: &HttpClient<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    ) -> bool {
        let Some(probe) = &self.probe else {
            return true;
        };
        self.next = tokio::time::Instant::now() + probe.period;
        let uri = format!("http://127.0.0.1:{}{}", probe.port, probe.path);
        let ok = match uri.parse() {
            Ok(uri) => matches!(
                tokio::time::timeout(probe.timeout, http.get(uri)).await,
                Ok(Ok(response)) if response.status().is_success() || response.status().is_redirection()
            ),
            Err(_) => false,
        };
        self.failures = if ok { 0 } else { self.failures + 1 };
        ok
    }

    pub(super) fn failed(&self) -> bool {
        self.probe
            .as_ref()
            .is_some_and(|p| self.failures >= p.failure_threshold)
    }
}
