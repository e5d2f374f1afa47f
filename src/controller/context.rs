//! What the reconcilers of one scope share: the [`Context`] (client, caches, registries,
//! the administrator's pod settings, what was written last), the [`Error`] a reconcile
//! fails with, and the conditional status write both kinds of object use.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::cache::{Caches, Expectations};
use crate::api::{CoreBuildStatus, FIELD_MANAGER, ImageRelease, ImageReleaseStatus};
use crate::catalog::Registries;
use crate::health::Health;
use crate::privileges::Privileges;
use crate::signing::Keys;

/// The shortest time between two status writes of a CoreBuild whose spec did not change.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);

/// Why a reconcile failed. Metrics label errors by [`Error::kind`], never by message.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or did not answer.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// An object could not be serialized.
    #[error("serialization: {0}")]
    Serialize(#[from] serde_json::Error),
    /// A namespaced object without namespace (should not happen).
    #[error("object has no namespace")]
    NoNamespace,
    /// The reconcile did not finish in time (a request that does not return).
    #[error("the reconcile did not finish within {0:?}")]
    TimedOut(Duration),
}

impl Error {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::Serialize(_) => "serialize",
            Error::NoNamespace => "no_namespace",
            Error::TimedOut(_) => "timeout",
        }
    }
}

/// What the administrator who runs the controller decides about build and test pods.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodConfig {
    /// The builder image of CoreBuilds that name none.
    pub builder_image: String,
    /// What a CoreBuild's pods may ask for beyond the defaults.
    pub privileges: Privileges,
    /// Build pods get a user namespace of their own (`hostUsers: false`; the nodes'
    /// runtime must support it).
    pub user_namespaced_builders: bool,
    /// How many attempts of a release keep their Jobs (and pods) and snapshot, the
    /// current one included; older ones are deleted.
    pub keep_attempts: u32,
}

/// Default of [`PodConfig::keep_attempts`].
pub const DEFAULT_KEEP_ATTEMPTS: u32 = 3;

impl Default for PodConfig {
    fn default() -> Self {
        Self {
            builder_image: crate::snapshot::DEFAULT_BUILDER_IMAGE.into(),
            privileges: Privileges::default(),
            user_namespaced_builders: false,
            keep_attempts: DEFAULT_KEEP_ATTEMPTS,
        }
    }
}

/// Shared state of the reconcilers of one scope (a namespace, or the cluster).
pub struct Context {
    pub(super) client: Client,
    pub(super) recorder: Recorder,
    pub(super) pods: PodConfig,
    /// What the reconcilers read.
    pub(super) caches: Caches,
    /// Registry clients, shared by every scope.
    pub(super) registries: Arc<Registries>,
    /// Signing keys (and the controller's default), shared by every scope.
    pub(super) keys: Arc<Keys>,
    /// Consecutive failures per release, for exponential backoff.
    pub(super) failures: Mutex<HashMap<ObjectRef<ImageRelease>, u32>>,
    /// The statuses this controller wrote last, until the caches show them.
    pub(super) releases_written: Expectations<ImageReleaseStatus>,
    /// The same for CoreBuilds.
    pub(super) core_builds_written: Expectations<CoreBuildStatus>,
    /// When each CoreBuild's status was written last (see [`STATUS_INTERVAL`]).
    core_build_writes: Mutex<HashMap<(String, String), Instant>>,
    /// Where running reconciles are noted, for `/livez`.
    pub(super) health: Arc<Health>,
}

impl Context {
    /// A context for `client`, recording events with `recorder`, creating pods by `pods`,
    /// reading from `caches`, signing with `keys`, noting its reconciles in `health`.
    pub fn new(
        client: Client,
        recorder: Recorder,
        pods: PodConfig,
        caches: Caches,
        registries: Arc<Registries>,
        keys: Arc<Keys>,
        health: Arc<Health>,
    ) -> Self {
        Self {
            client,
            recorder,
            pods,
            caches,
            registries,
            keys,
            health,
            failures: Mutex::default(),
            releases_written: Expectations::default(),
            core_builds_written: Expectations::default(),
            core_build_writes: Mutex::default(),
        }
    }

    /// Records that CoreBuild `name`'s status was written now.
    pub(super) fn status_written(&self, ns: &str, name: &str) {
        if let Ok(mut w) = self.core_build_writes.lock() {
            w.retain(|_, at| at.elapsed() < STATUS_INTERVAL);
            w.insert((ns.into(), name.into()), Instant::now());
        }
    }

    /// How long ago CoreBuild `name`'s status was written, if recently.
    pub(super) fn since_status_written(&self, ns: &str, name: &str) -> Option<Duration> {
        let w = self.core_build_writes.lock().ok()?;
        w.get(&(ns.to_string(), name.to_string())).map(|at| at.elapsed())
    }

    /// Forgets what is kept about a release that was deleted.
    pub fn forget_release(&self, release: &ImageRelease) {
        let ns = release.namespace().unwrap_or_default();
        self.releases_written.forget(&ns, &release.name_any());
        self.failures.lock().map(|mut f| f.remove(&ObjectRef::from_obj(release))).ok();
    }
}

impl Context {
    /// Records an Event about `regarding` (a Warning or Normal one, its note cut to 1000
    /// characters); whether it was recorded. An event that cannot be recorded is worth a
    /// warning in the log, not a failed reconcile.
    pub(super) async fn record_event(
        &self,
        regarding: &k8s_openapi::api::core::v1::ObjectReference,
        warning: bool,
        reason: &str,
        message: &str,
    ) -> bool {
        let event = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.to_string(),
            note: Some(message.chars().take(1000).collect()),
            action: reason.to_string(),
            secondary: None,
        };
        match self.recorder.publish(&event, regarding).await {
            Ok(()) => true,
            Err(e) => {
                tracing::warn!(error = %e, reason, "could not record event");
                false
            }
        }
    }
}

/// Writes `status` with server-side apply, on the condition that the release is still
/// at `resource_version` (the one the status was decided on): `Ok(None)` when it is not,
/// else the release as written.
pub(super) async fn apply_status<K, S>(
    api: &Api<K>,
    name: &str,
    resource_version: Option<&str>,
    status: &S,
) -> Result<Option<K>, Error>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "metadata": {"resourceVersion": resource_version},
        "status": status,
    });
    match api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await {
        Ok(obj) => Ok(Some(obj)),
        // Changed since it was read: the watch brings the new version, which re-runs it.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(None),
        // Deleted meanwhile.
        Err(kube::Error::Api(e)) if e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// How long a reconcile that found the cache behind its own last write (or lost a write
/// to a newer version) waits at most for the watch to bring the news.
pub(super) const STALE_RETRY: Duration = Duration::from_secs(5);
