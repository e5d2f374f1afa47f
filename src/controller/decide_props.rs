//! Properties of the decision core, checked on random walks: a simulated world (Jobs
//! that finish one way or another, a registry that fails, time that passes, people who
//! retry, retarget, delete snapshots and change the policy, status writes that are lost)
//! around one release, reconciled by [`decide`] as the edges would, in random orders.
//!
//! Invariants, checked at every step:
//! - nothing untested is ever published (the edges publish only what a Verified release
//!   whose every check passed asks for, and only such a release becomes Published);
//! - phases never move backwards (a new attempt of a Failed release aside);
//! - a Failed release always names a reason, and is Stalled;
//! - the history stays bounded;
//! - a settled release decides no change: reconciling on, in a quiet world, converges to
//!   a status that deciding again leaves as it is, with nothing to create and nothing to
//!   tell.
//!
//! `make test` runs a slice (`COREFORGE_PROPERTY_CASES`, default 2,000 walks);
//! `make properties` runs 1,000,000 in the release build.

use std::collections::{BTreeMap, BTreeSet};

use super::*;
use crate::api::{ANNOTATION_RETRY, LifecyclePolicy, Phase, STALLED};
use crate::api::{ImageReleaseStatus, IntentAction};
use crate::catalog::{CatalogError, TagDeletion};
use crate::lifecycle::Sibling;
use crate::registry::RegistryError;

/// xorshift64*: small, fast, and reproducible from its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Everything around the release that the edges would observe.
struct World {
    release: ImageRelease,
    now: i64,
    snapshots: BTreeSet<i32>,
    /// Jobs by name: state and what the pod reported.
    jobs: BTreeMap<String, (JobState, Option<String>)>,
    staging_has_digest: bool,
    registry_up: bool,
    version_tag_taken: bool,
    version_tag_published: bool,
    policy: Option<LifecyclePolicy>,
    siblings: Vec<Sibling>,
    generation: i64,
    tokens: u32,
}

fn rank(p: Phase) -> i32 {
    match p {
        Phase::Pending => 0,
        Phase::Building => 1,
        Phase::Testing => 2,
        Phase::Verified => 3,
        Phase::Published => 4,
        Phase::Deprecated => 5,
        Phase::Retired => 6,
        Phase::Failed => -1,
    }
}

impl World {
    fn new(rng: &mut Rng) -> Self {
        let target = [Target::Verified, Target::Published, Target::Deprecated, Target::Retired][rng.below(4) as usize];
        World {
            release: release(target, 1, None),
            now: 10,
            snapshots: BTreeSet::new(),
            jobs: BTreeMap::new(),
            staging_has_digest: !rng.chance(5),
            registry_up: !rng.chance(10),
            version_tag_taken: rng.chance(3),
            version_tag_published: false,
            policy: None,
            siblings: Vec::new(),
            generation: 1,
            tokens: 0,
        }
    }

    /// What the edges would gather for the release, performing the registry effects the
    /// decision core asks for (and checking that only a tested release is published).
    fn observe(&mut self) -> Observed {
        let r = &self.release;
        let (attempt, starting) = wanted_attempt(r);
        let mut o = Observed { keep_attempts: 3, ..Default::default() };
        if self.snapshots.contains(&attempt) {
            o.snapshot = Some(Ok(snap(attempt)));
            o.snapshot_stored = true;
        } else if starting {
            o.core_build_exists = true;
            o.blueprint = Some(Ok("FROM scratch\nRUN true\n".into()));
            o.snapshot = Some(Ok(snap(attempt)));
            return o;
        }
        let observe_job = |name: String, jobs: &BTreeMap<String, (JobState, Option<String>)>| {
            jobs.get(&name).map(|(state, message)| job(&name, *state, message.as_deref(), None))
        };
        o.build_job = observe_job(crate::names::build_job("rel", attempt), &self.jobs);
        o.test_job = observe_job(crate::names::test_job("rel", attempt), &self.jobs);
        for earlier in 1..attempt {
            if self.snapshots.contains(&earlier) {
                o.old_children.push((earlier, Child::Snapshot(crate::names::snapshot("rel", earlier))));
            }
        }
        let unreachable =
            || CatalogError::Registry(RegistryError::Unreachable { registry: "r".into(), message: "refused".into() });
        let snapshot = o.snapshot.is_some();
        if snapshot && staging_digest_to_check(r, o.build_job.as_ref()).is_some() {
            o.staging_check = Some(match (self.registry_up, self.staging_has_digest) {
                (false, _) => Err(unreachable()),
                (true, has) => Ok(has.then(crate::api::ImageConfig::default)),
            });
        }
        let phase = r.status.as_ref().and_then(|s| s.phase);
        if rank(phase.unwrap_or_default()) >= rank(Phase::Testing) {
            o.siblings = self.siblings.clone();
            o.policy = self.policy.clone();
        }
        o
    }

