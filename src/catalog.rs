//! The service catalog: which registry a CoreBuild publishes to, with which credentials,
//! publishing a verified digest under its version tag, and where each channel points.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::api::{AttestationStatus, Catalog, ChannelStatus, Phase, RegistryTls, SecretRef, SignatureStatus};
use crate::fence::Fence;
use crate::registry::{Credentials, Registry, RegistryError};
use crate::signing::{self, Key, KeyError, Signing};

/// Why the catalog could not be used.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CatalogError {
    /// The registry failed or refused.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The credentials Secret is missing or unusable.
    #[error("{0}")]
    Credentials(String),
    /// The signing key's Secret is missing or unusable: nothing is published unsigned.
    #[error(transparent)]
    SigningKey(#[from] KeyError),
    /// The version tag exists and points at another digest: never overwritten.
    #[error("{reference} already exists and points at {existing}; a published version is never overwritten")]
    Conflict {
        /// The version tag.
        reference: String,
        /// What it points at.
        existing: String,
    },
}

impl CatalogError {
    /// Condition reason for this error.
    pub fn reason(&self) -> &'static str {
        match self {
            CatalogError::Registry(RegistryError::Unauthorized { .. }) => "RegistryUnauthorized",
            CatalogError::Registry(RegistryError::Unreachable { .. }) => "RegistryUnavailable",
            CatalogError::Registry(_) => "RegistryError",
            CatalogError::Credentials(_) => "CredentialsInvalid",
            CatalogError::SigningKey(k) => k.reason,
            CatalogError::Conflict { .. } => "VersionTagConflict",
        }
    }

    /// Whether a person has to act (wrong credentials), rather than wait (outage).
    pub fn needs_a_person(&self) -> bool {
        matches!(
            self,
            CatalogError::Registry(RegistryError::Unauthorized { .. })
                | CatalogError::Credentials(_)
                | CatalogError::SigningKey(_)
                | CatalogError::Conflict { .. }
        )
    }
}

/// How long a registry client made with a Secret's credentials is reused before the
/// Secret is read again: a rotated password is picked up within this time.
pub const CREDENTIALS_TTL: Duration = Duration::from_secs(60);

/// The registry clients of the controller, one per registry settings and credentials,
/// reused across reconciles (connections, bearer tokens). A client without credentials
/// lives as long as the controller; one with a Secret's credentials for
/// [`CREDENTIALS_TTL`].
pub struct Registries {
    client: Client,
    /// What every registry write passes.
    fence: Fence,
    pool: Mutex<HashMap<PoolKey, (Arc<Registry>, Instant)>>,
}

/// (namespace and Secret, when credentials come from one; plain HTTP; skip verify).
type PoolKey = (Option<(String, String)>, bool, bool);

impl Registries {
    /// A pool reading credentials Secrets with `client`, whose clients write only while
    /// `fence` lets them.
    pub fn new(client: Client, fence: Fence) -> Self {
        Self { client, fence, pool: Mutex::default() }
    }

    /// The registry client for a catalog of namespace `ns`, with the credentials of its
    /// Secret (if it names one). The outer error is the API server's; the inner one says
    /// what is wrong with the Secret.
    pub async fn get(&self, ns: &str, catalog: &Catalog) -> Result<Result<Arc<Registry>, CatalogError>, kube::Error> {
        self.get_with(ns, catalog.credentials_secret.as_ref(), catalog.tls.as_ref()).await
    }

    /// The registry client with the credentials of Secret `secret` of `ns` (if given) and
    /// these TLS settings: [`Registries::get`] for a registry other than the catalog's (a
    /// tracked base tag's).
    pub async fn get_with(
        &self,
        ns: &str,
        secret: Option<&SecretRef>,
        tls_settings: Option<&RegistryTls>,
    ) -> Result<Result<Arc<Registry>, CatalogError>, kube::Error> {
        let tls = tls_settings.cloned().unwrap_or_default();
        let key: PoolKey = (secret.map(|r| (ns.to_string(), r.name.clone())), tls.insecure, tls.skip_verify);
        if let Ok(pool) = self.pool.lock()
            && let Some((registry, made)) = pool.get(&key)
            && fresh(&key, made)
        {
            return Ok(Ok(registry.clone()));
        }
        let credentials = match secret {
            None => Credentials::default(),
            Some(r) => match credentials(&self.client, ns, &r.name).await? {
                Ok(c) => c,
                Err(e) => return Ok(Err(e)),
            },
        };
        let registry = Arc::new(Registry::new(tls_settings, credentials).fenced(self.fence.clone()));
        if let Ok(mut pool) = self.pool.lock() {
            pool.retain(|k, (_, made)| fresh(k, made));
            pool.insert(key, (registry.clone(), Instant::now()));
        }
        Ok(Ok(registry))
    }
}

