//! The service catalog's registry client: OCI distribution (via `oci-client`) with
//! credentials from a `kubernetes.io/dockerconfigjson` Secret, plain HTTP or TLS,
//! timeouts, and retries with backoff for transient failures.
//!
//! Everything here is idempotent: copying a digest that is already there, or moving a
//! tag to where it already points, changes nothing. That is what makes publishing
//! crash-safe: re-running it after a crash anywhere converges to the same tags.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{
    IMAGE_MANIFEST_LIST_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, OCI_IMAGE_MEDIA_TYPE,
};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};
use serde::Deserialize;

use crate::api::{ImageConfig, RegistryTls};
use crate::fence::Fence;
use crate::metrics;
use crate::signing::Layer;

const MANIFEST_TYPES: [&str; 4] =
    [OCI_IMAGE_MEDIA_TYPE, OCI_IMAGE_INDEX_MEDIA_TYPE, IMAGE_MANIFEST_MEDIA_TYPE, IMAGE_MANIFEST_LIST_MEDIA_TYPE];
const ATTEMPTS: u32 = 3;

/// Why a registry operation failed. The variant decides what the controller does.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegistryError {
    /// No answer: connection refused, timeout, DNS, TLS. Retried with backoff.
    #[error("registry {registry} is unreachable: {message}")]
    Unreachable {
        /// Registry host.
        registry: String,
        /// What went wrong.
        message: String,
    },
    /// The registry refused the credentials (or their absence).
    #[error("registry {registry} refused the credentials: {message}")]
    Unauthorized {
        /// Registry host.
        registry: String,
        /// What it said.
        message: String,
    },
    /// The reference does not exist.
    #[error("{reference} does not exist in the registry")]
    NotFound {
        /// What was looked for.
        reference: String,
    },
    /// Any other refusal (bad request, server error, protocol violation).
    #[error("registry {registry}: {message}")]
    Other {
        /// Registry host.
        registry: String,
        /// What went wrong.
        message: String,
    },
}

impl RegistryError {
    /// Bounded label for metrics and condition reasons.
    pub fn kind(&self) -> &'static str {
        match self {
            RegistryError::Unreachable { .. } => "unreachable",
            RegistryError::Unauthorized { .. } => "unauthorized",
            RegistryError::NotFound { .. } => "not_found",
            RegistryError::Other { .. } => "other",
        }
    }

    fn transient(&self) -> bool {
        matches!(self, RegistryError::Unreachable { .. } | RegistryError::Other { .. })
    }

    fn from_oci(e: OciDistributionError, reference: &Reference) -> Self {
        let registry = reference.registry().to_string();
        let not_found = |c: &OciErrorCode| {
            matches!(
                c,
                OciErrorCode::ManifestUnknown
                    | OciErrorCode::NameUnknown
                    | OciErrorCode::BlobUnknown
                    | OciErrorCode::NotFound
            )
        };
        let denied = |c: &OciErrorCode| matches!(c, OciErrorCode::Unauthorized | OciErrorCode::Denied);
        match e {
            OciDistributionError::RequestError(r) => RegistryError::Unreachable { registry, message: error_chain(&r) },
            OciDistributionError::UnauthorizedError { url } => {
                RegistryError::Unauthorized { registry, message: format!("401 Unauthorized for {url}") }
            }
            OciDistributionError::AuthenticationFailure(message) => RegistryError::Unauthorized { registry, message },
            OciDistributionError::ServerError { code: 401 | 403, message, .. } => {
                RegistryError::Unauthorized { registry, message }
            }
            OciDistributionError::ServerError { code: 404, .. }
            | OciDistributionError::ImageManifestNotFoundError(_) => {
                RegistryError::NotFound { reference: reference.whole() }
            }
            OciDistributionError::RegistryError { envelope, url } => {
                if envelope.errors.iter().any(|e| not_found(&e.code)) {
                    RegistryError::NotFound { reference: reference.whole() }
                } else if envelope.errors.iter().any(|e| denied(&e.code)) {
                    RegistryError::Unauthorized { registry, message: format!("{url}: {envelope}") }
                } else {
                    RegistryError::Other { registry, message: format!("{url}: {envelope}") }
                }
            }
            other => RegistryError::Other { registry, message: other.to_string() },
        }
    }
}

