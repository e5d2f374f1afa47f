//! The reconcile edges for an ImageRelease, top to bottom: read what the decision needs
//! (from the caches; the registry only to read), [`decide`], create and delete the
//! children it asks for, write the status with server-side apply when it changed (on the
//! resourceVersion it was decided on; it records a catalog write as its intent), perform
//! that catalog write, [`record`] its outcome, and record events.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{DeleteParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tracing::{Instrument, debug, info, info_span, warn};

use super::cache::Caches;
use super::context::{Context, Error, STALE_RETRY, apply_status};
use super::decide::{
    Child, Create, Decision, Effect, JobObservation, JobState, Observed, Outcome, decide, record,
    staging_digest_to_check, status_changed, version_claimed_by, wanted_attempt,
};
use super::observe::{observe_job, refused_creation};
use crate::api::{Catalog, CoreBuild, ImageRelease, ImageReleaseStatus, Phase};
use crate::catalog::{CatalogError, Registries};
use crate::lifecycle::Sibling;
use crate::privileges;
use crate::registry::Registry;
use crate::signing::KeyRef;
use crate::snapshot::Snapshot;
use crate::{catalog, failpoint, jobs, metrics, names};

/// Creates `obj`; whether it was created (false: it existed already, by its name).
async fn create<K>(api: &Api<K>, obj: &K) -> Result<bool, Error>
where
    K: Resource + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    match api.create(&PostParams::default(), obj).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(false),
        Err(e) => Err(e.into()),
    }
}

/// Resolves the Containerfile of a live CoreBuild. A blueprint ConfigMap is read from the
/// API server: once per attempt, so it is not worth a cache of every ConfigMap.
async fn blueprint(client: &Client, ns: &str, cb: &CoreBuild) -> Result<Result<String, String>, Error> {
    if let Some(text) = &cb.spec.blueprint.containerfile {
        return Ok(Ok(text.clone()));
    }
    let Some(r) = &cb.spec.blueprint.config_map_ref else {
        return Ok(Err("the CoreBuild's blueprint names neither a containerfile nor a configMapRef".into()));
    };
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
    Ok(match cms.get_opt(&r.name).await? {
        None => Err(format!("blueprint ConfigMap {} does not exist", r.name)),
        Some(cm) => match cm.data.as_ref().and_then(|d| d.get(&r.key)) {
            Some(text) if !text.trim().is_empty() => Ok(text.clone()),
            _ => Err(format!("blueprint ConfigMap {} has no (or an empty) key {}", r.name, r.key)),
        },
    })
}

