//! The controller's Kubernetes client: every request counted by verb and resource
//! (`coreforge_kube_requests_total`), and all of them held to a client-side rate limit,
//! so that a burst of work never crowds the API server's other clients out.

use std::time::Duration;

use http::{Method, Request};
use kube::client::{Body, ClientBuilder};
use kube::{Client, Config};
use tower::limit::RateLimitLayer;
use tower::util::MapRequestLayer;

use crate::metrics::METRICS;

/// Default of `--kube-api-qps`.
pub const DEFAULT_QPS: u64 = 50;

/// A client for `config` sending at most `qps` requests per second (watches included:
/// a watch is one request however long it lasts).
pub fn build(config: Config, qps: u64) -> kube::Result<Client> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&MapRequestLayer::new(count))
        .with_layer(&RateLimitLayer::new(qps.max(1), Duration::from_secs(1)))
        .build())
}

/// A client for `config` whose requests are counted but not limited: for the few that
/// must not wait behind the others (renewing the leader's Lease).
pub fn build_unlimited(config: Config) -> kube::Result<Client> {
    Ok(ClientBuilder::try_from(config)?.with_layer(&MapRequestLayer::new(count)).build())
}

fn count(req: Request<Body>) -> Request<Body> {
    let (verb, resource) = classify(req.method(), req.uri().path(), req.uri().query().unwrap_or_default());
    METRICS.kube_requests.with_label_values(&[verb, &resource]).inc();
    req
}

/// The Kubernetes verb and resource (`jobs`, `imagereleases/status`) of a request.
pub fn classify(method: &Method, path: &str, query: &str) -> (&'static str, String) {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // /api/v1/... or /apis/<group>/<version>/...
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named) = match rest {
        [] => ("other".to_string(), false),
        [resource] => (resource.to_string(), false),
        [resource, _name] => (resource.to_string(), true),
        [resource, _name, sub, ..] => (format!("{resource}/{sub}"), true),
    };
    let watch = query.split('&').any(|p| p == "watch=true" || p == "watch=1");
    let verb = match (method, named) {
        (&Method::GET, _) if watch => "watch",
        (&Method::GET, true) => "get",
        (&Method::GET, false) => "list",
        (&Method::POST, _) => "create",
        (&Method::PATCH, _) => "patch",
        (&Method::PUT, _) => "update",
        (&Method::DELETE, true) => "delete",
        (&Method::DELETE, false) => "deletecollection",
        _ => "other",
    };
    (verb, resource)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_are_named_by_verb_and_resource() {
        let cases = [
            (Method::GET, "/apis/coreforge.dev/v1alpha1/namespaces/n/imagereleases", "", "list", "imagereleases"),
            (
                Method::GET,
                "/apis/coreforge.dev/v1alpha1/imagereleases",
                "watch=true&resourceVersion=5",
                "watch",
                "imagereleases",
            ),
            (
                Method::PATCH,
                "/apis/coreforge.dev/v1alpha1/namespaces/n/imagereleases/r/status",
                "",
                "patch",
                "imagereleases/status",
            ),
            (Method::GET, "/api/v1/namespaces/n/secrets/s", "", "get", "secrets"),
            (Method::POST, "/apis/batch/v1/namespaces/n/jobs", "", "create", "jobs"),
            (Method::GET, "/api/v1/namespaces/n", "", "get", "namespaces"),
            (Method::PUT, "/apis/coordination.k8s.io/v1/namespaces/n/leases/l", "", "update", "leases"),
            (Method::GET, "/version", "", "list", "other"),
        ];
        for (method, path, query, verb, resource) in cases {
            assert_eq!(classify(&method, path, query), (verb, resource.to_string()), "{method} {path}?{query}");
        }
    }
}
