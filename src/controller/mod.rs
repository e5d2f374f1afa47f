//! The controller daemon: kube-runtime wiring of the ImageRelease and CoreBuild
//! controllers, per watched namespace (or cluster-wide), plus the HTTP server.
//!
//! - [`decide`]: the pure decision core (what happens next to a release);
//! - [`observe`]: Jobs and pods turned into observations (pure);
//! - [`triggers`]: which objects a change re-runs (pure);
//! - [`cache`]: the watched objects every reconcile reads, and the expectations that
//!   keep it from deciding on a cache older than its own writes;
//! - [`release`]: the ImageRelease reconcile edges (read, create, patch status, events);
//! - [`corebuild`]: the CoreBuild reconciler (release counts, channel tags).

pub mod cache;
pub mod context;
pub mod corebuild;
pub mod decide;
pub mod decide_base;
mod decide_corebuild;
pub mod decode;
pub mod observe;
pub mod release;
pub mod triggers;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{Stream, StreamExt, TryStreamExt, future};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Event as CoreEvent, Pod};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::{self, Controller};
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::{info, warn};

use self::cache::{Cache, Caches, Index, JOB_NAME_LABEL, trim_job, trim_meta, trim_pod};
use crate::api::{CoreBuild, ImageRelease, LABEL_RELEASE};
use crate::catalog::Registries;
use crate::health::{Health, Role};
use crate::http;
use crate::signing::Keys;

/// Settings of the controller daemon.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Watch only these namespaces (all when empty).
    pub namespaces: Vec<String>,
    /// Address of the HTTP server (`/metrics`, `/livez`, `/readyz`).
    pub http_addr: Option<SocketAddr>,
    /// Leader election; `None` reconciles right away (a single replica).
    pub election: Option<crate::leader::Election>,
    /// What build and test pods get and may ask for.
    pub pods: context::PodConfig,
    /// How many releases (and, apart, CoreBuilds) are reconciled at once, per watched
    /// namespace.
    pub concurrency: u16,
    /// What every write passes: open, or opened by the leader election while this
    /// replica leads.
    pub fence: crate::fence::Fence,
    /// How long a reconcile may run before `/livez` reports the controller wedged.
    pub stall_after: std::time::Duration,
    /// Serve the consumers' catalog (`/catalog`, `/api/v1/catalog`) on the HTTP port.
    pub catalog: bool,
    /// The Secret of the key releases are signed with when their CoreBuild names none.
    pub signing_key: Option<crate::signing::KeyRef>,
}

/// Default of [`Settings::stall_after`]: twice [`release::RECONCILE_TIMEOUT`], so only a
/// reconcile its own timeout cannot stop counts.
pub const DEFAULT_STALL_AFTER: std::time::Duration = std::time::Duration::from_secs(600);

impl Default for Settings {
    fn default() -> Self {
        Self {
            namespaces: Vec::new(),
            http_addr: None,
            election: None,
            pods: context::PodConfig::default(),
            concurrency: DEFAULT_CONCURRENCY,
            fence: crate::fence::Fence::open(),
            stall_after: DEFAULT_STALL_AFTER,
            catalog: true,
            signing_key: None,
        }
    }
}

/// Default of [`Settings::concurrency`].
pub const DEFAULT_CONCURRENCY: u16 = 16;

/// Resolves once SIGTERM or Ctrl-C arrives; cloneable, so every part stops on the same signal.
pub type Shutdown = Shared<BoxFuture<'static, ()>>;

/// How long the reconciles in flight at shutdown may take to finish before the process
/// stops without them (a Pod's default termination grace period is 30 s).
pub const SHUTDOWN_GRACE: std::time::Duration = std::time::Duration::from_secs(5);

