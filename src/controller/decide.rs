//! The pure decision core: given a release, what the controller observed around it, and
//! the time, decide the release's next status and every effect the edges perform: the
//! children to create and delete, and the catalog write to make. No I/O, so every case
//! is a row in a table test. One reconcile reads top to bottom: read ([`Observed`]) →
//! [`decide`] → act → [`record`] the catalog write's outcome.
//!
//! Crash safety comes from the shape, not from care at each call site:
//! - the attempt number lives in the persisted status, and every child's name derives
//!   from it: re-running a decision after a crash anywhere gives the same names, finds
//!   the same children (`AlreadyExists`) and reaches the same status;
//! - a catalog write (publishing, deleting a retired version tag) is an [`Intent`] in
//!   the status the decision returns. The edges write that status on the condition that
//!   the release is still at the resourceVersion it was decided on, and only then
//!   perform the write; [`record`] clears the intent with the outcome. A controller that
//!   stops in between finds the intent and performs it again (both writes are
//!   idempotent), whatever changed since: a decided catalog write is never lost, and
//!   never made on a stale copy of the release.

use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::advisories;
use crate::api::{
    ADVISORIES_PROVEN, CONTRACT_KEPT, Catalog, ImageConfig, Intent, IntentAction, LifecyclePolicy, PUBLISHED,
    parse_duration,
};
use crate::api::{
    ANNOTATION_RETRY, BUILT, ImageRelease, ImageReleaseStatus, Phase, READY, RECONCILING, STALLED, StepStatus, TESTED,
    Target, Transition, set_condition,
};
use crate::catalog::{CatalogError, Publication, TagDeletion};
use crate::contract;
use crate::lifecycle::{self, Sibling};
use crate::results;
use crate::signing::{KeyRef, Signing, predicates};
use crate::snapshot::Snapshot;

/// How many transitions `status.history` keeps.
pub const HISTORY_LIMIT: usize = 50;

/// State of a Job as the controller sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobState {
    /// Not finished.
    Running,
    /// Condition `Complete`.
    Succeeded,
    /// Condition `Failed`.
    Failed,
}

/// A Job and what its pod reported.
#[derive(Debug, Clone, PartialEq)]
pub struct JobObservation {
    /// Job name.
    pub name: String,
    /// Running, succeeded or failed.
    pub state: JobState,
    /// When its pod started.
    pub started_at: Option<Time>,
    /// When it finished.
    pub finished_at: Option<Time>,
    /// Why it failed: the container's terminated reason, else the Job condition's reason.
    pub reason: Option<String>,
    /// The container's termination message (the step's result), else the Job condition's message.
    pub message: Option<String>,
    /// The container's exit code, if it terminated.
    pub exit_code: Option<i32>,
    /// Whether the Job has a pod.
    pub has_pod: bool,
    /// Why the running Job's pod does not start (or cannot be created), if it does not.
    pub blocked: Option<Blocked>,
}

/// Why a step's pod does not start: it would otherwise stay invisible until the Job's
/// deadline.
#[derive(Debug, Clone, PartialEq)]
pub struct Blocked {
    /// `ImagePullBackOff`, `Unschedulable`, `PodSecurityRefused`, … (from the pod or the
    /// Job's events).
    pub reason: String,
    /// The kubelet's, scheduler's or admission's own words.
    pub message: String,
}

impl Blocked {
    /// Whether a person must act: an image that cannot be pulled or a pod refused stays
    /// so; a pod waiting for room in the cluster may yet be placed.
    pub fn needs_a_person(&self) -> bool {
        self.reason != "Unschedulable"
    }
}

/// Everything the decision needs besides the release. Only what the current phase needs
/// is filled in by the edges.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Whether the release's CoreBuild exists (needed to start an attempt).
    pub core_build_exists: bool,
    /// The Containerfile resolved from the live CoreBuild, or why it could not be
    /// (needed to start an attempt).
    pub blueprint: Option<Result<String, String>>,
    /// The release of the same CoreBuild that claimed this release's version first, if
    /// another did (see [`version_claimed_by`]; needed to start an attempt).
    pub version_claimed_by: Option<String>,
    /// The snapshot to start from: taken from the live CoreBuild by the edges, or read back
    /// from the attempt's ConfigMap if one exists.
    pub snapshot: Option<Result<Snapshot, String>>,
    /// Whether `snapshot` was read from an existing ConfigMap.
    pub snapshot_stored: bool,
    /// Why the release's `spec.base` may not replace its CoreBuild's base, if it may not
    /// (needed to start an attempt; see [`crate::snapshot::release_base`]).
    pub base_refused: Option<String>,
    /// Why the administrator's policy refuses the pods the snapshot asks for, if it does
    /// (see [`crate::privileges`]).
    pub privileges_refused: Option<String>,
    /// The attempt's build Job.
    pub build_job: Option<JobObservation>,
    /// The attempt's test Job.
    pub test_job: Option<JobObservation>,
    /// The config of the image the build reported, read from staging (`None` inside: it
    /// does not exist there); filled in by the edges when [`staging_digest_to_check`]
    /// names a digest.
    pub staging_check: Option<Result<Option<ImageConfig>, CatalogError>>,
    /// Channels of the CoreBuild that point at this release now.
    pub channels: Vec<String>,
    /// The other releases of the same CoreBuild (from Verified on).
    pub siblings: Vec<Sibling>,
    /// The CoreBuild's lifecycle policy as it is now (for Published and Deprecated releases).
    pub policy: Option<LifecyclePolicy>,
    /// The children of the release's earlier attempts that still exist, with their
    /// attempt.
    pub old_children: Vec<(i32, Child)>,
    /// How many attempts keep their children (the administrator's setting; at least 1).
    pub keep_attempts: u32,
    /// The versions of the same CoreBuild that are Retired on this release's digest: when
    /// its version tag is deleted, theirs go with it (from Verified on).
    pub retired_on_digest: Vec<String>,
    /// The Secret of the key a publication is signed with: the one the CoreBuild names
    /// now (as its snapshot does, when it is gone), else the controller's default; `None`
    /// publishes unsigned (from Verified on).
    pub signing_key: Option<KeyRef>,
}

