//! The controller's HTTP server: `/healthz` (liveness: the process answers), `/readyz`
//! (readiness: CRDs found, caches synced; a standby replica is ready) and `/metrics`.

use tokio_util::sync::CancellationToken;

use crate::telemetry::Metrics;

/// Readiness of the controller, as `/readyz` reports it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Readiness {
    /// The CRDs are not installed yet.
    #[default]
    WaitingForCrds,
    /// Caches are syncing.
    Syncing,
    /// Reconciling (or waiting as a standby replica).
    Ready,
}

/// Serves `/metrics`, `/healthz` and `/readyz` until `shutdown` is cancelled.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: Metrics,
    readiness: tokio::sync::watch::Receiver<Readiness>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    use axum::{Router, http::StatusCode, routing::get};
    let app = Router::new()
        .route(
            "/metrics",
            get(move || {
                let metrics = metrics.clone();
                async move {
                    (
                        [(
                            axum::http::header::CONTENT_TYPE,
                            "application/openmetrics-text; version=1.0.0; charset=utf-8",
                        )],
                        metrics.encode(),
                    )
                }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let state = *readiness.borrow();
                async move {
                    match state {
                        Readiness::Ready => (StatusCode::OK, "ready".to_string()),
                        other => (StatusCode::SERVICE_UNAVAILABLE, format!("{other:?}")),
                    }
                }
            }),
        );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