/// The process's shutdown signal.
pub fn shutdown_signal() -> Shutdown {
    async {
        #[cfg(unix)]
        {
            let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(e) => {
                    warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops the controller");
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
            tokio::select! {
                _ = term.recv() => info!("SIGTERM received; shutting down"),
                _ = tokio::signal::ctrl_c() => info!("interrupt received; shutting down"),
            }
        }
        #[cfg(not(unix))]
        {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
    .boxed()
    .shared()
}

fn api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Serves HTTP, wins the election (if any) with `lease_client`, and runs the controllers
/// with `client` until `shutdown` resolves; then gives the Lease up. Losing the lease ends
/// the process with an error, so that it restarts as a follower.
///
/// The Lease has a client of its own, outside the rate limit of the controllers' one: a
/// renewal never waits behind a burst of reconciles.
pub async fn run(client: Client, lease_client: Client, settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let health = Health::new(settings.stall_after);
    let server = match settings.http_addr {
        Some(addr) => {
            let scope = match settings.namespaces.as_slice() {
                [] => crate::browse::Scope::All,
                namespaces => crate::browse::Scope::Namespaces(namespaces.to_vec()),
            };
            let catalog = settings.catalog.then(|| crate::browse::server::Pages::new(client.clone(), scope));
            tokio::spawn(http::serve(addr, health.clone(), catalog, shutdown.clone()))
        }
        None => tokio::spawn(future::ready(Ok(()))),
    };
    let mut candidate = match settings.election.clone() {
        None => None,
        Some(election) => {
            let mut candidate =
                crate::leader::Candidate::new(lease_client, election, settings.fence.clone(), health.clone());
            tokio::select! {
                _ = candidate.acquire() => {}
                _ = shutdown.clone() => return finish(server).await,
            }
            Some(candidate)
        }
    };
    health.set_role(Role::Leader);
    crate::metrics::METRICS.leader.set(1);
    let lost = async {
        match candidate.as_mut() {
            Some(candidate) => candidate.keep().await,
            None => future::pending().await,
        }
    };
    // On shutdown the controllers finish the reconciles in flight, for at most
    // SHUTDOWN_GRACE: one waiting on a cache that cannot fill (its watch failing) or on a
    // request that does not return must not keep the process from stopping.
    let grace = async {
        shutdown.clone().await;
        tokio::time::sleep(SHUTDOWN_GRACE).await;
    };
    let stopped = tokio::select! {
        result = run_controllers(client, &settings, &health, shutdown.clone()) => result,
        _ = grace => {
            warn!(grace = ?SHUTDOWN_GRACE, "reconciles still running after the shutdown grace period; stopping without them");
            Ok(())
        }
        _ = lost => anyhow::bail!("lost the leader lease; exiting so that a fresh start follows the new leader"),
    };
    // The controllers have stopped (on shutdown, or on an error that ends the process):
    // nothing of ours acts any more, so a follower may take over at once.
    if let Some(candidate) = candidate.as_mut() {
        candidate.release().await;
    }
    stopped?;
    finish(server).await
}

async fn finish(server: tokio::task::JoinHandle<anyhow::Result<()>>) -> anyhow::Result<()> {
    // The HTTP server stops at the same signal; a client holding a request open gets the
    // same grace period as the reconciles.
    match tokio::time::timeout(SHUTDOWN_GRACE, server).await {
        Ok(served) => served??,
        Err(_) => warn!("HTTP requests still open after the shutdown grace period; stopping without them"),
    }
    info!("controller stopped");
    Ok(())
}

async fn run_controllers(
    client: Client,
    settings: &Settings,
    health: &Arc<Health>,
    shutdown: Shutdown,
) -> anyhow::Result<()> {
    let reporter = Reporter { controller: "coreforge".into(), instance: std::env::var("POD_NAME").ok() };
    let recorder = Recorder::new(client.clone(), reporter);
    let registries = Arc::new(Registries::new(client.clone(), settings.fence.clone()));
    let keys = Arc::new(Keys::new(client.clone(), settings.signing_key.clone()));
    let undecodable = Arc::new(decode::Undecodable::new(recorder.clone()));
    let scopes: Vec<Option<&str>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let mut caches = Vec::new();
    let mut runs = Vec::new();
    for scope in scopes {
        let shared = Common {
            recorder: recorder.clone(),
            registries: registries.clone(),
            keys: keys.clone(),
            undecodable: undecodable.clone(),
            health: health.clone(),
        };
        let (cache, run) = scope_controllers(&client, scope, settings, shared, shutdown.clone());
        caches.push(cache);
        runs.push(run);
    }
    let all = caches.clone();
    health.watch_caches(
        move || all.iter().all(Caches::is_ready),
        move || {
            let releases: Vec<_> = caches.iter().flat_map(|c| c.releases.store().state()).collect();
            crate::metrics::observe_releases(&releases, jiff::Timestamp::now());
            let core_builds: Vec<_> = caches.iter().flat_map(|c| c.core_builds.state()).collect();
            crate::metrics::observe_core_builds(&core_builds);
        },
    );
    future::join_all(runs).await;
    Ok(())
}

/// The watches of one scope, trimmed, reflected into the caches every reconcile reads, and
/// the two controllers fed by them: the caches (for readiness and metrics) and the
/// future that runs them.
fn scope_controllers(
    client: &Client,
    scope: Option<&str>,
    settings: &Settings,
    shared: Common,
    shutdown: Shutdown,
) -> (Caches, BoxFuture<'static, ()>) {
    let watch =
        Scope { client: client.clone(), namespace: scope.map(String::from), undecodable: shared.undecodable.clone() };
    let (release_store, release_writer) = reflector::store::<ImageRelease>();
    let (core_build_store, core_build_writer) = reflector::store::<CoreBuild>();
    let (job_store, job_writer) = reflector::store::<Job>();
    let (pod_store, pod_writer) = reflector::store::<Pod>();
    let (snapshot_store, snapshot_writer) = reflector::store::<ConfigMap>();
    let (event_store, event_writer) = reflector::store::<CoreEvent>();
    let caches = Caches::new(
        Index::new(release_store.clone(), |r| Some(r.spec.core_build.clone())),
        core_build_store.clone(),
        job_store.clone(),
        Index::new(pod_store, |p| p.labels().get(JOB_NAME_LABEL).cloned()),
        snapshot_store,
        Index::new(event_store, |e| e.involved_object.name.clone()),
    );
    let ctx = Arc::new(context::Context::new(
        client.clone(),
        shared.recorder,
        settings.pods.clone(),
        caches.clone(),
        shared.registries,
        shared.keys,
        shared.health,
    ));
    // Re-runs decided from the watch events (see `triggers`), for the other controller.
    let (rerun_core_build, core_build_reruns) = mpsc::unbounded::<ObjectRef<CoreBuild>>();
    let (rerun_release, release_reruns) = mpsc::unbounded::<ObjectRef<ImageRelease>>();
    let owned = watcher::Config::default().labels(LABEL_RELEASE);

    let releases = {
        let (ctx, rerun_release) = (ctx.clone(), rerun_release.clone());
        let trim = |r: &mut ImageRelease| trim_meta(&mut r.metadata);
        cached(&watch, watcher::Config::default(), release_writer, trim, &caches, Cache::Releases, {
            let caches = caches.clone();
            move |e| {
                on_release_event(e, &caches, &ctx, &rerun_core_build, &rerun_release);
                caches.releases.apply(e);
            }
        })
        .applied_objects()
    };
    let core_builds = {
        let trim = |c: &mut CoreBuild| trim_meta(&mut c.metadata);
        cached(&watch, watcher::Config::default(), core_build_writer, trim, &caches, Cache::CoreBuilds, {
            let (caches, ctx) = (caches.clone(), ctx.clone());
            move |e| on_core_build_event(e, &caches, &ctx, &rerun_release)
        })
        .applied_objects()
    };
    let jobs = cached(&watch, owned.clone(), job_writer, trim_job, &caches, Cache::Jobs, |_| {}).touched_objects();
    let pods = cached(&watch, owned.clone(), pod_writer, trim_pod, &caches, Cache::Pods, {
        let index = caches.pods.clone();
        move |e| index.apply(e)
    })
    .touched_objects();
    let trim = |c: &mut ConfigMap| trim_meta(&mut c.metadata);
    let snapshots = cached(&watch, owned, snapshot_writer, trim, &caches, Cache::Snapshots, |_| {}).touched_objects();
    // Metadata only, of the other ConfigMaps: a release waiting for its blueprint
    // ConfigMap starts when it appears.
    let blueprints = watcher(
        api::<PartialObjectMeta<ConfigMap>>(client, scope),
        watcher::Config::default().labels(&format!("!{LABEL_RELEASE}")),
    )
    .backoff(decode::WatchBackoff::new())
    .touched_objects();
    // Why a Job has no pod (refused by admission, a quota) is told only by these.
    let failed_creates = {
        let config = watcher::Config::default().fields("reason=FailedCreate,involvedObject.kind=Job");
        let trim = |e: &mut CoreEvent| trim_meta(&mut e.metadata);
        let index = caches.failed_creates.clone();
        cached(&watch, config, event_writer, trim, &caches, Cache::FailedCreates, move |e| index.apply(e))
            .touched_objects()
    };

    let config = controller::Config::default().concurrency(settings.concurrency);
    let waiting_for_blueprint = {
        let caches = caches.clone();
        move |cm: PartialObjectMeta<ConfigMap>| {
            let ns = cm.namespace().unwrap_or_default();
            let name = cm.name_any();
            caches
                .core_builds
                .state()
                .into_iter()
                .filter(|cb| cb.namespace().as_deref() == Some(ns.as_str()))
                .filter(|cb| cb.spec.blueprint.config_map_ref.as_ref().is_some_and(|r| r.name == name))
                .flat_map(|cb| caches.releases_of(&ns, &cb.name_any()))
                .filter(|r| decide::wanted_attempt(r).1)
                .map(|r| ObjectRef::from_obj(&*r))
                .collect::<Vec<_>>()
        }
    };
    let of_failed_create = move |e: CoreEvent| {
        let job = job_store.get(&ObjectRef::new(e.involved_object.name.as_deref()?).within(&e.namespace()?))?;
        release_of(&*job)
    };
    let release_run = Controller::for_stream(releases, release_store.clone())
        .with_config(config.clone())
        .trigger_backoff(decode::NoTriggerPause)
        .owns_stream(jobs)
        .watches_stream(pods, |pod| release_of(&pod))
        .watches_stream(snapshots, |cm| release_of(&cm))
        .watches_stream(blueprints, waiting_for_blueprint)
        .watches_stream(failed_creates, of_failed_create)
        .reconcile_on(release_reruns)
        .graceful_shutdown_on(shutdown.clone())
        .run(release::reconcile, release::error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(release = %obj, "reconciled"),
                Err(kube::runtime::controller::Error::ObjectNotFound(_)) => {}
                Err(kube::runtime::controller::Error::QueueError(e)) => {
                    warn!(error = %e, "a watch of releases or their children failed; retrying with backoff")
                }
                Err(e) => warn!(error = %e, "release reconcile failed"),
            }
        });

    let core_build_run = Controller::for_stream(core_builds, core_build_store)
        .with_config(config)
        .trigger_backoff(decode::NoTriggerPause)
        .reconcile_on(core_build_reruns)
        .graceful_shutdown_on(shutdown)
        .run(corebuild::reconcile, corebuild::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok(_) | Err(kube::runtime::controller::Error::ObjectNotFound(_)) => {}
                Err(kube::runtime::controller::Error::QueueError(e)) => {
                    warn!(error = %e, "the watch of CoreBuilds failed; retrying with backoff")
                }
                Err(e) => warn!(error = %e, "corebuild reconcile failed"),
            }
        });
    (caches, future::join(release_run, core_build_run).map(|_| ()).boxed())
}

