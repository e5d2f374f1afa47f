//! The service catalog as consumers browse it: which products (CoreBuilds) exist, where
//! their channels point, which versions are supported until when, what each release
//! fixed and changed. One read-only view, built from the CoreBuilds and ImageReleases of
//! the namespaces it covers, and shown three ways: the JSON API and the HTML page the
//! controller serves ([`server`]), and the terminal (`coreforge catalog`, [`text`]).
//!
//! The view holds what a consumer may see: no credentials, no Secret names, no check
//! scripts, no pod settings.

pub mod html;
pub mod markdown;
pub mod server;
pub mod text;

use std::collections::BTreeMap;

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ListParams;
use kube::{Api, Client, ResourceExt};
use serde::{Deserialize, Serialize};

use crate::advisories;
use crate::api::{CoreBuild, ImageRelease, Phase, READY, STALLED, find_condition};

/// The catalog of some namespaces at one moment.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Catalog {
    /// When the view was read from the API server (support days are counted from it).
    pub generated_at: Timestamp,
    /// The products, by namespace then name.
    pub products: Vec<Product>,
}

/// A CoreBuild as consumers see it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Product {
    /// Namespace of the CoreBuild.
    pub namespace: String,
    /// Name of the CoreBuild.
    pub name: String,
    /// The catalog repository releases are published to.
    pub repository: String,
    /// Newest published version.
    pub latest_version: Option<String>,
    /// Whether the controller reports the product healthy, and why not.
    pub ready: Health,
    /// Runbook link.
    pub runbook_url: Option<String>,
    /// Upstream documentation links.
    pub docs: Vec<Link>,
    /// Technical notes (Markdown).
    pub notes: Option<String>,
    /// The support policy.
    pub support: SupportPolicy,
    /// Channel tags and the release each points at.
    pub channels: Vec<Channel>,
    /// What every release promises.
    pub contract: Contract,
    /// Releases, newest version first.
    pub releases: Vec<Release>,
}

/// A condition as a consumer reads it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Health {
    /// Ready.
    pub ready: bool,
    /// The condition's reason (empty before the controller saw the object).
    pub reason: String,
    /// Its message.
    pub message: String,
}

/// A titled link.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Link {
    /// Title.
    pub title: String,
    /// URL (http or https).
    pub url: String,
}

/// How long releases are supported.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct SupportPolicy {
    /// Published releases kept supported at once.
    pub max_supported: Option<i32>,
    /// Support window of a release from its publication.
    pub support_window: Option<String>,
    /// Deprecation this long after publication.
    pub deprecate_after: Option<String>,
    /// Retirement this long after deprecation.
    pub retire_after: Option<String>,
}

/// A channel tag.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Channel {
    /// The tag.
    pub name: String,
    /// The version it points at.
    pub version: String,
    /// The digest it points at.
    pub digest: String,
    /// How to pull it.
    pub pull: String,
}

/// The service contract: what consumers may rely on.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
pub struct Contract {
    /// Packages (with a version constraint where one is promised).
    pub packages: Vec<String>,
    /// Files and their kinds.
    pub files: Vec<String>,
    /// The user the image runs as.
    pub user: Option<String>,
    /// The entrypoint.
    pub entrypoint: Option<Vec<String>>,
    /// Exposed ports (`8080/TCP`).
    pub ports: Vec<String>,
    /// Environment variables (with a value where one is promised).
    pub env: Vec<String>,
    /// Behaviour checks (their scripts stay in the CoreBuild).
    pub checks: Vec<Check>,
}

/// A behaviour check of the contract.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Check {
    /// Name.
    pub name: String,
    /// What it proves.
    pub description: Option<String>,
}

/// An advisory.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Advisory {
    /// Id.
    pub id: String,
    /// Security, Bugfix, Enhancement or Workaround.
    #[serde(rename = "type")]
    pub type_: String,
    /// Critical, Important, Moderate, Low or None.
    pub severity: String,
    /// CVEs addressed.
    pub cves: Vec<String>,
    /// One-line summary.
    pub summary: String,
    /// The contract checks that prove it, with their results in the release's image.
    #[serde(default)]
    pub resolved_by: Vec<Proof>,
    /// Ids of the known issues of earlier releases it closes.
    #[serde(default)]
    pub closes: Vec<String>,
}

/// A contract check proving an advisory, and its result in the release's image.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct Proof {
    /// The check's name (a check of the contract).
    pub check: String,
    /// `passed`, `failed` or `not run`.
    pub result: String,
}

