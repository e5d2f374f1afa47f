//! The reconcile edges for an ImageRelease: read what the decision needs, create the one
//! child it asks for (read before create), write status with server-side apply when it
//! changed, record events.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug, info, info_span, warn};

use super::decide::{
    CatalogError, Create, JobState, Observed, decide, staging_digest_to_check, status_changed, version_claimed_by,
    wanted_attempt, wants_publication, wants_tag_deletion,
};
use super::observe::{observe_job, refused_creation};
use crate::api::{Catalog, CoreBuild, FIELD_MANAGER, ImageRelease, ImageReleaseStatus, Phase};
use crate::lifecycle::Sibling;
use crate::privileges::{self, Privileges};
use crate::registry::Registry;
use crate::snapshot::Snapshot;
use crate::{catalog, jobs, metrics, names};

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
}

impl Error {
    /// A bounded label for metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(_)) => "api",
            Error::Kube(_) => "client",
            Error::Serialize(_) => "serialize",
            Error::NoNamespace => "no_namespace",
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
}

impl Default for PodConfig {
    fn default() -> Self {
        Self {
            builder_image: jobs::DEFAULT_BUILDER_IMAGE.into(),
            privileges: Privileges::default(),
            user_namespaced_builders: false,
        }
    }
}

/// Shared state of the reconcilers.
pub struct Context {
    client: Client,
    recorder: Recorder,
    pods: PodConfig,
    /// Consecutive failures per release, for exponential backoff.
    failures: Mutex<HashMap<ObjectRef<ImageRelease>, u32>>,
}

impl Context {
    /// A context for `client`, recording events with `recorder`, creating pods by `pods`.
    pub fn new(client: Client, recorder: Recorder, pods: PodConfig) -> Self {
        Self { client, recorder, pods, failures: Mutex::default() }
    }

    /// The Kubernetes client.
    pub fn client(&self) -> Client {
        self.client.clone()
    }
}

/// Creates `obj` unless an object of that name exists already.
async fn create_if_absent<K>(api: &Api<K>, obj: &K) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let name = obj.meta().name.clone().unwrap_or_default();
    if api.get_opt(&name).await?.is_some() {
        return Ok(false);
    }
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Resolves the Containerfile of a live CoreBuild.
async fn blueprint(cms: &Api<ConfigMap>, cb: &CoreBuild) -> Result<Result<String, String>, Error> {
    if let Some(text) = &cb.spec.blueprint.containerfile {
        return Ok(Ok(text.clone()));
    }
    let Some(r) = &cb.spec.blueprint.config_map_ref else {
        return Ok(Err("the CoreBuild's blueprint names neither a containerfile nor a configMapRef".into()));
    };
    Ok(match cms.get_opt(&r.name).await? {
        None => Err(format!("blueprint ConfigMap {} does not exist", r.name)),
        Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
            Some(text) if !text.trim().is_empty() => Ok(text.clone()),
            _ => Err(format!("blueprint ConfigMap {} has no (or an empty) key {}", r.name, r.key)),
        },
    })
}

async fn observe_job_named(
    client: &Client,
    ns: &str,
    name: &str,
) -> Result<Option<super::decide::JobObservation>, Error> {
    let Some(job) = Api::<Job>::namespaced(client.clone(), ns).get_opt(name).await? else { return Ok(None) };
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    // The pods carry the result of a finished Job, and why a running one does not start.
    let pod_list =
        pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={name}"))).await?.items;
    let mut observation = observe_job(&job, &pod_list);
    if observation.state == JobState::Running && !observation.has_pod {
        // A pod refused at creation (Pod Security admission, a quota) exists only as the
        // Job controller's FailedCreate event.
        let uid = job.metadata.uid.clone().unwrap_or_default();
        let selector = format!("involvedObject.kind=Job,involvedObject.uid={uid},reason=FailedCreate");
        let events: Api<CoreEvent> = Api::namespaced(client.clone(), ns);
        observation.blocked = refused_creation(&events.list(&ListParams::default().fields(&selector)).await?.items);
    }
    Ok(Some(observation))
}

