//! The CoreBuild reconciler: counts the product's releases, and keeps every channel tag
//! pointing at the newest Published release it matches.
//!
//! Channels are a property of the product, so they are moved here, from the releases'
//! statuses: a release whose phase, version or digest changes re-runs this (the release
//! watch maps to its CoreBuild), and the tags converge whatever happened in between.
//!
//! While its spec stands, a CoreBuild's status is written (and its channels moved) at most
//! every [`STATUS_INTERVAL`]: the first change after a quiet spell at once, the ones
//! after it together at the end of the interval. While hundreds of releases move, the
//! status is a summary, not a second copy of every transition, and a channel passes over
//! the releases superseded within the interval instead of visiting each.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::controller::Action;
use kube::{Api, ResourceExt};
use tracing::{Instrument, debug, info, info_span, warn};

use super::context::{Context, Error, STALE_RETRY, STATUS_INTERVAL, apply_status};
use super::decide_corebuild::{plan, status};
use crate::api::CoreBuild;
use crate::failpoint;
use crate::metrics::ReconcileTimer;

/// Reconciles one CoreBuild: read its releases from the cache, [`plan`] the channel
/// moves, move them, write the [`status`] that records what was moved.
pub async fn reconcile(cb: Arc<CoreBuild>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ReconcileTimer::start("corebuild");
    let ns = cb.namespace().ok_or(Error::NoNamespace)?;
    let name = cb.name_any();
    let span = info_span!("reconcile", namespace = %ns, corebuild = %name);
    async move {
        ctx.caches.ready().await;
        let _running = ctx.health.reconciling(format!("CoreBuild {ns}/{name}"));
        if !ctx.core_builds_written.met(&ns, &name, cb.metadata.resource_version.as_deref(), cb.status.as_ref()) {
            debug!("the cache is behind the last status written; waiting for it");
            return Ok(Action::requeue(STALE_RETRY));
        }
        let spec_observed = cb.status.as_ref().and_then(|s| s.observed_generation) == cb.metadata.generation;
        if spec_observed && let Some(wait) = last_write_wait(&ctx, &ns, &name) {
            debug!("status written less than {STATUS_INTERVAL:?} ago; looking again in {wait:?}");
            return Ok(Action::requeue(wait));
        }
        let releases = ctx.caches.releases_of(&ns, &name);
        let plan = plan(&cb, &releases);

        let mut moved = Vec::new();
        let mut problem = None;
        if !plan.moves.is_empty() {
            match ctx.registries.get(&ns, &cb.spec.catalog).await? {
                Err(e) => problem = Some(e),
                Ok(registry) => {
                    let repo = &cb.spec.catalog.repository;
                    for d in &plan.moves {
                        match registry.copy(repo, &d.digest, repo, &d.name).await {
                            Ok(_) => {
                                info!(channel = %d.name, version = %d.version, "channel moved");
                                moved.push(d.clone());
                                failpoint::hit("channel-moved").await;
                            }
                            Err(e) => {
                                warn!(channel = %d.name, error = %e, "could not move channel");
                                problem = Some(e.into());
                            }
                        }
                    }
                }
            }
        }

        let st = status(&cb, &plan, &moved, problem.as_ref(), &Time(jiff::Timestamp::now()));
        if cb.status.as_ref() != Some(&st) {
            let api: Api<CoreBuild> = Api::namespaced(ctx.client.clone(), &ns);
            let rv = cb.metadata.resource_version.as_deref();
            match apply_status(&api, &name, rv, &st).await? {
                Some(written) => {
                    let rv = written.metadata.resource_version.clone();
                    ctx.core_builds_written.wrote(&ns, &name, rv, written.status.clone());
                    ctx.status_written(&ns, &name);
                    failpoint::hit("corebuild-status-written").await;
                }
                None => return Ok(Action::requeue(STALE_RETRY)),
            }
        }
        Ok(match problem {
            Some(_) => Action::requeue(Duration::from_secs(15)),
            None => Action::await_change(),
        })
    }
    .instrument(span)
    .await
}

/// How long this CoreBuild's status must wait before it may be written again, if it must.
fn last_write_wait(ctx: &Context, ns: &str, name: &str) -> Option<Duration> {
    let elapsed = ctx.since_status_written(ns, name)?;
    STATUS_INTERVAL.checked_sub(elapsed).filter(|d| !d.is_zero())
}

/// Logs and retries a failed CoreBuild reconcile after a pause.
pub fn error_policy(cb: Arc<CoreBuild>, error: &Error, _ctx: Arc<Context>) -> Action {
    crate::metrics::reconcile_error("corebuild", error.kind());
    warn!(namespace = ?cb.namespace(), corebuild = %cb.name_any(), error = %error, "reconcile failed");
    Action::requeue(Duration::from_secs(10))
}
