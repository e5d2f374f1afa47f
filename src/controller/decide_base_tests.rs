use super::*;
use crate::api::{CoreBuildSpec, CoreBuildStatus, ImageReleaseStatus, Phase};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

const OLD: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const NEW: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";
const NEWER: &str = "sha256:3333333333333333333333333333333333333333333333333333333333333333";
const TAG: &str = "127.0.0.1:15000/upstream/debian:12-slim";

fn at(secs: i64) -> Time {
    Time(jiff::Timestamp::from_second(1_800_000_000 + secs).unwrap())
}

fn core_build(refresh: RefreshPolicy, base: Option<BaseStatus>) -> CoreBuild {
    let spec: CoreBuildSpec = serde_json::from_value(serde_json::json!({
        "base": format!("127.0.0.1:15000/upstream/debian@{OLD}"),
        "blueprint": {"containerfile": "FROM scratch\n"},
        "contract": {"checks": [{"name": "shell", "run": "true"}]},
        "catalog": {"repository": "127.0.0.1:15000/core/debian", "stagingRepository": "127.0.0.1:15000/staging/debian"},
    }))
    .unwrap();
    let mut cb = CoreBuild::new(
        "debian",
        CoreBuildSpec {
            base_tracking: Some(BaseTracking { tag: TAG.into(), interval: Some("1h".into()), refresh, tls: None }),
            ..spec
        },
    );
    cb.metadata.namespace = Some("team-a".into());
    cb.metadata.uid = Some("uid-cb".into());
    cb.metadata.generation = Some(3);
    cb.status = Some(CoreBuildStatus { base, ..Default::default() });
    cb
}

fn checked(latest: &str, state: BaseState, at_secs: i64) -> BaseStatus {
    BaseStatus {
        tag: TAG.into(),
        pinned_digest: OLD.into(),
        latest_digest: Some(latest.into()),
        state,
        behind_since: (state == BaseState::Behind).then(|| at(at_secs)),
        checked_at: Some(at(at_secs)),
        refresh: None,
    }
}

fn release(name: &str, version: &str, phase: Phase) -> Arc<ImageRelease> {
    let mut r = ImageRelease::new(
        name,
        ImageReleaseSpec { core_build: "debian".into(), version: version.into(), ..Default::default() },
    );
    r.status = Some(ImageReleaseStatus { phase: Some(phase), ..Default::default() });
    Arc::new(r)
}

fn digest(d: &str) -> Polled {
    Polled::Digest { digest: d.into(), manifests: vec![] }
}

#[test]
fn the_tag_is_asked_when_never_asked_when_the_base_moved_and_once_per_interval() {
    let never = core_build(RefreshPolicy::Manual, None);
    assert_eq!(poll_due(&never, &at(0)), Some(Poll { tag: TAG.into(), known: None }));

    let fresh = core_build(RefreshPolicy::Manual, Some(checked(OLD, BaseState::Current, 0)));
    assert_eq!(poll_due(&fresh, &at(3599)), None, "within the interval");
    assert_eq!(poll_due(&fresh, &at(3600)), Some(Poll { tag: TAG.into(), known: Some(OLD.into()) }), "conditional");

    let mut moved = fresh.clone();
    moved.spec.base = format!("127.0.0.1:15000/upstream/debian@{NEW}");
    assert_eq!(poll_due(&moved, &at(10)), Some(Poll { tag: TAG.into(), known: None }), "spec.base edited");

    let mut retagged = fresh.clone();
    retagged.spec.base_tracking.as_mut().unwrap().tag = "127.0.0.1:15000/upstream/debian:13".into();
    assert_eq!(poll_due(&retagged, &at(10)).map(|p| p.known), Some(None), "another tag");

    let mut untracked = fresh;
    untracked.spec.base_tracking = None;
    assert_eq!(poll_due(&untracked, &at(99999)), None);
}

#[test]
fn manual_reports_behind_with_both_digests_and_creates_nothing() {
    let cb = core_build(RefreshPolicy::Manual, Some(checked(OLD, BaseState::Current, 0)));
    let releases = vec![release("r1", "12.8.0", Phase::Published)];
    let plan = plan(&cb, &releases, Some(&digest(NEW)), &at(3600));
    let st = plan.status.clone().unwrap();
    assert_eq!(st.state, BaseState::Behind);
    assert_eq!(st.latest_digest.as_deref(), Some(NEW));
    assert_eq!(st.behind_since, Some(at(3600)));
    assert_eq!(st.checked_at, Some(at(3600)));
    assert_eq!(plan.create, None);
    assert_eq!(plan.move_base, None);
    let (value, reason, message) = plan.condition.clone().unwrap();
    assert_eq!((value, reason.as_str()), (Some(false), "BaseBehind"));
    assert!(message.contains(NEW) && message.contains(OLD) && message.contains("Manual"), "{message}");
    assert_eq!(plan.next_poll, Some(Duration::from_secs(3600)));

    // Still behind an hour later (304): since when is kept, and the question is counted.
    let mut later = cb.clone();
    later.status.as_mut().unwrap().base = Some(st.clone());
    let again = super::plan(&later, &releases, Some(&Polled::Unchanged), &at(7200));
    let st2 = again.status.unwrap();
    assert_eq!(
        (st2.state, st2.behind_since.clone(), st2.checked_at.clone()),
        (BaseState::Behind, Some(at(3600)), Some(at(7200)))
    );

    // Between questions: nothing changes, and the next is due at the end of the interval.
    let between = super::plan(&later, &releases, None, &at(4000));
    assert_eq!(between.status, Some(st));
    assert_eq!(between.next_poll, Some(Duration::from_secs(3200)));
}

