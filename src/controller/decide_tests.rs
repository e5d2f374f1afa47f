//! The decision core as a table: (release, observations) → (phase, conditions, child, events).

use super::*;
use crate::api::PUBLISHED;
use crate::api::{
    Blueprint, Catalog, Check, Contract, CoreBuildSpec, ImageReleaseSpec, PackageGuarantee, find_condition,
};
use crate::registry::RegistryError;
use jiff::Timestamp;
use kube::api::ObjectMeta;

const DIGEST: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";

fn at(secs: i64) -> Time {
    Time(Timestamp::from_second(1_800_000_000 + secs).unwrap())
}

fn spec() -> CoreBuildSpec {
    CoreBuildSpec {
        base: format!("registry.local/debian@{DIGEST}"),
        blueprint: Blueprint { containerfile: Some("FROM scratch\nRUN true\n".into()), config_map_ref: None },
        builder: None,
        tester: None,
        contract: Contract {
            packages: vec![PackageGuarantee { name: "bash".into(), version: Some(">= 5".into()) }],
            checks: vec![Check { name: "shell".into(), run: "true".into(), description: None }],
            ..Default::default()
        },
        catalog: Catalog {
            repository: "registry.local/core/debian".into(),
            staging_repository: "registry.local/staging/debian".into(),
            ..Default::default()
        },
        lifecycle: None,
        docs: None,
        base_tracking: None,
    }
}

fn snap(attempt: i32) -> Snapshot {
    Snapshot {
        name: crate::names::snapshot("rel", attempt),
        attempt,
        core_build_generation: 3,
        spec: spec(),
        containerfile: "FROM scratch\nRUN true\n".into(),
        builder_image: crate::snapshot::DEFAULT_BUILDER_IMAGE.into(),
        user_namespace: false,
    }
}

fn release(target: Target, generation: i64, status: Option<ImageReleaseStatus>) -> ImageRelease {
    let mut r = ImageRelease::new(
        "rel",
        ImageReleaseSpec { core_build: "debian".into(), version: "12.7.0".into(), target, ..Default::default() },
    );
    r.metadata = ObjectMeta {
        name: Some("rel".into()),
        namespace: Some("ns".into()),
        uid: Some("0a1b2c3d-0000-0000-0000-000000000000".into()),
        generation: Some(generation),
        creation_timestamp: Some(at(0)),
        ..Default::default()
    };
    r.status = status;
    r
}

fn job(name: &str, state: JobState, message: Option<&str>, reason: Option<&str>) -> JobObservation {
    JobObservation {
        name: name.into(),
        state,
        started_at: Some(at(1)),
        finished_at: (state != JobState::Running).then(|| at(2)),
        reason: reason.map(String::from),
        message: message.map(String::from),
        exit_code: match state {
            JobState::Running => None,
            JobState::Succeeded => Some(0),
            JobState::Failed => Some(3),
        },
        has_pod: true,
        blocked: None,
    }
}

fn stored(attempt: i32) -> Observed {
    Observed { snapshot: Some(Ok(snap(attempt))), snapshot_stored: true, ..Default::default() }
}

fn build_ok() -> String {
    format!(r#"{{"digest":"{DIGEST}"}}"#)
}

fn report(bash: &str, shell_exit: i32) -> String {
    format!(
        r#"{{"packageManager":"dpkg","packages":{{"bash":"{bash}"}},"checks":[{{"name":"shell","exit":{shell_exit},"output":"out"}}]}}"#
    )
}

/// Applies a decision as the edges would: the status becomes the release's status.
fn apply(mut r: ImageRelease, d: &Decision) -> ImageRelease {
    r.status = Some(d.status.clone());
    r
}

fn cond<'a>(d: &'a Decision, t: &str) -> (&'a str, &'a str, &'a str) {
    let c = find_condition(&d.status.conditions, t).unwrap_or_else(|| panic!("no {t} condition"));
    (c.status.as_str(), c.reason.as_str(), c.message.as_str())
}

fn phase(d: &Decision) -> Phase {
    d.status.phase.unwrap()
}

/// Drives a fresh release to the given point of its first attempt.
fn building(target: Target) -> ImageRelease {
    let r = release(target, 1, None);
    apply(r.clone(), &decide(&r, &stored(1), &at(10)))
}

/// A successful build whose digest exists in staging.
fn built() -> Observed {
    let mut o = stored(1);
    o.build_job = Some(job("rel-a1-build", JobState::Succeeded, Some(&build_ok()), None));
    o.staging_check = Some(Ok(Some(crate::api::ImageConfig::default())));
    o
}

fn testing(target: Target) -> ImageRelease {
    let r = building(target);
    let o = built();
    apply(r.clone(), &decide(&r, &o, &at(20)))
}

fn failed_build(generation: i64) -> ImageRelease {
    let r = building(Target::Verified);
    let mut o = stored(1);
    o.build_job = Some(job("rel-a1-build", JobState::Failed, Some("boom"), Some("BuildFailed")));
    let mut r = apply(r.clone(), &decide(&r, &o, &at(20)));
    r.metadata.generation = Some(generation);
    r
}

#[test]
fn waits_for_a_missing_core_build() {
    let r = release(Target::Verified, 1, None);
    let d = decide(&r, &Observed::default(), &at(0));
    assert_eq!(phase(&d), Phase::Pending);
    assert_eq!(d.create, vec![]);
    assert_eq!(cond(&d, READY).0, "False");
    assert_eq!(cond(&d, READY).1, "CoreBuildNotFound");
    assert!(cond(&d, READY).2.contains("CoreBuild debian does not exist"));
    assert_eq!(cond(&d, RECONCILING).0, "True");
    assert_eq!(cond(&d, STALLED).0, "False");
}

#[test]
fn waits_for_a_missing_blueprint() {
    let r = release(Target::Verified, 1, None);
    let o = Observed {
        core_build_exists: true,
        blueprint: Some(Err("blueprint ConfigMap bp does not exist".into())),
        ..Default::default()
    };
    let d = decide(&r, &o, &at(0));
    assert_eq!(phase(&d), Phase::Pending);
    assert_eq!(cond(&d, READY).1, "BlueprintNotFound");
    assert!(cond(&d, READY).2.contains("ConfigMap bp does not exist"));
    assert_eq!(d.create, vec![]);
}

/// A release named `name` of `core_build`, version `version`, created at `created`.
fn other(name: &str, core_build: &str, version: &str, created: i64) -> ImageRelease {
    let mut r = release(Target::Published, 1, None);
    r.metadata.name = Some(name.into());
    r.metadata.uid = Some(format!("uid-{name}"));
    r.metadata.creation_timestamp = Some(at(created));
    r.spec.core_build = core_build.into();
    r.spec.version = version.into();
    r
}

