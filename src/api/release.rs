//! `ImageRelease`: one version of a CoreBuild, moved through its lifecycle by the controller.

// The printcolumn(...) lists repeat `type_ = "string"`, which clippy mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::pattern;

/// One version of a CoreBuild: built from the product's pinned base and blueprint, tested
/// against its contract, then published, deprecated and retired.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[kube(
    group = "coreforge.dev",
    version = "v1alpha1",
    kind = "ImageRelease",
    plural = "imagereleases",
    shortname = "ir",
    category = "coreforge",
    namespaced,
    status = "ImageReleaseStatus",
    derive = "PartialEq",
    doc = "One version of a CoreBuild, moved through Pending, Building, Testing, Verified, Published, Deprecated and Retired.",
    printcolumn(name = "CoreBuild", type_ = "string", json_path = ".spec.coreBuild"),
    printcolumn(name = "Version", type_ = "string", json_path = ".spec.version"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.phase"),
    printcolumn(
        name = "Digest",
        type_ = "string",
        json_path = ".status.shortDigest",
        description = "First 12 hex digits of the image digest"
    ),
    printcolumn(name = "Support Ends", type_ = "date", json_path = ".status.supportEndsAt"),
    printcolumn(name = "Target", type_ = "string", json_path = ".spec.target", priority = "1"),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason",
        priority = "1"
    ),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct ImageReleaseSpec {
    /// Name of the CoreBuild (same namespace) this is a release of. Immutable.
    #[schemars(length(min = 1, max = 253), pattern(pattern::DNS1123_SUBDOMAIN))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("coreBuild is immutable: create a new ImageRelease instead"))]
    pub core_build: String,

    /// Semantic version of this release (`9.4.1`, `12.7.0-rc.1`). Immutable, and released once
    /// per CoreBuild: a second release with the same version waits (`DuplicateVersion`).
    #[schemars(length(min = 5, max = 128), pattern(pattern::SEMVER))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("version is immutable: create a new ImageRelease instead"))]
    pub version: String,

    /// The base image this release is built from instead of its CoreBuild's `base`,
    /// pinned by digest; an image of the same repository as that base or as the tag it
    /// tracks (`baseTracking.tag`). Set on the releases the controller creates when the
    /// tracked base moves. Immutable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 512), pattern(pattern::PINNED_IMAGE))]
    #[x_kube(validation = Rule::new("self == oldSelf").message("base is immutable: create a new ImageRelease instead"))]
    pub base: Option<String>,

    /// Typed changes this release carries.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new("self.all(a, self.exists_one(b, b.id == a.id))").message("advisory ids must be unique"))]
    pub advisories: Vec<Advisory>,

    /// Problems consumers should know about in this release, shown in its release notes
    /// and the catalog until a later release's advisory `closes` them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 100))]
    #[x_kube(validation = Rule::new("self.all(k, self.exists_one(l, l.id == k.id))").message("known issue ids must be unique"))]
    pub known_issues: Vec<KnownIssue>,

    /// Free-form release notes (Markdown), placed at the top of the generated notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32768))]
    pub release_notes: Option<String>,

    /// End of support, overriding the CoreBuild's support window (RFC 3339). Must lie
    /// after the release's creation, and before the year 9999.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[x_kube(validation = Rule::new("self < timestamp('9999-01-01T00:00:00Z')").message("supportEndsAt must lie before 9999-01-01T00:00:00Z"))]
    pub support_ends_at: Option<Time>,

    /// How far the release should go: `Verified`, `Published` (default), `Deprecated`,
    /// `Retired`. Only moves forward.
    #[serde(default)]
    #[x_kube(validation = Rule::new("{'Verified': 0, 'Published': 1, 'Deprecated': 2, 'Retired': 3}[self] >= {'Verified': 0, 'Published': 1, 'Deprecated': 2, 'Retired': 3}[oldSelf]").message("target only moves forward: Verified → Published → Deprecated → Retired"))]
    pub target: Target,
}

/// How far a release should go.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Hash,
)]
pub enum Target {
    /// Build and test only.
    Verified,
    /// Publish into the catalog (default).
    #[default]
    Published,
    /// Publish, then deprecate.
    Deprecated,
    /// Retire: leave every channel.
    Retired,
}

