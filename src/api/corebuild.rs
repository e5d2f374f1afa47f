//! `CoreBuild`: a product — a baseline image built from a pinned base and a blueprint,
//! held to a service contract, published into a catalog, supported by a policy.

// The printcolumn(...) lists repeat `type_ = "string"`, which clippy mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ResourceRequirements, SecurityContext, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

use super::pattern;

/// A core build: the product definition every `ImageRelease` of it is built, tested,
/// published and supported by.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "coreforge.dev",
    version = "v1alpha1",
    kind = "CoreBuild",
    plural = "corebuilds",
    shortname = "cb",
    category = "coreforge",
    namespaced,
    status = "CoreBuildStatus",
    derive = "PartialEq",
    doc = "A core build: the baseline image product that ImageReleases are versions of.",
    printcolumn(
        name = "Base",
        type_ = "string",
        json_path = ".spec.base",
        description = "Upstream base image, pinned by digest",
        priority = "1"
    ),
    printcolumn(
        name = "Repository",
        type_ = "string",
        json_path = ".spec.catalog.repository",
        description = "Catalog repository releases are published to"
    ),
    printcolumn(
        name = "Published",
        type_ = "integer",
        json_path = ".status.releases.published",
        description = "Releases currently published"
    ),
    printcolumn(
        name = "Latest",
        type_ = "string",
        json_path = ".status.latestVersion",
        description = "Newest published version"
    ),
    printcolumn(
        name = "Upstream",
        type_ = "string",
        json_path = ".status.base.state",
        description = "The pinned base against the upstream tag it tracks: Current, Behind, Unknown",
        priority = "1"
    ),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct CoreBuildSpec {
    /// The upstream base image, pinned by digest (`registry/repo[:tag]@sha256:<64 hex>`).
    /// Provenance starts here: every release records the exact base it was built from.
    #[schemars(length(max = 512), pattern(pattern::PINNED_IMAGE))]
    #[x_kube(validation = Rule::new("self.matches('@sha256:[a-f0-9]{64}$')").message("base must be pinned by digest: <image>@sha256:<64 hex characters>"))]
    pub base: String,

    /// How the image is made from the base: an inline Containerfile or a ConfigMap key
    /// holding one. The first `FROM` is always replaced by `base`.
    pub blueprint: Blueprint,

    /// The build pod. Defaults to a buildah image running the built-in build script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub builder: Option<Builder>,

    /// Settings for the test pod, which runs the contract checks inside the built image.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tester: Option<PodSettings>,

    /// The service contract every release of this product must keep.
    pub contract: Contract,

    /// The service catalog (OCI registry) releases are staged in and published to.
    pub catalog: Catalog,

    /// Support policy: how many releases stay supported and for how long.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lifecycle: Option<LifecyclePolicy>,

    /// Documentation shipped with every release: runbook, upstream docs, technical notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docs: Option<Docs>,

    /// The upstream tag `base` follows: the controller polls its digest and reports when
    /// the pinned base is behind it, and with `refresh: Automatic` releases the product
    /// again on the new base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_tracking: Option<BaseTracking>,
}

/// The upstream tag a CoreBuild's pinned base follows, and what to do when it moves.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BaseTracking {
    /// The tag to follow, `registry[:port]/path:tag` (e.g. `docker.io/library/debian:12-slim`).
    /// Read with the catalog's credentials Secret.
    #[schemars(length(min = 3, max = 512), pattern(pattern::TAGGED_IMAGE))]
    pub tag: String,
    /// How often the tag's digest is asked for (one conditional request each time).
    /// Default `6h`; at least `10s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), pattern(pattern::DURATION))]
    #[x_kube(validation = Rule::new("duration(self) >= duration('10s') && duration(self) <= duration('8760h')").message("interval must be between 10s and 8760h"))]
    pub interval: Option<String>,
    /// What to do when the tag moves: `Manual` (default: report it in status, metrics and
    /// alerts; a person moves `base`) or `Automatic` (release the next patch version on
    /// the new base, and move `base` to it once that release is published).
    #[serde(default)]
    pub refresh: RefreshPolicy,
    /// Transport security towards the tag's registry (default: HTTPS, verified).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RegistryTls>,
}

/// What the controller does when a tracked base moves.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum RefreshPolicy {
    /// Report it (status, metric, alert); a person edits `base`.
    #[default]
    Manual,
    /// Create the next patch release on the new base, and move `base` to it once that
    /// release is published.
    Automatic,
}

