//! The admin port (HTTP): `/healthz`, `/readyz` and `/metrics`, for probes and Prometheus.
//! No authentication: it listens on loopback unless configured otherwise.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::metrics::Metrics;

/// The `OpenMetrics` text format's content type (Prometheus asks for it and reads it).
const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Why the admin port could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("admin port {addr}: {source}")]
pub struct AdminBindError {
    /// The address asked for.
    addr: SocketAddr,
    /// What went wrong.
    source: std::io::Error,
}

/// Where the sidecar is in its life, for `/readyz`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Opening its topics, joining its cluster.
    Starting,
    /// Serving: its topics are open and it has taken its place in the cluster.
    Ready,
    /// Shutting down.
    Stopping,
}

/// Whether a started sidecar serves what it should: for a cluster member, that it has caught
/// up with the cluster's metadata and opened the replicas it names.
pub(crate) type ReadyCheck = Arc<dyn Fn() -> bool + Send + Sync>;

#[derive(Clone)]
struct AdminState {
    metrics: Arc<Metrics>,
    phase: watch::Receiver<Phase>,
    check: Arc<OnceLock<ReadyCheck>>,
}

impl AdminBindError {
    pub(crate) fn new(addr: SocketAddr, source: std::io::Error) -> Self {
        Self { addr, source }
    }
}

/// Binds the admin port on `addr`.
///
/// # Errors
///
/// [`AdminBindError`] if the address cannot be bound.
pub(crate) async fn bind(addr: SocketAddr) -> Result<TcpListener, AdminBindError> {
    TcpListener::bind(addr)
        .await
        .map_err(|source| AdminBindError::new(addr, source))
}

/// Serves the admin port on `listener` until `stop` turns true (or its sender goes); once
/// `phase` is [`Phase::Ready`], `/readyz` also asks `check`, when one is set.
pub(crate) fn serve(
    listener: TcpListener,
    metrics: Arc<Metrics>,
    phase: watch::Receiver<Phase>,
    check: Arc<OnceLock<ReadyCheck>>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    let app = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics_text))
        .with_state(AdminState {
            metrics,
            phase,
            check,
        });
    tokio::spawn(async move {
        let stopped = async move {
            let _ = stop.wait_for(|down| *down).await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(stopped)
            .await
        {
            tracing::warn!(%error, "the admin port stopped");
        }
    })
}

/// Live: the sidecar's runtime answers.
async fn healthz() -> &'static str {
    "ok\n"
}

/// Ready once the topics are open and the sidecar has joined its cluster (and, a member, has
/// caught up with its metadata); not while it starts or stops.
async fn readyz(State(state): State<AdminState>) -> Response {
    let phase = *state.phase.borrow();
    match phase {
        Phase::Ready if state.check.get().is_none_or(|check| check()) => {
            (StatusCode::OK, "ready\n").into_response()
        }
        Phase::Ready => (
            StatusCode::SERVICE_UNAVAILABLE,
            "catching up with the cluster's metadata\n",
        )
            .into_response(),
        Phase::Starting => (StatusCode::SERVICE_UNAVAILABLE, "starting\n").into_response(),
        Phase::Stopping => (StatusCode::SERVICE_UNAVAILABLE, "stopping\n").into_response(),
    }
}

async fn metrics_text(State(state): State<AdminState>) -> Response {
    // The scrape reads every partition's state: off the runtime's workers.
    let metrics = Arc::clone(&state.metrics);
    match tokio::task::spawn_blocking(move || metrics.encode()).await {
        Ok(Ok(text)) => ([(header::CONTENT_TYPE, OPENMETRICS)], text).into_response(),
        Ok(Err(_)) | Err(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            "the metrics could not be encoded\n",
        )
            .into_response(),
    }
}
