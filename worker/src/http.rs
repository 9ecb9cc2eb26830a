//! The metrics and health endpoint: `/metrics`, `/healthz`, `/readyz`
//! (cargo feature `http`; without it `--metrics-addr` is refused).

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::sync::CancellationToken;

use crate::error::Result;
use crate::metrics::Metrics;

/// Readiness, flipped by the runtime: ready while it takes work.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    /// Marks the process ready or not.
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::Relaxed);
    }

    /// Whether it is ready.
    pub fn get(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// Binds `addr` and serves until `shutdown` is cancelled. Returns the bound
/// address (useful with port 0).
pub async fn serve(
    addr: SocketAddr,
    metrics: Metrics,
    ready: Readiness,
    shutdown: CancellationToken,
) -> Result<SocketAddr> {
    #[cfg(feature = "http")]
    return server::serve(addr, metrics, ready, shutdown).await;
    #[cfg(not(feature = "http"))]
    {
        let _ = (metrics, ready, shutdown);
        Err(crate::error::Error::without_feature(
            &format!("--metrics-addr {addr}"),
            "metrics server",
            "http",
        ))
    }
}

#[cfg(feature = "http")]
mod server {
    use std::net::SocketAddr;

    use axum::Router;
    use axum::extract::State;
    use axum::http::{StatusCode, header};
    use axum::response::{IntoResponse, Response};
    use axum::routing::get;
    use tokio_util::sync::CancellationToken;

    use super::Readiness;
    use crate::error::{Error, Result};
    use crate::metrics::Metrics;

    #[derive(Clone)]
    struct AppState {
        metrics: Metrics,
        ready: Readiness,
    }

    async fn serve_metrics(State(state): State<AppState>) -> Response {
        match state.metrics.encode() {
            Ok(body) => (
                [(
                    header::CONTENT_TYPE,
                    "text/plain; version=0.0.4; charset=utf-8",
                )],
                body,
            )
                .into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
        }
    }

    async fn healthz() -> &'static str {
        "ok\n"
    }

    async fn readyz(State(state): State<AppState>) -> (StatusCode, &'static str) {
        if state.ready.get() {
            (StatusCode::OK, "ready\n")
        } else {
            (StatusCode::SERVICE_UNAVAILABLE, "not ready\n")
        }
    }

    pub(super) async fn serve(
        addr: SocketAddr,
        metrics: Metrics,
        ready: Readiness,
        shutdown: CancellationToken,
    ) -> Result<SocketAddr> {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| Error::Metrics(format!("cannot listen on {addr}: {e}")))?;
        let bound = listener
            .local_addr()
            .map_err(|e| Error::Metrics(format!("cannot read bound address: {e}")))?;
        let app = Router::new()
            .route("/metrics", get(serve_metrics))
            .route("/healthz", get(healthz))
            .route("/readyz", get(readyz))
            .with_state(AppState { metrics, ready });
        tokio::spawn(async move {
            let result = axum::serve(listener, app)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(e) = result {
                tracing::error!(error = %e, "metrics server stopped");
            }
        });
        tracing::info!(addr = %bound, "serving /metrics, /healthz, /readyz");
        Ok(bound)
    }
}
