//! The HTTP endpoint of every long-running binary (axum): Prometheus metrics on `/metrics`, liveness on
//! `/healthz`, readiness on `/readyz`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{Error, Result};

/// Readiness as Kubernetes probes it: `/readyz` answers 200 only while ready.
#[derive(Debug, Default)]
pub struct Health {
    ready: AtomicBool,
}

impl Health {
    /// Marks the process ready (connected, serving) or not (starting, draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the process is ready.
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }
}

#[derive(Clone)]
struct Endpoint {
    registry: Arc<Registry>,
    health: Arc<Health>,
}

async fn metrics(State(endpoint): State<Endpoint>) -> impl IntoResponse {
    let mut text = String::new();
    match prometheus_client::encoding::text::encode(&mut text, &endpoint.registry) {
        Ok(()) => (
            StatusCode::OK,
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        ),
        Err(err) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(header::CONTENT_TYPE, "text/plain")],
            err.to_string(),
        ),
    }
}

async fn readyz(State(endpoint): State<Endpoint>) -> (StatusCode, &'static str) {
    if endpoint.health.is_ready() {
        (StatusCode::OK, "ready\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
    }
}

/// Binds `addr` and serves the endpoints until `shutdown` is cancelled. Binding happens before this returns, so a
/// taken port is reported at start-up. Returns the bound address (useful with port 0) and the serving task.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Registry>,
    health: Arc<Health>,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| Error::MetricsBind { addr, source })?;
    let local = listener.local_addr().unwrap_or(addr);
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .fallback(|| async { (StatusCode::NOT_FOUND, "try /metrics, /healthz or /readyz\n") })
        .with_state(Endpoint { registry, health });
    info!(addr = %local, "serving /metrics, /healthz and /readyz");
    let task = tokio::spawn(async move {
        if let Err(err) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown.cancelled_owned())
            .await
        {
            warn!(error = %err, "the metrics endpoint stopped");
        }
    });
    Ok((local, task))
}

/// Buckets for latencies in seconds, from 1 ms to about 2 minutes.
pub fn latency_buckets() -> impl Iterator<Item = f64> {
    prometheus_client::metrics::histogram::exponential_buckets(0.001, 2.0, 18)
}

#[cfg(test)]
mod tests {
    use prometheus_client::metrics::counter::Counter;

    use super::*;

    async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
        let url = format!("http://{addr}{path}");
        tokio::task::spawn_blocking(move || match ureq::get(&url).call() {
            Ok(mut response) => (
                response.status().as_u16(),
                response.body_mut().read_to_string().unwrap_or_default(),
            ),
            Err(ureq::Error::StatusCode(code)) => (code, String::new()),
            Err(err) => panic!("GET {url}: {err}"),
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn serves_metrics_and_probes() {
        let mut registry = Registry::default();
        let orders: Counter = Counter::default();
        registry.register("orders", "Orders", orders.clone());
        orders.inc_by(3);
        let health = Arc::new(Health::default());
        let shutdown = CancellationToken::new();

        let (addr, task) = serve(
            "127.0.0.1:0".parse().unwrap(),
            Arc::new(registry),
            Arc::clone(&health),
            shutdown.clone(),
        )
        .await
        .unwrap();

        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200);
        assert!(body.contains("orders_total 3"), "{body}");
        assert_eq!(get(addr, "/healthz").await.0, 200);
        assert_eq!(get(addr, "/readyz").await.0, 503);
        health.set_ready(true);
        assert_eq!(get(addr, "/readyz").await.0, 200);
        assert_eq!(get(addr, "/nope").await.0, 404);

        shutdown.cancel();
        task.await.unwrap();
    }

    #[tokio::test]
    async fn reports_a_taken_port() {
        let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = taken.local_addr().unwrap();
        let err = serve(
            addr,
            Arc::new(Registry::default()),
            Arc::default(),
            CancellationToken::new(),
        )
        .await
        .unwrap_err();
        assert!(err.to_string().contains(&addr.to_string()), "{err}");
    }
}