#[test]
fn a_version_belongs_to_its_oldest_release() {
    let me = release(Target::Published, 1, None); // "rel", debian 12.7.0, created at 0
    let claimed = |others: &[ImageRelease]| version_claimed_by(&me, others).map(String::from);
    // Alone, or among other versions and other CoreBuilds, the release owns its version.
    assert_eq!(claimed(&[]), None);
    assert_eq!(claimed(std::slice::from_ref(&me)), None, "itself does not count");
    assert_eq!(claimed(&[other("a", "debian", "12.7.1", -5), other("b", "ubi", "12.7.0", -5)]), None);
    // A newer release of the same version does not take it away.
    assert_eq!(claimed(&[other("newer", "debian", "12.7.0", 5)]), None);
    // An older one does; the oldest of several is named.
    let older = [other("old", "debian", "12.7.0", -5), other("oldest", "debian", "12.7.0", -9)];
    assert_eq!(claimed(&older).as_deref(), Some("oldest"));
    // Created in the same second: the name decides, the same way for both.
    assert_eq!(claimed(&[other("aaa", "debian", "12.7.0", 0)]).as_deref(), Some("aaa"));
    assert_eq!(claimed(&[other("zzz", "debian", "12.7.0", 0)]), None);
    // Build metadata makes another version (and another tag).
    assert_eq!(claimed(&[other("meta", "debian", "12.7.0+1", -5)]), None);
    // One being deleted gives the version up.
    let mut leaving = other("leaving", "debian", "12.7.0", -5);
    leaving.metadata.deletion_timestamp = Some(at(1));
    assert_eq!(claimed(&[leaving]), None);
}

#[test]
fn a_second_release_of_a_version_waits_and_builds_nothing() {
    let r = release(Target::Published, 1, None);
    let o = Observed {
        version_claimed_by: Some("first".into()),
        core_build_exists: true,
        blueprint: Some(Ok("FROM scratch\n".into())),
        snapshot: Some(Ok(snap(1))),
        ..Default::default()
    };
    let d = decide(&r, &o, &at(0));
    assert_eq!(phase(&d), Phase::Pending);
    assert_eq!(d.create, vec![], "no snapshot, no Job");
    assert_eq!(d.status.attempt, None, "no attempt is counted");
    let (status, reason, message) = cond(&d, READY);
    assert_eq!((status, reason), ("False", "DuplicateVersion"));
    assert!(message.contains("version 12.7.0 of CoreBuild debian belongs to ImageRelease first"), "{message}");
    assert_eq!(cond(&d, STALLED), ("True", "DuplicateVersion", message));
    assert_eq!(cond(&d, RECONCILING).0, "False");
    assert_eq!(
        d.notes.iter().map(|n| (n.warning, n.reason.as_str())).collect::<Vec<_>>(),
        [(true, "DuplicateVersion")]
    );
    // Looking again changes nothing and tells nobody again.
    let waiting = apply(r.clone(), &d);
    let again = decide(&waiting, &o, &at(3));
    assert!(again.notes.is_empty(), "{:?}", again.notes);
    assert!(!status_changed(waiting.status.as_ref(), &again.status));
    // Once the first is gone, it starts like any release.
    let d = decide(&waiting, &Observed { version_claimed_by: None, ..o }, &at(5));
    assert!(matches!(d.create.first(), Some(Create::Snapshot(_))));
    assert_eq!(cond(&d, STALLED).0, "False");
}

#[test]
fn the_snapshot_is_stored_first_and_the_attempt_starts_from_it_at_once() {
    let r = release(Target::Verified, 1, None);
    let o = Observed {
        core_build_exists: true,
        blueprint: Some(Ok("FROM scratch".into())),
        snapshot: Some(Ok(snap(1))),
        snapshot_stored: false,
        ..Default::default()
    };
    let d = decide(&r, &o, &at(0));
    // The edges create them in this order and stop if the snapshot exists already.
    assert_eq!(d.create, vec![Create::Snapshot(snap(1)), Create::BuildJob(snap(1))]);
    assert_eq!(phase(&d), Phase::Building);
    assert_eq!(d.status.attempt, Some(1));
    let notes: Vec<_> = d.notes.iter().map(|n| (n.reason.as_str(), n.message.as_str())).collect();
    assert_eq!(notes.len(), 1, "one event for one change: {notes:?}");
    assert_eq!(notes[0].0, "AttemptStarted");
    assert!(notes[0].1.ends_with("; build Job rel-a1-build created"), "{}", notes[0].1);
}

#[test]
fn a_stored_snapshot_starts_the_attempt_and_creates_the_build_job() {
    let r = release(Target::Verified, 1, None);
    let d = decide(&r, &stored(1), &at(10));
    assert_eq!(phase(&d), Phase::Building);
    assert_eq!(d.status.attempt, Some(1));
    assert_eq!(d.status.attempt_generation, Some(1));
    assert_eq!(d.create, vec![Create::BuildJob(snap(1))]);
    let p = d.status.provenance.as_ref().unwrap();
    assert_eq!(p.core_build_generation, 3);
    assert_eq!(p.base_digest, DIGEST);
    assert!(p.blueprint_hash.starts_with("sha256:"));
    assert_eq!(p.builder_image, crate::snapshot::DEFAULT_BUILDER_IMAGE);
    assert_eq!(d.status.build.as_ref().unwrap().job_name, "rel-a1-build");
    let reasons: Vec<_> = d.notes.iter().map(|n| n.reason.as_str()).collect();
    assert_eq!(reasons, ["AttemptStarted"]);
    let phases: Vec<_> = d.status.history.iter().map(|t| t.phase).collect();
    assert_eq!(phases, [Phase::Pending, Phase::Building]);
}

#[test]
fn pods_beyond_the_administrators_policy_fail_the_attempt_before_any_job_exists() {
    let r = release(Target::Published, 1, None);
    let mut o = stored(1);
    o.privileges_refused = Some("spec.builder.securityContext.privileged is true".into());
    let d = decide(&r, &o, &at(10));
    assert_eq!(phase(&d), Phase::Failed);
    assert_eq!(d.create, vec![], "no Job, so no pod");
    let (status, reason, message) = cond(&d, BUILT);
    assert_eq!((status, reason), ("False", "PrivilegesNotAllowed"));
    assert!(message.contains("privileged is true"), "{message}");
    assert_eq!(cond(&d, STALLED).0, "True");
    assert!(d.notes.iter().any(|n| n.warning && n.reason == "PrivilegesNotAllowed"));
    // Looked at again, it stays failed and creates nothing.
    let again = decide(&apply(r, &d), &o, &at(20));
    assert_eq!((phase(&again), again.create), (Phase::Failed, vec![]));
}