/// The releases of CoreBuild `core_build` in `ns`, read fresh from the API server.
pub(super) async fn releases_of(client: &Client, ns: &str, core_build: &str) -> Result<Vec<ImageRelease>, Error> {
    let all: Api<ImageRelease> = Api::namespaced(client.clone(), ns);
    Ok(all.list(&ListParams::default()).await?.items.into_iter().filter(|r| r.spec.core_build == core_build).collect())
}

/// Runs `op` against the catalog's registry (with the credentials of its Secret), or says
/// why the registry cannot be used. The outer error is the API server's.
async fn with_registry<T, F, Fut>(
    client: &Client,
    ns: &str,
    catalog: &Catalog,
    op: F,
) -> Result<Result<T, CatalogError>, Error>
where
    F: FnOnce(Registry) -> Fut,
    Fut: Future<Output = Result<T, CatalogError>>,
{
    Ok(match catalog::registry(client, ns, catalog).await? {
        Ok(registry) => op(registry).await,
        Err(e) => Err(e),
    })
}

/// Gathers what [`decide`] needs for `release`.
async fn observe(client: &Client, pods: &PodConfig, ns: &str, release: &ImageRelease) -> Result<Observed, Error> {
    let name = release.name_any();
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    let (attempt, starting) = wanted_attempt(release);
    let mut observed = Observed::default();
    match cms.get_opt(&names::snapshot(&name, attempt)).await? {
        Some(cm) => {
            observed.snapshot = Some(Snapshot::from_config_map(&cm));
            observed.snapshot_stored = true;
        }
        None if starting => {
            let others = releases_of(client, ns, &release.spec.core_build).await?;
            observed.version_claimed_by = version_claimed_by(release, &others).map(String::from);
            if observed.version_claimed_by.is_some() {
                // Deleting the owner changes the CoreBuild's release counts; that status
                // write re-runs every release of the CoreBuild, this one included.
                return Ok(observed);
            }
            let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), ns);
            if let Some(cb) = cbs.get_opt(&release.spec.core_build).await? {
                observed.core_build_exists = true;
                let text = blueprint(&cms, &cb).await?;
                if let Ok(containerfile) = &text {
                    observed.snapshot = Some(Ok(Snapshot {
                        name: names::snapshot(&name, attempt),
                        attempt,
                        core_build_generation: cb.metadata.generation.unwrap_or_default(),
                        spec: cb.spec.clone(),
                        containerfile: containerfile.clone(),
                        builder_image: jobs::builder_image(&cb.spec, &pods.builder_image).to_string(),
                        user_namespace: pods.user_namespaced_builders,
                    }));
                }
                observed.blueprint = Some(text);
            }
            return Ok(observed);
        }
        None => {}
    }
    observed.build_job = observe_job_named(client, ns, &names::build_job(&name, attempt)).await?;
    observed.test_job = observe_job_named(client, ns, &names::test_job(&name, attempt)).await?;

    let Some(Ok(snap)) = &observed.snapshot else { return Ok(observed) };
    observed.privileges_refused = privileges::refusal(&snap.spec, &pods.privileges, snap.user_namespace);
    let catalog = &snap.spec.catalog;
    if let Some(digest) = staging_digest_to_check(release, observed.build_job.as_ref()) {
        let reference = format!("{}@{digest}", catalog.staging_repository);
        observed.staging_check =
            Some(with_registry(client, ns, catalog, |r| async move { Ok(r.image_config(&reference).await?) }).await?);
    }
    let phase = release.status.as_ref().and_then(|s| s.phase);
    let mut shared_digest = false;
    if matches!(phase, Some(Phase::Verified | Phase::Published | Phase::Deprecated | Phase::Retired)) {
        let mut others = releases_of(client, ns, &release.spec.core_build).await?;
        others.retain(|r| r.metadata.name != release.metadata.name);
        let digest = release.status.as_ref().and_then(|s| s.digest.clone());
        shared_digest = others.iter().any(|r| {
            let st = r.status.as_ref();
            st.and_then(|s| s.digest.clone()) == digest && st.and_then(|s| s.phase) != Some(Phase::Retired)
        });
        observed.siblings = others.iter().filter_map(Sibling::of).collect();
    }
    if wants_publication(release, &observed.siblings)
        && let Some(digest) = release.status.as_ref().and_then(|s| s.digest.clone())
    {
        let version = &release.spec.version;
        observed.publication = Some(
            with_registry(
                client,
                ns,
                catalog,
                |r| async move { catalog::publish(&r, catalog, &digest, version).await },
            )
            .await?,
        );
    }
    let published = observed.publication.as_ref().is_some_and(|p| p.is_ok())
        || matches!(phase, Some(Phase::Published | Phase::Deprecated | Phase::Retired));
    if published {
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), ns);
        if let Some(cb) = cbs.get_opt(&release.spec.core_build).await? {
            observed.policy = cb.spec.lifecycle.clone();
            observed.channels = cb
                .status
                .map(|s| s.channels)
                .unwrap_or_default()
                .into_iter()
                .filter(|c| c.version == release.spec.version)
                .map(|c| c.name)
                .collect();
        }
    }
    if wants_tag_deletion(release, observed.policy.as_ref(), shared_digest)
        && let Some(digest) = release.status.as_ref().and_then(|s| s.digest.clone())
    {
        observed.tag_deletion = Some(
            with_registry(client, ns, catalog, |r| async move {
                Ok(r.delete_manifest(&catalog.repository, &digest).await?)
            })
            .await?,
        );
    }
    Ok(observed)
}