/// Whether a pooled client may still be used: one without credentials always, one with a
/// Secret's credentials for [`CREDENTIALS_TTL`].
fn fresh(key: &PoolKey, made: &Instant) -> bool {
    key.0.is_none() || made.elapsed() < CREDENTIALS_TTL
}

/// The registry credentials in Secret `name` of `ns`.
async fn credentials(client: &Client, ns: &str, name: &str) -> Result<Result<Credentials, CatalogError>, kube::Error> {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = match secrets.get_opt(name).await {
        Ok(s) => s,
        // Forbidden: the controller is not allowed to read it; a person has to act.
        Err(kube::Error::Api(e)) if e.code == 403 => {
            return Ok(Err(CatalogError::Credentials(format!("reading Secret {name} is forbidden: {}", e.message))));
        }
        Err(e) => return Err(e),
    };
    let Some(secret) = secret else {
        return Ok(Err(CatalogError::Credentials(format!("credentials Secret {name} does not exist"))));
    };
    let Some(json) = secret.data.as_ref().and_then(|d| d.get(".dockerconfigjson")) else {
        return Ok(Err(CatalogError::Credentials(format!(
            "Secret {name} has no .dockerconfigjson (it must be of type kubernetes.io/dockerconfigjson)"
        ))));
    };
    Ok(Credentials::from_docker_config(&json.0).map_err(|e| CatalogError::Credentials(format!("Secret {name}: {e}"))))
}

/// Publishes `staging@digest` as `repository:version`. Idempotent: a version tag that
/// already points at `digest` is left as it is; one that points elsewhere is never
/// overwritten.
pub async fn publish(
    registry: &Registry,
    catalog: &Catalog,
    digest: &str,
    version: &str,
) -> Result<String, CatalogError> {
    let tag = tag_of(version);
    let reference = format!("{}:{tag}", catalog.repository);
    match registry.manifest_digest(&reference).await? {
        Some(existing) if existing == digest => Ok(existing),
        Some(existing) => Err(CatalogError::Conflict { reference, existing }),
        None => {
            let copied = registry.copy(&catalog.staging_repository, digest, &catalog.repository, &tag).await?;
            crate::failpoint::hit("published").await;
            Ok(copied)
        }
    }
}

/// Signs `repository@digest` with `key` and pushes its attestations, next to the image
/// as cosign does: the signature into `sha256-<hex>.sig` (beside those of other keys),
/// the attestations into `sha256-<hex>.att` (replacing the release's earlier ones).
/// Idempotent: the signatures are deterministic, and a layer already there is not added
/// again.
pub async fn sign(
    registry: &Registry,
    repository: &str,
    digest: &str,
    key: &Key,
    signing: &Signing,
    now: &Time,
) -> Result<SignatureStatus, CatalogError> {
    let sig_tag = signing::signature_tag(digest);
    let existing = registry.artifact_layers(repository, &sig_tag).await?;
    let layers = signing::merge_signatures(existing, signing::signature_layer(key, repository, digest));
    registry.put_artifact(repository, &sig_tag, &layers).await?;
    crate::failpoint::hit("signed").await;

    let att_tag = signing::attestation_tag(digest);
    let new: Vec<_> = signing.statements.iter().map(|s| signing::attestation_layer(key, &signing.release, s)).collect();
    let attestations = new
        .iter()
        .zip(&signing.statements)
        .map(|(layer, s)| AttestationStatus {
            predicate_type: s.predicate_type.clone(),
            reference: format!("{repository}:{att_tag}"),
            digest: layer.digest.clone(),
        })
        .collect();
    let existing = registry.artifact_layers(repository, &att_tag).await?;
    let layers = signing::merge_attestations(existing, &signing.release, new);
    registry.put_artifact(repository, &att_tag, &layers).await?;
    crate::failpoint::hit("attested").await;
    Ok(SignatureStatus {
        key: signing.key.to_string(),
        key_fingerprint: key.fingerprint.clone(),
        reference: format!("{repository}:{sig_tag}"),
        attestations,
        signed_at: now.clone(),
    })
}

