//! The CoreBuild reconciler: counts the product's releases, keeps every channel tag
//! pointing at the newest Published release it matches, and follows the tracked base tag
//! (`spec.baseTracking`, decided by [`decide_base`]).
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
use kube::api::{Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use tracing::{Instrument, debug, info, info_span, warn};

use super::context::{Context, Error, STALE_RETRY, STATUS_INTERVAL, apply_status};
use super::decide_base::{self, Poll, Polled};
use super::decide_corebuild::{plan, status};
use crate::api::{BaseState, CoreBuild, FIELD_MANAGER_BASE_REFRESH, ImageRelease};
use crate::catalog::CatalogError;
use crate::failpoint;
use crate::metrics::ReconcileTimer;
use crate::registry::{RegistryError, TagState};

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
        let now = Time(jiff::Timestamp::now());

        // The tracked base: ask the tag when due, create the refresh release and move
        // `spec.base` when the decision says so (both idempotent), before the status
        // that records them.
        let polled = match decide_base::poll_due(&cb, &now) {
            Some(poll) => Some(poll_tag(&ctx, &ns, &cb, &poll).await?),
            None => None,
        };
        let base = decide_base::plan(&cb, &releases, polled.as_ref(), &now);
        let mut rv = cb.metadata.resource_version.clone();
        if let Some(release) = &base.create {
            let api: Api<ImageRelease> = Api::namespaced(ctx.client.clone(), &ns);
            match api.create(&PostParams::default(), release).await {
                Ok(_) => {
                    let msg = format!(
                        "created release {} ({}) on {}, the new digest of {}",
                        release.name_any(),
                        release.spec.version,
                        release.spec.base.as_deref().unwrap_or_default(),
                        cb.spec.base_tracking.as_ref().map(|t| t.tag.as_str()).unwrap_or_default()
                    );
                    info!(release = %release.name_any(), "{msg}");
                    ctx.record_event(&cb.object_ref(&()), false, "RefreshReleaseCreated", &msg).await;
                }
                Err(kube::Error::Api(e)) if e.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        if let Some(new_base) = &base.move_base {
            match move_base(&ctx, &ns, &name, rv.as_deref(), new_base).await? {
                Some(moved) => rv = moved.metadata.resource_version,
                None => return Ok(Action::requeue(STALE_RETRY)),
            }
        }
        let became_behind = base.status.as_ref().is_some_and(|b| b.state == BaseState::Behind)
            && cb.status.as_ref().and_then(|s| s.base.as_ref()).is_none_or(|b| b.state != BaseState::Behind);
        if became_behind && let Some((_, reason, message)) = &base.condition {
            ctx.record_event(&cb.object_ref(&()), true, reason, message).await;
        }

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

        let mut st = status(&cb, &plan, &moved, problem.as_ref(), &now);
        st.base = base.status.clone();
        decide_base::apply_condition(&mut st.conditions, &base, cb.metadata.generation, &now);
        if cb.status.as_ref() != Some(&st) {
            let api: Api<CoreBuild> = Api::namespaced(ctx.client.clone(), &ns);
            match apply_status(&api, &name, rv.as_deref(), &st).await? {
                Some(written) => {
                    let rv = written.metadata.resource_version.clone();
                    ctx.core_builds_written.wrote(&ns, &name, rv, written.status.clone());
                    ctx.status_written(&ns, &name);
                    failpoint::hit("corebuild-status-written").await;
                }
                None => return Ok(Action::requeue(STALE_RETRY)),
            }
        }
        let retry = problem.map(|_| Duration::from_secs(15));
        Ok(match retry.into_iter().chain(base.next_poll).min() {
            Some(after) => Action::requeue(after),
            None => Action::await_change(),
        })
    }
    .instrument(span)
    .await
}

/// Asks the tracked tag of `cb` for its digest, with the catalog's credentials and the
/// tracking's TLS settings. What went wrong is an answer too (a condition), not an error.
async fn poll_tag(ctx: &Context, ns: &str, cb: &CoreBuild, poll: &Poll) -> Result<Polled, Error> {
    let tls = cb.spec.base_tracking.as_ref().and_then(|t| t.tls.as_ref());
    let registry = match ctx.registries.get_with(ns, cb.spec.catalog.credentials_secret.as_ref(), tls).await? {
        Ok(r) => r,
        Err(e) => return Ok(Polled::Failed(e.reason().to_string(), e.to_string())),
    };
    Ok(match registry.tag_changed(&poll.tag, poll.known.as_deref()).await {
        Ok(TagState::Unchanged) => Polled::Unchanged,
        Ok(TagState::Changed { digest, manifests }) => Polled::Digest { digest, manifests },
        Err(RegistryError::NotFound { reference }) => {
            Polled::Failed("BaseTagNotFound".into(), format!("{reference} does not exist"))
        }
        Err(e) => {
            warn!(tag = %poll.tag, error = %e, "could not ask the tracked base tag");
            let e = CatalogError::from(e);
            Polled::Failed(e.reason().to_string(), e.to_string())
        }
    })
}

/// Sets `spec.base` of CoreBuild `name` with server-side apply, as field manager
/// [`FIELD_MANAGER_BASE_REFRESH`] (so GitOps tools can tell the field apart), on the
/// condition that it is still at `resource_version`: `Ok(None)` when it is not.
async fn move_base(
    ctx: &Context,
    ns: &str,
    name: &str,
    resource_version: Option<&str>,
    base: &str,
) -> Result<Option<CoreBuild>, Error> {
    let api: Api<CoreBuild> = Api::namespaced(ctx.client.clone(), ns);
    let patch = serde_json::json!({
        "apiVersion": CoreBuild::api_version(&()),
        "kind": CoreBuild::kind(&()),
        "metadata": {"resourceVersion": resource_version},
        "spec": {"base": base},
    });
    match api.patch(name, &PatchParams::apply(FIELD_MANAGER_BASE_REFRESH).force(), &Patch::Apply(&patch)).await {
        Ok(cb) => {
            info!(base, "spec.base moved to the refreshed base");
            Ok(Some(cb))
        }
        Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => Ok(None),
        Err(e) => Err(e.into()),
    }
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
