//! The controller daemon: kube-runtime wiring of the ImageRelease and CoreBuild
//! controllers, per watched namespace (or cluster-wide), plus the HTTP server.
//!
//! - [`decide`]: the pure decision core (what happens next to a release);
//! - [`observe`]: Jobs and pods turned into observations (pure);
//! - [`release`]: the ImageRelease reconcile edges (read, create, patch status, events);
//! - [`corebuild`]: the CoreBuild reconciler (release counts, channel tags).

pub mod corebuild;
pub mod decide;
pub mod observe;
pub mod release;

use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::{BoxFuture, FutureExt, Shared};
use futures::{StreamExt, future};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::api::{CoreBuild, ImageRelease, LABEL_RELEASE};
use crate::http;

/// Settings of the controller daemon.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Watch only these namespaces (all when empty).
    pub namespaces: Vec<String>,
    /// Address of the HTTP server (`/metrics`, `/livez`, `/readyz`).
    pub http_addr: Option<SocketAddr>,
    /// Leader election; `None` reconciles right away (a single replica).
    pub election: Option<crate::leader::Election>,
    /// What build and test pods get and may ask for.
    pub pods: release::PodConfig,
}

/// Resolves once SIGTERM or Ctrl-C arrives; cloneable, so every part stops on the same signal.
pub type Shutdown = Shared<BoxFuture<'static, ()>>;

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

/// Serves HTTP, wins the election (if any), and runs the controllers until `shutdown`
/// resolves; then gives the Lease up. Losing the lease ends the process with an error,
/// so that it restarts as a follower.
pub async fn run(client: Client, settings: Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let server = match settings.http_addr {
        Some(addr) => tokio::spawn(http::serve(addr, shutdown.clone())),
        None => tokio::spawn(future::ready(Ok(()))),
    };
    let mut candidate = match settings.election.clone() {
        None => None,
        Some(election) => {
            let mut candidate = crate::leader::Candidate::new(client.clone(), election);
            tokio::select! {
                _ = candidate.acquire() => {}
                _ = shutdown.clone() => return finish(server).await,
            }
            Some(candidate)
        }
    };
    http::set_role(http::Role::Leader);
    crate::metrics::METRICS.leader.set(1);
    let lost = async {
        match candidate.as_mut() {
            Some(candidate) => candidate.keep().await,
            None => future::pending().await,
        }
    };
    let stopped = tokio::select! {
        result = run_controllers(client, &settings, shutdown.clone()) => result,
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
    server.await??;
    info!("controller stopped");
    Ok(())
}

async fn run_controllers(client: Client, settings: &Settings, shutdown: Shutdown) -> anyhow::Result<()> {
    let reporter = Reporter { controller: "coreforge".into(), instance: std::env::var("POD_NAME").ok() };
    let ctx =
        Arc::new(release::Context::new(client.clone(), Recorder::new(client.clone(), reporter), settings.pods.clone()));
    let scopes: Vec<Option<&str>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().map(|n| Some(n.as_str())).collect()
    };
    let mut release_stores = Vec::new();
    let mut runs = Vec::new();
    for scope in scopes {
        let (store, run) = scope_controllers(&client, scope, ctx.clone(), shutdown.clone());
        release_stores.push(store);
        runs.push(run);
    }
    http::set_stores(release_stores);
    future::join_all(runs).await;
    Ok(())
}

/// The controllers of one scope (a namespace, or the cluster): the release store (for
/// readiness and metrics) and the future that runs them.
fn scope_controllers(
    client: &Client,
    scope: Option<&str>,
    ctx: Arc<release::Context>,
    shutdown: Shutdown,
) -> (Store<ImageRelease>, BoxFuture<'static, ()>) {
    let releases: Api<ImageRelease> = api(client, scope);
    let core_builds: Api<CoreBuild> = api(client, scope);
    let jobs: Api<Job> = api(client, scope);
    let config_maps: Api<PartialObjectMeta<ConfigMap>> = api(client, scope);

    // CoreBuilds are reflected so blueprint ConfigMaps can be mapped to their releases.
    let (core_build_store, core_build_writer) = reflector::store::<CoreBuild>();
    let core_build_events = watcher(core_builds.clone(), watcher::Config::default())
        .default_backoff()
        .reflect(core_build_writer)
        .touched_objects();
    // Metadata only: a release waiting for its blueprint ConfigMap resumes when it appears.
    let config_map_events = watcher(config_maps, watcher::Config::default()).default_backoff().touched_objects();
    // Metadata only, of the pods of the controller's Jobs: a pod that changes (pulled,
    // backing off, unschedulable, terminated) re-runs its release, which reads it.
    let pods: Api<PartialObjectMeta<Pod>> = api(client, scope);
    let pod_events =
        watcher(pods, watcher::Config::default().labels(LABEL_RELEASE)).default_backoff().touched_objects();

    let release_controller = Controller::new(releases.clone(), watcher::Config::default())
        .owns(jobs, watcher::Config::default().labels(LABEL_RELEASE));
    let release_store = release_controller.store();
    let by_core_build = release_store.clone();
    let by_config_map = release_store.clone();
    let release_run = release_controller
        .watches_stream(core_build_events, move |cb: CoreBuild| {
            releases_of(&by_core_build, &cb.namespace().unwrap_or_default(), &cb.name_any())
        })
        .watches_stream(config_map_events, move |cm| {
            let ns = cm.namespace().unwrap_or_default();
            let name = cm.name_any();
            core_build_store
                .state()
                .into_iter()
                .filter(|cb| cb.namespace().as_deref() == Some(ns.as_str()))
                .filter(|cb| cb.spec.blueprint.config_map_ref.as_ref().is_some_and(|r| r.name == name))
                .flat_map(|cb| releases_of(&by_config_map, &ns, &cb.name_any()))
                .collect::<Vec<_>>()
        })
        .watches_stream(pod_events, |pod| {
            let release = pod.labels().get(LABEL_RELEASE)?;
            Some(ObjectRef::<ImageRelease>::new(release).within(&pod.namespace()?))
        })
        .graceful_shutdown_on(shutdown.clone())
        .run(release::reconcile, release::error_policy, ctx.clone())
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(release = %obj, "reconciled"),
                Err(kube::runtime::controller::Error::ObjectNotFound(_)) => {}
                Err(e) => warn!(error = %e, "release reconcile failed"),
            }
        });

    // Every change of a release re-runs its CoreBuild (counts, channels).
    let core_build_run = Controller::new(core_builds, watcher::Config::default())
        .watches(releases, watcher::Config::default(), |r: ImageRelease| {
            Some(ObjectRef::<CoreBuild>::new(&r.spec.core_build).within(&r.namespace().unwrap_or_default()))
        })
        .graceful_shutdown_on(shutdown)
        .run(corebuild::reconcile, corebuild::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok(_) | Err(kube::runtime::controller::Error::ObjectNotFound(_)) => {}
                Err(e) => warn!(error = %e, "corebuild reconcile failed"),
            }
        });
    (release_store, future::join(release_run, core_build_run).map(|_| ()).boxed())
}

fn releases_of(store: &Store<ImageRelease>, namespace: &str, core_build: &str) -> Vec<ObjectRef<ImageRelease>> {
    store
        .state()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(namespace) && r.spec.core_build == core_build)
        .map(|r| ObjectRef::from_obj(&*r))
        .collect()
}
