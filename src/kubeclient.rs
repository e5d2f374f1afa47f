//! The controller's Kubernetes client: every request counted by verb and resource
//! (`coreforge_kube_requests_total`), all of them held to a client-side rate limit (a
//! token bucket, as client-go's), so that a burst of work never crowds the API server's
//! other clients out, and every write held to the leader's [`Fence`].

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use http::{Method, Request};
use kube::client::{Body, ClientBuilder};
use kube::{Client, Config};
use tokio::time::{Instant, Sleep};
use tower::util::MapRequestLayer;
use tower::{Layer, Service};

use crate::fence::Fence;
use crate::metrics::METRICS;

/// Default of `--kube-api-qps`: starting a release takes four requests (snapshot, build
/// Job, status, event), so this keeps pace with a `kubectl apply` of a thousand releases
/// (about 40 a second) while bounding a runaway; the API server's priority and fairness
/// shares it with its other clients.
pub const DEFAULT_QPS: u32 = 200;
/// Default of `--kube-api-burst`.
pub const DEFAULT_BURST: u32 = 400;

/// A client for `config` sending on average at most `qps` requests per second, and at
/// most `burst` at once after a quiet spell (watches included: a watch is one request
/// however long it lasts). A write leaves only while `fence` lets it, checked right
/// before it is sent (after any wait for the rate limit).
pub fn build(config: Config, qps: u32, burst: u32, fence: Fence) -> kube::Result<Client> {
    Ok(ClientBuilder::try_from(config)?
        .with_layer(&FenceLayer(fence))
        .with_layer(&MapRequestLayer::new(count))
        .with_layer(&ThrottleLayer { qps, burst })
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

/// Refuses writes the fence does not let through.
struct FenceLayer(Fence);

impl<S> Layer<S> for FenceLayer {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Fenced<S> {
        Fenced { inner, fence: self.0.clone() }
    }
}

struct Fenced<S> {
    inner: S,
    fence: Fence,
}

impl<S> Service<Request<Body>> for Fenced<S>
where
    S: Service<Request<Body>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    S::Response: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let write = !matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
        if write && let Err(fenced) = self.fence.check() {
            return Box::pin(std::future::ready(Err(fenced.into())));
        }
        let response = self.inner.call(req);
        Box::pin(async move { response.await.map_err(Into::into) })
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Holds requests to a token bucket.
struct ThrottleLayer {
    qps: u32,
    burst: u32,
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Throttle<S> {
        Throttle { inner, bucket: Bucket::new(self.qps, self.burst, Instant::now()), wait: None, permitted: false }
    }
}

/// A service ready only when the bucket gave it a token. The client calls it from one
/// task, in order, so requests leave first come, first served.
struct Throttle<S> {
    inner: S,
    bucket: Bucket,
    wait: Option<Pin<Box<Sleep>>>,
    permitted: bool,
}

impl<S, R> Service<R> for Throttle<S>
where
    S: Service<R>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.permitted {
            if let Some(wait) = self.wait.as_mut() {
                ready!(wait.as_mut().poll(cx));
                self.wait = None;
            }
            match self.bucket.take(Instant::now()) {
                None => self.permitted = true,
                Some(after) => self.wait = Some(Box::pin(tokio::time::sleep(after))),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        self.permitted = false;
        self.inner.call(req)
    }
}

/// `burst` tokens, refilled at `rate` per second.
struct Bucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(qps: u32, burst: u32, now: Instant) -> Self {
        let burst = f64::from(burst.max(1));
        Self { rate: f64::from(qps.max(1)), burst, tokens: burst, at: now }
    }

    /// Takes a token, or says how long until there is one.
    fn take(&mut self, now: Instant) -> Option<Duration> {
        let refill = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + refill).min(self.burst);
        self.at = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
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
    fn the_bucket_lets_a_burst_through_then_the_rate() {
        let start = Instant::now();
        let mut b = Bucket::new(10, 3, start);
        assert_eq!((b.take(start), b.take(start), b.take(start)), (None, None, None), "the burst");
        let wait = b.take(start).expect("the bucket is empty");
        assert!((wait.as_secs_f64() - 0.1).abs() < 1e-9, "one token takes 1/qps: {wait:?}");
        assert_eq!(b.take(start + Duration::from_millis(100)), None, "refilled");
        // A long quiet spell refills up to the burst, no more.
        let later = start + Duration::from_secs(60);
        assert_eq!((b.take(later), b.take(later), b.take(later)), (None, None, None));
        assert!(b.take(later).is_some());
    }

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