/// A typed change carried by a release.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Advisory {
    /// Advisory id, e.g. `RHSA-2024:1234` or `CFSA-2026-0042`. Unique within the release.
    #[schemars(length(min = 1, max = 64), pattern(pattern::ISSUE_ID))]
    pub id: String,
    /// Kind of change.
    #[serde(rename = "type")]
    pub type_: AdvisoryType,
    /// Severity (default `None`). Security advisories should say how severe.
    #[serde(default)]
    pub severity: Severity,
    /// CVE ids addressed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(max = 32), pattern(pattern::CVE)))]
    pub cves: Vec<String>,
    /// One-line summary.
    #[schemars(length(min = 1, max = 1024))]
    pub summary: String,
    /// Names of the contract checks (`contract.checks[].name` of the CoreBuild) that
    /// prove the change: a release does not publish while one of them has not passed in
    /// its image (for Security, Bugfix and Workaround advisories), and names that are not
    /// checks of the contract fail the release before it is built.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 63), pattern(pattern::DNS1123_LABEL)))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d == c))").message("resolvedBy names each check once"))]
    pub resolved_by: Vec<String>,
    /// Ids of known issues of earlier releases (`knownIssues[].id`) this change closes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32), inner(length(min = 1, max = 64), pattern(pattern::ISSUE_ID)))]
    pub closes: Vec<String>,
}

/// A problem a release is known to have.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct KnownIssue {
    /// Id, unique within the release (e.g. `CFKI-2026-003`, a tracker's key); a later
    /// release's advisory names it in `closes`.
    #[schemars(length(min = 1, max = 64), pattern(pattern::ISSUE_ID))]
    pub id: String,
    /// One-line summary.
    #[schemars(length(min = 1, max = 1024))]
    pub summary: String,
    /// Where it is tracked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(r"^https?://"))]
    pub link: Option<String>,
    /// What consumers can do meanwhile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048))]
    pub workaround: Option<String>,
}

/// Kind of an advisory.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Hash,
)]
pub enum AdvisoryType {
    /// Fixes a vulnerability.
    #[default]
    Security,
    /// Fixes a defect.
    Bugfix,
    /// Adds or improves something.
    Enhancement,
    /// Works around a known problem.
    Workaround,
}

/// Severity of an advisory.
#[derive(
    schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Default, Hash,
)]
pub enum Severity {
    /// Critical.
    Critical,
    /// Important.
    Important,
    /// Moderate.
    Moderate,
    /// Low.
    Low,
    /// Not applicable.
    #[default]
    None,
}

/// Phase of a release, for humans and printer columns. Conditions carry the detail.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Phase {
    /// Waiting to start (for its CoreBuild or blueprint).
    #[default]
    Pending,
    /// The build Job runs.
    Building,
    /// The test Job runs the contract checks in the built image.
    Testing,
    /// Built and kept its contract.
    Verified,
    /// In the catalog under its version tag and channels.
    Published,
    /// Still pullable, no longer recommended.
    Deprecated,
    /// Out of every channel.
    Retired,
    /// Build or test failed; left by a spec change or the retry annotation.
    Failed,
}