/// The CoreBuild an attempt is made from, as the API server has it now rather than as the
/// cache last saw it: an edit applied together with the release (one GitOps commit, one
/// `kubectl apply`) must not lose the race between the CoreBuild and the ImageRelease
/// watches, or the attempt would be built from the spec before it. One read per attempt,
/// like the blueprint's. One that cannot be decoded stays unknown, as in the cache (its
/// watch reports it).
async fn core_build_now(ctx: &Context, ns: &str, name: &str) -> Result<Option<CoreBuild>, Error> {
    match Api::<CoreBuild>::namespaced(ctx.client.clone(), ns).get_opt(name).await {
        Ok(cb) => Ok(cb),
        Err(kube::Error::SerdeError(_)) => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// A Job of the release and what its pods (and, when it has none, its `FailedCreate`
/// events) say, from the caches.
fn observe_job_named(caches: &Caches, ns: &str, name: &str) -> Option<JobObservation> {
    let job = caches.job(ns, name)?;
    let mut observation = observe_job(&job, &caches.pods_of(ns, name));
    if observation.state == JobState::Running && !observation.has_pod {
        // A pod refused at creation (Pod Security admission, a quota) exists only as the
        // Job controller's FailedCreate event.
        let uid = job.metadata.uid.clone().unwrap_or_default();
        observation.blocked = refused_creation(&caches.failed_creates_of(ns, name, &uid));
    }
    Some(observation)
}

/// Runs `op` against the catalog's registry (with the credentials of its Secret), or says
/// why the registry cannot be used. The outer error is the API server's.
async fn with_registry<T, F, Fut>(
    registries: &Registries,
    ns: &str,
    catalog: &Catalog,
    op: F,
) -> Result<Result<T, CatalogError>, Error>
where
    F: FnOnce(Arc<Registry>) -> Fut,
    Fut: Future<Output = Result<T, CatalogError>>,
{
    Ok(match registries.get(ns, catalog).await? {
        Ok(registry) => op(registry).await,
        Err(e) => Err(e),
    })
}

/// Gathers what [`decide`] needs for `release`, from the caches (and the registry, when
/// the phase needs it; the API server, for the CoreBuild and blueprint a new attempt is
/// made from).
async fn observe(ctx: &Context, ns: &str, release: &ImageRelease) -> Result<Observed, Error> {
    let caches = &ctx.caches;
    let name = release.name_any();
    let (attempt, starting) = wanted_attempt(release);
    let mut observed = Observed::default();
    let mut fresh_attempt = false;
    match caches.snapshot(ns, &names::snapshot(&name, attempt)) {
        Some(cm) => {
            observed.snapshot = Some(Snapshot::from_config_map(&cm));
            observed.snapshot_stored = true;
        }
        None if starting => {
            let others = caches.releases_of(ns, &release.spec.core_build);
            observed.version_claimed_by = version_claimed_by(release, others.iter().map(|r| &**r)).map(String::from);
            if observed.version_claimed_by.is_some() {
                // Deleting the owner re-runs the releases waiting for its version.
                return Ok(observed);
            }
            if let Some(cb) = core_build_now(ctx, ns, &release.spec.core_build).await? {
                observed.core_build_exists = true;
                let spec = match crate::snapshot::release_base(&cb.spec, release) {
                    Ok(spec) => spec,
                    Err(why) => {
                        observed.base_refused = Some(why);
                        return Ok(observed);
                    }
                };
                let text = blueprint(&ctx.client, ns, &cb).await?;
                if let Ok(containerfile) = &text {
                    observed.snapshot = Some(Ok(Snapshot {
                        name: names::snapshot(&name, attempt),
                        attempt,
                        core_build_generation: cb.metadata.generation.unwrap_or_default(),
                        builder_image: crate::snapshot::builder_image(&spec, &ctx.pods.builder_image).to_string(),
                        spec,
                        containerfile: containerfile.clone(),
                        user_namespace: ctx.pods.user_namespaced_builders,
                    }));
                }
                observed.blueprint = Some(text);
            }
            fresh_attempt = true;
        }
        None => {}
    }
    if let Some(Ok(snap)) = &observed.snapshot {
        observed.privileges_refused =
            privileges::refusal(&snap.spec, &ctx.pods.privileges, snap.user_namespace, &ctx.pods.builder_image);
    }
    if fresh_attempt {
        // Nothing of an attempt without a stored snapshot exists yet: no Job to observe.
        return Ok(observed);
    }
    observed.build_job = observe_job_named(caches, ns, &names::build_job(&name, attempt));
    observed.test_job = observe_job_named(caches, ns, &names::test_job(&name, attempt));
    observed.keep_attempts = ctx.pods.keep_attempts;
    for earlier in 1..attempt {
        let snapshot = names::snapshot(&name, earlier);
        if caches.snapshot(ns, &snapshot).is_some() {
            observed.old_children.push((earlier, Child::Snapshot(snapshot)));
        }
        for job in [names::build_job(&name, earlier), names::test_job(&name, earlier)] {
            if caches.job(ns, &job).is_some() {
                observed.old_children.push((earlier, Child::Job(job)));
            }
        }
    }

    // The registry is the one the attempt was made for, from its snapshot; without one
    // (deleted by someone) nothing is done in the registry, and the lifecycle goes on by
    // the CoreBuild's current policy.
    let snapshot = match &observed.snapshot {
        Some(Ok(snap)) => Some(snap.clone()),
        _ => None,
    };
    let catalog = snapshot.as_ref().map(|s| &s.spec.catalog);
    if let Some(catalog) = catalog
        && let Some(digest) = staging_digest_to_check(release, observed.build_job.as_ref())
    {
        let reference = format!("{}@{digest}", catalog.staging_repository);
        observed.staging_check = Some(
            with_registry(&ctx.registries, ns, catalog, |r| async move { Ok(r.image_config(&reference).await?) })
                .await?,
        );
    }
    let phase = release.status.as_ref().and_then(|s| s.phase);
    if !matches!(phase, Some(Phase::Testing | Phase::Verified | Phase::Published | Phase::Deprecated | Phase::Retired))
    {
        return Ok(observed);
    }
    // From the end of the test on: the siblings the contract is compared with and the
    // lifecycle is decided by, the policy, and where the channels point.
    let digest = release.status.as_ref().and_then(|s| s.digest.clone());
    let mut others = caches.releases_of(ns, &release.spec.core_build);
    others.retain(|r| r.metadata.name != release.metadata.name);
    observed.retired_on_digest = others
        .iter()
        .filter(|r| {
            let st = r.status.as_ref();
            st.and_then(|s| s.digest.clone()) == digest && st.and_then(|s| s.phase) == Some(Phase::Retired)
        })
        .map(|r| r.spec.version.clone())
        .collect();
    observed.siblings = others.iter().filter_map(|r| Sibling::of(r)).collect();
    // The key is a publication's policy, like the lifecycle: the CoreBuild's as it is
    // now (a key configured while a release waits at Verified signs it).
    let cb = caches.core_build(ns, &release.spec.core_build);
    let spec = cb.as_ref().map(|cb| &cb.spec).or(snapshot.as_ref().map(|s| &s.spec));
    observed.signing_key = spec
        .and_then(|s| s.catalog.signing_key_secret.as_ref())
        .map(|s| KeyRef { namespace: ns.to_string(), name: s.name.clone() })
        .or_else(|| ctx.keys.default_key().cloned());
    if let Some(cb) = cb {
        observed.policy = cb.spec.lifecycle.clone();
        observed.channels = cb
            .status
            .iter()
            .flat_map(|s| s.channels.iter())
            .filter(|c| c.version == release.spec.version)
            .map(|c| c.name.clone())
            .collect();
    }
    Ok(observed)
}

/// Performs a catalog write the decision asked for (and recorded as its intent).
async fn perform(ctx: &Context, ns: &str, effect: &Effect) -> Result<Outcome, Error> {
    Ok(match effect {
        Effect::Publish { catalog, digest, version, signing } => {
            Outcome::Published(match ctx.registries.get(ns, catalog).await? {
                Ok(r) => catalog::publish_signed(&r, &ctx.keys, catalog, digest, version, signing.as_ref()).await?,
                Err(e) => Err(e),
            })
        }
        Effect::DeleteVersionTag { catalog, digest, version, going_too } => Outcome::TagDeletion(
            with_registry(&ctx.registries, ns, catalog, |r| async move {
                catalog::delete_version_tag(&r, catalog, digest, version, going_too).await
            })
            .await?,
        ),
    })
}

/// How long one reconcile may take. Every request it makes has a timeout of its own;
/// this bounds the sum (a registry copy of many layers, retried).
pub const RECONCILE_TIMEOUT: Duration = Duration::from_secs(300);

/// Reconciles one ImageRelease.
pub async fn reconcile(release: Arc<ImageRelease>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = metrics::ReconcileTimer::start("imagerelease");
    let ns = release.namespace().ok_or(Error::NoNamespace)?;
    let name = release.name_any();
    let span = info_span!("reconcile", namespace = %ns, name = %name);
    async move {
        if release.metadata.deletion_timestamp.is_some() {
            // Jobs and ConfigMaps go with it through their owner references.
            return Ok(Action::await_change());
        }
        ctx.caches.ready().await;
        let _running = ctx.health.reconciling(format!("ImageRelease {ns}/{name}"));
        // The cache may be behind this controller's own last write (a Job event can come
        // before the event of that write): never decide on an older phase than the one
        // written last.
        let rv = release.metadata.resource_version.as_deref();
        if !ctx.releases_written.met(&ns, &name, rv, release.status.as_ref()) {
            debug!("the cache is behind the last status written; waiting for it");
            return Ok(Action::requeue(STALE_RETRY));
        }
        let action = tokio::time::timeout(RECONCILE_TIMEOUT, reconcile_once(&release, &ctx, &ns, &name))
            .await
            .map_err(|_| Error::TimedOut(RECONCILE_TIMEOUT))??;
        ctx.failures.lock().map(|mut f| f.remove(&ObjectRef::from_obj(&*release))).ok();
        Ok(action)
    }
    .instrument(span)
    .await
}

async fn reconcile_once(release: &ImageRelease, ctx: &Context, ns: &str, name: &str) -> Result<Action, Error> {
    let client = &ctx.client;
    let observed = observe(ctx, ns, release).await?;
    let now = Time(jiff::Timestamp::now());
    let decision = decide(release, &observed, &now);

    for child in &decision.create {
        match child {
            Create::Snapshot(snap) => {
                let cms: Api<ConfigMap> = Api::namespaced(client.clone(), ns);
                if !create(&cms, &snap.to_config_map(release)).await? {
                    // Taken by an earlier run, maybe from another CoreBuild generation: the
                    // attempt starts from the stored one, which its watch event brings.
                    info!(snapshot = %snap.name, "snapshot exists already; starting from it");
                    return Ok(Action::requeue(STALE_RETRY));
                }
                info!(snapshot = %snap.name, "snapshot created");
                failpoint::hit("snapshot-created").await;
            }
            Create::BuildJob(snap) => {
                let job = jobs::build_job(release, snap);
                if create(&Api::<Job>::namespaced(client.clone(), ns), &job).await? {
                    info!(job = %job.name_any(), "build Job created");
                    failpoint::hit("build-job-created").await;
                }
            }
            Create::TestJob(snap, image) => {
                let user = decision.status.image_config.as_ref().and_then(|c| c.user.as_deref());
                let job = jobs::test_job(release, snap, image, user);
                if create(&Api::<Job>::namespaced(client.clone(), ns), &job).await? {
                    info!(job = %job.name_any(), "test Job created");
                    failpoint::hit("test-job-created").await;
                }
            }
        }
    }

    for child in &decision.delete {
        let deleted = match child {
            Child::Snapshot(name) => Api::<ConfigMap>::namespaced(client.clone(), ns)
                .delete(name, &DeleteParams::default())
                .await
                .map(|_| ()),
            Child::Job(name) => {
                Api::<Job>::namespaced(client.clone(), ns).delete(name, &DeleteParams::background()).await.map(|_| ())
            }
        };
        match deleted {
            Ok(()) => info!(child = ?child, "deleted a child of an earlier attempt"),
            Err(kube::Error::Api(e)) if e.code == 404 => {}
            Err(e) => return Err(e.into()),
        }
    }

    // The status first: it records the catalog write (if any) as an intent, on the
    // condition that the release is still the version it was decided on.
    let Some(current) = write_status(ctx, release, &decision, ns, name).await? else {
        debug!("the release changed since it was read; deciding again on the new version");
        return Ok(Action::requeue(STALE_RETRY));
    };
    tell(ctx, release, &decision).await;
    let mut requeue = decision.requeue_after;
    if let Some(effect) = &decision.effect {
        let outcome = perform(ctx, ns, effect).await?;
        let recorded = record(&current, &observed, &outcome, &Time(jiff::Timestamp::now()));
        if write_status(ctx, &current, &recorded, ns, name).await?.is_none() {
            // The intent stays recorded: the next run performs it again.
            return Ok(Action::requeue(STALE_RETRY));
        }
        tell(ctx, release, &recorded).await;
        requeue = recorded.requeue_after;
    }
    Ok(match requeue {
        Some(after) => Action::requeue(after),
        None => Action::await_change(),
    })
}

/// Writes the decided status if it changed, on the condition that `release` is still at
/// the resourceVersion it was decided on; the release as it now stands, or `None` when
/// it changed meanwhile.
async fn write_status(
    ctx: &Context,
    release: &ImageRelease,
    decision: &Decision,
    ns: &str,
    name: &str,
) -> Result<Option<ImageRelease>, Error> {
    if !status_changed(release.status.as_ref(), &decision.status) {
        return Ok(Some(release.clone()));
    }
    let api: Api<ImageRelease> = Api::namespaced(ctx.client.clone(), ns);
    let rv = release.metadata.resource_version.as_deref();
    let Some(written) = apply_status(&api, name, rv, &decision.status).await? else {
        return Ok(None);
    };
    ctx.releases_written.wrote(ns, name, written.metadata.resource_version.clone(), written.status.clone());
    let old = release.status.as_ref().and_then(|s| s.phase);
    record_metrics(release, &decision.status);
    if old != decision.status.phase {
        info!(from = ?old, to = ?decision.status.phase, "phase changed");
        let phase = decision.status.phase.map(|p| p.as_str()).unwrap_or_default();
        failpoint::hit(&format!("status-written:{phase}")).await;
    } else {
        debug!("status updated");
    }
    Ok(Some(written))
}

/// Records the decision's events on the release.
async fn tell(ctx: &Context, release: &ImageRelease, decision: &Decision) {
    let reference = release.object_ref(&());
    for note in &decision.notes {
        if ctx.record_event(&reference, note.warning, &note.reason, &note.message).await {
            failpoint::hit("event-recorded").await;
        }
    }
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

/// Backs off exponentially per release on errors: 1 s, 2 s, 4 s … up to 256 s.
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
