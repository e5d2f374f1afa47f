//! The pure decision core of a CoreBuild: from the product and its releases, which channel
//! tags to move ([`plan`]), and, once the edges moved what they could, the status that
//! records it ([`status`]). No I/O.
//!
//! A channel move needs no intent recorded first: the channels are recomputed from the
//! releases on every run, so a move lost to a crash is made again by the next one, and a
//! move made twice writes the same tag. What the status records is only what was moved.

use std::sync::Arc;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{
    ChannelStatus, CoreBuild, CoreBuildStatus, ImageRelease, Phase, READY, RECONCILING, ReleaseCounts, STALLED,
    set_condition,
};
use crate::catalog::{self, Candidate, CatalogError};

/// What a CoreBuild reconcile is to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    /// Where every channel should point.
    pub desired: Vec<ChannelStatus>,
    /// The channel tags to move: the desired ones the status does not record yet.
    pub moves: Vec<ChannelStatus>,
    /// The releases by phase.
    pub counts: ReleaseCounts,
    /// The newest Published version.
    pub latest_version: Option<String>,
}

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

/// Decides where the channels of `cb` go, given its releases.
pub fn plan(cb: &CoreBuild, releases: &[Arc<ImageRelease>]) -> Plan {
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
    let recorded = cb.status.as_ref().map(|s| s.channels.as_slice()).unwrap_or_default();
    let moves = desired.iter().filter(|d| !recorded.contains(d)).cloned().collect();
    let latest_version = desired.iter().find(|c| c.name == "latest").map(|c| c.version.clone()).or_else(|| {
        candidates
            .iter()
            .filter(|c| c.phase == Phase::Published)
            .filter_map(|c| semver::Version::parse(&c.version).ok())
            .max()
            .map(|v| v.to_string())
    });
    Plan { desired, moves, counts: counts(releases), latest_version }
}

