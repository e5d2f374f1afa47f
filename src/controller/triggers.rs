//! Which other objects a change must re-run, decided from the object before and after
//! the change (pure). Only what a reconciler reads can re-run it: a CoreBuild's own
//! status write (its counts) re-runs none of its releases, and a release's condition
//! messages do not re-run its CoreBuild. This keeps a CoreBuild with hundreds of releases
//! from re-running all of them at every transition of one.

use std::collections::BTreeSet;
use std::sync::Arc;

use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::{CoreBuild, ImageRelease, Phase};

/// What of a release its CoreBuild reads: counts by phase, and the channels (version,
/// digest, phase).
fn summary(r: &ImageRelease) -> (Option<Phase>, &str, Option<&str>, bool) {
    let st = r.status.as_ref();
    (
        st.and_then(|s| s.phase),
        r.spec.version.as_str(),
        st.and_then(|s| s.digest.as_deref()),
        r.metadata.deletion_timestamp.is_some(),
    )
}

fn phase(r: &ImageRelease) -> Option<Phase> {
    r.status.as_ref().and_then(|s| s.phase)
}

/// What a release's change re-runs: whether its CoreBuild, and which of its siblings
/// (the other releases of that CoreBuild).
///
/// - a deleted release re-runs the siblings of its version (one of them may have waited
///   for the version it held);
/// - a release that reaches or leaves a phase from Verified on re-runs the Verified
///   siblings (their contract baseline may change), and, when it is now Published and
///   the CoreBuild limits the supported releases (`maxSupported`), the older Published
///   ones (one may now be superseded).
pub fn on_release(
    old: Option<&ImageRelease>,
    new: Option<&ImageRelease>,
    siblings: &[Arc<ImageRelease>],
    max_supported: bool,
) -> (bool, Vec<ObjectRef<ImageRelease>>) {
    let Some(r) = new.or(old) else { return (false, Vec::new()) };
    let core_build = old.map(summary) != new.map(summary);
    let others = siblings.iter().filter(|s| s.metadata.name != r.metadata.name);
    let gone = new.is_none_or(|n| n.metadata.deletion_timestamp.is_some())
        && old.is_some_and(|o| o.metadata.deletion_timestamp.is_none());
    let (before, after) = (old.and_then(phase), new.and_then(phase));
    let settled =
        |p: Option<Phase>| matches!(p, Some(Phase::Verified | Phase::Published | Phase::Deprecated | Phase::Retired));
    let moved = before != after && (settled(before) || settled(after));
    let version = semver::Version::parse(&r.spec.version).ok();
    let rerun: Vec<ObjectRef<ImageRelease>> = others
        .filter(|s| {
            let same_version = s.spec.version == r.spec.version;
            let older = version.as_ref().zip(semver::Version::parse(&s.spec.version).ok()).is_some_and(|(v, o)| o < *v);
            (gone && same_version)
                || (moved && phase(s) == Some(Phase::Verified))
                || (moved
                    && max_supported
                    && after == Some(Phase::Published)
                    && older
                    && phase(s) == Some(Phase::Published))
        })
        .map(|s| ObjectRef::from_obj(&**s))
        .collect();
    (core_build, rerun)
}