/// A problem a release is known to have, and whether a later release closed it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct KnownIssue {
    /// Id, unique within the release.
    pub id: String,
    /// One-line summary.
    pub summary: String,
    /// Where it is tracked (http or https).
    pub link: Option<String>,
    /// What consumers can do meanwhile.
    pub workaround: Option<String>,
    /// The release whose advisory closed it; `None` while it is open.
    pub closed_by: Option<ClosedBy>,
}

/// The release that closed a known issue, and the advisory of it that did.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct ClosedBy {
    /// Version of that release.
    pub version: String,
    /// Id of its advisory that closes the issue.
    pub advisory: String,
}

/// A release (an ImageRelease) as consumers see it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Release {
    /// Name of the ImageRelease.
    pub name: String,
    /// Version.
    pub version: String,
    /// Phase (`Pending` before the controller saw it).
    pub phase: String,
    /// Whether consumers may build on it: Published (Deprecated releases are still
    /// pullable but no longer recommended).
    pub supported: bool,
    /// The image digest, once built.
    pub digest: Option<String>,
    /// `repository@digest`, for Published and Deprecated releases.
    pub pull: Option<String>,
    /// The tags it is published under (version and channels).
    pub tags: Vec<String>,
    /// When it was published.
    pub published_at: Option<Timestamp>,
    /// When it was deprecated.
    pub deprecated_at: Option<Timestamp>,
    /// When it was retired.
    pub retired_at: Option<Timestamp>,
    /// End of support.
    pub support_ends_at: Option<Timestamp>,
    /// Whole days of support left (0 once support ended), for Published and Deprecated
    /// releases with an end of support.
    pub days_of_support_left: Option<i64>,
    /// Why it is where it is (the Stalled message of a failed release, else Ready's).
    pub status_message: String,
    /// Advisories.
    pub advisories: Vec<Advisory>,
    /// Known issues, each with the later release that closed it, if one did.
    #[serde(default)]
    pub known_issues: Vec<KnownIssue>,
    /// Release notes (Markdown), as generated by the controller.
    pub release_notes: Option<String>,
    /// The version its contract was compared with.
    pub contract_baseline: Option<String>,
    /// How its contract changed since that version.
    pub contract_changes: Vec<String>,
    /// Contract check results of its test: name → passed.
    pub checks: BTreeMap<String, bool>,
    /// How its digest is signed, when it is.
    pub signature: Option<Signature>,
}

/// The signature and attestations of a release, for consumers to verify.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Signature {
    /// `sha256:` of the public key that verifies it.
    pub key_fingerprint: String,
    /// The cosign signature (`repository:sha256-<hex>.sig`).
    pub reference: String,
    /// The predicate types attested (`cosign verify-attestation --type`).
    pub attestations: Vec<String>,
}

/// The API spelling of an enum of the CRDs (`Security`, `Critical`).
fn spelled<T: Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(s)) => s,
        _ => String::new(),
    }
}

fn timestamp(t: Option<&Time>) -> Option<Timestamp> {
    t.map(|t| t.0)
}

/// Whole days from `now` to `end`, rounded up, never below 0.
fn days_left(end: Timestamp, now: Timestamp) -> i64 {
    let seconds = end.as_second() - now.as_second();
    if seconds <= 0 { 0 } else { (seconds + 86_399) / 86_400 }
}

/// Whether a release of this phase is or was published.
fn was_published(phase: Phase) -> bool {
    matches!(phase, Phase::Published | Phase::Deprecated | Phase::Retired)
}

/// The release that closed known issue `id` of a release at `version`: of the `siblings`
/// (releases of the same CoreBuild) that are or were published and whose version is
/// above `version`, the lowest one with an advisory that `closes` the id. `None` while no
/// such release exists, or when `version` is not semver.
fn closed_by(id: &str, version: &str, siblings: &[&ImageRelease]) -> Option<ClosedBy> {
    let version = semver::Version::parse(version).ok()?;
    siblings
        .iter()
        .filter(|s| was_published(s.status.as_ref().and_then(|st| st.phase).unwrap_or_default()))
        .filter_map(|s| {
            let v = semver::Version::parse(&s.spec.version).ok()?;
            let advisory = s.spec.advisories.iter().find(|a| a.closes.iter().any(|c| c == id))?;
            Some((v, *s, advisory))
        })
        .filter(|(v, _, _)| v.cmp_precedence(&version).is_gt())
        .min_by(|(a, ra, _), (b, rb, _)| {
            a.cmp_precedence(b).then_with(|| a.cmp(b)).then_with(|| ra.name_any().cmp(&rb.name_any()))
        })
        .map(|(_, s, advisory)| ClosedBy { version: s.spec.version.clone(), advisory: advisory.id.clone() })
}

