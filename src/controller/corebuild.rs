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

use crate::failpoint;

use super::release::{Context, Error, STALE_RETRY, apply_status};
use crate::api::{
    CoreBuild, CoreBuildStatus, ImageRelease, Phase, READY, RECONCILING, ReleaseCounts, STALLED, set_condition,
};
use crate::catalog::{self, Candidate};
use crate::metrics::ReconcileTimer;

/// The shortest time between two status writes of a CoreBuild whose spec did not change.
pub const STATUS_INTERVAL: Duration = Duration::from_secs(10);

fn counts(releases: &[Arc<ImageRelease>]) -> ReleaseCounts {
    let mut c = ReleaseCounts { total: releases.len() as i32, ..Default::default() };
    for r in releases {
        match r.status.as_ref().and_then(|s| s.phase).unwrap_or_default() {
            Phase::Pending | Phase::Building | Phase::Testing => c.in_progress += 1,
            Phase::Verified => c.verified += 1,
            Phase::Published => c.published += 1,
            Phase::Deprecated => c.deprecated += 1,
            Phase::Retired => c.retired += 1,
            Phase::Failed => c.failed += 1,
        }
    }
    c
}

/// Reconciles one CoreBuild.
pub async fn reconcile(cb: Arc<CoreBuild>, ctx: Arc<Context>) -> Result<Action, Error> {
    let _timer = ReconcileTimer::start("corebuild");
    let ns = cb.namespace().ok_or(Error::NoNamespace)?;
    let name = cb.name_any();
    let span = info_span!("reconcile", namespace = %ns, corebuild = %name);
    async move {
        let client = ctx.client.clone();
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
        let candidates: Vec<Candidate> = releases
            .iter()
            .map(|r| {
                let st = r.status.as_ref();
                Candidate {
                    version: r.spec.version.clone(),
                    phase: st.and_then(|s| s.phase).unwrap_or_default(),
                    digest: st.and_then(|s| s.digest.clone()),
                }
            })
            .collect();
        let desired = catalog::desired_channels(&cb.spec.catalog.channels, &candidates);
        let old = cb.status.clone().unwrap_or_default();

        // Move the tags that are not where they should be; keep the record of the ones
        // that could not be moved as they were, so the next run tries again.
        let mut channels = Vec::new();
        let mut problem = None;
        let moves: Vec<_> = desired.iter().filter(|d| !old.channels.contains(d)).collect();
        if !moves.is_empty() {
            match ctx.registries.get(&ns, &cb.spec.catalog).await? {
                Err(e) => problem = Some(e),
                Ok(registry) => {
                    for d in &moves {
                        let repo = &cb.spec.catalog.repository;
                        match registry.copy(repo, &d.digest, repo, &d.name).await {
                            Ok(_) => {
                                info!(channel = %d.name, version = %d.version, "channel moved");
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
        for d in &desired {
            let moved = problem.is_none() || old.channels.contains(d);
            match (moved, old.channels.iter().find(|c| c.name == d.name)) {
                (true, _) => channels.push(d.clone()),
                (false, Some(previous)) => channels.push(previous.clone()),
                (false, None) => {}
            }
        }

        let mut st = CoreBuildStatus {
            observed_generation: cb.metadata.generation,
            conditions: old.conditions.clone(),
            releases: Some(counts(&releases)),
            latest_version: desired.iter().find(|c| c.name == "latest").map(|c| c.version.clone()).or_else(|| {
                candidates
                    .iter()
                    .filter(|c| c.phase == Phase::Published)
                    .filter_map(|c| semver::Version::parse(&c.version).ok())
                    .max()
                    .map(|v| v.to_string())
            }),
            channels,
        };
        let now = Time(jiff::Timestamp::now());
        let generation = cb.metadata.generation;
        let (ready, reason, message) = match &problem {
            None => (true, "ChannelsCurrent".to_string(), format!("{} channel(s) current", st.channels.len())),
            Some(e) => (false, e.reason().to_string(), format!("moving channels: {e}; retrying")),
        };
        let stalled = problem.as_ref().is_some_and(|e| e.needs_a_person());
        set_condition(&mut st.conditions, READY, Some(ready), &reason, &message, generation, &now);
        let (r_reason, r_msg) = if !ready && !stalled { (reason.as_str(), message.as_str()) } else { ("Idle", "") };
        set_condition(&mut st.conditions, RECONCILING, Some(!ready && !stalled), r_reason, r_msg, generation, &now);
        let (s_reason, s_msg) = if stalled { (reason.as_str(), message.as_str()) } else { ("NotStalled", "") };
        set_condition(&mut st.conditions, STALLED, Some(stalled), s_reason, s_msg, generation, &now);

        if cb.status.as_ref() != Some(&st) {
            let api: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
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