impl Phase {
    /// The phase as the API spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            Phase::Pending => "Pending",
            Phase::Building => "Building",
            Phase::Testing => "Testing",
            Phase::Verified => "Verified",
            Phase::Published => "Published",
            Phase::Deprecated => "Deprecated",
            Phase::Retired => "Retired",
            Phase::Failed => "Failed",
        }
    }
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Observed state of an ImageRelease.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageReleaseStatus {
    /// Where the release is in its lifecycle.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<Phase>,
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`, `Reconciling`, `Stalled` (kstatus) and `Built`, `Tested`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Current attempt, from 1. A retry starts the next one, with new Jobs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
    /// Generation of the spec the current attempt started at (a newer one retries a Failed release).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt_generation: Option<i64>,
    /// Value of the `coreforge.dev/retry` annotation the current attempt answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_token: Option<String>,
    /// What the current attempt was made from, fixed when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provenance: Option<Provenance>,
    /// The build Job of the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub build: Option<StepStatus>,
    /// The test Job of the current attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub test: Option<StepStatus>,
    /// Digest of the built image (`sha256:…`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digest: Option<String>,
    /// First 12 hex digits of the digest, for `kubectl get`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub short_digest: Option<String>,
    /// The built image in staging, by digest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub staging_image: Option<String>,
    /// Image configuration reported by the builder.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image_config: Option<ImageConfig>,
    /// Result of every contract item and named check of the last test.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckResult>,
    /// References the release is published under (version tag and channels).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub published: Vec<String>,
    /// When the release was published.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub published_at: Option<Time>,
    /// When support ends.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub support_ends_at: Option<Time>,
    /// When the release was deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deprecated_at: Option<Time>,
    /// When the release was retired.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retired_at: Option<Time>,
    /// Version of the release the contract results were compared with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub contract_baseline: Option<String>,
    /// Changes of the contract results since `contractBaseline`; incompatible ones first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub contract_changes: Vec<String>,
    /// The release notes (Markdown): advisories by type, base image change, contract changes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub release_notes: Option<String>,
    /// Every phase change, oldest first (the last 50 are kept).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<Transition>,
    /// A catalog write the controller decided on and recorded here before performing it.
    /// It is performed (again, if the controller stopped in between) until its outcome is
    /// recorded, whatever changed since.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intent: Option<Intent>,
    /// The signature and attestations of the published digest, when it was signed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<SignatureStatus>,
}

/// How a published digest was signed, and where consumers find the proofs.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SignatureStatus {
    /// The key's Secret, `namespace/name`.
    pub key: String,
    /// `sha256:` of the public key (its DER SubjectPublicKeyInfo): which key, after a rotation.
    pub key_fingerprint: String,
    /// The cosign signature: `repository:sha256-<hex>.sig`.
    pub reference: String,
    /// The in-toto attestations, in `repository:sha256-<hex>.att`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub attestations: Vec<AttestationStatus>,
    /// When it was signed.
    pub signed_at: Time,
}

/// One attestation of a published digest.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct AttestationStatus {
    /// Its predicate type (what `cosign verify-attestation --type` selects).
    pub predicate_type: String,
    /// `repository:sha256-<hex>.att`.
    pub reference: String,
    /// `sha256:` of its DSSE envelope (the layer of the attestation manifest).
    pub digest: String,
}

/// A catalog write, recorded in status before it is performed (conditioned on the
/// resourceVersion it was decided on), and cleared when its outcome is recorded.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Intent {
    /// What is to be done.
    pub action: IntentAction,
    /// The reference written: `repository:tag`.
    pub reference: String,
    /// The digest it concerns.
    pub digest: String,
    /// The release's resourceVersion the decision was made on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decided_on: Option<String>,
    /// When it was decided.
    pub decided_at: Time,
}

/// A catalog write of a release.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum IntentAction {
    /// Copy the verified digest from staging to the version tag.
    Publish,
    /// Delete a retired release's version tag (unless other tags resolve to its digest).
    DeleteVersionTag,
}

/// What a release attempt was made from. Fixed when the attempt starts, so later edits of
/// the CoreBuild never change what an in-flight or finished release means.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Provenance {
    /// Generation of the CoreBuild when the attempt started.
    pub core_build_generation: i64,
    /// `sha256:` of the CoreBuild spec (canonical JSON) when the attempt started.
    pub core_build_spec_hash: String,
    /// Base image, pinned by digest.
    pub base: String,
    /// Digest of the base image.
    pub base_digest: String,
    /// `sha256:` of the Containerfile the build used.
    pub blueprint_hash: String,
    /// Builder image.
    pub builder_image: String,
    /// ConfigMap (owned by the release) holding the snapshot the Jobs were made from.
    pub snapshot: String,
}

/// One Job of a release.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct StepStatus {
    /// Name of the Job.
    pub job_name: String,
    /// When the Job's pod started, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub started_at: Option<Time>,
    /// When the Job finished, if it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// `Succeeded` or `Failed` once finished.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
}

/// Image configuration as the builder reported it.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ImageConfig {
    /// Entrypoint.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<Vec<String>>,
    /// Exposed ports, as `8080/tcp`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ports: Vec<String>,
    /// User.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// Result of one contract item or named check.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CheckResult {
    /// `package:<name>`, `file:<path>`, `user`, `entrypoint`, `port:<n>/<proto>`,
    /// `env:<NAME>` or `check:<name>`.
    pub name: String,
    /// Whether it kept the contract.
    pub passed: bool,
    /// What was observed (a version, a file kind, a value), or why it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<String>,
    /// Output of a named check (truncated).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<String>,
}

/// A phase change.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Transition {
    /// Phase entered.
    pub phase: Phase,
    /// When.
    pub at: Time,
    /// Why (a condition reason).
    pub reason: String,
    /// Attempt it belongs to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempt: Option<i32>,
}
