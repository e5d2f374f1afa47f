//! The controller daemon: kube-runtime wiring for the ImageRelease controller.
//!
//! - [`decide`]: the pure decision core (what happens next to a release);
//! - [`observe`]: Jobs and pods turned into observations (pure);
//! - [`release`]: the reconcile edges (read, create, patch status, record events).

pub mod decide;
pub mod observe;
pub mod release;

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Controller;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use tracing::{info, warn};

use crate::api::{CoreBuild, ImageRelease, LABEL_RELEASE};

/// Settings of the controller daemon.
#[derive(Debug, Clone, Default)]
pub struct Settings {
    /// Watch only this namespace (all when `None`).
    pub namespace: Option<String>,
}

fn api<K>(client: &Client, namespace: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Runs the ImageRelease controller until SIGTERM or Ctrl-C.
pub async fn run(client: Client, settings: Settings) -> anyhow::Result<()> {
    let releases: Api<ImageRelease> = api(&client, &settings.namespace);
    let core_builds: Api<CoreBuild> = api(&client, &settings.namespace);
    let jobs: Api<Job> = api(&client, &settings.namespace);
    let config_maps: Api<PartialObjectMeta<ConfigMap>> = api(&client, &settings.namespace);

    let reporter = Reporter { controller: "coreforge".into(), instance: std::env::var("POD_NAME").ok() };
    let ctx = Arc::new(release::Context::new(client.clone(), Recorder::new(client.clone(), reporter)));

    // CoreBuilds are reflected so blueprint ConfigMaps can be mapped to their releases.
    let (core_build_store, core_build_writer) = reflector::store::<CoreBuild>();
    let core_build_events =
        watcher(core_builds, watcher::Config::default()).default_backoff().reflect(core_build_writer).touched_objects();
    // Metadata only: a release waiting for its blueprint ConfigMap resumes when it appears.
    let config_map_events = watcher(config_maps, watcher::Config::default()).default_backoff().touched_objects();

    let controller = Controller::new(releases, watcher::Config::default())
        .owns(jobs, watcher::Config::default().labels(LABEL_RELEASE));
    let release_store = controller.store();
    let by_core_build = release_store.clone();
    let by_config_map = release_store.clone();
    controller
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
        .shutdown_on_signal()
        .run(release::reconcile, release::error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(release = %obj, "reconciled"),
                Err(kube::runtime::controller::Error::ObjectNotFound(_)) => {}
                Err(e) => warn!(error = %e, "reconcile failed"),
            }
        })
        .await;
    info!("controller stopped");
    Ok(())
}

fn releases_of(
    store: &reflector::Store<ImageRelease>,
    namespace: &str,
    core_build: &str,
) -> Vec<ObjectRef<ImageRelease>> {
    store
        .state()
        .into_iter()
        .filter(|r| r.namespace().as_deref() == Some(namespace) && r.spec.core_build == core_build)
        .map(|r| ObjectRef::from_obj(&*r))
        .collect()
}