/// The digest whose presence in staging the edges must check: the one a successful build
/// of the current attempt reported, while the release is Building.
pub fn staging_digest_to_check(release: &ImageRelease, build_job: Option<&JobObservation>) -> Option<String> {
    let phase = release.status.as_ref().and_then(|s| s.phase);
    let (_, starting) = wanted_attempt(release);
    let job = build_job.filter(|j| j.state == JobState::Succeeded)?;
    if starting || phase != Some(Phase::Building) {
        return None;
    }
    results::parse_build(job.message.as_deref().unwrap_or_default()).ok().map(|r| r.digest)
}

/// Which other release of the same CoreBuild owns `release`'s version: the oldest one
/// with that version (by creation time, then name) that is not being deleted, if it is
/// older than `release`. A version is built and published once; a second release of it
/// (a copied manifest, say) waits until the first is deleted instead of building an image
/// that could only collide with the published tag.
pub fn version_claimed_by<'a>(
    release: &ImageRelease,
    others: impl IntoIterator<Item = &'a ImageRelease>,
) -> Option<&'a str> {
    let key = |r: &ImageRelease| (r.metadata.creation_timestamp.as_ref().map(|t| t.0), r.name_any());
    let mine = key(release);
    others
        .into_iter()
        .filter(|o| o.spec.core_build == release.spec.core_build && o.spec.version == release.spec.version)
        .filter(|o| o.metadata.deletion_timestamp.is_none() && o.metadata.uid != release.metadata.uid)
        .map(|o| (key(o), o))
        .filter(|(k, _)| *k < mine)
        .min_by(|(a, _), (b, _)| a.cmp(b))
        .and_then(|(_, o)| o.metadata.name.as_deref())
}

/// An object the edges must create. Its name derives from the attempt, so creating it
/// twice finds the first one (`AlreadyExists`) instead of making a second.
#[derive(Debug, Clone, PartialEq)]
pub enum Create {
    /// The attempt's snapshot ConfigMap.
    Snapshot(Snapshot),
    /// The attempt's build Job.
    BuildJob(Snapshot),
    /// The attempt's test Job, for the built image.
    TestJob(Snapshot, String),
}

/// A child of an attempt, by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Child {
    /// A snapshot ConfigMap.
    Snapshot(String),
    /// A build or test Job (its pods go with it).
    Job(String),
}

/// An Event to record on the release.
#[derive(Debug, Clone, PartialEq)]
pub struct Note {
    /// Warning (true) or Normal.
    pub warning: bool,
    /// PascalCase reason.
    pub reason: String,
    /// What happened, for a person.
    pub message: String,
}

/// A catalog write, performed by the edges after the status recording it as an
/// [`Intent`] was written.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Sign `digest` and attest how it was made and tested, when `signing` says so
    /// ([`crate::catalog::sign`]), then copy it from staging to the version tag of
    /// `version` ([`crate::catalog::publish`]): nothing reaches the catalog unsigned.
    Publish {
        /// The catalog of the attempt's snapshot.
        catalog: Catalog,
        /// The verified digest.
        digest: String,
        /// The release's version.
        version: String,
        /// The key and the attestations; `None`: published unsigned.
        signing: Option<Signing>,
    },
    /// Delete the version tag of a retired release, with those of `going_too`, unless
    /// another tag resolves to `digest` ([`crate::catalog::delete_version_tag`]).
    DeleteVersionTag {
        /// The catalog of the attempt's snapshot.
        catalog: Catalog,
        /// The release's digest.
        digest: String,
        /// The release's version.
        version: String,
        /// Retired versions of the same CoreBuild on the same digest.
        going_too: Vec<String>,
    },
}

/// What came of an [`Effect`], for [`record`].
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Of [`Effect::Publish`].
    Published(Result<Publication, CatalogError>),
    /// Of [`Effect::DeleteVersionTag`].
    TagDeletion(Result<TagDeletion, CatalogError>),
}

/// What to do.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The status the release should have.
    pub status: ImageReleaseStatus,
    /// What to create, in this order, before the status is written. A snapshot comes
    /// first: when it exists already (taken by an earlier run from another CoreBuild
    /// generation) the edges stop there, and the next run starts from the stored one.
    pub create: Vec<Create>,
    /// What to delete: the children of attempts older than the kept ones.
    pub delete: Vec<Child>,
    /// The catalog write to perform once `status` (which records it as its intent) is
    /// written; its outcome goes to [`record`].
    pub effect: Option<Effect>,
    /// Events to record.
    pub notes: Vec<Note>,
    /// When to look again if nothing else happens.
    pub requeue_after: Option<Duration>,
}

/// The attempt the release is in, or is about to start, and whether it is starting.
pub fn wanted_attempt(release: &ImageRelease) -> (i32, bool) {
    let st = release.status.clone().unwrap_or_default();
    match st.attempt {
        None => (1, true),
        Some(n) if st.phase == Some(Phase::Failed) && retry_requested(release, &st) => (n + 1, true),
        Some(n) => (n, false),
    }
}

fn retry_token(release: &ImageRelease) -> Option<String> {
    release.annotations().get(ANNOTATION_RETRY).cloned()
}

fn retry_requested(release: &ImageRelease, st: &ImageReleaseStatus) -> bool {
    let new_generation = release.metadata.generation.is_some() && release.metadata.generation != st.attempt_generation;
    let token = retry_token(release);
    new_generation || (token.is_some() && token != st.retry_token)
}

/// The phase a release is heading for, given its target.
pub fn goal(target: Target) -> Phase {
    match target {
        Target::Verified => Phase::Verified,
        Target::Published => Phase::Published,
        Target::Deprecated => Phase::Deprecated,
        Target::Retired => Phase::Retired,
    }
}

struct Ctx<'a> {
    release: &'a ImageRelease,
    now: &'a Time,
    st: ImageReleaseStatus,
    create: Vec<Create>,
    effect: Option<Effect>,
    notes: Vec<Note>,
    /// Why the release is where it is: (reason, message) for Ready/Reconciling/Stalled.
    headline: (String, String),
    stalled: bool,
    requeue_after: Option<Duration>,
}

impl<'a> Ctx<'a> {
    fn new(release: &'a ImageRelease, now: &'a Time) -> Self {
        Ctx {
            release,
            now,
            st: release.status.clone().unwrap_or_default(),
            create: Vec::new(),
            effect: None,
            notes: Vec::new(),
            headline: (String::new(), String::new()),
            stalled: false,
            requeue_after: None,
        }
    }

    fn generation(&self) -> Option<i64> {
        self.release.metadata.generation
    }

