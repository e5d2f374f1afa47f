//! The pure decision core of base tracking (`spec.baseTracking` of a CoreBuild): when to
//! ask the upstream tag for its digest ([`poll_due`]), and, from the answer, whether the
//! pinned base is current or behind, and with `refresh: Automatic` which release to create
//! and where to move `spec.base` ([`plan`]). No I/O.
//!
//! Crash safety without an intent: the refresh release has a name derived from the new
//! base digest, so creating it again finds it (`AlreadyExists`); moving `spec.base` (once
//! the refresh release is published: the product's base moves only to a base that kept
//! the contract) writes the same value again. Each is decided again on every run until
//! the status records it, and never after that: a `spec.base` set back by someone (a
//! GitOps sync) is reported, not fought over.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use kube::{Resource, ResourceExt};

use crate::api::{
    ANNOTATION_REFRESH_FROM, Advisory, AdvisoryType, BASE_CURRENT, BaseRefresh, BaseState, BaseStatus, BaseTracking,
    CoreBuild, ImageRelease, ImageReleaseSpec, LABEL_CORE_BUILD, LABEL_REFRESH, Phase, RefreshPolicy, Severity, Target,
    parse_duration,
};
use crate::registry::{digest_of, repository_of};

/// How often a tracked tag is asked when `interval` is not set.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(6 * 3600);

/// The interval of `tracking`.
pub fn interval(tracking: &BaseTracking) -> Duration {
    tracking.interval.as_deref().and_then(parse_duration).unwrap_or(DEFAULT_INTERVAL)
}

/// A request to make: the tag, and the digest it resolved to last time (for
/// `If-None-Match`; `None` asks unconditionally).
#[derive(Debug, Clone, PartialEq)]
pub struct Poll {
    /// The tracked tag.
    pub tag: String,
    /// What it resolved to when last asked, if the answer can be reused.
    pub known: Option<String>,
}

/// What asking the tag came to.
#[derive(Debug, Clone, PartialEq)]
pub enum Polled {
    /// It still points at the known digest (`304 Not Modified`).
    Unchanged,
    /// It points at `digest` (an index of `manifests`, or an image).
    Digest {
        /// The tag's digest.
        digest: String,
        /// The images of an index.
        manifests: Vec<String>,
    },
    /// The question failed: (condition reason, message).
    Failed(String, String),
}

/// The status recorded for this tag, if it describes the same tag.
fn recorded<'a>(cb: &'a CoreBuild, tracking: &BaseTracking) -> Option<&'a BaseStatus> {
    cb.status.as_ref().and_then(|s| s.base.as_ref()).filter(|b| b.tag == tracking.tag)
}

/// Whether the tag must be asked now, and how: when never asked, when the tag or the
/// pinned base changed since (then unconditionally: the verdict needs the tag's
/// manifest), else once `interval` has passed since the last question.
pub fn poll_due(cb: &CoreBuild, now: &Time) -> Option<Poll> {
    let tracking = cb.spec.base_tracking.as_ref()?;
    let Some(old) = recorded(cb, tracking) else {
        return Some(Poll { tag: tracking.tag.clone(), known: None });
    };
    if old.pinned_digest != digest_of(&cb.spec.base) || old.latest_digest.is_none() {
        return Some(Poll { tag: tracking.tag.clone(), known: None });
    }
    let due = old.checked_at.as_ref().is_none_or(|at| elapsed(at, now) >= interval(tracking));
    due.then(|| Poll { tag: tracking.tag.clone(), known: old.latest_digest.clone() })
}

fn elapsed(at: &Time, now: &Time) -> Duration {
    Duration::try_from(now.0.duration_since(at.0)).unwrap_or_default()
}

/// What the CoreBuild reconcile does about its base.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct BasePlan {
    /// `status.base` (`None`: the base is not tracked).
    pub status: Option<BaseStatus>,
    /// The `BaseCurrent` condition: (status, reason, message); `None` removes it.
    pub condition: Option<(Option<bool>, String, String)>,
    /// The refresh release to create (`AlreadyExists` is success).
    pub create: Option<ImageRelease>,
    /// The value to set `spec.base` to.
    pub move_base: Option<String>,
    /// When to ask the tag again.
    pub next_poll: Option<Duration>,
}

/// The verdict of a tag's answer on a pinned digest: current when the tag is that digest,
/// or an index with that image in it.
fn state_of(pinned: &str, digest: &str, manifests: &[String]) -> BaseState {
    if pinned == digest || manifests.iter().any(|m| m == pinned) { BaseState::Current } else { BaseState::Behind }
}