/// Release `r` as consumers see it; `siblings` are the releases of its CoreBuild (they
/// tell which of its known issues were closed since).
fn release(r: &ImageRelease, siblings: &[&ImageRelease], repository: &str, now: Timestamp) -> Release {
    let st = r.status.clone().unwrap_or_default();
    let phase = st.phase.unwrap_or_default();
    let released = matches!(phase, Phase::Published | Phase::Deprecated);
    let support_ends_at = timestamp(st.support_ends_at.as_ref().or(r.spec.support_ends_at.as_ref()));
    let explaining = if phase == Phase::Failed { STALLED } else { READY };
    let status_message = find_condition(&st.conditions, explaining).map(|c| c.message.clone()).unwrap_or_default();
    Release {
        name: r.name_any(),
        version: r.spec.version.clone(),
        phase: phase.as_str().to_string(),
        supported: phase == Phase::Published,
        pull: st.digest.as_ref().filter(|_| released).map(|d| format!("{repository}@{d}")),
        digest: st.digest,
        tags: st.published,
        published_at: timestamp(st.published_at.as_ref()),
        deprecated_at: timestamp(st.deprecated_at.as_ref()),
        retired_at: timestamp(st.retired_at.as_ref()),
        days_of_support_left: support_ends_at.filter(|_| released).map(|end| days_left(end, now)),
        support_ends_at,
        status_message,
        advisories: r
            .spec
            .advisories
            .iter()
            .map(|a| Advisory {
                id: a.id.clone(),
                type_: spelled(&a.type_),
                severity: spelled(&a.severity),
                cves: a.cves.clone(),
                summary: a.summary.clone(),
                resolved_by: advisories::proofs(std::slice::from_ref(a), &st.checks)
                    .into_iter()
                    .map(|p| Proof { check: p.check.to_string(), result: p.state.as_str().to_string() })
                    .collect(),
                closes: a.closes.clone(),
            })
            .collect(),
        known_issues: r
            .spec
            .known_issues
            .iter()
            .map(|k| KnownIssue {
                id: k.id.clone(),
                summary: k.summary.clone(),
                link: k.link.clone(),
                workaround: k.workaround.clone(),
                closed_by: closed_by(&k.id, &r.spec.version, siblings),
            })
            .collect(),
        release_notes: st.release_notes,
        contract_baseline: st.contract_baseline,
        contract_changes: st.contract_changes,
        checks: st.checks.into_iter().map(|c| (c.name, c.passed)).collect(),
        signature: st.signature.map(|s| Signature {
            key_fingerprint: s.key_fingerprint,
            reference: s.reference,
            attestations: s.attestations.into_iter().map(|a| a.predicate_type).collect(),
        }),
    }
}

fn contract(cb: &CoreBuild) -> Contract {
    let c = &cb.spec.contract;
    Contract {
        packages: c
            .packages
            .iter()
            .map(|p| match &p.version {
                Some(v) => format!("{} {v}", p.name),
                None => p.name.clone(),
            })
            .collect(),
        files: c.files.iter().map(|f| format!("{} ({})", f.path, spelled(&f.kind))).collect(),
        user: c.user.clone(),
        entrypoint: c.entrypoint.clone(),
        ports: c.ports.iter().map(|p| format!("{}/{}", p.port, spelled(&p.protocol))).collect(),
        env: c
            .env
            .iter()
            .map(|e| match &e.value {
                Some(v) => format!("{}={v}", e.name),
                None => e.name.clone(),
            })
            .collect(),
        checks: c.checks.iter().map(|k| Check { name: k.name.clone(), description: k.description.clone() }).collect(),
    }
}

fn product(cb: &CoreBuild, releases: &[&ImageRelease], now: Timestamp) -> Product {
    let st = cb.status.clone().unwrap_or_default();
    let repository = cb.spec.catalog.repository.clone();
    let ready = find_condition(&st.conditions, READY)
        .map(|c| Health { ready: c.status == "True", reason: c.reason.clone(), message: c.message.clone() })
        .unwrap_or_default();
    let docs = cb.spec.docs.clone().unwrap_or_default();
    let policy = cb.spec.lifecycle.clone().unwrap_or_default();
    let mut releases: Vec<Release> = releases.iter().map(|r| release(r, releases, &repository, now)).collect();
    releases.sort_by(|a, b| version_order(&b.version, &a.version).then_with(|| a.name.cmp(&b.name)));
    Product {
        namespace: cb.namespace().unwrap_or_default(),
        name: cb.name_any(),
        channels: st
            .channels
            .iter()
            .map(|c| Channel {
                name: c.name.clone(),
                version: c.version.clone(),
                digest: c.digest.clone(),
                pull: format!("{repository}:{}", c.name),
            })
            .collect(),
        repository,
        latest_version: st.latest_version,
        ready,
        runbook_url: docs.runbook_url,
        docs: docs.upstream.into_iter().map(|l| Link { title: l.title, url: l.url }).collect(),
        notes: docs.notes,
        support: SupportPolicy {
            max_supported: policy.max_supported,
            support_window: policy.support_window,
            deprecate_after: policy.deprecate_after,
            retire_after: policy.retire_after,
        },
        contract: contract(cb),
        releases,
    }
}