/// The watch of one cache of `caches` (decoded object by object, see [`decode`]): its
/// objects trimmed by `trim`, each event followed by `also` (triggers, indexes), taken in
/// by the store, then by the cache's readiness.
fn cached<K>(
    scope: &Scope,
    config: watcher::Config,
    writer: reflector::store::Writer<K>,
    trim: impl FnMut(&mut K) + Send + 'static,
    caches: &Caches,
    which: Cache,
    mut also: impl FnMut(&watcher::Event<K>) + Send + 'static,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug + Send + Sync + 'static,
{
    let caches = caches.clone();
    decode::watch(&scope.client, scope.namespace.as_deref(), config, writer.as_reader(), scope.undecodable.clone())
        .modify(trim)
        .inspect_ok(move |e| also(e))
        .reflect(writer)
        // Only once the store holds the first list: a reconcile waiting for the caches
        // to be ready (on another worker thread) must not find them empty. Marked before
        // the store took the list, a restarted controller could find an attempt's
        // snapshot "gone" and fail the release.
        .inspect_ok(move |e| caches.follow(which, e))
}

/// What the controllers of every scope share.
struct Common {
    recorder: Recorder,
    registries: Arc<Registries>,
    keys: Arc<Keys>,
    undecodable: Arc<decode::Undecodable>,
    health: Arc<Health>,
}

/// What the watches of one scope share.
struct Scope {
    client: Client,
    /// The namespace watched; all when `None`.
    namespace: Option<String>,
    /// Where objects that do not decode are reported.
    undecodable: Arc<decode::Undecodable>,
}

/// The release an object of it (a pod, a snapshot, a Job) belongs to, by its label.
fn release_of<K: ResourceExt>(obj: &K) -> Option<ObjectRef<ImageRelease>> {
    Some(ObjectRef::new(obj.labels().get(LABEL_RELEASE)?).within(&obj.namespace()?))
}

/// The object of a watch event and whether it was deleted; `None` for the markers of a
/// relist.
fn changed<K>(event: &watcher::Event<K>) -> Option<(&K, bool)> {
    match event {
        watcher::Event::Apply(obj) | watcher::Event::InitApply(obj) => Some((obj, false)),
        watcher::Event::Delete(obj) => Some((obj, true)),
        watcher::Event::Init | watcher::Event::InitDone => None,
    }
}

/// Follows a release watch event (before the cache takes it in, so the cache still
/// holds the release as it was): re-runs what depends on the change, and forgets a
/// deleted release.
fn on_release_event(
    event: &watcher::Event<ImageRelease>,
    caches: &Caches,
    ctx: &context::Context,
    rerun_core_build: &mpsc::UnboundedSender<ObjectRef<CoreBuild>>,
    rerun_release: &mpsc::UnboundedSender<ObjectRef<ImageRelease>>,
) {
    let Some((new, deleted)) = changed(event) else { return };
    let ns = new.namespace().unwrap_or_default();
    let old = caches.releases.store().get(&ObjectRef::from_obj(new));
    let core_build = caches.core_build(&ns, &new.spec.core_build);
    let max_supported =
        core_build.as_ref().and_then(|cb| cb.spec.lifecycle.as_ref()).is_some_and(|l| l.max_supported.is_some());
    let siblings = caches.releases_of(&ns, &new.spec.core_build);
    let after = (!deleted).then_some(new);
    let (rerun_its_core_build, others) = triggers::on_release(old.as_deref(), after, &siblings, max_supported);
    if rerun_its_core_build {
        let _ = rerun_core_build.unbounded_send(ObjectRef::new(&new.spec.core_build).within(&ns));
    }
    for r in others {
        let _ = rerun_release.unbounded_send(r);
    }
    if deleted {
        ctx.forget_release(new);
    }
}

/// Follows a CoreBuild watch event (before the cache takes it in): re-runs the releases
/// its change concerns, and forgets a deleted CoreBuild.
fn on_core_build_event(
    event: &watcher::Event<CoreBuild>,
    caches: &Caches,
    ctx: &context::Context,
    rerun_release: &mpsc::UnboundedSender<ObjectRef<ImageRelease>>,
) {
    let Some((new, deleted)) = changed(event) else { return };
    let ns = new.namespace().unwrap_or_default();
    if deleted {
        ctx.core_builds_written.forget(&ns, &new.name_any());
    }
    let old = caches.core_builds.get(&ObjectRef::from_obj(new));
    let releases = caches.releases_of(&ns, &new.name_any());
    for r in triggers::on_core_build(old.as_deref(), (!deleted).then_some(new), &releases) {
        let _ = rerun_release.unbounded_send(r);
    }
}