#[test]
fn automatic_creates_the_next_patch_release_on_the_new_base_and_moves_spec_base_once_it_is_published() {
    let cb = core_build(RefreshPolicy::Automatic, Some(checked(OLD, BaseState::Current, 0)));
    let releases = vec![
        release("r1", "12.8.0", Phase::Published),
        release("r0", "12.7.3", Phase::Deprecated),
        release("rc", "12.9.0-rc.1", Phase::Verified),
    ];
    let plan = plan(&cb, &releases, Some(&digest(NEW)), &at(3600));
    let created = plan.create.clone().expect("a refresh release");
    let name = refresh_name("debian", NEW);
    let new_base = format!("127.0.0.1:15000/upstream/debian@{NEW}");
    assert_eq!(name, "debian-base-222222222222");
    assert_eq!(created.metadata.name.as_deref(), Some(name.as_str()));
    assert_eq!(created.spec.version, "12.8.1");
    assert_eq!(created.spec.base.as_deref(), Some(new_base.as_str()));
    assert_eq!(created.spec.target, Target::Published);
    let owner = &created.metadata.owner_references.as_ref().unwrap()[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str(), owner.controller), ("CoreBuild", "uid-cb", Some(true)));
    assert_eq!(created.labels().get(LABEL_REFRESH).map(String::as_str), Some("base"));
    let advisory = &created.spec.advisories[0];
    assert_eq!(advisory.id, "BASE-222222222222");
    assert!(advisory.summary.contains(OLD) && advisory.summary.contains(NEW) && advisory.summary.contains(TAG));
    assert_eq!(plan.move_base, None, "not before the release kept the contract and was published");
    let refresh = plan.status.as_ref().unwrap().refresh.clone().unwrap();
    assert_eq!(
        (refresh.release.as_str(), refresh.version.as_str(), refresh.to_digest.as_str()),
        (name.as_str(), "12.8.1", NEW)
    );
    assert_eq!(refresh.base_moved_at, None);

    // Re-run after a crash before the status was written: the release exists, nothing is
    // created again, and the record has the same version.
    let mut with_it = releases.clone();
    with_it.push(Arc::new(created.clone()));
    let rerun = super::plan(&cb, &with_it, Some(&digest(NEW)), &at(3601));
    assert_eq!((rerun.create, rerun.move_base), (None, None));
    assert_eq!(rerun.status.unwrap().refresh.unwrap().version, "12.8.1");

    // Recorded; the release is built and tested: nothing moves yet.
    let mut recorded = cb.clone();
    recorded.status.as_mut().unwrap().base = plan.status.clone();
    let building = super::plan(&recorded, &with_it, None, &at(3700));
    assert_eq!((building.create.clone(), building.move_base.clone()), (None, None));
    assert!(building.condition.unwrap().2.contains("is Pending on it"));

    // It failed its contract: spec.base stays, and the condition says why.
    let mut failed = created.clone();
    failed.status = Some(ImageReleaseStatus { phase: Some(Phase::Failed), ..Default::default() });
    crate::api::set_condition(
        &mut failed.status.as_mut().unwrap().conditions,
        crate::api::READY,
        Some(false),
        "ContractBroken",
        "1 of 5 contract checks failed: check:tls",
        Some(1),
        &at(3800),
    );
    let mut with_failed = releases.clone();
    with_failed.push(Arc::new(failed));
    let after_failure = super::plan(&recorded, &with_failed, None, &at(3900));
    assert_eq!(after_failure.move_base, None);
    let (value, reason, message) = after_failure.condition.unwrap();
    assert_eq!((value, reason.as_str()), (Some(false), "BaseBehind"));
    assert!(message.contains("failed, so spec.base stays: 1 of 5 contract checks failed: check:tls"), "{message}");

    // Published: spec.base moves to the base it was built from, once.
    let mut published = created.clone();
    published.status = Some(ImageReleaseStatus { phase: Some(Phase::Published), ..Default::default() });
    let mut with_published = releases.clone();
    with_published.push(Arc::new(published));
    let moving = super::plan(&recorded, &with_published, None, &at(4000));
    assert_eq!(moving.move_base.as_deref(), Some(new_base.as_str()));
    assert_eq!(moving.status.as_ref().unwrap().refresh.as_ref().unwrap().base_moved_at, Some(at(4000)));

    // Once recorded, a spec.base set back (a GitOps sync) is reported, not moved again.
    let mut moved_record = recorded.clone();
    moved_record.status.as_mut().unwrap().base = moving.status.clone();
    let set_back = super::plan(&moved_record, &with_published, Some(&Polled::Unchanged), &at(7200));
    assert_eq!((set_back.create.clone(), set_back.move_base.clone()), (None, None));
    assert!(set_back.condition.unwrap().2.contains("set back"));

    // The base moved: current, and the record stays.
    let mut moved = moved_record.clone();
    moved.spec.base = new_base.clone();
    let current = super::plan(&moved, &with_published, Some(&digest(NEW)), &at(4100));
    assert_eq!(current.status.as_ref().unwrap().state, BaseState::Current);
    assert_eq!(current.status.as_ref().unwrap().refresh, moving.status.unwrap().refresh);
    assert_eq!(current.condition.unwrap().1, "BaseCurrent");

    // The tag moves again: the next patch after the refresh.
    let newer = super::plan(&moved, &with_published, Some(&digest(NEWER)), &at(9000));
    assert_eq!(newer.create.unwrap().spec.version, "12.8.2");
}