/// Which releases of a CoreBuild its change re-runs: all of them when it appears, goes,
/// or its spec changes (a new generation: policy, catalog, blueprint for attempts to
/// come); those whose version a channel moved to or from when its channels change;
/// none for anything else (its counts, its conditions).
pub fn on_core_build(
    old: Option<&CoreBuild>,
    new: Option<&CoreBuild>,
    releases: &[Arc<ImageRelease>],
) -> Vec<ObjectRef<ImageRelease>> {
    let all = || releases.iter().map(|r| ObjectRef::from_obj(&**r)).collect();
    let (Some(old), Some(new)) = (old, new) else { return all() };
    if old.metadata.generation != new.metadata.generation {
        return all();
    }
    let channels = |cb: &CoreBuild| -> BTreeSet<(String, String, String)> {
        cb.status
            .iter()
            .flat_map(|s| s.channels.iter())
            .map(|c| (c.name.clone(), c.version.clone(), c.digest.clone()))
            .collect()
    };
    let (before, after) = (channels(old), channels(new));
    let versions: BTreeSet<&str> = before.symmetric_difference(&after).map(|(_, v, _)| v.as_str()).collect();
    releases
        .iter()
        .filter(|r| versions.contains(r.spec.version.as_str()))
        .filter(|r| r.namespace() == new.namespace())
        .map(|r| ObjectRef::from_obj(&**r))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{ChannelStatus, CoreBuildStatus, ImageReleaseSpec, ImageReleaseStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn release(name: &str, version: &str, phase: Option<Phase>) -> ImageRelease {
        let mut r = ImageRelease::new(
            name,
            ImageReleaseSpec { core_build: "cb".into(), version: version.into(), ..Default::default() },
        );
        r.metadata.namespace = Some("ns".into());
        r.status = phase.map(|p| ImageReleaseStatus { phase: Some(p), ..Default::default() });
        r
    }

    fn names(refs: &[ObjectRef<ImageRelease>]) -> Vec<&str> {
        refs.iter().map(|r| r.name.as_str()).collect()
    }

    #[test]
    fn a_release_reruns_its_corebuild_only_when_what_it_reads_changes() {
        let before = release("a", "1.0.0", Some(Phase::Building));
        let mut same = before.clone();
        same.status.as_mut().unwrap().observed_generation = Some(4);
        assert_eq!(on_release(Some(&before), Some(&same), &[], false), (false, vec![]));
        let testing = release("a", "1.0.0", Some(Phase::Testing));
        assert!(on_release(Some(&before), Some(&testing), &[], false).0);
        assert!(on_release(None, Some(&before), &[], false).0, "a new release is counted");
        assert!(on_release(Some(&before), None, &[], false).0, "a deleted one too");
    }

    #[test]
    fn siblings_rerun_only_when_they_depend_on_the_change() {
        let siblings: Vec<Arc<ImageRelease>> = [
            release("dup", "1.0.0", Some(Phase::Pending)),
            release("held", "1.1.0", Some(Phase::Verified)),
            release("old", "0.9.0", Some(Phase::Published)),
            release("newer", "2.0.0", Some(Phase::Published)),
            release("building", "1.2.0", Some(Phase::Building)),
        ]
        .into_iter()
        .map(Arc::new)
        .collect();
        let verified = release("a", "1.0.0", Some(Phase::Verified));
        let published = release("a", "1.0.0", Some(Phase::Published));
        let (_, rerun) = on_release(Some(&verified), Some(&published), &siblings, true);
        assert_eq!(names(&rerun), ["held", "old"]);
        let (_, rerun) = on_release(Some(&verified), Some(&published), &siblings, false);
        assert_eq!(names(&rerun), ["held"], "without maxSupported no Published release depends on another");
        let building = release("a", "1.0.0", Some(Phase::Building));
        let testing = release("a", "1.0.0", Some(Phase::Testing));
        assert_eq!(on_release(Some(&building), Some(&testing), &siblings, true).1, vec![]);
        let (_, rerun) = on_release(Some(&building), None, &siblings, true);
        assert_eq!(names(&rerun), ["dup"], "the release waiting for the deleted one's version");
        let mut deleting = building.clone();
        deleting.metadata.deletion_timestamp = Some(Time(jiff::Timestamp::UNIX_EPOCH));
        assert_eq!(names(&on_release(Some(&building), Some(&deleting), &siblings, true).1), ["dup"]);
    }

    fn core_build(generation: i64, channels: &[(&str, &str)], published: i32) -> CoreBuild {
        let mut cb: CoreBuild = serde_json::from_value(serde_json::json!({
            "apiVersion": "coreforge.dev/v1alpha1", "kind": "CoreBuild",
            "metadata": {"name": "cb", "namespace": "ns", "generation": generation},
            "spec": {"base": "b@sha256:0", "blueprint": {}, "contract": {}, "catalog": {"repository": "r/x", "stagingRepository": "r/y"}},
        }))
        .unwrap();
        cb.status = Some(CoreBuildStatus {
            channels: channels
                .iter()
                .map(|(n, v)| ChannelStatus { name: n.to_string(), version: v.to_string(), digest: format!("d{v}") })
                .collect(),
            releases: Some(crate::api::ReleaseCounts { published, ..Default::default() }),
            ..Default::default()
        });
        cb
    }

    #[test]
    fn a_corebuild_reruns_the_releases_its_change_concerns() {
        let releases: Vec<Arc<ImageRelease>> = ["1.0.0", "1.1.0", "1.2.0"]
            .iter()
            .enumerate()
            .map(|(i, v)| Arc::new(release(&format!("r{i}"), v, Some(Phase::Published))))
            .collect();
        let before = core_build(1, &[("latest", "1.1.0"), ("1", "1.1.0")], 2);
        let counted = core_build(1, &[("latest", "1.1.0"), ("1", "1.1.0")], 3);
        assert_eq!(on_core_build(Some(&before), Some(&counted), &releases), vec![], "counts concern no release");
        let moved = core_build(1, &[("latest", "1.2.0"), ("1", "1.2.0")], 3);
        assert_eq!(names(&on_core_build(Some(&before), Some(&moved), &releases)), ["r1", "r2"]);
        let edited = core_build(2, &[("latest", "1.1.0"), ("1", "1.1.0")], 2);
        assert_eq!(on_core_build(Some(&before), Some(&edited), &releases).len(), 3);
        assert_eq!(on_core_build(None, Some(&before), &releases).len(), 3, "releases waiting for it start");
    }
}