/// Where the Containerfile comes from. Exactly one of `containerfile` and `configMapRef`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.containerfile) != has(self.configMapRef)").message("blueprint needs exactly one of containerfile or configMapRef"))]
pub struct Blueprint {
    /// The Containerfile, inline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 65536))]
    pub containerfile: Option<String>,

    /// A key of a ConfigMap in the CoreBuild's namespace that holds the Containerfile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map_ref: Option<ConfigMapKeyRef>,
}

/// A key in a ConfigMap of the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ConfigMapKeyRef {
    /// Name of the ConfigMap.
    #[schemars(length(min = 1, max = 253), pattern(pattern::DNS1123_SUBDOMAIN))]
    pub name: String,
    /// Key holding the Containerfile. Defaults to `Containerfile`.
    #[serde(default = "default_containerfile_key")]
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

fn default_containerfile_key() -> String {
    "Containerfile".into()
}

/// The build pod. See the README's "Builder contract" for the environment it receives and
/// the result it must report.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Builder {
    /// Builder image. Defaults to the controller's builder (a buildah image); another only
    /// if the controller's administrator allows it (`--allow-builder-image`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 512))]
    pub image: Option<String>,
    /// Entrypoint override. Without it the built-in build script runs under `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub command: Option<Vec<String>>,
    /// Arguments to `command`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub args: Option<Vec<String>>,
    /// Pod settings for the build pod.
    #[serde(default, flatten)]
    pub pod: PodSettings,
}

/// Settings of a pod the controller runs (build or test).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PodSettings {
    /// Compute resources of the pod's container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// ServiceAccount the pod runs as (default: the namespace's `default`). Only those the
    /// controller's administrator allows (`--allow-builder-service-account`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253), pattern(pattern::DNS1123_SUBDOMAIN))]
    pub service_account_name: Option<String>,
    /// Extra labels on the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_labels: BTreeMap<String, String>,
    /// Extra annotations on the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub pod_annotations: BTreeMap<String, String>,
    /// Node selector of the pod.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    /// Tolerations of the pod.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 32))]
    pub tolerations: Vec<Toleration>,
    /// Container security context. Defaults to the restricted Pod Security profile
    /// (non-root, no privilege escalation, all capabilities dropped, RuntimeDefault seccomp).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security_context: Option<SecurityContext>,
    /// How long the pod may run before it is stopped and the step fails. Default 3600 (build), 900 (test).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 86400))]
    pub active_deadline_seconds: Option<i64>,
}

/// The service contract: what consumers of every release may rely on.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("size(self.packages) + size(self.files) + size(self.env) + size(self.checks) + (has(self.user) ? 1 : 0) > 0").message("contract must guarantee something: packages, files, env, user or checks"))]
pub struct Contract {
    /// Packages that must be installed, with an optional version constraint.
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(p, self.exists_one(q, q.name == p.name))").message("package names must be unique"))]
    pub packages: Vec<PackageGuarantee>,
    /// Files or directories that must exist.
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(f, self.exists_one(g, g.path == f.path))").message("file paths must be unique"))]
    pub files: Vec<FileGuarantee>,
    /// The user the image runs as (name or uid), as `id -un` or `id -u` reports it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 64))]
    pub user: Option<String>,
    /// The image's entrypoint, exactly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 32))]
    pub entrypoint: Option<Vec<String>>,
    /// Ports the image exposes.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub ports: Vec<PortGuarantee>,
    /// Environment variables the image sets (and their values, where given).
    #[serde(default)]
    #[schemars(length(max = 64))]
    #[x_kube(validation = Rule::new("self.all(e, self.exists_one(f, f.name == e.name))").message("env names must be unique"))]
    pub env: Vec<EnvGuarantee>,
    /// Named shell checks run inside the built image; each passes when it exits 0.
    #[serde(default)]
    #[schemars(length(max = 32))]
    #[x_kube(validation = Rule::new("self.all(c, self.exists_one(d, d.name == c.name))").message("check names must be unique"))]
    pub checks: Vec<Check>,
}

/// A package the image guarantees.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PackageGuarantee {
    /// Package name as the image's package manager (dpkg, rpm or apk) knows it.
    #[schemars(length(min = 1, max = 128), pattern(r"^[A-Za-z0-9][A-Za-z0-9+._-]*$"))]
    pub name: String,
    /// Version constraint: an operator (`=`, `!=`, `>=`, `>`, `<=`, `<`) and a version,
    /// e.g. `>= 3.0`. Comma-separate several (`>= 3.0, < 4`). Empty: any version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(
        length(min = 1, max = 128),
        pattern(r"^\s*(=|==|!=|>=|>|<=|<)\s*[A-Za-z0-9.+~:_-]+\s*(,\s*(=|==|!=|>=|>|<=|<)\s*[A-Za-z0-9.+~:_-]+\s*)*$")
    )]
    pub version: Option<String>,
}