async fn patch_status(api: &Api<ImageRelease>, name: &str, status: &ImageReleaseStatus) -> Result<(), Error> {
    let patch = serde_json::json!({
        "apiVersion": "coreforge.dev/v1alpha1",
        "kind": "ImageRelease",
        "status": status,
    });
    api.patch_status(name, &PatchParams::apply(FIELD_MANAGER).force(), &Patch::Apply(&patch)).await?;
    Ok(())
}

/// Reconciles one ImageRelease.
pub async fn reconcile(release: Arc<ImageRelease>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = metrics::ReconcileTimer::start("imagerelease");
    let ns = release.namespace().ok_or(Error::NoNamespace)?;
    let name = release.name_any();
    let span = info_span!("reconcile", namespace = %ns, name = %name);
    async move {
        // The cache says only *that* something changed, and may be behind: a CoreBuild or Job
        // event can arrive before the event of this release's own last status write. Decide
        // on a fresh read, so nothing (publishing a tag, deleting one) acts on an old phase.
        let api: Api<ImageRelease> = Api::namespaced(ctx.client.clone(), &ns);
        let Some(release) = api.get_opt(&name).await? else { return Ok(Action::await_change()) };
        if release.metadata.deletion_timestamp.is_some() {
            // Jobs and ConfigMaps go with it through their owner references.
            return Ok(Action::await_change());
        }
        let action = reconcile_once(&release, &ctx, &ns, &name).await?;
        ctx.failures.lock().map(|mut f| f.remove(&ObjectRef::from_obj(&release))).ok();
        Ok(action)
    }
    .instrument(span)
    .await
}