/// Decides the base status of `cb` from what `polled` said (`None`: the tag was not asked
/// this time), and with `refresh: Automatic` the release to create on a new base.
/// `releases` are the CoreBuild's releases.
pub fn plan(cb: &CoreBuild, releases: &[Arc<ImageRelease>], polled: Option<&Polled>, now: &Time) -> BasePlan {
    let Some(tracking) = cb.spec.base_tracking.as_ref() else { return BasePlan::default() };
    let pinned = digest_of(&cb.spec.base).to_string();
    let old = recorded(cb, tracking).cloned();
    let mut st = old.clone().unwrap_or_else(|| BaseStatus { tag: tracking.tag.clone(), ..Default::default() });
    st.pinned_digest = pinned.clone();
    let mut failure = None;
    match polled {
        Some(Polled::Digest { digest, manifests }) => {
            st.latest_digest = Some(digest.clone());
            st.state = state_of(&pinned, digest, manifests);
        }
        Some(Polled::Unchanged) => {}
        Some(Polled::Failed(reason, message)) => failure = Some((reason.clone(), message.clone())),
        None => {}
    }
    if polled.is_some() {
        st.checked_at = Some(now.clone());
    }
    st.behind_since = match st.state {
        BaseState::Behind => old
            .as_ref()
            .filter(|o| o.state == BaseState::Behind)
            .and_then(|o| o.behind_since.clone())
            .or_else(|| Some(now.clone())),
        _ => None,
    };

    if st.state == BaseState::Current {
        // spec.base is at the refresh's digest: recorded as moved (also when a crash lost
        // the record of the move, or of the release), so that a base set back later is
        // reported rather than moved again.
        match st.refresh.as_mut() {
            Some(r) if r.to_digest == pinned => {
                r.base_moved_at.get_or_insert_with(|| now.clone());
            }
            _ => {
                let name = refresh_name(&cb.name_any(), &pinned);
                if let Some(r) = releases.iter().find(|r| r.name_any() == name) {
                    st.refresh = Some(BaseRefresh {
                        release: name,
                        version: r.spec.version.clone(),
                        from_digest: r.annotations().get(ANNOTATION_REFRESH_FROM).cloned().unwrap_or_default(),
                        to_digest: pinned.clone(),
                        created_at: r.metadata.creation_timestamp.clone().unwrap_or_else(|| now.clone()),
                        base_moved_at: Some(now.clone()),
                    });
                }
            }
        }
    }

    let mut plan = BasePlan::default();
    let latest = st.latest_digest.clone().unwrap_or_default();
    let tag = &tracking.tag;
    let checked = st.checked_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    let mut message = match st.state {
        BaseState::Current => format!("spec.base ({pinned}) is what {tag} resolves to (checked at {checked})"),
        BaseState::Behind => format!(
            "{tag} resolves to {latest}; spec.base pins {pinned} (behind since {})",
            st.behind_since.as_ref().map(|t| t.0.to_string()).unwrap_or_default()
        ),
        BaseState::Unknown => String::new(),
    };
    if st.state == BaseState::Behind && tracking.refresh == RefreshPolicy::Automatic {
        message.push_str(&refresh(cb, tracking, releases, &mut st, &mut plan, now));
    } else if st.state == BaseState::Behind {
        message.push_str("; move spec.base to it (baseTracking.refresh: Manual)");
    }
    plan.condition = Some(match (&failure, st.state) {
        (Some((reason, why)), BaseState::Unknown) => (None, reason.clone(), format!("asking {tag}: {why}")),
        (None, BaseState::Unknown) => (None, "BaseNotChecked".into(), format!("{tag} has not been asked yet")),
        (failure, state) => {
            if let Some((_, why)) = failure {
                message.push_str(&format!(" (the last question failed: {why})"));
            }
            match state {
                BaseState::Current => (Some(true), "BaseCurrent".into(), message),
                _ => (Some(false), "BaseBehind".into(), message),
            }
        }
    });
    let wait = interval(tracking);
    plan.next_poll = Some(
        st.checked_at
            .as_ref()
            .map(|at| wait.saturating_sub(elapsed(at, now)))
            .unwrap_or(wait)
            .max(Duration::from_secs(1)),
    );
    plan.status = Some(st);
    plan
}

