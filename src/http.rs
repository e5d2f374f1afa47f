//! The daemon's HTTP server: `/metrics` (Prometheus text format), `/livez` (the process
//! serves requests) and `/readyz` (the watches have synced, so the controller acts on a
//! complete picture).

use std::net::SocketAddr;

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use futures::FutureExt;
use kube::runtime::reflector::Store;
use tracing::info;

use crate::api::ImageRelease;
use crate::controller::Shutdown;
use crate::metrics::{self, METRICS};

#[derive(Clone)]
struct AppState {
    releases: Vec<Store<ImageRelease>>,
}

async fn livez() -> &'static str {
    "ok\n"
}

async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    // A store is ready once its watch listed everything once.
    let synced = state.releases.iter().all(|s| s.wait_until_ready().now_or_never().is_some_and(|r| r.is_ok()));
    if synced && METRICS.leader.get() == 1 {
        (StatusCode::OK, "ok\n")
    } else if !synced {
        (StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n")
    } else {
        (StatusCode::SERVICE_UNAVAILABLE, "not the leader\n")
    }
}

async fn metrics_text(State(state): State<AppState>) -> impl IntoResponse {
    let releases: Vec<_> = state.releases.iter().flat_map(|s| s.state()).collect();
    metrics::observe_releases(&releases, jiff::Timestamp::now());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], METRICS.render())
}

/// Serves until `shutdown` resolves.
pub async fn serve(addr: SocketAddr, releases: Vec<Store<ImageRelease>>, shutdown: Shutdown) -> anyhow::Result<()> {
    let app = Router::new()
        .route("/metrics", get(metrics_text))
        .route("/livez", get(livez))
        .route("/readyz", get(readyz))
        .with_state(AppState { releases });
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--http-addr): {e}"))?;
    info!(%addr, "serving /metrics, /livez and /readyz");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
