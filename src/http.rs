//! The daemon's HTTP server: `/metrics` (Prometheus text format), `/livez` (the process
//! serves requests and no reconcile is wedged) and `/readyz` (the watches have synced, so
//! the controller acts on a complete picture), which report what [`Health`] is told; and
//! the consumers' catalog ([`crate::browse::server`]) when it is on.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tracing::info;

use crate::browse::server::Pages;
use crate::health::{Health, Role};
use crate::metrics::METRICS;

/// Alive unless a reconcile has run past the stall threshold: a controller that makes no
/// progress is restarted by its liveness probe.
async fn livez(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match health.stalled() {
        None => (StatusCode::OK, "ok\n".to_string()),
        Some(s) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!(
                "the reconcile of {} has run for {:.0?}, longer than {:?}: no progress\n",
                s.what,
                s.running_for,
                health.stall_after()
            ),
        ),
    }
}

/// Ready when the role is known: a follower is ready to take over; the leader once its
/// watches listed everything once, so it acts on a complete picture.
async fn readyz(State(health): State<Arc<Health>>) -> impl IntoResponse {
    match health.role() {
        Role::Follower => (StatusCode::OK, "ok: follower\n"),
        Role::Leader if health.synced() => (StatusCode::OK, "ok\n"),
        Role::Leader => (StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n"),
        Role::Unknown => (StatusCode::SERVICE_UNAVAILABLE, "leadership not known yet\n"),
    }
}

async fn metrics_text(State(health): State<Arc<Health>>) -> impl IntoResponse {
    health.refresh_metrics();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], METRICS.render())
}

/// Serves until `shutdown` resolves.
pub async fn serve(
    addr: SocketAddr,
    health: Arc<Health>,
    catalog: Option<Arc<Pages>>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(health);
    if let Some(pages) = catalog {
        app = app.merge(crate::browse::server::routes(pages));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--http-addr): {e}"))?;
    info!(%addr, "serving /metrics, /livez, /readyz (and /catalog when on)");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