/// The status that records what was done of `plan`: the channels `moved` point where
/// they should; the others keep the record of where they pointed (or none), so the next
/// run moves them again. `problem` is why a move failed, if one did.
pub fn status(
    cb: &CoreBuild,
    plan: &Plan,
    moved: &[ChannelStatus],
    problem: Option<&CatalogError>,
    now: &Time,
) -> CoreBuildStatus {
    let old = cb.status.clone().unwrap_or_default();
    let channels = plan
        .desired
        .iter()
        .filter_map(|d| {
            if old.channels.contains(d) || moved.contains(d) {
                Some(d.clone())
            } else {
                old.channels.iter().find(|c| c.name == d.name).cloned()
            }
        })
        .collect();
    let mut st = CoreBuildStatus {
        observed_generation: cb.metadata.generation,
        conditions: old.conditions,
        releases: Some(plan.counts.clone()),
        latest_version: plan.latest_version.clone(),
        channels,
        base: old.base,
    };
    let generation = cb.metadata.generation;
    let (ready, reason, message) = match problem {
        None => (true, "ChannelsCurrent".to_string(), format!("{} channel(s) current", st.channels.len())),
        Some(e) => (false, e.reason().to_string(), format!("moving channels: {e}; retrying")),
    };
    let stalled = problem.is_some_and(|e| e.needs_a_person());
    set_condition(&mut st.conditions, READY, Some(ready), &reason, &message, generation, now);
    let progressing = !ready && !stalled;
    let (r_reason, r_msg) = if progressing { (reason.as_str(), message.as_str()) } else { ("Idle", "") };
    set_condition(&mut st.conditions, RECONCILING, Some(progressing), r_reason, r_msg, generation, now);
    let (s_reason, s_msg) = if stalled { (reason.as_str(), message.as_str()) } else { ("NotStalled", "") };
    set_condition(&mut st.conditions, STALLED, Some(stalled), s_reason, s_msg, generation, now);
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{CoreBuildSpec, ImageReleaseSpec, ImageReleaseStatus, find_condition};
    use crate::registry::RegistryError;

    fn at(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap())
    }

    fn core_build(channels: &[ChannelStatus]) -> CoreBuild {
        let spec: CoreBuildSpec = serde_json::from_value(serde_json::json!({
            "base": "registry.local/debian@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "blueprint": {"containerfile": "FROM scratch\n"},
            "contract": {},
            "catalog": {
                "repository": "registry.local/core/debian",
                "stagingRepository": "registry.local/staging/debian",
                "channels": ["12", "latest"],
            },
        }))
        .unwrap();
        let mut cb = CoreBuild::new("debian", spec);
        cb.metadata.generation = Some(2);
        cb.status = Some(CoreBuildStatus { channels: channels.to_vec(), ..Default::default() });
        cb
    }

    fn release(version: &str, phase: Phase) -> Arc<ImageRelease> {
        let mut r = ImageRelease::new(version, ImageReleaseSpec { version: version.into(), ..Default::default() });
        r.status = Some(ImageReleaseStatus {
            phase: Some(phase),
            digest: Some(format!("sha256:{version}")),
            ..Default::default()
        });
        Arc::new(r)
    }

    fn channel(name: &str, version: &str) -> ChannelStatus {
        ChannelStatus { name: name.into(), version: version.into(), digest: format!("sha256:{version}") }
    }

    #[test]
    fn only_channels_not_recorded_where_they_should_be_are_moved() {
        let cb = core_build(&[channel("12", "12.7.0"), channel("latest", "12.7.0")]);
        let releases = [release("12.7.0", Phase::Published), release("12.8.0", Phase::Verified)];
        let p = plan(&cb, &releases);
        assert!(p.moves.is_empty(), "{p:?}");
        let releases = [release("12.7.0", Phase::Deprecated), release("12.8.0", Phase::Published)];
        let p = plan(&cb, &releases);
        assert_eq!(p.moves, [channel("12", "12.8.0"), channel("latest", "12.8.0")]);
        assert_eq!(p.latest_version.as_deref(), Some("12.8.0"));
        assert_eq!((p.counts.published, p.counts.deprecated, p.counts.total), (1, 1, 2));
    }

    #[test]
    fn the_status_records_only_what_was_moved() {
        let cb = core_build(&[channel("12", "12.7.0")]);
        let releases = [release("12.7.0", Phase::Deprecated), release("12.8.0", Phase::Published)];
        let p = plan(&cb, &releases);
        // All moved.
        let st = status(&cb, &p, &p.moves, None, &at(0));
        assert_eq!(st.channels, [channel("12", "12.8.0"), channel("latest", "12.8.0")]);
        let ready = find_condition(&st.conditions, READY).unwrap();
        assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("True", "ChannelsCurrent"));
        // `12` moved, then the registry failed: `latest` is not recorded (it never was),
        // and the next run moves it.
        let e = CatalogError::Registry(RegistryError::Unreachable { registry: "r".into(), message: "refused".into() });
        let st = status(&cb, &p, &p.moves[..1], Some(&e), &at(0));
        assert_eq!(st.channels, [channel("12", "12.8.0")]);
        let c = |t| find_condition(&st.conditions, t).map(|c| (c.status.clone(), c.reason.clone())).unwrap();
        assert_eq!(c(READY), ("False".into(), "RegistryUnavailable".into()));
        assert_eq!(c(RECONCILING), ("True".into(), "RegistryUnavailable".into()));
        assert_eq!(c(STALLED), ("False".into(), "NotStalled".into()));
        // Nothing moved, bad credentials: `12` keeps the record of where it pointed, and a
        // person must act.
        let e = CatalogError::Credentials("Secret push-creds does not exist".into());
        let st = status(&cb, &p, &[], Some(&e), &at(0));
        assert_eq!(st.channels, [channel("12", "12.7.0")]);
        assert_eq!(find_condition(&st.conditions, STALLED).unwrap().status, "True");
    }
}