/// The error and its causes on one line (reqwest hides the useful part in the source).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// Registry credentials by registry host, from a Docker config JSON.
#[derive(Clone, Default, PartialEq)]
pub struct Credentials(BTreeMap<String, (String, String)>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.0.keys()).finish()
    }
}

#[derive(Deserialize)]
struct DockerConfig {
    auths: BTreeMap<String, DockerAuth>,
}

#[derive(Deserialize)]
struct DockerAuth {
    #[serde(default)]
    auth: Option<String>,
    #[serde(default)]
    username: Option<String>,
    #[serde(default)]
    password: Option<String>,
}

impl Credentials {
    /// Parses the `.dockerconfigjson` of a Secret (`{"auths":{"host":{"auth":"base64(user:pass)"}}}`).
    pub fn from_docker_config(json: &[u8]) -> Result<Self, String> {
        let value: serde_json::Value =
            serde_json::from_slice(json).map_err(|e| format!(".dockerconfigjson is not JSON: {e}"))?;
        if value.get("auths").is_none_or(|a| !a.is_object()) {
            return Err(".dockerconfigjson has no \"auths\" object".into());
        }
        let config: DockerConfig =
            serde_json::from_value(value).map_err(|e| format!(".dockerconfigjson is not a Docker config: {e}"))?;
        let mut out = BTreeMap::new();
        for (host, a) in config.auths {
            let host = host.trim_start_matches("https://").trim_start_matches("http://").trim_end_matches('/');
            let host = host.strip_suffix("/v1").or_else(|| host.strip_suffix("/v2")).unwrap_or(host).to_string();
            let pair = match (a.auth, a.username, a.password) {
                (_, Some(u), Some(p)) => (u, p),
                (Some(auth), _, _) => {
                    let decoded = base64::engine::general_purpose::STANDARD
                        .decode(auth.trim())
                        .map_err(|e| format!("the auth of {host} is not base64: {e}"))?;
                    let text = String::from_utf8(decoded).map_err(|_| format!("the auth of {host} is not UTF-8"))?;
                    let (u, p) =
                        text.split_once(':').ok_or_else(|| format!("the auth of {host} is not user:password"))?;
                    (u.to_string(), p.to_string())
                }
                _ => return Err(format!("the entry for {host} has neither auth nor username and password")),
            };
            out.insert(host, pair);
        }
        Ok(Credentials(out))
    }

    fn for_registry(&self, registry: &str) -> RegistryAuth {
        match self.0.get(registry) {
            Some((u, p)) => RegistryAuth::Basic(u.clone(), p.clone()),
            None => RegistryAuth::Anonymous,
        }
    }
}

/// What a tag resolves to, against what it resolved to when last asked.
#[derive(Debug, Clone, PartialEq)]
pub enum TagState {
    /// It still points at the digest it was asked about.
    Unchanged,
    /// It points at `digest`; for an index, `manifests` are the digests of its images.
    Changed {
        /// The manifest's digest.
        digest: String,
        /// The images of an index (one per platform); empty for an image.
        manifests: Vec<String>,
    },
}