/// Deletes the signatures and attestations of `repository@digest`, once the image itself
/// is gone from the repository: they would verify nothing any more.
async fn delete_signatures(registry: &Registry, repository: &str, digest: &str) -> Result<(), CatalogError> {
    if registry.manifest_digest(&format!("{repository}@{digest}")).await?.is_some() {
        return Ok(());
    }
    for tag in [signing::signature_tag(digest), signing::attestation_tag(digest)] {
        if let Some(d) = registry.manifest_digest(&format!("{repository}:{tag}")).await? {
            registry.delete_manifest(repository, &d).await?;
        }
    }
    Ok(())
}

/// Publishes `staging@digest` as `repository:version` (see [`publish`]), signed first
/// when `signing` says so: the version tag appears only once its signature and
/// attestations are there.
pub async fn publish_signed(
    registry: &Registry,
    keys: &signing::Keys,
    catalog: &Catalog,
    digest: &str,
    version: &str,
    signing: Option<&Signing>,
) -> Result<Result<Publication, CatalogError>, kube::Error> {
    let signature = match signing {
        None => None,
        Some(s) => {
            let key = match keys.get(&s.key.namespace, &s.key.name).await? {
                Ok(k) => k,
                Err(e) => {
                    crate::metrics::signature(e.reason);
                    return Ok(Err(e.into()));
                }
            };
            let now = Time(jiff::Timestamp::now());
            match sign(registry, &catalog.repository, digest, &key, s, &now).await {
                Ok(st) => {
                    crate::metrics::signature("signed");
                    Some(st)
                }
                Err(e) => {
                    crate::metrics::signature(match &e {
                        CatalogError::Registry(r) => r.kind(),
                        other => other.reason(),
                    });
                    return Ok(Err(e));
                }
            }
        }
    };
    Ok(publish(registry, catalog, digest, version).await.map(|digest| Publication { digest, signature }))
}

/// What publishing came to.
#[derive(Debug, Clone, PartialEq)]
pub struct Publication {
    /// The digest the version tag resolves to.
    pub digest: String,
    /// Its signature and attestations, when it was signed.
    pub signature: Option<SignatureStatus>,
}

impl From<&str> for Publication {
    /// An unsigned publication of `digest`.
    fn from(digest: &str) -> Self {
        Publication { digest: digest.to_string(), signature: None }
    }
}

/// What became of a retired release's version tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TagDeletion {
    /// The tag is gone (deleted now, or before).
    Deleted,
    /// The tag stays: deleting it would delete these other tags of the repository, which
    /// resolve to the same manifest (registries delete manifests, not tags).
    Kept {
        /// The other tags, sorted.
        by: Vec<String>,
    },
}

/// Deletes the version tag `repository:version` of a retired release whose digest is
/// `digest`, unless another tag of the repository resolves to that digest too: a
/// channel, another release's version (of any CoreBuild), anything someone pushed. Those
/// in `going_too` (retired versions whose tags go as well) do not hold it. Checked
/// against the registry right before the deletion.
pub async fn delete_version_tag(
    registry: &Registry,
    catalog: &Catalog,
    digest: &str,
    version: &str,
    going_too: &[String],
) -> Result<TagDeletion, CatalogError> {
    let repo = &catalog.repository;
    let own = tag_of(version);
    if registry.manifest_digest(&format!("{repo}:{own}")).await?.as_deref() != Some(digest) {
        // Gone already (a version tag is never overwritten, so it cannot point elsewhere);
        // its signatures too, unless the controller stopped in between.
        delete_signatures(registry, repo, digest).await?;
        return Ok(TagDeletion::Deleted);
    }
    let going: Vec<String> = going_too.iter().map(|v| tag_of(v)).collect();
    let mut by = Vec::new();
    for tag in registry.tags(repo).await? {
        if tag == own || going.contains(&tag) {
            continue;
        }
        if registry.manifest_digest(&format!("{repo}:{tag}")).await?.as_deref() == Some(digest) {
            by.push(tag);
        }
    }
    if !by.is_empty() {
        by.sort();
        return Ok(TagDeletion::Kept { by });
    }
    registry.delete_manifest(repo, digest).await?;
    crate::failpoint::hit("tag-deleted").await;
    delete_signatures(registry, repo, digest).await?;
    Ok(TagDeletion::Deleted)
}