/// Semantic-version order, with versions that do not parse after those that do.
fn version_order(a: &str, b: &str) -> std::cmp::Ordering {
    match (semver::Version::parse(a), semver::Version::parse(b)) {
        (Ok(a), Ok(b)) => a.cmp(&b),
        (Ok(_), Err(_)) => std::cmp::Ordering::Greater,
        (Err(_), Ok(_)) => std::cmp::Ordering::Less,
        (Err(_), Err(_)) => a.cmp(b),
    }
}

/// The catalog of these CoreBuilds and releases at `now`. A release whose CoreBuild is
/// not among them is not shown: it has no repository to be pulled from.
pub fn view(core_builds: &[CoreBuild], releases: &[ImageRelease], now: Timestamp) -> Catalog {
    let mut by_product: BTreeMap<(String, String), Vec<&ImageRelease>> = BTreeMap::new();
    for r in releases {
        by_product.entry((r.namespace().unwrap_or_default(), r.spec.core_build.clone())).or_default().push(r);
    }
    let mut products: Vec<Product> = core_builds
        .iter()
        .map(|cb| {
            let key = (cb.namespace().unwrap_or_default(), cb.name_any());
            product(cb, by_product.get(&key).map(Vec::as_slice).unwrap_or_default(), now)
        })
        .collect();
    products.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Catalog { generated_at: now, products }
}

/// Which namespaces a view covers: all, or a list.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every namespace.
    All,
    /// These namespaces.
    Namespaces(Vec<String>),
}

/// Reads the CoreBuilds and ImageReleases of `scope` through the API server (two lists per
/// namespace) and builds the view.
pub async fn load(client: &Client, scope: &Scope) -> Result<Catalog, kube::Error> {
    let apis: Vec<(Api<CoreBuild>, Api<ImageRelease>)> = match scope {
        Scope::All => vec![(Api::all(client.clone()), Api::all(client.clone()))],
        Scope::Namespaces(namespaces) => namespaces
            .iter()
            .map(|ns| (Api::namespaced(client.clone(), ns), Api::namespaced(client.clone(), ns)))
            .collect(),
    };
    let (mut core_builds, mut releases) = (Vec::new(), Vec::new());
    let all = ListParams::default();
    for (cbs, irs) in apis {
        let (cb, ir) = futures::try_join!(cbs.list(&all), irs.list(&all))?;
        core_builds.extend(cb.items);
        releases.extend(ir.items);
    }
    Ok(view(&core_builds, &releases, Timestamp::now()))
}

/// Why one release cannot be shown.
#[derive(Debug, thiserror::Error)]
pub enum ReleaseError {
    /// There is no such ImageRelease.
    #[error("ImageRelease {name} not found in namespace {namespace}")]
    NotFound {
        /// Its namespace.
        namespace: String,
        /// Its name.
        name: String,
    },
    /// The API server failed or refused.
    #[error(transparent)]
    Api(#[from] kube::Error),
}

/// Reads one release, its CoreBuild (for the repository it is pulled from; a release
/// whose CoreBuild is gone is shown without it) and the other releases of that CoreBuild
/// (for which of its known issues they closed).
pub async fn load_release(client: &Client, namespace: &str, name: &str) -> Result<Release, ReleaseError> {
    let irs: Api<ImageRelease> = Api::namespaced(client.clone(), namespace);
    let r = irs
        .get_opt(name)
        .await?
        .ok_or_else(|| ReleaseError::NotFound { namespace: namespace.into(), name: name.into() })?;
    let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), namespace);
    let every = ListParams::default();
    let (cb, all) = futures::try_join!(cbs.get_opt(&r.spec.core_build), irs.list(&every))?;
    let repository = cb.map(|cb| cb.spec.catalog.repository).unwrap_or_default();
    let siblings: Vec<&ImageRelease> = all.items.iter().filter(|s| s.spec.core_build == r.spec.core_build).collect();
    let mut shown = release(&r, &siblings, &repository, Timestamp::now());
    if repository.is_empty() {
        shown.pull = None;
    }
    Ok(shown)
}

#[cfg(test)]
mod tests;
