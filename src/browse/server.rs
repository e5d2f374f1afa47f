//! The catalog on the controller's HTTP port: `/catalog` (HTML) and `/api/v1/catalog`
//! (JSON) for every namespace the controller covers, and `/catalog/{namespace}`,
//! `/api/v1/catalog/{namespace}` for one. Read-only, served by every replica (followers
//! too): the view is read through the API server at most once per [`FRESH_FOR`] whatever
//! the number of readers, and concurrent readers of a stale view wait for one read.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use kube::Client;
use tokio::sync::Mutex;
use tracing::warn;

use super::{Catalog, Scope, html, load};

/// How long a view is served before it is read again.
pub const FRESH_FOR: Duration = Duration::from_secs(5);
/// How long one read of the view may take.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// The view and where it is read from.
pub struct Pages {
    client: Client,
    scope: Scope,
    last: Mutex<Option<(Instant, Arc<Catalog>)>>,
}

impl Pages {
    /// Pages of `scope`, read with `client`.
    pub fn new(client: Client, scope: Scope) -> Arc<Self> {
        Arc::new(Self { client, scope, last: Mutex::new(None) })
    }

    /// The current view: the last one if fresh, else read again (once for all waiting).
    async fn current(&self) -> Result<Arc<Catalog>, String> {
        let mut last = self.last.lock().await;
        if let Some((at, view)) = last.as_ref()
            && at.elapsed() < FRESH_FOR
        {
            return Ok(view.clone());
        }
        let view = match tokio::time::timeout(READ_TIMEOUT, load(&self.client, &self.scope)).await {
            Ok(Ok(view)) => Arc::new(view),
            Ok(Err(e)) => {
                warn!(error = %e, "cannot read the catalog");
                return Err(format!("cannot read CoreBuilds and ImageReleases from the API server: {e}"));
            }
            Err(_) => return Err(format!("the API server did not answer within {READ_TIMEOUT:?}")),
        };
        *last = Some((Instant::now(), view.clone()));
        Ok(view)
    }

    /// The view of one namespace, or of the whole scope; a namespace outside the scope is
    /// not found.
    async fn of(&self, namespace: Option<&str>) -> Result<Catalog, (StatusCode, String)> {
        if let (Some(ns), Scope::Namespaces(covered)) = (namespace, &self.scope)
            && !covered.iter().any(|c| c == ns)
        {
            return Err((
                StatusCode::NOT_FOUND,
                format!("namespace {ns} is not covered by this controller (it watches {})", covered.join(", ")),
            ));
        }
        let view = self.current().await.map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e))?;
        let mut view = (*view).clone();
        if let Some(ns) = namespace {
            view.products.retain(|p| p.namespace == ns);
        }
        Ok(view)
    }

    fn title(&self, namespace: Option<&str>) -> String {
        match (namespace, &self.scope) {
            (Some(ns), _) => ns.to_string(),
            (None, Scope::All) => "all namespaces".into(),
            (None, Scope::Namespaces(covered)) => covered.join(", "),
        }
    }
}

/// A page that runs no script and loads nothing from elsewhere.
fn secured(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; style-src 'unsafe-inline'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"),
    );
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

async fn page(pages: Arc<Pages>, namespace: Option<String>) -> Response {
    let json = match &namespace {
        Some(ns) => format!("/api/v1/catalog/{ns}"),
        None => "/api/v1/catalog".into(),
    };
    let response = match pages.of(namespace.as_deref()).await {
        Ok(view) => (
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            html::page(&view, &pages.title(namespace.as_deref()), &json),
        )
            .into_response(),
        Err((code, message)) => {
            (code, [(header::CONTENT_TYPE, "text/plain; charset=utf-8")], message + "\n").into_response()
        }
    };
    secured(response)
}

async fn api(pages: Arc<Pages>, namespace: Option<String>) -> Response {
    let response = match pages.of(namespace.as_deref()).await {
        Ok(view) => match serde_json::to_string(&view) {
            Ok(body) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
            Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{e}\n")).into_response(),
        },
        Err((code, message)) => {
            let body = serde_json::json!({"error": message}).to_string();
            (code, [(header::CONTENT_TYPE, "application/json")], body).into_response()
        }
    };
    secured(response)
}

/// The catalog routes.
pub fn routes(pages: Arc<Pages>) -> Router {
    Router::new()
        .route("/catalog", get(|State(p): State<Arc<Pages>>| page(p, None)))
        .route("/catalog/{namespace}", get(|State(p): State<Arc<Pages>>, Path(ns): Path<String>| page(p, Some(ns))))
        .route("/api/v1/catalog", get(|State(p): State<Arc<Pages>>| api(p, None)))
        .route(
            "/api/v1/catalog/{namespace}",
            get(|State(p): State<Arc<Pages>>, Path(ns): Path<String>| api(p, Some(ns))),
        )
        .with_state(pages)
}