    /// Performs a catalog write as the edges would, checking that only a tested release
    /// is published, and only what the status recorded as its intent.
    fn perform(&mut self, effect: &Effect) -> Outcome {
        let st = self.release.status.as_ref().expect("an effect comes with a status");
        let intent = st.intent.as_ref().expect("a catalog write is performed only once its intent is recorded");
        let unreachable =
            || CatalogError::Registry(RegistryError::Unreachable { registry: "r".into(), message: "refused".into() });
        match effect {
            Effect::Publish { digest, .. } => {
                assert_eq!(intent.action, IntentAction::Publish);
                assert_eq!(st.phase, Some(Phase::Verified), "publishing from {:?}", st.phase);
                assert!(!st.checks.is_empty() && st.checks.iter().all(|c| c.passed), "publishing untested: {st:?}");
                assert_eq!(st.digest.as_ref(), Some(digest), "publishing another digest");
                Outcome::Published(match (self.registry_up, self.version_tag_taken) {
                    (false, _) => Err(unreachable()),
                    (true, true) => {
                        Err(CatalogError::Conflict { reference: "core:12.7.0".into(), existing: "sha256:other".into() })
                    }
                    (true, false) => {
                        self.version_tag_published = true;
                        Ok(digest.as_str().into())
                    }
                })
            }
            Effect::DeleteVersionTag { .. } => {
                assert_eq!(intent.action, IntentAction::DeleteVersionTag);
                assert_eq!(st.phase, Some(Phase::Retired), "deleting the tag of a {:?} release", st.phase);
                Outcome::TagDeletion(if self.registry_up {
                    self.version_tag_published = false;
                    Ok(TagDeletion::Deleted)
                } else {
                    Err(unreachable())
                })
            }
        }
    }

    /// One reconcile: observe, decide, act, record (a status write lost now and then, as
    /// to a newer resourceVersion, and the controller stopped between a catalog write and
    /// the record of its outcome). Checks the invariants on the way.
    fn reconcile(&mut self, rng: &mut Rng, lossy: bool) -> Decision {
        let observed = self.observe();
        let d = decide(&self.release, &observed, &at(self.now));
        check(&self.release, &d);
        for c in &d.create {
            match c {
                Create::Snapshot(s) => {
                    self.snapshots.insert(s.attempt);
                }
                Create::BuildJob(s) => {
                    let name = crate::names::build_job("rel", s.attempt);
                    self.jobs.entry(name).or_insert((JobState::Running, None));
                }
                Create::TestJob(s, _) => {
                    let name = crate::names::test_job("rel", s.attempt);
                    self.jobs.entry(name).or_insert((JobState::Running, None));
                }
            }
        }
        for c in &d.delete {
            if let Child::Snapshot(name) = c {
                self.snapshots.retain(|a| &crate::names::snapshot("rel", *a) != name);
            }
        }
        if lossy && rng.chance(10) {
            // Lost: nothing after it happens.
            return d;
        }
        self.release.status = Some(d.status.clone());
        if let Some(effect) = &d.effect {
            let outcome = self.perform(effect);
            if lossy && rng.chance(10) {
                return d;
            }
            let recorded = record(&self.release, &observed, &outcome, &at(self.now));
            check(&self.release, &recorded);
            assert!(recorded.effect.is_none() && recorded.create.is_empty() && recorded.delete.is_empty());
            self.release.status = Some(recorded.status);
        }
        d
    }