#[test]
fn a_refresh_whose_record_a_crash_lost_is_recorded_once_the_base_is_current() {
    let mut cb = core_build(RefreshPolicy::Automatic, Some(checked(NEW, BaseState::Behind, 0)));
    cb.spec.base = format!("127.0.0.1:15000/upstream/debian@{NEW}");
    let mut refresh = (*release(&refresh_name("debian", NEW), "12.8.1", Phase::Building)).clone();
    refresh.metadata.annotations = Some([(ANNOTATION_REFRESH_FROM.to_string(), OLD.to_string())].into());
    let plan = plan(&cb, &[Arc::new(refresh)], Some(&digest(NEW)), &at(10));
    let st = plan.status.unwrap();
    assert_eq!(st.state, BaseState::Current);
    assert_eq!(st.behind_since, None);
    let r = st.refresh.unwrap();
    assert_eq!((r.from_digest.as_str(), r.to_digest.as_str(), r.version.as_str()), (OLD, NEW, "12.8.1"));
}

#[test]
fn an_index_that_holds_the_pinned_image_is_current() {
    let cb = core_build(RefreshPolicy::Automatic, None);
    let index = Polled::Digest { digest: NEW.into(), manifests: vec![NEWER.into(), OLD.into()] };
    let plan = plan(&cb, &[release("r1", "12.8.0", Phase::Published)], Some(&index), &at(0));
    assert_eq!(plan.status.unwrap().state, BaseState::Current);
    assert_eq!(plan.create, None);
}

#[test]
fn failures_say_why_and_keep_the_last_verdict() {
    let cb = core_build(RefreshPolicy::Manual, None);
    let failed = Polled::Failed("BaseTagNotFound".into(), format!("{TAG} does not exist"));
    let plan = plan(&cb, &[], Some(&failed), &at(0));
    assert_eq!(plan.status.as_ref().unwrap().state, BaseState::Unknown);
    let (value, reason, message) = plan.condition.unwrap();
    assert_eq!((value, reason.as_str()), (None, "BaseTagNotFound"));
    assert!(message.contains("does not exist"), "{message}");

    let known = core_build(RefreshPolicy::Manual, Some(checked(NEW, BaseState::Behind, 0)));
    let unreachable = Polled::Failed("RegistryUnavailable".into(), "connection refused".into());
    let plan = super::plan(&known, &[], Some(&unreachable), &at(3600));
    let (value, reason, message) = plan.condition.unwrap();
    assert_eq!((value, reason.as_str()), (Some(false), "BaseBehind"));
    assert!(message.contains("the last question failed: connection refused"), "{message}");
}

#[test]
fn automatic_without_any_release_waits_for_one() {
    let cb = core_build(RefreshPolicy::Automatic, None);
    let plan = plan(&cb, &[], Some(&digest(NEW)), &at(0));
    assert_eq!((plan.create.clone(), plan.move_base.clone()), (None, None));
    assert!(plan.condition.unwrap().2.contains("no release to refresh"));
}

#[test]
fn untracking_removes_the_condition() {
    let mut cb = core_build(RefreshPolicy::Manual, None);
    cb.spec.base_tracking = None;
    let plan = plan(&cb, &[], None, &at(0));
    assert_eq!(plan, BasePlan::default());
    let mut conditions = Vec::<Condition>::new();
    crate::api::set_condition(&mut conditions, BASE_CURRENT, Some(true), "BaseCurrent", "", Some(1), &at(0));
    apply_condition(&mut conditions, &plan, Some(1), &at(0));
    assert!(conditions.is_empty());
}