    fn phase(&self) -> Phase {
        self.st.phase.unwrap_or_default()
    }

    fn condition(&mut self, type_: &str, value: Option<bool>, reason: &str, message: &str) {
        let generation = self.generation();
        set_condition(&mut self.st.conditions, type_, value, reason, message, generation, self.now);
    }

    fn headline(&mut self, reason: &str, message: impl Into<String>) {
        self.headline = (reason.to_string(), message.into());
    }

    fn note(&mut self, warning: bool, reason: &str, message: impl Into<String>) {
        self.notes.push(Note { warning, reason: reason.into(), message: message.into() });
    }

    /// A step's Job was created: told in the event of the transition that led to it
    /// (`AttemptStarted`, `BuildSucceeded`) when there is one in this decision, else on
    /// its own (`reason`). One event per change the release went through.
    fn note_step(&mut self, warning: bool, reason: &str, message: String) {
        match self.notes.last_mut() {
            Some(last) if last.warning == warning => last.message = format!("{}; {message}", last.message),
            _ => self.note(warning, reason, message),
        }
    }

    fn transition(&mut self, phase: Phase, reason: &str, message: impl Into<String>) {
        let message = message.into();
        if self.st.phase != Some(phase) {
            self.st.phase = Some(phase);
            self.st.history.push(Transition {
                phase,
                at: self.now.clone(),
                reason: reason.into(),
                attempt: self.st.attempt,
            });
            let excess = self.st.history.len().saturating_sub(HISTORY_LIMIT);
            self.st.history.drain(..excess);
            self.note(phase == Phase::Failed, reason, message.clone());
        }
        self.headline(reason, message);
    }

    /// A step's Job is running: say so with `reason` and `message`, or, when its pod does
    /// not start, say why at once, as a Warning event when it first appears.
    ///
    /// A step that simply runs changes nothing in the status: the step's times are
    /// recorded when it finishes, so a running Job costs no write.
    fn running(&mut self, step_condition: &str, job: &JobObservation, reason: &str, message: String) {
        let Some(blocked) = &job.blocked else {
            let current = crate::api::find_condition(&self.st.conditions, step_condition);
            if let Some(c) = current.filter(|c| c.reason == reason) {
                let kept = c.message.clone();
                return self.headline(reason, kept);
            }
            // Running again after its pod was blocked (or a status from before this run).
            self.condition(step_condition, None, reason, &message);
            return self.headline(reason, message);
        };
        let message = format!(
            "the pod of Job {} does not start: {}: {}; the Job fails at its deadline unless this is fixed",
            job.name,
            blocked.reason,
            truncate(&blocked.message, 512)
        );
        let before = crate::api::find_condition(&self.st.conditions, step_condition).map(|c| c.reason.clone());
        if before.as_deref() != Some(blocked.reason.as_str()) {
            self.note(true, &blocked.reason, message.clone());
        }
        self.condition(step_condition, None, &blocked.reason, &message);
        self.headline(&blocked.reason, message);
        self.stalled = blocked.needs_a_person();
        self.requeue_after = Some(Duration::from_secs(10));
    }

    fn fail(&mut self, step_condition: &str, reason: &str, message: String) {
        // A Failed release writes nothing to the catalog.
        self.st.intent = None;
        self.condition(step_condition, Some(false), reason, &message);
        self.transition(Phase::Failed, reason, message.clone());
        self.headline(reason, format!("{message}; change the spec or set the {ANNOTATION_RETRY} annotation to retry"));
    }

    /// Records the intent to perform `effect`, decided now on the release as it is, and
    /// asks the edges to perform it. The intent names what the effect writes: its
    /// version tag and digest.
    fn intend(&mut self, effect: Effect) -> &Intent {
        let (action, catalog, digest, version) = match &effect {
            Effect::Publish { catalog, digest, version, .. } => (IntentAction::Publish, catalog, digest, version),
            Effect::DeleteVersionTag { catalog, digest, version, .. } => {
                (IntentAction::DeleteVersionTag, catalog, digest, version)
            }
        };
        let intent = Intent {
            action,
            reference: format!("{}:{}", catalog.repository, crate::catalog::tag_of(version)),
            digest: digest.clone(),
            decided_on: self.release.metadata.resource_version.clone(),
            decided_at: self.now.clone(),
        };
        self.effect = Some(effect);
        self.st.intent.insert(intent)
    }

    /// The intent recorded for `action`, if the status holds one.
    fn pending(&self, action: IntentAction) -> bool {
        self.st.intent.as_ref().is_some_and(|i| i.action == action)
    }

    /// Nothing new is known until an effect's outcome is recorded: the headline and
    /// Stalled stay what they were (an outage's backoff too).
    fn unchanged(&mut self) {
        if let Some(c) = crate::api::find_condition(&self.st.conditions, READY) {
            self.headline = (c.reason.clone(), c.message.clone());
        }
        self.stalled = crate::api::find_condition(&self.st.conditions, STALLED).is_some_and(|c| c.status == "True");
    }

    /// The catalog failed: stay in the phase, say why on `condition_type`, and look again
    /// with a backoff that grows with the length of the outage.
    fn wait_for_catalog(&mut self, condition_type: &str, e: &CatalogError, doing: &str) {
        if let CatalogError::Conflict { .. } = e {
            return self.fail(condition_type, e.reason(), e.to_string());
        }
        let msg = format!("{doing}: {e}; retrying");
        self.condition(condition_type, Some(false), e.reason(), &msg);
        self.headline(e.reason(), msg);
        self.stalled = e.needs_a_person();
        let since = crate::api::find_condition(&self.st.conditions, condition_type)
            .map(|c| self.now.0.duration_since(c.last_transition_time.0).as_secs().max(0) as u64)
            .unwrap_or(0);
        self.requeue_after = Some(Duration::from_secs((since / 2).clamp(2, 60)));
    }

    fn snapshot<'o>(&mut self, observed: &'o Observed) -> Option<&'o Snapshot> {
        match &observed.snapshot {
            Some(Ok(s)) => Some(s),
            Some(Err(e)) => {
                let msg = format!(
                    "the attempt's snapshot is unreadable: {e}; set the {ANNOTATION_RETRY} annotation to start a new attempt"
                );
                self.fail(READY, "SnapshotInvalid", msg);
                None
            }
            None => {
                let name = self.st.provenance.as_ref().map(|p| p.snapshot.clone()).unwrap_or_default();
                let msg = format!(
                    "the attempt's snapshot ConfigMap {name} is gone; set the {ANNOTATION_RETRY} annotation to start a new attempt"
                );
                self.fail(READY, "SnapshotMissing", msg);
                None
            }
        }
    }
}