#[test]
fn a_running_build_waits_without_creating() {
    let r = building(Target::Verified);
    let mut o = stored(1);
    o.build_job = Some(job("rel-a1-build", JobState::Running, None, None));
    let d = decide(&r, &o, &at(15));
    assert_eq!(phase(&d), Phase::Building);
    assert_eq!(d.create, vec![]);
    assert_eq!(cond(&d, BUILT).0, "Unknown");
    assert!(d.notes.is_empty());
    assert!(!status_changed(r.status.as_ref(), &d.status), "a Job that runs costs no status write");
}

#[test]
fn a_build_pod_that_cannot_start_is_named_at_once_and_warned_about_once() {
    let r = building(Target::Verified);
    let mut o = stored(1);
    let mut j = job("rel-a1-build", JobState::Running, None, None);
    j.blocked = Some(crate::controller::decide::Blocked {
        reason: "ImagePullBackOff".into(),
        message: "pod rel-a1-build-x: Back-off pulling image \"registry.local/nope:1\"".into(),
    });
    o.build_job = Some(j);
    let d = decide(&r, &o, &at(15));
    assert_eq!((phase(&d), d.create.clone()), (Phase::Building, vec![]));
    let (status, reason, message) = cond(&d, BUILT);
    assert_eq!((status, reason), ("Unknown", "ImagePullBackOff"));
    assert!(message.contains("rel-a1-build") && message.contains("registry.local/nope:1"), "{message}");
    assert_eq!(cond(&d, READY).1, "ImagePullBackOff");
    assert_eq!(cond(&d, STALLED).0, "True");
    assert_eq!(d.notes.iter().filter(|n| n.warning && n.reason == "ImagePullBackOff").count(), 1);
    assert!(d.requeue_after.is_some());
    let again = decide(&apply(r, &d), &o, &at(25));
    assert!(again.notes.is_empty(), "warned once: {:?}", again.notes);
    assert_eq!(cond(&again, BUILT).1, "ImagePullBackOff");
}

#[test]
fn an_unschedulable_pod_is_named_but_not_stalled() {
    let r = testing(Target::Verified);
    let mut o = built();
    let mut j = job("rel-a1-test", JobState::Running, None, None);
    j.blocked = Some(crate::controller::decide::Blocked {
        reason: "Unschedulable".into(),
        message: "0/3 nodes are available".into(),
    });
    o.test_job = Some(j);
    let d = decide(&r, &o, &at(25));
    assert_eq!(cond(&d, TESTED).1, "Unschedulable");
    assert_eq!((cond(&d, STALLED).0, cond(&d, RECONCILING).0), ("False", "True"));
}

#[test]
fn a_running_job_without_a_pod_waits_for_news_without_polling() {
    // Its FailedCreate events are watched: one re-runs the release when it comes.
    let r = building(Target::Verified);
    let mut o = stored(1);
    let mut j = job("rel-a1-build", JobState::Running, None, None);
    j.has_pod = false;
    o.build_job = Some(j);
    let d = decide(&r, &o, &at(15));
    assert_eq!(cond(&d, BUILT).1, "Building");
    assert_eq!(d.requeue_after, None);
}

#[test]
fn a_successful_build_records_the_digest_and_starts_testing() {
    let r = testing(Target::Verified);
    let st = r.status.as_ref().unwrap();
    assert_eq!(st.phase, Some(Phase::Testing));
    assert_eq!(st.digest.as_deref(), Some(DIGEST));
    assert_eq!(st.short_digest.as_deref(), Some("111111111111"));
    assert_eq!(st.staging_image.as_deref(), Some(&*format!("registry.local/staging/debian@{DIGEST}")));
    assert_eq!(find_condition(&st.conditions, BUILT).unwrap().status, "True");
    assert_eq!(st.test.as_ref().unwrap().job_name, "rel-a1-test");
    // The same decision asked for the test Job in one go.
    let r0 = building(Target::Verified);
    let d = decide(&r0, &built(), &at(20));
    assert!(matches!(&d.create[..], [Create::TestJob(_, image)] if image.ends_with(DIGEST)));
}