    /// Something happens in the world.
    fn event(&mut self, rng: &mut Rng) {
        match rng.below(12) {
            0..=3 => {
                // A running Job finishes.
                let running: Vec<String> =
                    self.jobs.iter().filter(|(_, (s, _))| *s == JobState::Running).map(|(n, _)| n.clone()).collect();
                if let Some(name) = running.get(rng.below(running.len().max(1) as u64) as usize) {
                    let build = name.ends_with("-build");
                    let outcome = match rng.below(10) {
                        0 => (JobState::Failed, Some("exit status 3".to_string())),
                        1 => (JobState::Succeeded, Some("not json".to_string())),
                        2 if !build => (JobState::Succeeded, Some(report("4.0", 1))),
                        _ if build => (JobState::Succeeded, Some(build_ok())),
                        _ => (JobState::Succeeded, Some(report("5.2", 0))),
                    };
                    self.jobs.insert(name.clone(), outcome);
                }
            }
            4 => self.now += rng.below(3 * 86400) as i64,
            5 => {
                // Someone asks for a retry.
                self.tokens += 1;
                self.release.metadata.annotations =
                    Some([(ANNOTATION_RETRY.to_string(), self.tokens.to_string())].into());
            }
            6 => {
                // The target moves forward (never back: the API server refuses).
                let next = match self.release.spec.target {
                    Target::Verified => Target::Published,
                    Target::Published => Target::Deprecated,
                    _ => Target::Retired,
                };
                self.release.spec.target = next;
                self.generation += 1;
                self.release.metadata.generation = Some(self.generation);
            }
            7 => self.registry_up = !self.registry_up,
            8 => {
                let deprecate = rng.below(100);
                self.policy = Some(LifecyclePolicy {
                    max_supported: rng.chance(50).then(|| 1 + rng.below(3) as i32),
                    deprecate_after: rng.chance(50).then(|| format!("{deprecate}h")),
                    retire_after: rng.chance(50).then(|| format!("{}h", deprecate + 1 + rng.below(100))),
                    support_window: None,
                    delete_retired_tags: rng.chance(50),
                });
            }
            9 => self.siblings.push(Sibling {
                name: format!("newer{}", self.siblings.len()),
                version: semver::Version::new(12, 8 + self.siblings.len() as u64, 0),
                phase: Phase::Published,
                published_at: Some(at(self.now).0),
                base_digest: None,
                checks: vec![],
                known_issues: vec![],
            }),
            10 if rng.chance(20) => {
                // Someone deletes the attempt's snapshot.
                if let Some(a) = self.release.status.as_ref().and_then(|s| s.attempt) {
                    self.snapshots.remove(&a);
                }
            }
            _ => self.staging_has_digest = !rng.chance(5),
        }
    }
}

/// The invariants between a release and the decision made on it.
fn check(before: &ImageRelease, d: &Decision) {
    let old = before.status.as_ref().and_then(|s| s.phase);
    let new = d.status.phase.expect("a decision always has a phase");
    let st = &d.status;
    let action = |s: Option<&ImageReleaseStatus>| s.and_then(|s| s.intent.as_ref()).map(|i| i.action);
    match &d.effect {
        Some(Effect::Publish { .. }) => assert_eq!(action(Some(st)), Some(IntentAction::Publish)),
        Some(Effect::DeleteVersionTag { .. }) => assert_eq!(action(Some(st)), Some(IntentAction::DeleteVersionTag)),
        None => {}
    }
    if let Some(old) = old {
        let new_attempt = st.attempt != before.status.as_ref().and_then(|s| s.attempt);
        match (old, new) {
            (_, Phase::Failed) => assert!(
                matches!(old, Phase::Pending | Phase::Building | Phase::Testing | Phase::Verified | Phase::Failed),
                "{old:?} → Failed"
            ),
            (Phase::Failed, _) => assert!(new_attempt, "Failed → {new:?} without a new attempt"),
            _ => assert!(rank(new) >= rank(old), "{old:?} → {new:?}"),
        }
        if rank(new) >= rank(Phase::Published) && rank(old) < rank(Phase::Published) {
            assert_eq!(old, Phase::Verified, "published from {old:?}");
            assert_eq!(action(before.status.as_ref()), Some(IntentAction::Publish), "published without an intent");
            assert!(!st.checks.is_empty() && st.checks.iter().all(|c| c.passed), "published untested: {st:?}");
            assert!(st.published_at.is_some() && st.digest.is_some(), "{st:?}");
        }
    }
    if new == Phase::Failed {
        let ready = find_condition(&st.conditions, READY).expect("Ready");
        assert!(!ready.reason.is_empty() && !ready.message.is_empty(), "a Failed release names no reason: {ready:?}");
        let stalled = find_condition(&st.conditions, STALLED).expect("Stalled");
        assert_eq!(stalled.status, "True", "a Failed release is Stalled");
    }
    assert!(st.history.len() <= HISTORY_LIMIT, "history of {}", st.history.len());
}