/// A running step's status names its Job (nothing more until it finishes).
fn named_step(step: &mut Option<StepStatus>, job: &JobObservation) {
    if step.as_ref().is_none_or(|s| s.job_name != job.name) {
        *step = Some(StepStatus { job_name: job.name.clone(), ..Default::default() });
    }
}

fn step_status(job: &JobObservation) -> StepStatus {
    StepStatus {
        job_name: job.name.clone(),
        started_at: job.started_at.clone(),
        finished_at: job.finished_at.clone(),
        outcome: match job.state {
            JobState::Running => None,
            JobState::Succeeded => Some("Succeeded".into()),
            JobState::Failed => Some("Failed".into()),
        },
    }
}

fn describe_failure(job: &JobObservation) -> String {
    let reason = job.reason.as_deref().unwrap_or("Failed");
    let exit = job.exit_code.map(|c| format!(" (exit code {c})")).unwrap_or_default();
    match job.message.as_deref().map(str::trim).filter(|m| !m.is_empty()) {
        // A failed container's message is the end of its log (FallbackToLogsOnError):
        // the last lines say why, so those are kept.
        Some(m) => format!("Job {} failed: {reason}{exit}: {}", job.name, last(m, 1024)),
        None => format!("Job {} failed: {reason}{exit}", job.name),
    }
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// The last `max` bytes of `s` (at a character boundary), marked as cut when they are
/// not all of it.
fn last(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("…{}", &s[start..])
}

/// Decides the next status of `release` and what to create.
pub fn decide(release: &ImageRelease, observed: &Observed, now: &Time) -> Decision {
    let mut cx = Ctx::new(release, now);
    cx.st.observed_generation = release.metadata.generation;
    if cx.st.phase.is_none() {
        cx.st.phase = Some(Phase::Pending);
        cx.st.history.push(Transition {
            phase: Phase::Pending,
            at: now.clone(),
            reason: "Created".into(),
            attempt: None,
        });
    }

    if let Some(problem) = spec_problem(release) {
        cx.headline("InvalidSpec", problem);
        cx.stalled = true;
        return finish(cx);
    }

    let (attempt, starting) = wanted_attempt(release);
    if starting && !start_attempt(&mut cx, observed, attempt) {
        return finish(cx);
    }

    match cx.phase() {
        Phase::Building => build(&mut cx, observed),
        Phase::Testing => {}
        _ => {}
    }
    if cx.phase() == Phase::Testing {
        test(&mut cx, observed);
    }
    if cx.phase() == Phase::Verified {
        verified(&mut cx, observed);
    }
    if matches!(cx.phase(), Phase::Published | Phase::Deprecated) {
        lifecycle_steps(&mut cx, observed);
    }
    match cx.phase() {
        Phase::Published => published(&mut cx, observed),
        Phase::Deprecated => {
            let at = cx.st.deprecated_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
            cx.headline("Deprecated", format!("deprecated at {at}; still pullable by its version tag"));
        }
        Phase::Retired => retired(&mut cx, observed),
        Phase::Failed => {
            // Nothing new happened: the failure recorded when it happened still explains it.
            if cx.headline.0.is_empty()
                && let Some(c) = crate::api::find_condition(&cx.st.conditions, READY)
            {
                cx.headline = (c.reason.clone(), c.message.clone());
            }
            cx.stalled = true;
        }
        _ => {}
    }
    if matches!(cx.phase(), Phase::Published | Phase::Deprecated | Phase::Retired) {
        snapshot_gone(&mut cx, observed);
    }
    let delete = prune(&mut cx, observed);
    let mut decision = finish(cx);
    decision.delete = delete;
    decision
}

/// The children of attempts older than the last `keep_attempts` (the current one
/// included), to delete, told in one event.
fn prune(cx: &mut Ctx, observed: &Observed) -> Vec<Child> {
    let keep = observed.keep_attempts.max(1) as i32;
    let oldest_kept = cx.st.attempt.unwrap_or(1).saturating_sub(keep - 1);
    let doomed: Vec<&(i32, Child)> = observed.old_children.iter().filter(|(a, _)| *a < oldest_kept).collect();
    if doomed.is_empty() {
        return Vec::new();
    }
    let mut attempts: Vec<i32> = doomed.iter().map(|(a, _)| *a).collect();
    attempts.dedup();
    let list = attempts.iter().map(|a| a.to_string()).collect::<Vec<_>>().join(", ");
    cx.note(
        false,
        "OldAttemptsDeleted",
        format!("deleted the Jobs and snapshot of attempt {list} (the last {keep} attempts are kept)"),
    );
    doomed.into_iter().map(|(_, c)| c.clone()).collect()
}

/// What the API server's schema cannot refuse but the controller must.
fn spec_problem(release: &ImageRelease) -> Option<String> {
    let ends = release.spec.support_ends_at.as_ref()?;
    let created = release.metadata.creation_timestamp.as_ref()?;
    (ends.0 <= created.0)
        .then(|| format!("spec.supportEndsAt ({}) must lie after the release's creation ({})", ends.0, created.0))
}

/// Starts attempt `attempt`: waits for what it needs, snapshots, or moves to Building.
/// Returns whether the attempt started (and the decision may go on).
fn start_attempt(cx: &mut Ctx, observed: &Observed, attempt: i32) -> bool {
    let core_build = cx.release.spec.core_build.clone();
    let snap = match &observed.snapshot {
        Some(Ok(snap)) if observed.snapshot_stored => snap.clone(),
        Some(Err(e)) if observed.snapshot_stored => {
            cx.headline("SnapshotInvalid", format!("snapshot of attempt {attempt} is unreadable: {e}"));
            cx.stalled = true;
            return false;
        }
        _ => {
            if let Some(owner) = &observed.version_claimed_by {
                let version = &cx.release.spec.version;
                let msg = format!(
                    "version {version} of CoreBuild {core_build} belongs to ImageRelease {owner}, created first; \
                     a version is released once: delete this release, or {owner} and this one starts"
                );
                // One Warning when it starts waiting, not one per look.
                let ready = crate::api::find_condition(&cx.st.conditions, READY);
                if ready.is_none_or(|c| c.reason != "DuplicateVersion") {
                    cx.note(true, "DuplicateVersion", msg.clone());
                }
                cx.headline("DuplicateVersion", msg);
                cx.stalled = true;
                return false;
            }
            if let Some(why) = &observed.base_refused {
                cx.headline("BaseNotAllowed", why.clone());
                cx.stalled = true;
                return false;
            }
            if !observed.core_build_exists {
                cx.headline(
                    "CoreBuildNotFound",
                    format!(
                        "CoreBuild {core_build} does not exist in this namespace; the release starts when it is created"
                    ),
                );
                return false;
            }
            match (&observed.blueprint, &observed.snapshot) {
                (Some(Err(e)), _) => {
                    cx.headline("BlueprintNotFound", format!("{e}; the release starts when it appears"));
                    return false;
                }
                (Some(Ok(_)), Some(Ok(snap))) => {
                    // Frozen first, then the attempt starts from it in the same run: the
                    // Jobs are rendered from exactly what the ConfigMap holds.
                    cx.create.push(Create::Snapshot(snap.clone()));
                    snap.clone()
                }
                _ => {
                    cx.headline("Snapshotting", format!("reading CoreBuild {core_build} for attempt {attempt}"));
                    return false;
                }
            }
        }
    };
    let retrying = cx.st.attempt.is_some();
    let p = snap.provenance();
    cx.st.attempt = Some(attempt);
    cx.st.attempt_generation = cx.release.metadata.generation;
    cx.st.retry_token = retry_token(cx.release);
    cx.st.build = None;
    cx.st.test = None;
    cx.st.digest = None;
    cx.st.short_digest = None;
    cx.st.staging_image = None;
    cx.st.image_config = None;
    cx.st.checks.clear();
    let msg = format!(
        "attempt {attempt}{} from CoreBuild {core_build} generation {} (base {}, blueprint {})",
        if retrying { " (retry)" } else { "" },
        p.core_build_generation,
        p.base_digest,
        p.blueprint_hash
    );
    cx.st.provenance = Some(p);
    cx.condition(BUILT, None, "Building", "waiting for the build Job");
    cx.condition(TESTED, None, "NotTested", "waiting for the build");
    cx.transition(Phase::Building, "AttemptStarted", msg);
    true
}

fn build(cx: &mut Ctx, observed: &Observed) {
    let Some(job) = &observed.build_job else {
        let Some(snap) = cx.snapshot(observed) else { return };
        if let Some(why) = &observed.privileges_refused {
            // Refused before any pod exists: neither the build nor the test pod is created.
            return cx.fail(BUILT, "PrivilegesNotAllowed", why.clone());
        }
        // An advisory that no check of the contract can prove is refused before building.
        if let Some(why) =
            advisories::unknown_checks(&cx.release.spec.advisories, &snap.spec.contract, &cx.release.spec.core_build)
        {
            return cx.fail(ADVISORIES_PROVEN, "UnknownCheck", why);
        }
        let name = crate::names::build_job(&cx.release.name_any(), snap.attempt);
        cx.create.push(Create::BuildJob(snap.clone()));
        cx.st.build = Some(StepStatus { job_name: name.clone(), ..Default::default() });
        let msg = format!("build Job {name} created");
        cx.condition(BUILT, None, "Building", &msg);
        cx.note_step(false, "BuildStarted", msg.clone());
        cx.headline("Building", msg);
        return;
    };
    if job.state != JobState::Running {
        cx.st.build = Some(step_status(job));
    }
    match job.state {
        JobState::Running => {
            named_step(&mut cx.st.build, job);
            cx.running(BUILT, job, "Building", format!("build Job {} is running", job.name))
        }
        JobState::Failed => cx.fail(BUILT, "BuildFailed", describe_failure(job)),
        JobState::Succeeded => match results::parse_build(job.message.as_deref().unwrap_or_default()) {
            Err(e) => cx.fail(
                BUILT,
                "InvalidBuildResult",
                format!("build Job {} succeeded but reported no usable result: {e}", job.name),
            ),
            Ok(r) => {
                let Some(snap) = cx.snapshot(observed) else { return };
                let image = format!("{}@{}", snap.spec.catalog.staging_repository, r.digest);
                let config = match &observed.staging_check {
                    Some(Ok(Some(config))) => config.clone(),
                    Some(Ok(None)) => {
                        let msg = format!("build Job {} reported {image}, which does not exist in staging", job.name);
                        return cx.fail(BUILT, "DigestNotInStaging", msg);
                    }
                    Some(Err(e)) => return cx.wait_for_catalog(BUILT, e, &format!("verifying {image} in staging")),
                    None => {
                        let msg = format!("verifying {image} in staging");
                        cx.condition(BUILT, None, "VerifyingDigest", &msg);
                        return cx.headline("VerifyingDigest", msg);
                    }
                };
                cx.st.short_digest = Some(r.digest.trim_start_matches("sha256:").chars().take(12).collect());
                cx.st.digest = Some(r.digest);
                // What the registry serves is the truth; a builder's own report is not needed.
                cx.st.image_config = Some(config);
                let msg = format!("built and pushed {image}");
                cx.st.staging_image = Some(image);
                cx.condition(BUILT, Some(true), "BuildSucceeded", &msg);
                cx.transition(Phase::Testing, "BuildSucceeded", msg);
            }
        },
    }
}

fn test(cx: &mut Ctx, observed: &Observed) {
    let Some(image) = cx.st.staging_image.clone() else {
        cx.fail(TESTED, "DigestMissing", "status lost the built image; retry to rebuild".into());
        return;
    };
    let Some(job) = &observed.test_job else {
        let Some(snap) = cx.snapshot(observed) else { return };
        let name = crate::names::test_job(&cx.release.name_any(), snap.attempt);
        cx.create.push(Create::TestJob(snap.clone(), image.clone()));
        cx.st.test = Some(StepStatus { job_name: name.clone(), ..Default::default() });
        let msg = format!("test Job {name} created for {image}");
        cx.condition(TESTED, None, "Testing", &msg);
        cx.note_step(false, "TestStarted", msg.clone());
        cx.headline("Testing", msg);
        return;
    };
    if job.state == JobState::Running {
        named_step(&mut cx.st.test, job);
        let msg = format!("test Job {} is running the contract checks", job.name);
        return cx.running(TESTED, job, "Testing", msg);
    }
    cx.st.test = Some(step_status(job));
    let report = results::parse_test(job.message.as_deref().unwrap_or_default());
    let report = match (job.state, report) {
        (_, Ok(report)) => report,
        (JobState::Failed, Err(_)) => return cx.fail(TESTED, "TestJobFailed", describe_failure(job)),
        (_, Err(e)) => {
            let msg = format!("test Job {} finished but reported no usable result: {e}", job.name);
            return cx.fail(TESTED, "InvalidTestResult", msg);
        }
    };
    let Some(snap) = cx.snapshot(observed) else { return };
    let checks = contract::evaluate(&snap.spec.contract, &report, cx.st.image_config.as_ref());
    let failing: Vec<String> = contract::failures(&checks).into_iter().map(String::from).collect();
    let total = checks.len();
    cx.st.checks = checks;
    if !failing.is_empty() {
        let detail: Vec<String> = cx
            .st
            .checks
            .iter()
            .filter(|c| !c.passed)
            .map(|c| match &c.observed {
                Some(o) => format!("{} ({o})", c.name),
                None => c.name.clone(),
            })
            .collect();
        let msg = format!("{} of {total} contract checks failed: {}", failing.len(), truncate(&detail.join(", "), 900));
        let unproven = unproven(&advisories::proofs(&cx.release.spec.advisories, &cx.st.checks));
        if unproven.is_empty() {
            return cx.fail(TESTED, "ContractBroken", msg);
        }
        cx.condition(ADVISORIES_PROVEN, Some(false), "ProvingCheckFailed", &unproven);
        return cx.fail(TESTED, "ContractBroken", format!("{unproven}; {msg}"));
    }
    if job.state == JobState::Failed {
        return cx.fail(TESTED, "TestJobFailed", describe_failure(job));
    }
    let msg = format!("all {total} contract checks passed in {image}");
    cx.condition(TESTED, Some(true), "ContractKept", &msg);
    cx.transition(Phase::Verified, "ContractKept", msg);
}

/// The advisories `proofs` leave unproven, for a person (empty when none).
fn unproven(proofs: &[advisories::Proof]) -> String {
    let blocking: Vec<String> = proofs.iter().filter(|p| p.blocks()).map(|p| p.describe()).collect();
    truncate(&blocking.join("; "), 600)
}

/// Whether the advisories' proving checks all passed: sets `AdvisoriesProven` (on a
/// release whose advisories name any) and says whether publishing may go on.
fn advisories_proven(cx: &mut Ctx) -> bool {
    let proofs = advisories::proofs(&cx.release.spec.advisories, &cx.st.checks);
    if proofs.is_empty() {
        cx.st.conditions.retain(|c| c.type_ != ADVISORIES_PROVEN);
        return true;
    }
    let unproven = unproven(&proofs);
    if unproven.is_empty() {
        let proven: Vec<String> = proofs.iter().map(|p| format!("{} by check {}", p.advisory.id, p.check)).collect();
        let msg = format!("proven: {}", truncate(&proven.join(", "), 900));
        cx.condition(ADVISORIES_PROVEN, Some(true), "Proven", &msg);
        return true;
    }
    cx.condition(ADVISORIES_PROVEN, Some(false), "ProvingCheckFailed", &unproven);
    if cx.release.spec.target < Target::Published {
        return true;
    }
    cx.headline("AdvisoryNotProven", format!("not publishing: {unproven}"));
    cx.stalled = true;
    false
}

fn verified(cx: &mut Ctx, observed: &Observed) {
    let image = cx.st.staging_image.clone().unwrap_or_default();
    let pending = cx.pending(IntentAction::Publish);
    if cx.release.spec.target == Target::Verified && !pending {
        return cx.headline("Verified", format!("{image} kept its contract"));
    }
    // A recorded intent is performed whatever changed since it was decided.
    let may_publish = contract_over_time(cx, observed) && advisories_proven(cx);
    if !may_publish && !pending {
        return;
    }
    let Some(snap) = cx.snapshot(observed) else { return };
    let version = cx.release.spec.version.clone();
    let repository = &snap.spec.catalog.repository;
    let digest = cx.st.digest.clone().unwrap_or_default();
    let signing = observed.signing_key.clone().map(|key| Signing {
        key,
        release: format!("{}/{}", cx.release.namespace().unwrap_or_default(), cx.release.name_any()),
        statements: predicates::statements(cx.release, &cx.st, &snap.spec.contract, repository, &digest),
    });
    let signed_with =
        signing.as_ref().map(|s| format!(", signed with the key in Secret {}", s.key)).unwrap_or_default();
    let effect = Effect::Publish { catalog: snap.spec.catalog.clone(), digest, version: version.clone(), signing };
    if pending {
        cx.effect = Some(effect);
        return cx.unchanged();
    }
    let msg = format!("publishing {image} as {repository}:{version}{signed_with}");
    cx.intend(effect);
    cx.condition(PUBLISHED, None, "Publishing", &msg);
    cx.headline("Publishing", msg);
}

/// Records what publishing a Verified release came to.
fn publication(cx: &mut Ctx, observed: &Observed, result: &Result<Publication, CatalogError>) {
    let Some(Ok(snap)) = &observed.snapshot else { return cx.unchanged() };
    let image = cx.st.staging_image.clone().unwrap_or_default();
    let reference = format!("{}:{}", snap.spec.catalog.repository, cx.release.spec.version);
    let publication = match result {
        Ok(p) => p,
        Err(e) => {
            if let CatalogError::SigningKey(k) = e {
                let before = crate::api::find_condition(&cx.st.conditions, PUBLISHED).map(|c| c.reason.clone());
                if before.as_deref() != Some(k.reason) {
                    cx.note(true, k.reason, format!("not publishing {reference}: {e}"));
                }
            }
            // The intent stays, and is performed again (a conflict fails the release).
            return cx.wait_for_catalog(PUBLISHED, e, &format!("publishing {image} as {reference}"));
        }
    };
    if let Some(signature) = &publication.signature {
        let attested: Vec<&str> = signature.attestations.iter().map(|a| a.predicate_type.as_str()).collect();
        let msg = format!(
            "signed {} with the key in Secret {} ({}): {}; attested {} in {}",
            cx.st.digest.clone().unwrap_or_default(),
            signature.key,
            signature.key_fingerprint,
            signature.reference,
            attested.join(" and "),
            signature.attestations.first().map(|a| a.reference.as_str()).unwrap_or_default(),
        );
        cx.note(false, "Signed", msg);
    }
    cx.st.signature = publication.signature.clone();
    cx.st.intent = None;
    let now = cx.now.clone();
    let window = snap.spec.lifecycle.as_ref().and_then(|l| l.support_window.as_deref()).and_then(parse_duration);
    cx.st.published_at = Some(now.clone());
    cx.st.support_ends_at =
        cx.release.spec.support_ends_at.clone().or_else(|| window.and_then(|w| now.0.checked_add(w).ok()).map(Time));
    published_refs(cx, &snap.spec.catalog.repository, observed);
    let msg = format!("published {reference} ({})", cx.st.digest.clone().unwrap_or_default());
    cx.condition(PUBLISHED, Some(true), "Published", &msg);
    cx.transition(Phase::Published, "Published", msg);
    published(cx, observed);
}

/// How long a retired version tag kept because other tags resolve to its digest waits
/// before it is looked at again (when nothing else re-runs its release).
pub const KEPT_RECHECK: Duration = Duration::from_secs(600);

/// A Retired release: its version tag is deleted when the policy says so (and nothing
/// else points at its digest).
fn retired(cx: &mut Ctx, observed: &Observed) {
    let at = cx.st.retired_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    let wanted = observed.policy.as_ref().is_some_and(|p| p.delete_retired_tags) && !cx.st.published.is_empty();
    let pending = cx.pending(IntentAction::DeleteVersionTag);
    let published = crate::api::find_condition(&cx.st.conditions, PUBLISHED).map(|c| c.reason.clone());
    let kept = published.as_deref() == Some("VersionTagKept");
    let resting = match published.as_deref() {
        Some("VersionTagDeleted") => format!("retired at {at}; its version tag was deleted"),
        _ => format!("retired at {at}; in no channel"),
    };
    let Some(Ok(snap)) = &observed.snapshot else {
        return cx.headline("Retired", resting);
    };
    let effect = Effect::DeleteVersionTag {
        catalog: snap.spec.catalog.clone(),
        digest: cx.st.digest.clone().unwrap_or_default(),
        version: cx.release.spec.version.clone(),
        going_too: observed.retired_on_digest.clone(),
    };
    match (pending, wanted) {
        // Kept last time, and the policy no longer asks: nothing was deleted, nothing will be.
        (true, false) if kept => cx.st.intent = None,
        (true, _) => {
            cx.effect = Some(effect);
            return cx.unchanged();
        }
        (false, true) => {
            let reference = cx.intend(effect).reference.clone();
            return cx
                .headline("Retired", format!("retired at {at}; deleting {reference} (lifecycle.deleteRetiredTags)"));
        }
        (false, false) => {}
    }
    cx.headline("Retired", resting);
}

/// Records what deleting a retired release's version tag came to.
fn tag_deletion(cx: &mut Ctx, result: &Result<TagDeletion, CatalogError>) {
    let at = cx.st.retired_at.as_ref().map(|t| t.0.to_string()).unwrap_or_default();
    match result {
        Ok(TagDeletion::Deleted) => {
            cx.st.intent = None;
            let mut refs = std::mem::take(&mut cx.st.published);
            if let Some(signature) = cx.st.signature.take() {
                refs.push(signature.reference);
                refs.extend(signature.attestations.first().map(|a| a.reference.clone()));
            }
            let msg = format!("deleted {} (lifecycle.deleteRetiredTags)", refs.join(", "));
            cx.condition(PUBLISHED, Some(false), "VersionTagDeleted", &msg);
            cx.note(false, "VersionTagDeleted", msg);
            cx.headline("Retired", format!("retired at {at}; its version tag was deleted"));
        }
        Ok(TagDeletion::Kept { by }) => {
            // The intent stays: the tag goes once nothing else resolves to its digest.
            let refs = cx.st.published.join(", ");
            let msg = format!(
                "kept {refs}: deleting it would delete the manifest, and with it {} of the same repository, which resolve to the same digest",
                by.join(", ")
            );
            let before = crate::api::find_condition(&cx.st.conditions, PUBLISHED).map(|c| c.reason.clone());
            if before.as_deref() != Some("VersionTagKept") {
                cx.note(false, "VersionTagKept", msg.clone());
            }
            cx.condition(PUBLISHED, Some(true), "VersionTagKept", &msg);
            cx.headline("Retired", format!("retired at {at}; {msg}"));
            cx.requeue_after = Some(KEPT_RECHECK);
        }
        Err(e) => cx.wait_for_catalog(PUBLISHED, e, "deleting the retired version tag"),
    }
}

/// Records the outcome of the [`Effect`] that [`decide`] returned for `release`, on the
/// release as written with its intent: the intent is cleared once it is done, and kept
/// (to be performed again) while the catalog fails.
pub fn record(release: &ImageRelease, observed: &Observed, outcome: &Outcome, now: &Time) -> Decision {
    let mut cx = Ctx::new(release, now);
    match outcome {
        Outcome::Published(result) => publication(&mut cx, observed, result),
        Outcome::TagDeletion(result) => tag_deletion(&mut cx, result),
    }
    finish(cx)
}

/// Compares the contract results with the releases before, writes the release notes, and
/// says whether publishing may go on: a minor or patch release that breaks the contract of
/// its major version may not.
fn contract_over_time(cx: &mut Ctx, observed: &Observed) -> bool {
    let Ok(version) = semver::Version::parse(&cx.release.spec.version) else { return true };
    let same_major = lifecycle::baseline(&version, &observed.siblings, true);
    let any = lifecycle::baseline(&version, &observed.siblings, false);
    let diff = any.map(|b| (b, lifecycle::contract_diff(&b.checks, &cx.st.checks)));
    cx.st.contract_baseline = any.map(|b| b.version.to_string());
    cx.st.contract_changes = diff
        .as_ref()
        .map(|(_, d)| {
            d.incompatible.iter().map(|c| format!("incompatible: {c}")).chain(d.compatible.iter().cloned()).collect()
        })
        .unwrap_or_default();
    let base_digest = cx.st.provenance.as_ref().map(|p| p.base_digest.clone());
    let previous = lifecycle::previous(&version, &observed.siblings);
    let notes = lifecycle::release_notes(
        cx.release,
        &cx.st.checks,
        base_digest.as_deref(),
        previous,
        &observed.siblings,
        diff.as_ref().map(|(b, d)| (*b, d)),
    );
    cx.st.release_notes = Some(notes);
    match (same_major, &diff) {
        (Some(b), Some((_, d))) if !d.incompatible.is_empty() => {
            let msg = format!(
                "{} breaks the contract of {} (the newest published {}.x): {}; publish it as a new major version, or restore what it removed",
                version,
                b.version,
                version.major,
                d.incompatible.join("; ")
            );
            cx.condition(CONTRACT_KEPT, Some(false), "IncompatibleChange", &msg);
            if cx.release.spec.target >= Target::Published {
                cx.headline("IncompatibleChange", msg);
                cx.stalled = true;
                return false;
            }
        }
        (Some(b), _) => {
            let msg = format!("keeps the contract of {}", b.version);
            cx.condition(CONTRACT_KEPT, Some(true), "Compatible", &msg);
        }
        (None, Some((b, _))) => {
            let msg =
                format!("first release of major version {}; changes since {} are recorded", version.major, b.version);
            cx.condition(CONTRACT_KEPT, Some(true), "NewMajorVersion", &msg);
        }
        (None, None) => cx.condition(CONTRACT_KEPT, Some(true), "FirstRelease", "the first release sets the contract"),
    }
    true
}

/// Applies the lifecycle policy to a Published or Deprecated release, and schedules the
/// next due transition.
fn lifecycle_steps(cx: &mut Ctx, observed: &Observed) {
    // At most two steps at once: Published → Deprecated → Retired (`target: Retired`).
    for _ in 0..2 {
        let mut view = cx.release.clone();
        view.status = Some(cx.st.clone());
        let (step, next) = lifecycle::policy_step(&view, observed.policy.as_ref(), &observed.siblings, cx.now.0);
        let Some(step) = step else {
            if let Some(next) = next {
                // The exact instant the next transition falls due (plus a margin for clock granularity).
                cx.requeue_after = Some(next + Duration::from_millis(100));
            }
            return;
        };
        match step.phase {
            Phase::Deprecated => cx.st.deprecated_at = Some(cx.now.clone()),
            Phase::Retired => cx.st.retired_at = Some(cx.now.clone()),
            _ => {}
        }
        // Channels take only Published releases: what is left is the version tag.
        let version_tag = format!(":{}", crate::catalog::tag_of(&cx.release.spec.version));
        cx.st.published.retain(|r| r.ends_with(&version_tag));
        cx.transition(step.phase, step.reason, step.message);
    }
}

/// The references the release can be pulled by: its version tag and the channels that
/// point at it now.
fn published_refs(cx: &mut Ctx, repository: &str, observed: &Observed) {
    let mut refs = vec![format!("{repository}:{}", cx.release.spec.version)];
    refs.extend(observed.channels.iter().map(|c| format!("{repository}:{c}")));
    cx.st.published = refs;
}

fn published(cx: &mut Ctx, observed: &Observed) {
    if let Some(Ok(snap)) = &observed.snapshot {
        let repository = snap.spec.catalog.repository.clone();
        published_refs(cx, &repository, observed);
    }
    let refs = cx.st.published.join(", ");
    cx.headline("Published", format!("pull it as {refs}"));
}

/// A Published, Deprecated or Retired release whose snapshot ConfigMap was deleted: it
/// stays where it is and its lifecycle goes on by the CoreBuild's current policy, but the
/// registry is not touched again for it (channels stay as recorded, a retired tag is
/// not deleted), and Ready says why, warned about once.
fn snapshot_gone(cx: &mut Ctx, observed: &Observed) {
    let done = cx.phase() == Phase::Retired && cx.st.published.is_empty();
    if observed.snapshot.is_some() || done {
        return;
    }
    let name = cx.st.provenance.as_ref().map(|p| p.snapshot.clone()).unwrap_or_default();
    let msg = format!(
        "{}; its snapshot ConfigMap {name} is gone, so its references are no longer refreshed and a retired version tag is not deleted (its lifecycle goes on by the CoreBuild's policy)",
        cx.headline.1
    );
    let before = crate::api::find_condition(&cx.st.conditions, READY).map(|c| c.reason.clone());
    if before.as_deref() != Some("SnapshotMissing") {
        cx.note(true, "SnapshotMissing", msg.clone());
    }
    cx.headline("SnapshotMissing", msg);
}

/// Sets the kstatus conditions from where the release ended up.
fn finish(mut cx: Ctx) -> Decision {
    let phase = cx.phase();
    // Ready once the target is reached, or passed: the policy may move a release beyond
    // its target (a Published target deprecated by maxSupported is where it should be).
    let rank = |p: Phase| match p {
        Phase::Verified => Some(0),
        Phase::Published => Some(1),
        Phase::Deprecated => Some(2),
        Phase::Retired => Some(3),
        _ => None,
    };
    let ready = rank(phase).zip(rank(goal(cx.release.spec.target))).is_some_and(|(p, g)| p >= g);
    let stalled = cx.stalled || phase == Phase::Failed;
    let (reason, message) = cx.headline.clone();
    let reason = if reason.is_empty() { phase.as_str().to_string() } else { reason };
    cx.condition(READY, Some(ready), &reason, &message);
    let progressing = !ready && !stalled;
    cx.condition(
        RECONCILING,
        Some(progressing),
        if progressing { &reason } else { "Idle" },
        if progressing { &message } else { "" },
    );
    cx.condition(
        STALLED,
        Some(stalled),
        if stalled { &reason } else { "NotStalled" },
        if stalled { &message } else { "" },
    );
    Decision {
        status: cx.st,
        create: cx.create,
        delete: Vec::new(),
        effect: cx.effect,
        notes: cx.notes,
        requeue_after: cx.requeue_after,
    }
}

/// Whether two statuses differ in anything but timestamps of conditions, so that a
/// status that did not change is never written.
pub fn status_changed(old: Option<&ImageReleaseStatus>, new: &ImageReleaseStatus) -> bool {
    let strip = |s: &ImageReleaseStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = Time(jiff::Timestamp::UNIX_EPOCH);
        }
        s
    };
    old.is_none_or(|old| strip(old) != strip(new))
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