#[test]
fn bad_build_results_fail_with_a_reason() {
    let cases = [
        (JobState::Succeeded, None, None, "InvalidBuildResult", "no termination message"),
        (JobState::Succeeded, Some("not json"), None, "InvalidBuildResult", "not valid result JSON"),
        (JobState::Succeeded, Some(r#"{"digest":"sha256:12"}"#), None, "InvalidBuildResult", "sha256:<64 hex"),
        (
            JobState::Failed,
            Some("buildah: RUN failed"),
            Some("BuildFailed"),
            "BuildFailed",
            "BuildFailed (exit code 3): buildah: RUN failed",
        ),
        (JobState::Failed, None, Some("DeadlineExceeded"), "BuildFailed", "DeadlineExceeded"),
    ];
    for (state, message, reason, want_reason, want_message) in cases {
        let r = building(Target::Verified);
        let mut o = stored(1);
        o.build_job = Some(job("rel-a1-build", state, message, reason));
        let d = decide(&r, &o, &at(20));
        assert_eq!(phase(&d), Phase::Failed, "{message:?}");
        assert_eq!(cond(&d, BUILT).0, "False");
        assert_eq!(cond(&d, BUILT).1, want_reason);
        assert!(cond(&d, READY).2.contains(want_message), "{:?} lacks {want_message}", cond(&d, READY).2);
        assert_eq!(cond(&d, STALLED).0, "True");
        assert_eq!(cond(&d, RECONCILING).0, "False");
        assert_eq!(d.create, vec![]);
        assert!(d.notes.iter().any(|n| n.warning && n.reason == want_reason));
    }
}

#[test]
fn a_lost_snapshot_fails_instead_of_guessing() {
    let r = building(Target::Verified);
    let d = decide(&r, &Observed::default(), &at(20));
    assert_eq!(phase(&d), Phase::Failed);
    assert_eq!(cond(&d, READY).1, "SnapshotMissing");
    assert_eq!(d.create, vec![]);
}

#[test]
fn a_kept_contract_verifies() {
    for (target, ready, reason) in [(Target::Verified, "True", "Verified"), (Target::Published, "False", "Publishing")]
    {
        let r = testing(target);
        let mut o = stored(1);
        o.test_job = Some(job("rel-a1-test", JobState::Succeeded, Some(&report("5.2.15-2", 0)), None));
        let d = decide(&r, &o, &at(30));
        assert_eq!(phase(&d), Phase::Verified);
        assert_eq!(cond(&d, TESTED).0, "True");
        assert_eq!(cond(&d, READY), (ready, reason, cond(&d, READY).2));
        assert_eq!(d.status.checks.len(), 2);
        assert!(d.status.checks.iter().all(|c| c.passed));
        assert_eq!(d.status.test.as_ref().unwrap().outcome.as_deref(), Some("Succeeded"));
    }
}

#[test]
fn a_broken_contract_fails_naming_each_check() {
    let cases = [
        (JobState::Succeeded, report("4.4-1", 0), "ContractBroken", "package:bash (4.4-1 does not satisfy >= 5)"),
        (JobState::Succeeded, report("5.2", 1), "ContractBroken", "check:shell (exit 1)"),
        (JobState::Failed, report("5.2", 2), "ContractBroken", "1 of 2 contract checks failed: check:shell"),
        (JobState::Failed, "exec /bin/sh: no such file".into(), "TestJobFailed", "no such file"),
        (JobState::Succeeded, "{".into(), "InvalidTestResult", "not valid result JSON"),
    ];
    for (state, message, want_reason, want_message) in cases {
        let r = testing(Target::Verified);
        let mut o = stored(1);
        o.test_job = Some(job("rel-a1-test", state, Some(&message), Some("Error")));
        let d = decide(&r, &o, &at(30));
        assert_eq!(phase(&d), Phase::Failed, "{message}");
        assert_eq!(cond(&d, TESTED).1, want_reason, "{message}");
        assert!(cond(&d, READY).2.contains(want_message), "{:?} lacks {want_message}", cond(&d, READY).2);
        assert_eq!(cond(&d, STALLED).0, "True");
    }
}

#[test]
fn failed_stays_failed_until_asked() {
    let r = failed_build(1);
    let d = decide(&r, &stored(1), &at(40));
    assert_eq!(phase(&d), Phase::Failed);
    assert_eq!(d.create, vec![]);
    assert!(!status_changed(r.status.as_ref(), &d.status), "an unchanged Failed release must not be rewritten");
    assert!(cond(&d, READY).2.contains("retry"));
}

#[test]
fn a_spec_change_or_the_retry_annotation_starts_a_new_attempt() {
    // New generation.
    let r = failed_build(2);
    assert_eq!(wanted_attempt(&r), (2, true));
    let d = decide(&r, &stored(2), &at(40));
    assert_eq!(phase(&d), Phase::Building);
    assert_eq!(d.status.attempt, Some(2));
    assert_eq!(d.create, vec![Create::BuildJob(snap(2))]);
    assert_eq!(d.status.build.as_ref().unwrap().job_name, "rel-a2-build");
    assert!(d.status.digest.is_none());

    // Retry annotation, answered once.
    let mut r = failed_build(1);
    r.metadata.annotations = Some([(ANNOTATION_RETRY.to_string(), "1".to_string())].into());
    assert_eq!(wanted_attempt(&r), (2, true));
    let d = decide(&r, &stored(2), &at(40));
    assert_eq!(d.status.retry_token.as_deref(), Some("1"));
    let mut r2 = apply(r.clone(), &d);
    r2.status.as_mut().unwrap().phase = Some(Phase::Failed);
    assert_eq!(wanted_attempt(&r2), (2, false), "the same token does not retry twice");
}

#[test]
fn a_retry_waits_for_its_core_build_like_a_first_attempt() {
    let r = failed_build(2);
    let d = decide(&r, &Observed::default(), &at(40));
    assert_eq!(phase(&d), Phase::Failed);
    assert_eq!(cond(&d, READY).1, "CoreBuildNotFound");
}

#[test]
fn support_end_before_creation_is_refused() {
    let mut r = release(Target::Verified, 1, None);
    r.spec.support_ends_at = Some(at(-10));
    let d = decide(&r, &stored(1), &at(10));
    assert_eq!(d.create, vec![]);
    assert_eq!(cond(&d, STALLED), ("True", "InvalidSpec", cond(&d, STALLED).2));
    assert!(cond(&d, STALLED).2.contains("supportEndsAt"));
}

#[test]
fn decisions_are_fixed_points_once_applied() {
    // Whatever state a release is in, deciding again on the same observations changes nothing.
    let mut o_running = stored(1);
    o_running.build_job = Some(job("rel-a1-build", JobState::Running, None, None));
    let mut o_verified = built();
    o_verified.test_job = Some(job("rel-a1-test", JobState::Succeeded, Some(&report("5.2", 0)), None));
    for (r, o) in [
        (release(Target::Verified, 1, None), Observed::default()),
        (building(Target::Verified), o_running),
        (testing(Target::Verified), o_verified.clone()),
        (failed_build(1), stored(1)),
    ] {
        let first = decide(&r, &o, &at(50));
        let r2 = apply(r, &first);
        let second = decide(&r2, &o, &at(60));
        assert!(!status_changed(r2.status.as_ref(), &second.status), "{:?}", second.status.phase);
        assert!(second.notes.is_empty());
    }
}

#[test]
fn history_is_bounded() {
    let mut r = failed_build(1);
    let st = r.status.as_mut().unwrap();
    let t = st.history[0].clone();
    st.history = vec![t; HISTORY_LIMIT];
    r.metadata.generation = Some(5);
    let d = decide(&r, &stored(2), &at(70));
    assert_eq!(d.status.history.len(), HISTORY_LIMIT);
    assert_eq!(d.status.history.last().unwrap().phase, Phase::Building);
}

#[test]
fn the_built_digest_must_exist_in_staging() {
    let r = building(Target::Verified);
    let mut o = built();
    assert_eq!(staging_digest_to_check(&r, o.build_job.as_ref()).as_deref(), Some(DIGEST));
    // Not checked yet: wait.
    o.staging_check = None;
    let d = decide(&r, &o, &at(20));
    assert_eq!((phase(&d), cond(&d, BUILT).1), (Phase::Building, "VerifyingDigest"));
    // Missing: fail.
    o.staging_check = Some(Ok(None));
    let d = decide(&r, &o, &at(20));
    assert_eq!(phase(&d), Phase::Failed);
    assert_eq!(cond(&d, READY).1, "DigestNotInStaging");
    assert!(cond(&d, READY).2.contains("does not exist in staging"));
    // Registry down: wait, say which registry and why, look again soon.
    o.staging_check = Some(Err(CatalogError::Registry(RegistryError::Unreachable {
        registry: "registry.local".into(),
        message: "connection refused".into(),
    })));
    let d = decide(&r, &o, &at(20));
    assert_eq!(phase(&d), Phase::Building);
    assert_eq!(cond(&d, BUILT).1, "RegistryUnavailable");
    assert!(cond(&d, READY).2.contains("registry registry.local is unreachable: connection refused"));
    assert_eq!(cond(&d, RECONCILING).0, "True");
    assert_eq!(d.requeue_after, Some(Duration::from_secs(2)));
}

fn verified(target: Target) -> ImageRelease {
    let r = testing(target);
    let mut o = built();
    o.test_job = Some(job("rel-a1-test", JobState::Succeeded, Some(&report("5.2", 0)), None));
    apply(r.clone(), &decide(&r, &o, &at(30)))
}

/// The release as the edges leave it after performing its effect and recording `outcome`.
fn recorded(r: &ImageRelease, o: &Observed, outcome: Outcome, secs: i64) -> (ImageRelease, Decision) {
    let d = record(r, o, &outcome, &at(secs));
    (apply(r.clone(), &d), d)
}

#[test]
fn publishing_is_recorded_as_an_intent_before_it_is_performed() {
    let held = verified(Target::Verified);
    let d = decide(&held, &stored(1), &at(40));
    assert!(d.effect.is_none() && d.status.intent.is_none(), "{d:?}");
    // The test's end decides the publication, on the release as it was read.
    let mut r = testing(Target::Published);
    r.metadata.resource_version = Some("41".into());
    let mut o = built();
    o.test_job = Some(job("rel-a1-test", JobState::Succeeded, Some(&report("5.2", 0)), None));
    let d = decide(&r, &o, &at(30));
    assert_eq!((phase(&d), cond(&d, PUBLISHED).1), (Phase::Verified, "Publishing"));
    let intent = d.status.intent.clone().expect("the intent is in the status to write");
    assert_eq!(intent.action, IntentAction::Publish);
    assert_eq!(intent.reference, "registry.local/core/debian:12.7.0");
    assert_eq!((intent.digest.as_str(), intent.decided_on.as_deref()), (DIGEST, Some("41")));
    let Some(Effect::Publish { digest, version, catalog, signing }) = &d.effect else { panic!("{:?}", d.effect) };
    assert_eq!((digest.as_str(), version.as_str()), (DIGEST, "12.7.0"));
    assert_eq!(*signing, None, "no key is configured: published unsigned");
    assert_eq!(catalog.repository, "registry.local/core/debian");
    // Stopped before the outcome was recorded: the next run performs it again, changing
    // nothing else and telling nothing new.
    let intended = apply(r, &d);
    let o = stored(1);
    let again = decide(&intended, &o, &at(35));
    assert_eq!(again.effect, d.effect);
    assert!(!status_changed(intended.status.as_ref(), &again.status), "{:?}", again.status);
    assert!(again.notes.is_empty(), "{:?}", again.notes);
}

#[test]
fn a_recorded_publication_is_performed_even_when_the_release_changed_since() {
    // A newer Published release of the same major version breaks the comparison now,
    // and the target went back: the recorded intent is still performed.
    let mut r = verified(Target::Published);
    assert!(r.status.as_ref().unwrap().intent.is_some());
    r.spec.target = Target::Verified;
    let mut o = stored(1);
    let mut newer = newer_published();
    newer.checks = vec![crate::api::CheckResult { name: "only-in-12.8".into(), passed: true, ..Default::default() }];
    o.siblings = vec![newer];
    let d = decide(&r, &o, &at(40));
    assert!(matches!(d.effect, Some(Effect::Publish { .. })), "{d:?}");
}

#[test]
fn the_outcome_of_publishing_completes_the_intent() {
    let r = verified(Target::Published);
    let mut o = stored(1);
    o.channels = vec!["12".into(), "latest".into()];
    let mut spec = snap(1);
    spec.spec.lifecycle =
        Some(crate::api::LifecyclePolicy { support_window: Some("24h".into()), ..Default::default() });
    o.snapshot = Some(Ok(spec));
    let (published, d) = recorded(&r, &o, Outcome::Published(Ok(DIGEST.into())), 40);
    assert_eq!(phase(&d), Phase::Published);
    assert_eq!(d.status.intent, None);
    assert_eq!(cond(&d, READY).0, "True");
    assert_eq!(
        d.status.published,
        ["registry.local/core/debian:12.7.0", "registry.local/core/debian:12", "registry.local/core/debian:latest"]
    );
    assert_eq!(d.status.published_at, Some(at(40)));
    assert_eq!(d.status.support_ends_at, Some(at(40 + 86400)));
    assert!(d.notes.iter().any(|n| n.reason == "Published"));
    // Deciding again on the recorded release changes nothing and performs nothing.
    let again = decide(&published, &o, &at(41));
    assert!(again.effect.is_none() && !status_changed(published.status.as_ref(), &again.status));
}

#[test]
fn publishing_waits_out_registry_outages_and_names_bad_credentials() {
    let r = verified(Target::Published);
    let o = stored(1);
    let cases = [
        (
            CatalogError::Registry(RegistryError::Unreachable { registry: "r".into(), message: "refused".into() }),
            "RegistryUnavailable",
            false,
        ),
        (
            CatalogError::Registry(RegistryError::Unauthorized { registry: "r".into(), message: "401".into() }),
            "RegistryUnauthorized",
            true,
        ),
        (CatalogError::Credentials("Secret push-creds does not exist".into()), "CredentialsInvalid", true),
    ];
    for (e, reason, stalled) in cases {
        let (waiting, d) = recorded(&r, &o, Outcome::Published(Err(e)), 50);
        assert_eq!(phase(&d), Phase::Verified, "{reason}");
        assert_eq!(cond(&d, PUBLISHED).1, reason);
        assert_eq!(cond(&d, STALLED).0 == "True", stalled, "{reason}");
        assert!(d.requeue_after.is_some(), "{reason}: it keeps trying");
        assert!(d.status.intent.is_some(), "{reason}: the intent stays");
        // The next try performs it again without a write of its own.
        let again = decide(&waiting, &o, &at(55));
        assert!(matches!(again.effect, Some(Effect::Publish { .. })), "{reason}");
        assert!(!status_changed(waiting.status.as_ref(), &again.status), "{reason}: {:?}", again.status);
    }
    // An existing version tag with another digest is never overwritten.
    let conflict = CatalogError::Conflict { reference: "x:12.7.0".into(), existing: DIGEST.into() };
    let (_, d) = recorded(&r, &o, Outcome::Published(Err(conflict)), 50);
    assert_eq!((phase(&d), cond(&d, READY).1), (Phase::Failed, "VersionTagConflict"));
    assert_eq!(d.status.intent, None, "a Failed release writes nothing to the catalog");
}

fn signed(o: &mut Observed) {
    o.signing_key = Some(crate::signing::KeyRef { namespace: "ns".into(), name: "release-signing".into() });
}

#[test]
fn a_signing_key_signs_the_publication_with_provenance_and_contract_attestations() {
    let mut r = testing(Target::Published);
    r.metadata.resource_version = Some("41".into());
    let mut o = built();
    signed(&mut o);
    o.test_job = Some(job("rel-a1-test", JobState::Succeeded, Some(&report("5.2", 0)), None));
    let d = decide(&r, &o, &at(30));
    assert!(cond(&d, READY).2.ends_with("signed with the key in Secret ns/release-signing"), "{:?}", cond(&d, READY));
    let Some(Effect::Publish { signing: Some(signing), digest, .. }) = &d.effect else { panic!("{:?}", d.effect) };
    assert_eq!((signing.key.to_string().as_str(), signing.release.as_str()), ("ns/release-signing", "ns/rel"));
    let types: Vec<&str> = signing.statements.iter().map(|s| s.predicate_type.as_str()).collect();
    assert_eq!(types, [crate::signing::SLSA_PROVENANCE_V1, crate::signing::CONTRACT_PREDICATE_V1]);
    let statement = |i: usize| serde_json::from_slice::<serde_json::Value>(&signing.statements[i].payload).unwrap();
    let (provenance, contract) = (statement(0), statement(1));
    let hex = digest.strip_prefix("sha256:").unwrap();
    assert_eq!(provenance["subject"][0]["digest"]["sha256"], hex);
    let st = d.status.clone();
    let base = st.provenance.as_ref().unwrap().base_digest.strip_prefix("sha256:").unwrap().to_string();
    let deps = &provenance["predicate"]["buildDefinition"]["resolvedDependencies"];
    assert_eq!(deps[0]["digest"]["sha256"], base.as_str());
    assert_eq!(provenance["predicate"]["runDetails"]["byproducts"][1]["uri"], "k8s://ns/jobs/rel-a1-test");
    assert_eq!(contract["predicate"]["passed"], true);
    assert_eq!(contract["predicate"]["checks"], serde_json::to_value(&st.checks).unwrap());
    // Performed again after a crash: the same statements, byte for byte.
    let intended = apply(r, &d);
    let again = decide(&intended, &stored_signed(), &at(35));
    assert_eq!(again.effect, d.effect);
    // Its outcome: the references in status, and one event.
    let signature = crate::api::SignatureStatus {
        key: "ns/release-signing".into(),
        key_fingerprint: "sha256:f00".into(),
        reference: format!("registry.local/core/debian:sha256-{hex}.sig"),
        attestations: vec![crate::api::AttestationStatus {
            predicate_type: crate::signing::SLSA_PROVENANCE_V1.into(),
            reference: format!("registry.local/core/debian:sha256-{hex}.att"),
            digest: "sha256:e".into(),
        }],
        signed_at: at(40),
    };
    let outcome = Outcome::Published(Ok(Publication { digest: DIGEST.into(), signature: Some(signature.clone()) }));
    let (_, d) = recorded(&intended, &stored_signed(), outcome, 40);
    assert_eq!(phase(&d), Phase::Published);
    assert_eq!(d.status.signature, Some(signature));
    let event = d.notes.iter().find(|n| n.reason == "Signed").expect("a Signed event");
    assert!(event.message.contains(".sig") && event.message.contains("sha256:f00"), "{}", event.message);
}

fn stored_signed() -> Observed {
    let mut o = stored(1);
    signed(&mut o);
    o
}

#[test]
fn a_missing_signing_key_blocks_publishing_until_it_is_there() {
    let r = verified(Target::Published);
    let o = stored_signed();
    let missing = crate::signing::KeyError {
        secret: "ns/release-signing".into(),
        reason: "SigningKeyNotFound",
        message: "it does not exist".into(),
    };
    let (waiting, d) = recorded(&r, &o, Outcome::Published(Err(missing.clone().into())), 50);
    assert_eq!(phase(&d), Phase::Verified, "nothing is published unsigned");
    assert_eq!(cond(&d, PUBLISHED).1, "SigningKeyNotFound");
    assert!(cond(&d, READY).2.contains("signing key Secret ns/release-signing: it does not exist"));
    assert_eq!(cond(&d, STALLED).0, "True", "a person has to act");
    assert!(d.status.intent.is_some() && d.requeue_after.is_some());
    assert_eq!(d.notes.iter().filter(|n| n.warning && n.reason == "SigningKeyNotFound").count(), 1);
    // Still missing: no second event, no new status.
    let (_, d) = recorded(&waiting, &o, Outcome::Published(Err(missing.into())), 60);
    assert!(d.notes.is_empty(), "{:?}", d.notes);
    // There now: published.
    let (_, d) = recorded(&waiting, &o, Outcome::Published(Ok(DIGEST.into())), 70);
    assert_eq!(phase(&d), Phase::Published);
}

#[test]
fn deleting_a_retired_tag_deletes_its_signature_record() {
    let o = stored_signed();
    let signature = crate::api::SignatureStatus {
        key: "ns/k".into(),
        key_fingerprint: "sha256:f".into(),
        reference: "registry.local/core/debian:sha256-x.sig".into(),
        attestations: vec![crate::api::AttestationStatus {
            predicate_type: crate::signing::SLSA_PROVENANCE_V1.into(),
            reference: "registry.local/core/debian:sha256-x.att".into(),
            digest: "sha256:e".into(),
        }],
        signed_at: at(40),
    };
    let outcome = Outcome::Published(Ok(Publication { digest: DIGEST.into(), signature: Some(signature) }));
    let (mut retiring, _) = recorded(&verified(Target::Published), &o, outcome, 40);
    retiring.spec.target = Target::Retired;
    let mut o = o;
    o.policy = Some(crate::api::LifecyclePolicy { delete_retired_tags: true, ..Default::default() });
    let retired = apply(retiring.clone(), &decide(&retiring, &o, &at(50)));
    let (_, d) = recorded(&retired, &o, Outcome::TagDeletion(Ok(TagDeletion::Deleted)), 60);
    assert_eq!(d.status.signature, None);
    let (_, _, message) = cond(&d, PUBLISHED);
    assert!(message.contains("sha256-x.sig") && message.contains("sha256-x.att"), "{message}");
}

/// A Published 12.8.0 of the same CoreBuild.
fn newer_published() -> crate::lifecycle::Sibling {
    crate::lifecycle::Sibling {
        name: "newer".into(),
        version: semver::Version::new(12, 8, 0),
        phase: Phase::Published,
        published_at: None,
        base_digest: None,
        checks: vec![],
        known_issues: vec![],
    }
}

/// A release Published at 40.
fn published() -> ImageRelease {
    recorded(&verified(Target::Published), &stored(1), Outcome::Published(Ok(DIGEST.into())), 40).0
}

#[test]
fn a_release_the_policy_moved_beyond_its_target_is_ready() {
    let published = published();
    let mut o = stored(1);
    o.policy = Some(crate::api::LifecyclePolicy { max_supported: Some(1), ..Default::default() });
    o.siblings = vec![newer_published()];
    let d = decide(&published, &o, &at(50));
    assert_eq!(phase(&d), Phase::Deprecated);
    assert_eq!(d.status.deprecated_at, Some(at(50)));
    assert_eq!(cond(&d, READY).0, "True");
    assert_eq!(cond(&d, RECONCILING).0, "False");
    assert_eq!(d.status.history.last().map(|t| t.reason.as_str()), Some("Superseded"));
}

#[test]
fn a_failed_builds_message_keeps_the_end_of_its_log() {
    let r = building(Target::Verified);
    let log = format!("{}\nerror building at STEP \"RUN exit 3\": exit status 3", "pulling layer ✓\n".repeat(200));
    let mut o = stored(1);
    o.build_job = Some(job("rel-a1-build", JobState::Failed, Some(&log), Some("Error")));
    let d = decide(&r, &o, &at(20));
    let (_, reason, message) = cond(&d, BUILT);
    assert_eq!(reason, "BuildFailed");
    assert!(message.starts_with("Job rel-a1-build failed: Error (exit code 3): …"), "{message}");
    assert!(message.ends_with("exit status 3"), "{message}");
    assert!(message.len() < 1200, "{} bytes", message.len());
}

#[test]
fn a_retired_release_leaves_its_channels_and_keeps_a_tag_others_resolve_to() {
    let mut o = stored(1);
    o.channels = vec!["12".into(), "latest".into()];
    let (published, _) = recorded(&verified(Target::Published), &o, Outcome::Published(Ok(DIGEST.into())), 40);
    assert_eq!(published.status.as_ref().unwrap().published.len(), 3);
    // Retired at once: only the version tag is left of its references, and deleting it
    // is recorded as an intent.
    let mut retiring = published.clone();
    retiring.spec.target = Target::Retired;
    o.policy = Some(crate::api::LifecyclePolicy { delete_retired_tags: true, ..Default::default() });
    o.retired_on_digest = vec!["12.6.0".into()];
    let d = decide(&retiring, &o, &at(50));
    let retired = apply(retiring.clone(), &d);
    let st = retired.status.as_ref().unwrap();
    assert_eq!(st.phase, Some(Phase::Retired));
    assert_eq!(st.published, ["registry.local/core/debian:12.7.0"]);
    let intent = st.intent.as_ref().expect("intent");
    assert_eq!(
        (intent.action, intent.reference.as_str()),
        (IntentAction::DeleteVersionTag, "registry.local/core/debian:12.7.0")
    );
    let Some(Effect::DeleteVersionTag { going_too, .. }) = &d.effect else { panic!("{:?}", d.effect) };
    assert_eq!(going_too, &["12.6.0"]);
    // Other tags resolve to its digest: the tag stays, the condition names them, once,
    // and the intent stays to be tried again.
    let kept = Outcome::TagDeletion(Ok(TagDeletion::Kept { by: vec!["13".into(), "13.0.0".into()] }));
    let (kept_release, d) = recorded(&retired, &o, kept.clone(), 60);
    let (value, reason, message) = cond(&d, PUBLISHED);
    assert_eq!((value, reason), ("True", "VersionTagKept"));
    assert!(message.contains("13, 13.0.0"), "{message}");
    assert_eq!(d.status.published, ["registry.local/core/debian:12.7.0"]);
    assert_eq!(d.notes.iter().filter(|n| n.reason == "VersionTagKept").count(), 1);
    assert!(d.status.intent.is_some());
    assert_eq!(d.requeue_after, Some(KEPT_RECHECK));
    let again = decide(&kept_release, &o, &at(70));
    assert!(matches!(again.effect, Some(Effect::DeleteVersionTag { .. })));
    assert!(!status_changed(kept_release.status.as_ref(), &again.status));
    let (_, d) = recorded(&kept_release, &o, kept, 70);
    assert!(d.notes.is_empty(), "{:?}", d.notes);
    assert!(!status_changed(kept_release.status.as_ref(), &d.status));
    // Once nothing else points at it, it is deleted.
    let (gone, d) = recorded(&kept_release, &o, Outcome::TagDeletion(Ok(TagDeletion::Deleted)), 80);
    assert!(d.status.published.is_empty() && d.status.intent.is_none());
    assert_eq!(cond(&d, PUBLISHED).0, "False");
    assert!(d.notes.iter().any(|n| n.reason == "VersionTagDeleted"));
    let after = decide(&gone, &o, &at(90));
    assert!(after.effect.is_none() && !status_changed(gone.status.as_ref(), &after.status));
    // A kept tag whose policy no longer asks for its deletion drops the intent.
    o.policy = None;
    let d = decide(&kept_release, &o, &at(90));
    assert!(d.effect.is_none() && d.status.intent.is_none(), "{d:?}");
}

#[test]
fn a_published_release_whose_snapshot_is_gone_goes_on_with_its_lifecycle_and_says_so() {
    let published = published();
    // The snapshot ConfigMap is deleted; a newer release supersedes this one.
    let mut gone = Observed {
        policy: Some(crate::api::LifecyclePolicy { max_supported: Some(1), ..Default::default() }),
        ..Default::default()
    };
    gone.siblings = vec![newer_published()];
    let d = decide(&published, &gone, &at(50));
    assert_eq!(phase(&d), Phase::Deprecated, "the lifecycle goes on");
    let (ready, reason, message) = cond(&d, READY);
    assert_eq!((ready, reason), ("True", "SnapshotMissing"));
    assert!(message.contains("rel-a1-snapshot is gone"), "{message}");
    assert_eq!(d.notes.iter().filter(|n| n.reason == "SnapshotMissing" && n.warning).count(), 1);
    let deprecated = apply(published, &d);
    let again = decide(&deprecated, &gone, &at(60));
    assert!(again.notes.is_empty(), "warned once: {:?}", again.notes);
    assert!(!status_changed(deprecated.status.as_ref(), &again.status));
}

#[test]
fn children_of_attempts_older_than_the_kept_ones_are_deleted_once() {
    // Attempt 4 is building; attempts 1 to 3 left their children.
    let mut r = building(Target::Verified);
    r.status.as_mut().unwrap().attempt = Some(4);
    let mut o = stored(4);
    o.build_job = Some(job("rel-a4-build", JobState::Running, None, None));
    o.keep_attempts = 2;
    for a in 1..4 {
        o.old_children.push((a, Child::Snapshot(format!("rel-a{a}-snapshot"))));
        o.old_children.push((a, Child::Job(format!("rel-a{a}-build"))));
    }
    let d = decide(&r, &o, &at(20));
    assert_eq!(
        d.delete,
        [
            Child::Snapshot("rel-a1-snapshot".into()),
            Child::Job("rel-a1-build".into()),
            Child::Snapshot("rel-a2-snapshot".into()),
            Child::Job("rel-a2-build".into()),
        ]
    );
    let note = d.notes.iter().find(|n| n.reason == "OldAttemptsDeleted").expect("told");
    assert!(note.message.contains("attempt 1, 2"), "{}", note.message);
    // Once they are gone, nothing more is deleted or told.
    o.old_children.retain(|(a, _)| *a == 3);
    let d = decide(&r, &o, &at(30));
    assert!(d.delete.is_empty() && d.notes.is_empty(), "{d:?}");
    // Keeping one (at least one is always kept): only the current attempt's stay.
    o.keep_attempts = 0;
    assert_eq!(decide(&r, &o, &at(30)).delete.len(), 2);
}

#[path = "decide_props.rs"]
mod props;

fn proven_by(r: &mut ImageRelease, id: &str, type_: crate::api::AdvisoryType, checks: &[&str]) {
    r.spec.advisories.push(crate::api::Advisory {
        id: id.into(),
        type_,
        summary: format!("summary of {id}"),
        resolved_by: checks.iter().map(|c| c.to_string()).collect(),
        ..Default::default()
    });
}

#[test]
fn an_advisory_naming_a_check_the_contract_lacks_fails_before_the_build() {
    let mut r = release(Target::Published, 1, None);
    proven_by(&mut r, "CFBA-1", crate::api::AdvisoryType::Bugfix, &["shell", "dns"]);
    let started = apply(r.clone(), &decide(&r, &stored(1), &at(10)));
    assert_eq!(started.status.as_ref().unwrap().phase, Some(Phase::Failed));
    let d = decide(&r, &stored(1), &at(10));
    assert!(!d.create.iter().any(|c| matches!(c, Create::BuildJob(_))), "no build: {:?}", d.create);
    let (status, reason, message) = cond(&d, ADVISORIES_PROVEN);
    assert_eq!((status, reason), ("False", "UnknownCheck"));
    assert!(message.contains("advisory CFBA-1 names check dns") && message.contains("its checks: shell"), "{message}");
    assert_eq!(cond(&d, STALLED).0, "True");
}

#[test]
fn a_failing_proving_check_fails_the_release_naming_the_advisory_and_the_check() {
    let mut r = testing(Target::Published);
    proven_by(&mut r, "CFBA-7", crate::api::AdvisoryType::Bugfix, &["shell"]);
    let mut o = built();
    o.test_job = Some(job("rel-a1-test", JobState::Succeeded, Some(&report("5.2", 1)), None));
    let d = decide(&r, &o, &at(30));
    assert_eq!(phase(&d), Phase::Failed);
    assert!(d.effect.is_none() && d.status.intent.is_none());
    let (status, reason, message) = cond(&d, ADVISORIES_PROVEN);
    assert_eq!((status, reason), ("False", "ProvingCheckFailed"));
    assert!(message.contains("advisory CFBA-7 (Bugfix) is not proven: its check shell failed"), "{message}");
    let ready = cond(&d, READY).2;
    assert!(ready.contains("CFBA-7") && ready.contains("check:shell"), "{ready}");
}

#[test]
fn proven_advisories_publish_and_an_unproven_one_holds_a_verified_release_back() {
    // Proven: the condition says by which check, and publishing goes on.
    let mut r = testing(Target::Published);
    proven_by(&mut r, "CFSA-1", crate::api::AdvisoryType::Security, &["shell"]);
    proven_by(&mut r, "CFEA-2", crate::api::AdvisoryType::Enhancement, &[]);
    let mut o = built();
    o.test_job = Some(job("rel-a1-test", JobState::Succeeded, Some(&report("5.2", 0)), None));
    let d = decide(&r, &o, &at(30));
    assert_eq!(cond(&d, ADVISORIES_PROVEN), ("True", "Proven", "proven: CFSA-1 by check shell"));
    assert!(matches!(d.effect, Some(Effect::Publish { .. })), "{:?}", d.effect);
    let notes = d.status.release_notes.clone().unwrap_or_default();
    assert!(notes.contains("- **CFSA-1**: summary of CFSA-1\n  - proven by check `shell`: passed"), "{notes}");

    // Held at Verified, then given a Workaround whose check never ran (a check added to
    // the contract since): it does not publish, and says why.
    let mut held = verified(Target::Verified);
    held.spec.target = Target::Published;
    held.metadata.generation = Some(2);
    proven_by(&mut held, "CFWA-3", crate::api::AdvisoryType::Workaround, &["later"]);
    let d = decide(&held, &stored(1), &at(40));
    assert_eq!(phase(&d), Phase::Verified);
    assert!(d.effect.is_none(), "{:?}", d.effect);
    let (status, reason, _) = cond(&d, READY);
    assert_eq!((status, reason), ("False", "AdvisoryNotProven"));
    assert!(cond(&d, READY).2.contains("advisory CFWA-3 (Workaround) is not proven: its check later did not run"));
    assert_eq!(cond(&d, STALLED).0, "True");
}

#[test]
fn a_release_base_from_another_image_is_refused_before_the_attempt() {
    let r = release(Target::Published, 1, None);
    let o = Observed {
        core_build_exists: true,
        base_refused: Some("spec.base evil.example/x@sha256:… is not an image of registry.local/debian".into()),
        ..Default::default()
    };
    let d = decide(&r, &o, &at(10));
    assert_eq!(phase(&d), Phase::Pending);
    assert!(d.create.is_empty());
    assert_eq!(cond(&d, READY).1, "BaseNotAllowed");
    assert_eq!(cond(&d, STALLED).0, "True");
}