/// The tag of a version (`+` is not allowed in tags).
pub fn tag_of(version: &str) -> String {
    version.replace('+', "_")
}

/// A release as the channel computation sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Candidate {
    /// Its version.
    pub version: String,
    /// Its phase.
    pub phase: Phase,
    /// Its digest.
    pub digest: Option<String>,
}

/// Whether `version` belongs to `channel`: `latest` takes every version, `9` every 9.x.y,
/// `9.4` every 9.4.y.
pub fn matches(channel: &str, version: &semver::Version) -> bool {
    let mut parts = channel.split('.');
    match (parts.next(), parts.next(), parts.next()) {
        (Some("latest"), None, None) => true,
        (Some(major), None, None) => major.parse() == Ok(version.major),
        (Some(major), Some(minor), None) => major.parse() == Ok(version.major) && minor.parse() == Ok(version.minor),
        _ => false,
    }
}

/// Where each channel should point: the newest Published release (by semver; pre-releases
/// never enter a channel) that matches it. Channels with no such release are absent.
pub fn desired_channels(channels: &[String], releases: &[Candidate]) -> Vec<ChannelStatus> {
    let mut eligible: Vec<(semver::Version, &Candidate)> = releases
        .iter()
        .filter(|r| r.phase == Phase::Published && r.digest.is_some())
        .filter_map(|r| semver::Version::parse(&r.version).ok().map(|v| (v, r)))
        .filter(|(v, _)| v.pre.is_empty())
        .collect();
    eligible.sort_by(|a, b| b.0.cmp(&a.0));
    let mut out: BTreeMap<&str, ChannelStatus> = BTreeMap::new();
    for channel in channels {
        if let Some((_, r)) = eligible.iter().find(|(v, _)| matches(channel, v)) {
            out.insert(
                channel,
                ChannelStatus {
                    name: channel.clone(),
                    version: r.version.clone(),
                    digest: r.digest.clone().unwrap_or_default(),
                },
            );
        }
    }
    out.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(version: &str, phase: Phase) -> Candidate {
        Candidate { version: version.into(), phase, digest: Some(format!("sha256:{version}")) }
    }

    #[test]
    fn channels_point_at_the_newest_published_match() {
        let releases = [
            c("9.3.7", Phase::Published),
            c("9.4.0", Phase::Published),
            c("9.4.2", Phase::Published),
            c("9.4.3", Phase::Verified),
            c("9.5.0", Phase::Deprecated),
            c("10.0.0-rc.1", Phase::Published),
            c("8.10.1", Phase::Published),
            c("8.11.0", Phase::Retired),
        ];
        let channels: Vec<String> =
            ["9", "9.3", "9.4", "8", "latest", "10", "7"].iter().map(|s| s.to_string()).collect();
        let got: Vec<(String, String)> =
            desired_channels(&channels, &releases).into_iter().map(|c| (c.name, c.version)).collect();
        let want = [("8", "8.10.1"), ("9", "9.4.2"), ("9.3", "9.3.7"), ("9.4", "9.4.2"), ("latest", "9.4.2")];
        assert_eq!(got, want.map(|(a, b)| (a.to_string(), b.to_string())));
    }

    #[test]
    fn channel_matching() {
        let v = semver::Version::parse("12.7.1").unwrap();
        assert!(matches("latest", &v) && matches("12", &v) && matches("12.7", &v));
        assert!(!matches("1", &v) && !matches("12.70", &v) && !matches("13", &v) && !matches("12.7.1", &v));
    }
}