/// A file the image guarantees.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct FileGuarantee {
    /// Absolute path.
    #[schemars(length(min = 2, max = 1024), pattern(pattern::ABSOLUTE_PATH))]
    pub path: String,
    /// What it must be. Default `Any` (exists).
    #[serde(default)]
    pub kind: FileKind,
}

/// Kind of a guaranteed path.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum FileKind {
    /// Exists, whatever it is.
    #[default]
    Any,
    /// A regular file.
    File,
    /// A directory.
    Directory,
    /// An executable file.
    Executable,
}

/// A port the image exposes.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct PortGuarantee {
    /// Port number.
    #[schemars(range(min = 1, max = 65535))]
    pub port: i32,
    /// `TCP` (default) or `UDP`.
    #[serde(default)]
    pub protocol: Protocol,
}

/// Transport protocol of a port.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum Protocol {
    /// TCP.
    #[default]
    #[serde(rename = "TCP")]
    Tcp,
    /// UDP.
    #[serde(rename = "UDP")]
    Udp,
}

/// An environment variable the image sets.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct EnvGuarantee {
    /// Variable name.
    #[schemars(length(min = 1, max = 128), pattern(pattern::ENV_NAME))]
    pub name: String,
    /// Exact value it must have. Empty: it must be set, to anything.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub value: Option<String>,
}

/// A named check: a shell command run inside the built image.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Check {
    /// Name, unique within the contract (a DNS-1123 label).
    #[schemars(length(min = 1, max = 63), pattern(pattern::DNS1123_LABEL))]
    pub name: String,
    /// Shell command (`/bin/sh -c`); the check passes when it exits 0.
    #[schemars(length(min = 1, max = 4096))]
    pub run: String,
    /// What the check guarantees, for humans and release notes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub description: Option<String>,
}

/// The service catalog: an OCI registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.repository != self.stagingRepository").message("stagingRepository must differ from repository: untested builds never share the catalog repository"))]
pub struct Catalog {
    /// Repository releases are published to (`registry[:port]/path`, no tag).
    #[schemars(length(min = 1, max = 255), pattern(pattern::REPOSITORY))]
    pub repository: String,
    /// Repository builds are pushed to before they are tested.
    #[schemars(length(min = 1, max = 255), pattern(pattern::REPOSITORY))]
    pub staging_repository: String,
    /// Moving tags: `latest`, a major (`9`) or a major.minor (`9.4`); each points at the
    /// newest supported release it matches.
    #[serde(default)]
    #[schemars(length(max = 16), inner(length(max = 32), pattern(pattern::CHANNEL)), extend("x-kubernetes-list-type" = "set"))]
    pub channels: Vec<String>,
    /// A `kubernetes.io/dockerconfigjson` Secret in the CoreBuild's namespace with
    /// credentials for both repositories.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<SecretRef>,
    /// A Secret in the CoreBuild's namespace holding the key every published digest is
    /// signed with, as `cosign generate-key-pair k8s://<namespace>/<name>` makes it
    /// (`cosign.key`, `cosign.password`, `cosign.pub`). Default: the controller's
    /// `--signing-key-secret`, if it has one; with neither, releases are published
    /// unsigned. Read when a release is published, so a rotated key signs from then on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signing_key_secret: Option<SecretRef>,
    /// Transport security towards the registry.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<RegistryTls>,
}

/// A Secret in the same namespace.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253), pattern(pattern::DNS1123_SUBDOMAIN))]
    pub name: String,
}

/// Transport security towards the registry.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct RegistryTls {
    /// Talk plain HTTP (a local registry). Default false.
    #[serde(default)]
    pub insecure: bool,
    /// Skip verification of the registry's certificate. Default false.
    #[serde(default)]
    pub skip_verify: bool,
}