/// One random walk, from seed `seed`; the phase it ends in.
fn walk(seed: u64) -> Option<Phase> {
    let mut rng = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut world = World::new(&mut rng);
    let steps = 4 + rng.below(40);
    for _ in 0..steps {
        if rng.chance(50) {
            world.reconcile(&mut rng, true);
        } else {
            world.event(&mut rng);
        }
    }
    // Quiet now (Jobs that run go on running, nothing else happens): reconciling on
    // converges, and then decides no change.
    let mut settled = false;
    for _ in 0..8 {
        let before = world.release.status.clone();
        let observed = world.observe();
        let d = decide(&world.release, &observed, &at(world.now));
        check(&world.release, &d);
        // A catalog write still asked for is settled only while the registry is down.
        let effects_done = d.effect.is_none() || !world.registry_up;
        if !status_changed(before.as_ref(), &d.status) && d.create.is_empty() && d.delete.is_empty() && effects_done {
            assert!(d.notes.is_empty(), "seed {seed}: a settled release tells {:?}", d.notes);
            settled = true;
            break;
        }
        // Writes go through while quiet.
        world.reconcile(&mut rng, false);
    }
    assert!(settled, "seed {seed}: the release does not settle: {:?}", world.release.status);
    // The catalog is what the status says: a published reference, the version tag (while
    // the registry and the snapshot naming it are there to act on).
    let st = world.release.status.clone().unwrap_or_default();
    let snapshot = st.attempt.is_some_and(|a| world.snapshots.contains(&a));
    if matches!(st.phase, Some(Phase::Published | Phase::Deprecated | Phase::Retired)) && world.registry_up && snapshot
    {
        let in_status = !st.published.is_empty();
        assert_eq!(in_status, world.version_tag_published, "seed {seed}: the catalog disagrees with {st:?}");
    }
    st.phase
}

fn cases() -> u64 {
    std::env::var("COREFORGE_PROPERTY_CASES").ok().and_then(|c| c.replace('_', "").parse().ok()).unwrap_or(2_000)
}

#[test]
fn the_decision_core_keeps_its_invariants_on_random_walks() {
    let n = cases();
    let started = std::time::Instant::now();
    let mut ends: BTreeMap<String, u64> = BTreeMap::new();
    for seed in 0..n {
        match std::panic::catch_unwind(|| walk(seed)) {
            Ok(end) => *ends.entry(end.map(|p| p.as_str()).unwrap_or("None").to_string()).or_default() += 1,
            Err(e) => {
                let message =
                    e.downcast_ref::<String>().cloned().or_else(|| e.downcast_ref::<&str>().map(|s| s.to_string()));
                panic!("seed {seed} of {n}: {}", message.unwrap_or_default());
            }
        }
    }
    eprintln!("{n} random walks kept every invariant in {:.1?}; they ended {ends:?}", started.elapsed());
    // The walks reach every part of a release's life, or they prove little.
    if n >= 1_000 {
        for phase in ["Building", "Testing", "Verified", "Published", "Deprecated", "Retired", "Failed"] {
            assert!(ends.get(phase).copied().unwrap_or(0) > 0, "no walk ended {phase}: {ends:?}");
        }
    }
}