/// With `refresh: Automatic` and the base behind: the release to create on the new base,
/// unless the status records it already, and, once it is published, the move of
/// `spec.base` to its base (once: a base set back afterwards is reported, not moved
/// again). Returns what the condition's message adds.
fn refresh(
    cb: &CoreBuild,
    tracking: &BaseTracking,
    releases: &[Arc<ImageRelease>],
    st: &mut BaseStatus,
    plan: &mut BasePlan,
    now: &Time,
) -> String {
    let to = st.latest_digest.clone().unwrap_or_default();
    let new_base = format!("{}@{to}", repository_of(&tracking.tag));
    let name = refresh_name(&cb.name_any(), &to);
    let existing = releases.iter().find(|r| r.name_any() == name);
    let Some(done) = st.refresh.as_mut().filter(|r| r.to_digest == to) else {
        let version = match existing {
            Some(r) => r.spec.version.clone(),
            None => match next_patch(releases) {
                Some(v) => v,
                None => {
                    return "; there is no release to refresh yet (the next one is built from the new base once spec.base moves)".into();
                }
            },
        };
        if existing.is_none() {
            plan.create = Some(refresh_release(cb, &name, &version, &new_base, &st.pinned_digest));
        }
        st.refresh = Some(BaseRefresh {
            release: name.clone(),
            version: version.clone(),
            from_digest: st.pinned_digest.clone(),
            to_digest: to,
            created_at: now.clone(),
            base_moved_at: None,
        });
        return format!(
            "; release {name} ({version}) is built on it, and spec.base moves to it once it is published (baseTracking.refresh: Automatic)"
        );
    };
    if done.base_moved_at.is_some() {
        return format!(
            "; refresh release {} ({}) was published on it and spec.base moved to it, but spec.base pins {} again (set back by someone?): the next release is built from that",
            done.release, done.version, st.pinned_digest
        );
    }
    let status = existing.and_then(|r| r.status.as_ref());
    let phase = status.and_then(|s| s.phase).unwrap_or_default();
    match phase {
        Phase::Published | Phase::Deprecated | Phase::Retired => {
            let built_from = status.and_then(|s| s.provenance.as_ref()).map(|p| p.base.clone()).unwrap_or(new_base);
            done.base_moved_at = Some(now.clone());
            let msg = format!(
                "; release {} ({}) was published on it: spec.base moves to {built_from}",
                done.release, done.version
            );
            plan.move_base = Some(built_from);
            msg
        }
        Phase::Failed => {
            let why = status
                .and_then(|s| crate::api::find_condition(&s.conditions, crate::api::READY))
                .map(|c| c.message.clone())
                .unwrap_or_default();
            format!(
                "; refresh release {} ({}) failed, so spec.base stays: {}",
                done.release,
                done.version,
                why.chars().take(300).collect::<String>()
            )
        }
        _ if existing.is_none() => format!(
            "; refresh release {} ({}) was deleted: spec.base moves when a person moves it",
            done.release, done.version
        ),
        _ => format!("; refresh release {} ({}) is {phase} on it", done.release, done.version),
    }
}

/// The name of the refresh release of CoreBuild `cb` for base `digest`.
pub fn refresh_name(cb: &str, digest: &str) -> String {
    let hex: String = digest.trim_start_matches("sha256:").chars().take(12).collect();
    crate::names::child(cb, &format!("base-{hex}"))
}

/// The next patch version after the newest release (pre-releases aside): `12.8.0` → `12.8.1`.
pub fn next_patch(releases: &[Arc<ImageRelease>]) -> Option<String> {
    let newest = releases
        .iter()
        .filter_map(|r| semver::Version::parse(&r.spec.version).ok())
        .filter(|v| v.pre.is_empty())
        .max()?;
    Some(semver::Version::new(newest.major, newest.minor, newest.patch + 1).to_string())
}

/// The release the controller creates on base `new_base`: owned by its CoreBuild, heading
/// for Published, with an advisory that names the base change.
fn refresh_release(cb: &CoreBuild, name: &str, version: &str, new_base: &str, from: &str) -> ImageRelease {
    let tracking = cb.spec.base_tracking.as_ref();
    let tag = tracking.map(|t| t.tag.as_str()).unwrap_or_default();
    let to = digest_of(new_base);
    let hex: String = to.trim_start_matches("sha256:").chars().take(12).collect();
    ImageRelease {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            namespace: cb.namespace(),
            labels: Some(BTreeMap::from([
                ("app.kubernetes.io/managed-by".to_string(), "coreforge".to_string()),
                (LABEL_CORE_BUILD.to_string(), cb.name_any()),
                (LABEL_REFRESH.to_string(), "base".to_string()),
            ])),
            annotations: Some(BTreeMap::from([(ANNOTATION_REFRESH_FROM.to_string(), from.to_string())])),
            owner_references: cb.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: ImageReleaseSpec {
            core_build: cb.name_any(),
            version: version.to_string(),
            base: Some(new_base.to_string()),
            advisories: vec![Advisory {
                id: format!("BASE-{hex}"),
                type_: AdvisoryType::Security,
                severity: Severity::None,
                summary: format!("base image refreshed: {tag} moved from {from} to {to}"),
                ..Default::default()
            }],
            release_notes: Some(format!(
                "Rebuilt on `{new_base}`, the new digest of `{tag}` (was `{from}`), and tested against the contract. \
                 Created by coreforge (`baseTracking.refresh: Automatic`)."
            )),
            target: Target::Published,
            ..Default::default()
        },
        status: None,
    }
}

/// Applies the `BaseCurrent` condition of `plan` to `conditions`.
pub fn apply_condition(
    conditions: &mut Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition>,
    plan: &BasePlan,
    generation: Option<i64>,
    now: &Time,
) {
    match &plan.condition {
        Some((value, reason, message)) => {
            crate::api::set_condition(conditions, BASE_CURRENT, *value, reason, message, generation, now)
        }
        None => conditions.retain(|c| c.type_ != BASE_CURRENT),
    }
}

#[cfg(test)]
#[path = "decide_base_tests.rs"]
mod tests;