/// A registry client for one CoreBuild's catalog (its TLS settings and credentials).
pub struct Registry {
    client: Client,
    credentials: Credentials,
    /// For what `oci-client` does not do (deleting manifests).
    http: reqwest::Client,
    scheme: &'static str,
    /// What every manifest write and delete passes (open unless [`Registry::fenced`]).
    fence: Fence,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Descriptor {
    digest: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct AnyManifest {
    #[serde(default)]
    media_type: Option<String>,
    #[serde(default)]
    config: Option<Descriptor>,
    #[serde(default)]
    layers: Vec<Descriptor>,
    #[serde(default)]
    manifests: Option<Vec<Descriptor>>,
}

impl AnyManifest {
    fn media_type(&self) -> &str {
        match (&self.media_type, &self.manifests) {
            (Some(m), _) => m,
            (None, Some(_)) => OCI_IMAGE_INDEX_MEDIA_TYPE,
            (None, None) => OCI_IMAGE_MEDIA_TYPE,
        }
    }
}

/// `request` with the bearer `token` the registry issued, else the Basic credentials of
/// `auth`, else as it is (anonymous): for the requests made without `oci-client`.
fn authorized(request: reqwest::RequestBuilder, token: Option<&str>, auth: &RegistryAuth) -> reqwest::RequestBuilder {
    match (token, auth) {
        (Some(t), _) => request.bearer_auth(t),
        (None, RegistryAuth::Basic(u, p)) => request.basic_auth(u, Some(p)),
        _ => request,
    }
}

/// The repository of an image reference, without its digest and tag
/// (`registry:5000/path:tag@sha256:…` → `registry:5000/path`).
pub fn repository_of(image: &str) -> &str {
    let image = image.split_once('@').map(|(i, _)| i).unwrap_or(image);
    match image.rsplit_once(':') {
        Some((repo, tag)) if !tag.contains('/') => repo,
        _ => image,
    }
}

/// The digest of a pinned image reference (`…@sha256:…`; empty when it has none).
pub fn digest_of(image: &str) -> &str {
    image.rsplit_once('@').map(|(_, d)| d).unwrap_or_default()
}

fn parse_reference(text: &str) -> Result<Reference, RegistryError> {
    text.parse::<Reference>().map_err(|e| RegistryError::Other {
        registry: text.split('/').next().unwrap_or_default().to_string(),
        message: format!("{text:?} is not an image reference: {e}"),
    })
}

impl Registry {
    /// A client honouring the catalog's TLS settings, with connect and read timeouts.
    pub fn new(tls: Option<&RegistryTls>, credentials: Credentials) -> Self {
        // The HTTPS client needs a process-wide crypto provider: ring, as for the
        // Kubernetes client. Installing it again is a harmless no-op.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let insecure = tls.is_some_and(|t| t.insecure);
        let config = ClientConfig {
            protocol: if insecure { ClientProtocol::Http } else { ClientProtocol::Https },
            accept_invalid_certificates: tls.is_some_and(|t| t.skip_verify),
            connect_timeout: Some(Duration::from_secs(5)),
            read_timeout: Some(Duration::from_secs(60)),
            user_agent: concat!("coreforge/", env!("CARGO_PKG_VERSION")),
            platform_resolver: Some(Box::new(oci_client::client::linux_amd64_resolver)),
            ..Default::default()
        };
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(60))
            .danger_accept_invalid_certs(tls.is_some_and(|t| t.skip_verify))
            .user_agent(concat!("coreforge/", env!("CARGO_PKG_VERSION")))
            .build()
            .unwrap_or_default();
        let scheme = if insecure { "http" } else { "https" };
        Registry { client: Client::new(config), credentials, http, scheme, fence: Fence::open() }
    }

    /// The same client, whose manifest writes and deletes pass `fence`.
    pub fn fenced(mut self, fence: Fence) -> Self {
        self.fence = fence;
        self
    }

    /// Whether this client may write now.
    fn may_write(&self, registry: &str) -> Result<(), RegistryError> {
        self.fence.check().map_err(|e| RegistryError::Other { registry: registry.to_string(), message: e.to_string() })
    }

    /// Runs `op` up to three times, backing off 0.5 s, then 1 s, on transient failures;
    /// counts every attempt in the registry metrics under `operation`.
    async fn retry<T, F, Fut>(&self, operation: &'static str, mut op: F) -> Result<T, RegistryError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, RegistryError>>,
    {
        let mut delay = Duration::from_millis(500);
        let mut attempt = 1;
        loop {
            let result = op().await;
            // "Not there" is an answer, not a failure (a tag that does not exist yet).
            let failure = result.as_ref().err().filter(|e| !matches!(e, RegistryError::NotFound { .. }));
            metrics::registry_request(operation, failure.map(RegistryError::kind));
            match result {
                Err(e) if e.transient() && attempt < ATTEMPTS => {
                    tracing::debug!(operation, attempt, error = %e, "registry request failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                    attempt += 1;
                }
                other => return other,
            }
        }
    }

    /// The digest `reference` (`repo:tag` or `repo@digest`) resolves to, or `None` when
    /// it does not exist.
    pub async fn manifest_digest(&self, reference: &str) -> Result<Option<String>, RegistryError> {
        let r = parse_reference(reference)?;
        let auth = self.credentials.for_registry(r.resolve_registry());
        let found = self
            .retry("head_manifest", || async {
                self.client.fetch_manifest_digest(&r, &auth).await.map_err(|e| RegistryError::from_oci(e, &r))
            })
            .await;
        match found {
            Ok(d) => Ok(Some(d)),
            Err(RegistryError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// What tag `reference` (`repo:tag`) resolves to, asked with one conditional request:
    /// a `GET` of its manifest with `If-None-Match: "<known>"`, which the registry answers
    /// `304 Not Modified`, without a body, while the tag still points at `known`.
    /// Credentials go along as Basic auth; a registry that asks for a bearer token costs
    /// the token exchange on top. Counted as `conditional_manifest`.
    pub async fn tag_changed(&self, reference: &str, known: Option<&str>) -> Result<TagState, RegistryError> {
        let r = parse_reference(reference)?;
        let auth = self.credentials.for_registry(r.resolve_registry());
        let url = format!(
            "{}://{}/v2/{}/manifests/{}",
            self.scheme,
            r.resolve_registry(),
            r.repository(),
            r.tag().unwrap_or("latest")
        );
        let unreachable = |e: reqwest::Error| RegistryError::Unreachable {
            registry: r.registry().to_string(),
            message: error_chain(&e),
        };
        self.retry("conditional_manifest", || async {
            let mut token: Option<String> = None;
            loop {
                let mut request = self.http.get(&url).header(reqwest::header::ACCEPT, MANIFEST_TYPES.join(", "));
                if let Some(known) = known {
                    request = request.header(reqwest::header::IF_NONE_MATCH, format!("\"{known}\""));
                }
                request = authorized(request, token.as_deref(), &auth);
                let response = request.send().await.map_err(unreachable)?;
                let status = response.status().as_u16();
                let bearer = response
                    .headers()
                    .get(reqwest::header::WWW_AUTHENTICATE)
                    .and_then(|h| h.to_str().ok())
                    .is_some_and(|h| h.to_ascii_lowercase().starts_with("bearer"));
                match status {
                    304 => return Ok(TagState::Unchanged),
                    200 => {
                        let header = response
                            .headers()
                            .get("docker-content-digest")
                            .and_then(|h| h.to_str().ok())
                            .map(str::to_string);
                        let body = response.bytes().await.map_err(unreachable)?;
                        let digest = header.unwrap_or_else(|| crate::names::sha256(&body));
                        let manifests = serde_json::from_slice::<AnyManifest>(&body)
                            .ok()
                            .and_then(|m| m.manifests)
                            .map(|m| m.into_iter().map(|d| d.digest).collect())
                            .unwrap_or_default();
                        return Ok(TagState::Changed { digest, manifests });
                    }
                    404 => return Err(RegistryError::NotFound { reference: r.whole() }),
                    401 if bearer && token.is_none() => {
                        // The token exchange of a bearer registry, once; then the same request.
                        token = self
                            .client
                            .auth(&r, &auth, RegistryOperation::Pull)
                            .await
                            .map_err(|e| RegistryError::from_oci(e, &r))?;
                        if token.is_none() {
                            return Err(RegistryError::Unauthorized {
                                registry: r.registry().to_string(),
                                message: format!("GET {url}: 401 and no token was issued"),
                            });
                        }
                    }
                    401 | 403 => {
                        return Err(RegistryError::Unauthorized {
                            registry: r.registry().to_string(),
                            message: format!("GET {url}: {status}"),
                        });
                    }
                    _ => {
                        return Err(RegistryError::Other {
                            registry: r.registry().to_string(),
                            message: format!("GET {url}: {status} {}", response.text().await.unwrap_or_default()),
                        });
                    }
                }
            }
        })
        .await
    }

    /// Every tag of repository `repo` (empty when the repository does not exist), read
    /// page by page.
    pub async fn tags(&self, repo: &str) -> Result<Vec<String>, RegistryError> {
        const PAGE: usize = 1000;
        let r = parse_reference(&format!("{repo}:latest"))?;
        let auth = self.credentials.for_registry(r.resolve_registry());
        let mut tags: Vec<String> = Vec::new();
        loop {
            let last = tags.last().cloned();
            let page = self
                .retry("list_tags", || async {
                    self.client
                        .list_tags(&r, &auth, Some(PAGE), last.as_deref())
                        .await
                        .map_err(|e| RegistryError::from_oci(e, &r))
                })
                .await;
            let page = match page {
                Ok(page) => page.tags,
                Err(RegistryError::NotFound { .. }) => Vec::new(),
                Err(e) => return Err(e),
            };
            let full = page.len() >= PAGE;
            tags.extend(page);
            if !full {
                return Ok(tags);
            }
        }
    }

    /// The image config of `reference` (entrypoint, exposed ports, user), or `None` when
    /// the image does not exist. For an index, the linux/amd64 image.
    pub async fn image_config(&self, reference: &str) -> Result<Option<ImageConfig>, RegistryError> {
        let r = parse_reference(reference)?;
        let auth = self.credentials.for_registry(r.resolve_registry());
        let pulled = self
            .retry("get_config", || async {
                self.client.pull_manifest_and_config(&r, &auth).await.map_err(|e| RegistryError::from_oci(e, &r))
            })
            .await;
        let config = match pulled {
            Ok((_, _, config)) => config,
            Err(RegistryError::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        #[derive(Deserialize, Default)]
        #[serde(rename_all = "PascalCase")]
        struct Inner {
            #[serde(default)]
            entrypoint: Option<Vec<String>>,
            #[serde(default)]
            exposed_ports: Option<BTreeMap<String, serde_json::Value>>,
            #[serde(default)]
            user: Option<String>,
        }
        #[derive(Deserialize)]
        struct Outer {
            #[serde(default)]
            config: Option<Inner>,
        }
        let outer: Outer = serde_json::from_str(&config).map_err(|e| RegistryError::Other {
            registry: r.registry().to_string(),
            message: format!("the config of {reference} is not an image config: {e}"),
        })?;
        let inner = outer.config.unwrap_or_default();
        Ok(Some(ImageConfig {
            entrypoint: inner.entrypoint,
            ports: inner.exposed_ports.map(|p| p.into_keys().collect()).unwrap_or_default(),
            user: inner.user.filter(|u| !u.is_empty()),
        }))
    }

    async fn manifest(&self, r: &Reference) -> Result<(bytes::Bytes, String), RegistryError> {
        let auth = self.credentials.for_registry(r.resolve_registry());
        self.retry("get_manifest", || async {
            self.client.pull_manifest_raw(r, &auth, &MANIFEST_TYPES).await.map_err(|e| RegistryError::from_oci(e, r))
        })
        .await
    }

    async fn copy_blob(&self, src: &Reference, dst: &Reference, digest: &str) -> Result<(), RegistryError> {
        let auth = self.credentials.for_registry(dst.resolve_registry());
        self.client.auth(dst, &auth, RegistryOperation::Push).await.map_err(|e| RegistryError::from_oci(e, dst))?;
        if self.blob_exists(dst, digest).await? {
            return Ok(());
        }
        if src.resolve_registry() == dst.resolve_registry() {
            // Cross-repository mount: the registry links the blob, nothing is transferred.
            let mounted = self.client.mount_blob(dst, src, digest).await.map_err(|e| RegistryError::from_oci(e, dst));
            metrics::registry_request("mount_blob", mounted.as_ref().err().map(RegistryError::kind));
            if mounted.is_ok() {
                return Ok(());
            }
        }
        let src_auth = self.credentials.for_registry(src.resolve_registry());
        self.client.auth(src, &src_auth, RegistryOperation::Pull).await.map_err(|e| RegistryError::from_oci(e, src))?;
        let data = self
            .retry("get_blob", || async {
                let mut data = Vec::new();
                let desc = oci_client::manifest::OciDescriptor { digest: digest.into(), ..Default::default() };
                self.client.pull_blob(src, &desc, &mut data).await.map_err(|e| RegistryError::from_oci(e, src))?;
                Ok(data)
            })
            .await?;
        self.retry("put_blob", || async {
            self.client.push_blob(dst, data.clone(), digest).await.map_err(|e| RegistryError::from_oci(e, dst))
        })
        .await?;
        Ok(())
    }

    /// Makes `dst_repo:tag` point at `src_repo@digest`: copies (or mounts) every blob and
    /// child manifest first, then puts the manifest's exact bytes under the tag, so the
    /// digest is preserved. Returns the digest `dst_repo:tag` resolves to afterwards.
    pub async fn copy(&self, src_repo: &str, digest: &str, dst_repo: &str, tag: &str) -> Result<String, RegistryError> {
        let src = parse_reference(&format!("{src_repo}@{digest}"))?;
        let dst = parse_reference(&format!("{dst_repo}:{tag}"))?;
        self.copy_manifest(&src, &dst, digest, true).await?;
        let now = self.manifest_digest(&format!("{dst_repo}:{tag}")).await?;
        match now {
            Some(d) if d == digest => Ok(d),
            Some(d) => Err(RegistryError::Other {
                registry: dst.registry().to_string(),
                message: format!("{dst_repo}:{tag} resolves to {d} after the copy, expected {digest}"),
            }),
            None => Err(RegistryError::NotFound { reference: format!("{dst_repo}:{tag}") }),
        }
    }

    async fn copy_manifest(
        &self,
        src: &Reference,
        dst: &Reference,
        digest: &str,
        tagged: bool,
    ) -> Result<(), RegistryError> {
        let (bytes, got) = self.manifest(src).await?;
        if got != digest {
            return Err(RegistryError::Other {
                registry: src.registry().to_string(),
                message: format!("{} served a manifest with digest {got}", src.whole()),
            });
        }
        let parsed: AnyManifest = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Other {
            registry: src.registry().to_string(),
            message: format!("{} is not a manifest: {e}", src.whole()),
        })?;
        for child in parsed.manifests.iter().flatten() {
            let child_src =
                Reference::with_digest(src.registry().into(), src.repository().into(), child.digest.clone());
            let child_dst =
                Reference::with_digest(dst.registry().into(), dst.repository().into(), child.digest.clone());
            Box::pin(self.copy_manifest(&child_src, &child_dst, &child.digest, false)).await?;
        }
        for blob in parsed.config.iter().chain(parsed.layers.iter()) {
            self.copy_blob(src, dst, &blob.digest).await?;
        }
        let target = if tagged {
            dst.clone()
        } else {
            Reference::with_digest(dst.registry().into(), dst.repository().into(), digest.into())
        };
        let content_type = http::HeaderValue::from_str(parsed.media_type()).map_err(|e| RegistryError::Other {
            registry: dst.registry().to_string(),
            message: format!("bad media type: {e}"),
        })?;
        self.put_manifest(&target, bytes, content_type).await
    }

    /// Puts a manifest's exact bytes under `target` (a tag, or a digest), when the fence
    /// lets this client write.
    async fn put_manifest(
        &self,
        target: &Reference,
        bytes: bytes::Bytes,
        content_type: http::HeaderValue,
    ) -> Result<(), RegistryError> {
        self.retry("put_manifest", || async {
            self.may_write(target.registry())?;
            self.client
                .push_manifest_raw(target, bytes.clone(), content_type.clone())
                .await
                .map(|_| ())
                .map_err(|e| RegistryError::from_oci(e, target))
        })
        .await
    }

    /// Deletes the manifest `repo@digest`, and with it every tag that points at it
    /// (registries delete manifests, not tags). A manifest that is already gone is fine.
    pub async fn delete_manifest(&self, repo: &str, digest: &str) -> Result<(), RegistryError> {
        let r = parse_reference(&format!("{repo}@{digest}"))?;
        let auth = self.credentials.for_registry(r.resolve_registry());
        let token =
            self.client.auth(&r, &auth, RegistryOperation::Push).await.map_err(|e| RegistryError::from_oci(e, &r))?;
        let url = format!("{}://{}/v2/{}/manifests/{digest}", self.scheme, r.resolve_registry(), r.repository());
        let result = self
            .retry("delete_manifest", || async {
                self.may_write(r.registry())?;
                let mut request = self.http.delete(&url);
                request = authorized(request, token.as_deref(), &auth);
                let response = request.send().await.map_err(|e| RegistryError::Unreachable {
                    registry: r.registry().to_string(),
                    message: error_chain(&e),
                })?;
                match response.status().as_u16() {
                    200..=299 => Ok(()),
                    404 => Err(RegistryError::NotFound { reference: r.whole() }),
                    401 | 403 => Err(RegistryError::Unauthorized {
                        registry: r.registry().to_string(),
                        message: format!("DELETE {url}: {}", response.status()),
                    }),
                    _ => Err(RegistryError::Other {
                        registry: r.registry().to_string(),
                        message: format!(
                            "DELETE {url}: {} {}",
                            response.status(),
                            response.text().await.unwrap_or_default()
                        ),
                    }),
                }
            })
            .await;
        match result {
            Ok(()) | Err(RegistryError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The layers of the artifact `repo:tag` (a signature or attestation manifest), or
    /// none when it does not exist.
    pub async fn artifact_layers(&self, repo: &str, tag: &str) -> Result<Vec<Layer>, RegistryError> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Described {
            media_type: String,
            digest: String,
            size: u64,
            #[serde(default)]
            annotations: BTreeMap<String, String>,
        }
        #[derive(Deserialize)]
        struct Artifact {
            #[serde(default)]
            layers: Vec<Described>,
        }
        let r = parse_reference(&format!("{repo}:{tag}"))?;
        let bytes = match self.manifest(&r).await {
            Ok((bytes, _)) => bytes,
            Err(RegistryError::NotFound { .. }) => return Ok(Vec::new()),
            Err(e) => return Err(e),
        };
        let artifact: Artifact = serde_json::from_slice(&bytes).map_err(|e| RegistryError::Other {
            registry: r.registry().to_string(),
            message: format!("{repo}:{tag} is not an image manifest: {e}"),
        })?;
        Ok(artifact
            .layers
            .into_iter()
            .map(|l| Layer {
                media_type: l.media_type,
                digest: l.digest,
                size: l.size,
                annotations: l.annotations,
                data: None,
            })
            .collect())
    }

    /// Puts the artifact `repo:tag` made of `layers` (uploading those with data), with a
    /// config as cosign writes one. Returns the manifest's digest.
    pub async fn put_artifact(&self, repo: &str, tag: &str, layers: &[Layer]) -> Result<String, RegistryError> {
        let r = parse_reference(&format!("{repo}:{tag}"))?;
        let auth = self.credentials.for_registry(r.resolve_registry());
        self.client.auth(&r, &auth, RegistryOperation::Push).await.map_err(|e| RegistryError::from_oci(e, &r))?;
        for layer in layers {
            if let Some(data) = &layer.data {
                self.put_blob(&r, data, &layer.digest).await?;
            }
        }
        let config = serde_json::to_vec(&serde_json::json!({
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": layers.iter().map(|l| l.digest.as_str()).collect::<Vec<_>>()},
            "config": {},
        }))
        .unwrap_or_default();
        let config_digest = crate::names::sha256(&config);
        self.put_blob(&r, &config, &config_digest).await?;
        let descriptors: Vec<serde_json::Value> = layers
            .iter()
            .map(|l| {
                let mut d = serde_json::json!({"mediaType": l.media_type, "size": l.size, "digest": l.digest});
                if !l.annotations.is_empty() {
                    d["annotations"] = serde_json::json!(l.annotations);
                }
                d
            })
            .collect();
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": config.len(), "digest": config_digest},
            "layers": descriptors,
        });
        let body = bytes::Bytes::from(serde_json::to_vec(&manifest).unwrap_or_default());
        self.put_manifest(&r, body.clone(), http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE)).await?;
        Ok(crate::names::sha256(&body))
    }

    /// Whether blob `digest` is in the repository of `r`.
    async fn blob_exists(&self, r: &Reference, digest: &str) -> Result<bool, RegistryError> {
        let blob = Reference::with_digest(r.registry().into(), r.repository().into(), digest.into());
        self.retry("head_blob", || async {
            self.client.blob_exists(&blob, digest).await.map_err(|e| RegistryError::from_oci(e, r))
        })
        .await
    }

    /// Uploads a blob to the repository of `r`, unless it is there.
    async fn put_blob(&self, r: &Reference, data: &[u8], digest: &str) -> Result<(), RegistryError> {
        if self.blob_exists(r, digest).await? {
            return Ok(());
        }
        self.retry("put_blob", || async {
            self.client.push_blob(r, data.to_vec(), digest).await.map_err(|e| RegistryError::from_oci(e, r))
        })
        .await?;
        Ok(())
    }

    /// Pushes a manifest (with the blobs it names) under `repo:tag`; used to seed images.
    pub async fn push_image(
        &self,
        repo: &str,
        tag: &str,
        config: Vec<u8>,
        layers: Vec<Vec<u8>>,
    ) -> Result<String, RegistryError> {
        let r = parse_reference(&format!("{repo}:{tag}"))?;
        let auth = self.credentials.for_registry(r.resolve_registry());
        self.client.auth(&r, &auth, RegistryOperation::Push).await.map_err(|e| RegistryError::from_oci(e, &r))?;
        let digest = |b: &[u8]| crate::names::sha256(b);
        let mut layer_descs = Vec::new();
        for layer in &layers {
            let d = digest(layer);
            self.client.push_blob(&r, layer.clone(), &d).await.map_err(|e| RegistryError::from_oci(e, &r))?;
            layer_descs.push(serde_json::json!({"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": d, "size": layer.len()}));
        }
        let config_digest = digest(&config);
        self.client.push_blob(&r, config.clone(), &config_digest).await.map_err(|e| RegistryError::from_oci(e, &r))?;
        let manifest = serde_json::json!({
            "schemaVersion": 2,
            "mediaType": OCI_IMAGE_MEDIA_TYPE,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": config_digest, "size": config.len()},
            "layers": layer_descs,
        });
        let body = serde_json::to_vec(&manifest).unwrap_or_default();
        let d = digest(&body);
        self.client
            .push_manifest_raw(&r, body, http::HeaderValue::from_static(OCI_IMAGE_MEDIA_TYPE))
            .await
            .map_err(|e| RegistryError::from_oci(e, &r))?;
        Ok(d)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_from_docker_config() {
        let auth = base64::engine::general_purpose::STANDARD.encode("robot:s3cret");
        let json = format!(
            r#"{{"auths":{{"registry.example.com":{{"auth":"{auth}"}},"https://other.example.com/v1/":{{"username":"u","password":"p"}}}}}}"#
        );
        let c = Credentials::from_docker_config(json.as_bytes()).unwrap();
        assert_eq!(c.for_registry("registry.example.com"), RegistryAuth::Basic("robot".into(), "s3cret".into()));
        assert_eq!(c.for_registry("other.example.com"), RegistryAuth::Basic("u".into(), "p".into()));
        assert_eq!(c.for_registry("elsewhere"), RegistryAuth::Anonymous);
        assert!(!format!("{c:?}").contains("s3cret"), "credentials never show in logs");
        for bad in [r#"{"auths":{"r":{"auth":"!!"}}}"#, r#"{"auths":{"r":{}}}"#, "[]"] {
            assert!(Credentials::from_docker_config(bad.as_bytes()).is_err(), "{bad}");
        }
    }
}