async fn reconcile_once(release: &ImageRelease, ctx: &Context, ns: &str, name: &str) -> Result<Action, Error> {
    let client = &ctx.client;
    let observed = observe(client, &ctx.pods, ns, release).await?;
    let now = Time(jiff::Timestamp::now());
    let decision = decide(release, &observed, &now);

    let mut requeue = decision.requeue_after;
    match &decision.create {
        Some(Create::Snapshot(snap)) => {
            let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
            if create_if_absent(&cms, &snap.to_config_map(release)).await? {
                info!(snapshot = %snap.name, "snapshot created");
            }
            // The attempt starts from the stored snapshot: look again right away.
            requeue = Some(Duration::ZERO);
        }
        Some(Create::BuildJob(snap)) => {
            let api: Api<Job> = Api::namespaced(client.clone(), ns);
            let job = jobs::build_job(release, snap);
            if create_if_absent(&api, &job).await? {
                info!(job = %job.name_any(), "build Job created");
            }
        }
        Some(Create::TestJob(snap, image)) => {
            let api: Api<Job> = Api::namespaced(client.clone(), ns);
            let user = decision.status.image_config.as_ref().and_then(|c| c.user.as_deref());
            let job = jobs::test_job(release, snap, image, user);
            if create_if_absent(&api, &job).await? {
                info!(job = %job.name_any(), "test Job created");
            }
        }
        None => {}
    }

    if status_changed(release.status.as_ref(), &decision.status) {
        let api: Api<ImageRelease> = Api::namespaced(client.clone(), ns);
        patch_status(&api, name, &decision.status).await?;
        let old = release.status.as_ref().and_then(|s| s.phase);
        if old != decision.status.phase {
            info!(from = ?old, to = ?decision.status.phase, "phase changed");
        } else {
            debug!("status updated");
        }
        record_metrics(release, &decision.status);
    }

    let reference = release.object_ref(&());
    for note in &decision.notes {
        let event = Event {
            type_: if note.warning { EventType::Warning } else { EventType::Normal },
            reason: note.reason.clone(),
            note: Some(note.message.chars().take(1000).collect()),
            action: note.reason.clone(),
            secondary: None,
        };
        if let Err(e) = ctx.recorder.publish(&event, &reference).await {
            // An event is worth a warning in the log, not a failed reconcile.
            warn!(error = %e, reason = %note.reason, "could not record event");
        }
    }
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Counts what a status change says happened: a phase transition, a finished step, a
/// publication. Called only after the change was written, so nothing is counted twice.
fn record_metrics(release: &ImageRelease, new: &ImageReleaseStatus) {
    let m = &*metrics::METRICS;
    let old = release.status.clone().unwrap_or_default();
    let cb = release.spec.core_build.as_str();
    if let Some(to) = new.phase
        && old.phase != Some(to)
    {
        let from = old.phase.map(|p| p.as_str()).unwrap_or("None");
        m.transitions.with_label_values(&[from, to.as_str()]).inc();
    }
    let steps =
        [("build", &old.build, &new.build, &m.build_duration), ("test", &old.test, &new.test, &m.test_duration)];
    for (step, before, after, histogram) in steps {
        let Some(after) = after else { continue };
        let finished_now = after.outcome.is_some()
            && before.as_ref().is_none_or(|b| b.outcome.is_none() || b.job_name != after.job_name);
        if !finished_now {
            continue;
        }
        let outcome = if after.outcome.as_deref() == Some("Succeeded") { "succeeded" } else { "failed" };
        m.step_outcomes.with_label_values(&[cb, step, outcome]).inc();
        if let (Some(start), Some(end)) = (&after.started_at, &after.finished_at) {
            histogram.with_label_values(&[cb]).observe(end.0.duration_since(start.0).as_secs_f64().max(0.0));
        }
    }
    if old.published_at.is_none()
        && let (Some(published), Some(created)) = (&new.published_at, &release.metadata.creation_timestamp)
    {
        m.time_to_publish
            .with_label_values(&[cb])
            .observe(published.0.duration_since(created.0).as_secs_f64().max(0.0));
    }
}

/// Backs off exponentially per release on errors: 1 s, 2 s, 4 s … up to 5 minutes.
pub fn error_policy(release: Arc<ImageRelease>, error: &Error, ctx: Arc<Context>) -> Action {
    let n = ctx
        .failures
        .lock()
        .map(|mut f| {
            let n = f.entry(ObjectRef::from_obj(&*release)).or_insert(0);
            *n = n.saturating_add(1);
            *n
        })
        .unwrap_or(1);
    metrics::reconcile_error("imagerelease", error.kind());
    let delay = Duration::from_secs(1u64 << n.min(9).saturating_sub(1)).min(Duration::from_secs(300));
    warn!(namespace = ?release.namespace(), name = %release.name_any(), error = %error, kind = error.kind(), retry_in = ?delay, "reconcile failed");
    Action::requeue(delay)
}