/// Support policy of the product's releases.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!has(self.deprecateAfter) || !has(self.retireAfter) || duration(self.deprecateAfter) < duration(self.retireAfter)").message("deprecateAfter must be shorter than retireAfter"))]
pub struct LifecyclePolicy {
    /// At most this many releases are Published at once; publishing one more deprecates the oldest.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 1000))]
    pub max_supported: Option<i32>,
    /// A Published release is deprecated this long after it was published (e.g. `4320h`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), pattern(pattern::DURATION))]
    #[x_kube(validation = Rule::new(super::MAX_DURATION_RULE).message(super::MAX_DURATION_MESSAGE))]
    pub deprecate_after: Option<String>,
    /// A release is retired this long after it was published (e.g. `8760h`), and never
    /// before it is deprecated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), pattern(pattern::DURATION))]
    #[x_kube(validation = Rule::new(super::MAX_DURATION_RULE).message(super::MAX_DURATION_MESSAGE))]
    pub retire_after: Option<String>,
    /// Support window of a release from its publication, when the release does not set
    /// `supportEndsAt`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64), pattern(pattern::DURATION))]
    #[x_kube(validation = Rule::new(super::MAX_DURATION_RULE).message(super::MAX_DURATION_MESSAGE))]
    pub support_window: Option<String>,
    /// Delete a retired release's version tag from the catalog (every retired release,
    /// also those retired before this was set). Registries delete manifests, not tags, so
    /// this deletes the manifest, and only when no other tag of the repository (a channel,
    /// another release's version, of any CoreBuild) resolves to it; else the tag stays and
    /// the `Published` condition says `VersionTagKept`, naming those tags. Default false:
    /// retired releases leave every channel but stay pullable by version.
    #[serde(default)]
    pub delete_retired_tags: bool,
}

/// Documentation for consumers.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Docs {
    /// Runbook for operators of images built from this product.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 2048), pattern(r"^https?://"))]
    pub runbook_url: Option<String>,
    /// Upstream documentation links.
    #[serde(default)]
    #[schemars(length(max = 32))]
    pub upstream: Vec<DocLink>,
    /// Technical notes (Markdown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 16384))]
    pub notes: Option<String>,
}

/// A titled link.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct DocLink {
    /// Title.
    #[schemars(length(min = 1, max = 256))]
    pub title: String,
    /// URL.
    #[schemars(length(max = 2048), pattern(r"^https?://"))]
    pub url: String,
}

/// Observed state of a CoreBuild.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct CoreBuildStatus {
    /// Generation of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Conditions: `Ready`, `Reconciling`, `Stalled`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// How many releases are in each phase.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub releases: Option<ReleaseCounts>,
    /// Newest published version.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_version: Option<String>,
    /// Where each channel tag points in the catalog.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub channels: Vec<ChannelStatus>,
    /// The tracked base tag (`spec.baseTracking`) against the pinned base.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<BaseStatus>,
}

/// Whether the pinned base is the digest its upstream tag resolves to.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct BaseStatus {
    /// The tag followed.
    pub tag: String,
    /// Digest of `spec.base`.
    pub pinned_digest: String,
    /// Digest the tag resolved to when last asked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_digest: Option<String>,
    /// `Current`, `Behind`, or `Unknown` (never asked successfully).
    pub state: BaseState,
    /// Since when the pinned base is behind the tag.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behind_since: Option<Time>,
    /// When the tag was last asked for (successfully or not).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checked_at: Option<Time>,
    /// The last refresh release the controller created (`refresh: Automatic`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh: Option<BaseRefresh>,
}

/// Where a pinned base stands against its tag.
#[derive(schemars::JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum BaseState {
    /// The tag has not been read yet (or never could be).
    #[default]
    Unknown,
    /// `spec.base` is the tag's digest.
    Current,
    /// The tag points at another digest.
    Behind,
}

/// A release the controller created because the tracked base moved.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BaseRefresh {
    /// The ImageRelease.
    pub release: String,
    /// Its version.
    pub version: String,
    /// The base digest it replaces.
    pub from_digest: String,
    /// The base digest it is built from.
    pub to_digest: String,
    /// When it was created.
    pub created_at: Time,
    /// When `spec.base` was moved to `toDigest`: once the release was published, so the
    /// product's base moves only to a base that kept the contract.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_moved_at: Option<Time>,
}

/// A channel tag and the release it points at.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ChannelStatus {
    /// The channel (a tag of the catalog repository).
    pub name: String,
    /// Version of the release it points at.
    pub version: String,
    /// Digest it points at.
    pub digest: String,
}

/// Counts of a CoreBuild's releases by phase.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReleaseCounts {
    /// All releases.
    pub total: i32,
    /// Releases still on their way (Pending, Building, Testing).
    pub in_progress: i32,
    /// Verified, not (yet) published.
    pub verified: i32,
    /// Published and supported.
    pub published: i32,
    /// Deprecated.
    pub deprecated: i32,
    /// Retired.
    pub retired: i32,
    /// Failed.
    pub failed: i32,
}
