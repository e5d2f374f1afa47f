//! The daemon's HTTP server: `/metrics` (Prometheus text format), `/livez` (the process
//! serves requests) and `/readyz` (the watches have synced, so the controller acts on a
//! complete picture).

use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU8, Ordering};

use axum::Router;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use tracing::info;

use crate::controller::Shutdown;
use crate::controller::cache::Caches;
use crate::metrics::{self, METRICS};

/// This replica's role, as readiness reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Leader election has not decided yet.
    Unknown = 0,
    /// Reconciling (it leads, or election is off).
    Leader = 1,
    /// Standing by for the leader.
    Follower = 2,
}

static ROLE: AtomicU8 = AtomicU8::new(Role::Unknown as u8);
/// The caches of the running controllers, one per scope (empty until they start).
static CACHES: Mutex<Vec<Caches>> = Mutex::new(Vec::new());

/// Records this replica's role.
pub fn set_role(role: Role) {
    ROLE.store(role as u8, Ordering::Relaxed);
}

/// Registers the caches readiness waits for and metrics are computed from.
pub fn set_caches(caches: Vec<Caches>) {
    if let Ok(mut c) = CACHES.lock() {
        *c = caches;
    }
}

fn caches() -> Vec<Caches> {
    CACHES.lock().map(|c| c.clone()).unwrap_or_default()
}

async fn livez() -> &'static str {
    "ok\n"
}

/// Ready when the role is known: a follower is ready to take over; the leader once its
/// watches listed everything once, so it acts on a complete picture.
async fn readyz() -> impl IntoResponse {
    let caches = caches();
    let synced = !caches.is_empty() && caches.iter().all(Caches::is_ready);
    match ROLE.load(Ordering::Relaxed) {
        r if r == Role::Follower as u8 => (StatusCode::OK, "ok: follower\n"),
        r if r == Role::Leader as u8 && synced => (StatusCode::OK, "ok\n"),
        r if r == Role::Leader as u8 => (StatusCode::SERVICE_UNAVAILABLE, "caches not synced\n"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "leadership not known yet\n"),
    }
}

async fn metrics_text() -> impl IntoResponse {
    let releases: Vec<_> = caches().iter().flat_map(|c| c.releases.store().state()).collect();
    metrics::observe_releases(&releases, jiff::Timestamp::now());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], METRICS.render())
}

/// Serves until `shutdown` resolves.
pub async fn serve(addr: SocketAddr, shutdown: Shutdown) -> anyhow::Result<()> {
    let app =
        Router::new().route("/metrics", get(metrics_text)).route("/livez", get(livez)).route("/readyz", get(readyz));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr} (--http-addr): {e}"))?;
    info!(%addr, "serving /metrics, /livez and /readyz");
    axum::serve(listener, app).with_graceful_shutdown(shutdown).await?;
    Ok(())
}
