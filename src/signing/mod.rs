//! Signed releases: a cosign-compatible signature of every published digest, and in-toto
//! attestations (DSSE envelopes) of how it was built (SLSA provenance v1) and of the
//! contract it kept (`https://coreforge.dev/attestations/contract/v1`), stored next to
//! the image the way cosign stores them, so that `cosign verify --key` and
//! `cosign verify-attestation --key`, Kyverno's `verifyImages` and the sigstore
//! policy-controller verify them.
//!
//! - The signature is the tag `sha256-<hex>.sig` of the catalog repository: an OCI
//!   manifest whose layers are simple-signing payloads
//!   ([`SIMPLE_SIGNING_MEDIA_TYPE`]), each with its signature in the annotation
//!   [`SIGNATURE_ANNOTATION`].
//! - The attestations are the tag `sha256-<hex>.att`: layers of DSSE envelopes
//!   ([`DSSE_MEDIA_TYPE`]) of in-toto statements, each annotated with its
//!   `predicateType`.
//!
//! What is signed is decided by the pure core from the release's status ([`predicates`]);
//! the edges only sign and push ([`crate::catalog::sign`]). Signatures are deterministic
//! (RFC 6979), so signing again after a crash pushes the same bytes.

pub mod key;
pub mod predicates;

use std::collections::BTreeMap;

use base64::Engine;
use serde::{Deserialize, Serialize};
use serde_json::json;

pub use key::{Key, KeyError, Keys};

/// Media type of a cosign signature payload.
pub const SIMPLE_SIGNING_MEDIA_TYPE: &str = "application/vnd.dev.cosign.simplesigning.v1+json";
/// Media type of a DSSE envelope layer.
pub const DSSE_MEDIA_TYPE: &str = "application/vnd.dsse.envelope.v1+json";
/// DSSE payload type of an in-toto statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// Layer annotation holding a signature (base64 of ASN.1 DER).
pub const SIGNATURE_ANNOTATION: &str = "dev.cosignproject.cosign/signature";
/// Layer annotation naming an attestation's predicate type.
pub const PREDICATE_TYPE_ANNOTATION: &str = "predicateType";
/// Layer annotation naming the release (`namespace/name`) an attestation is of: signing
/// again replaces that release's attestations and keeps everyone else's.
pub const RELEASE_ANNOTATION: &str = "coreforge.dev/release";
/// in-toto statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// SLSA provenance v1.
pub const SLSA_PROVENANCE_V1: &str = "https://slsa.dev/provenance/v1";
/// coreforge's contract predicate (see `deploy/signing/README.md`).
pub const CONTRACT_PREDICATE_V1: &str = "https://coreforge.dev/attestations/contract/v1";

/// The Secret a key is read from.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyRef {
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.namespace, self.name)
    }
}

impl std::str::FromStr for KeyRef {
    type Err = String;

    /// `namespace/name`.
    fn from_str(s: &str) -> Result<Self, String> {
        let valid = |p: &str| {
            !p.is_empty()
                && p.len() <= 253
                && p.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
        };
        match s.split_once('/') {
            Some((ns, name)) if valid(ns) && valid(name) => {
                Ok(KeyRef { namespace: ns.to_string(), name: name.to_string() })
            }
            _ => Err(format!("{s:?} is not <namespace>/<secret name>")),
        }
    }
}

/// An attestation to make: an in-toto statement about the published digest.
#[derive(Debug, Clone, PartialEq)]
pub struct Statement {
    /// Its predicate type.
    pub predicate_type: String,
    /// The statement, serialized (the DSSE payload).
    pub payload: Vec<u8>,
}

/// What publishing a release signs, decided by the pure core.
#[derive(Debug, Clone, PartialEq)]
pub struct Signing {
    /// The key's Secret.
    pub key: KeyRef,
    /// `namespace/name` of the release.
    pub release: String,
    /// The attestations, besides the signature.
    pub statements: Vec<Statement>,
}

/// The tag holding the signatures of `digest` (`sha256:<hex>` → `sha256-<hex>.sig`).
pub fn signature_tag(digest: &str) -> String {
    format!("{}.sig", digest.replacen(':', "-", 1))
}

/// The tag holding the attestations of `digest`.
pub fn attestation_tag(digest: &str) -> String {
    format!("{}.att", digest.replacen(':', "-", 1))
}

/// cosign's simple-signing payload for `repository@digest`.
pub fn simple_signing_payload(repository: &str, digest: &str) -> Vec<u8> {
    // Keys in the order cosign writes them (serde_json's map is sorted, and so is this).
    let payload = json!({
        "critical": {
            "identity": {"docker-reference": repository},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": null,
    });
    serde_json::to_vec(&payload).unwrap_or_default()
}

/// An in-toto statement of `predicate` about `repository@digest`.
pub fn statement(repository: &str, digest: &str, predicate_type: &str, predicate: serde_json::Value) -> Statement {
    let hex = digest.strip_prefix("sha256:").unwrap_or(digest);
    let value = json!({
        "_type": STATEMENT_TYPE,
        "subject": [{"name": repository, "digest": {"sha256": hex}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    });
    Statement { predicate_type: predicate_type.to_string(), payload: serde_json::to_vec(&value).unwrap_or_default() }
}

/// DSSE's pre-authentication encoding: what is signed for an envelope.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {payload_type} {} ", payload_type.len(), payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Envelope {
    /// Base64 of the payload.
    pub payload: String,
    /// What the payload is.
    pub payload_type: String,
    /// Its signatures.
    pub signatures: Vec<EnvelopeSignature>,
}

/// A signature of a DSSE envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EnvelopeSignature {
    /// Key id (empty: the verifier is given the key).
    #[serde(default)]
    pub keyid: String,
    /// Base64 of the signature of [`pae`].
    pub sig: String,
}

impl Envelope {
    /// The envelope of `payload`, signed with `key`.
    pub fn sign(key: &Key, payload_type: &str, payload: &[u8]) -> Envelope {
        let b64 = base64::engine::general_purpose::STANDARD;
        Envelope {
            payload: b64.encode(payload),
            payload_type: payload_type.to_string(),
            signatures: vec![EnvelopeSignature {
                keyid: String::new(),
                sig: b64.encode(key.sign(&pae(payload_type, payload))),
            }],
        }
    }

    /// The payload, if a signature of it verifies with the public key `public_pem`.
    pub fn verify(&self, public_pem: &str) -> Result<Vec<u8>, String> {
        let b64 = base64::engine::general_purpose::STANDARD;
        let payload = b64.decode(&self.payload).map_err(|e| format!("the payload is not base64: {e}"))?;
        let message = pae(&self.payload_type, &payload);
        let verified = self
            .signatures
            .iter()
            .any(|s| b64.decode(&s.sig).is_ok_and(|sig| key::verify(public_pem, &message, &sig).is_ok()));
        if verified { Ok(payload) } else { Err("no signature of the envelope verifies with the key".into()) }
    }
}

/// A layer of a signature or attestation manifest.
#[derive(Debug, Clone, PartialEq)]
pub struct Layer {
    /// Its media type.
    pub media_type: String,
    /// `sha256:` of its bytes.
    pub digest: String,
    /// Its size.
    pub size: u64,
    /// Its annotations.
    pub annotations: BTreeMap<String, String>,
    /// Its bytes, when they are still to be uploaded (`None` for a layer already there).
    pub data: Option<Vec<u8>>,
}

impl Layer {
    /// A layer of `data`.
    pub fn new(media_type: &str, data: Vec<u8>, annotations: BTreeMap<String, String>) -> Layer {
        Layer {
            media_type: media_type.to_string(),
            digest: crate::names::sha256(&data),
            size: data.len() as u64,
            annotations,
            data: Some(data),
        }
    }

    /// Whether two layers are the same signature of the same payload.
    fn same(&self, other: &Layer) -> bool {
        self.digest == other.digest && self.annotations == other.annotations
    }
}

/// The signature layer of `repository@digest`.
pub fn signature_layer(key: &Key, repository: &str, digest: &str) -> Layer {
    let payload = simple_signing_payload(repository, digest);
    let signature = base64::engine::general_purpose::STANDARD.encode(key.sign(&payload));
    Layer::new(SIMPLE_SIGNING_MEDIA_TYPE, payload, BTreeMap::from([(SIGNATURE_ANNOTATION.to_string(), signature)]))
}

/// The attestation layer of `statement`, made for `release`.
pub fn attestation_layer(key: &Key, release: &str, statement: &Statement) -> Layer {
    let envelope = Envelope::sign(key, IN_TOTO_PAYLOAD_TYPE, &statement.payload);
    // The signature is inside the envelope; cosign still wants the annotation, empty.
    let annotations = BTreeMap::from([
        (SIGNATURE_ANNOTATION.to_string(), String::new()),
        (PREDICATE_TYPE_ANNOTATION.to_string(), statement.predicate_type.clone()),
        (RELEASE_ANNOTATION.to_string(), release.to_string()),
    ]);
    Layer::new(DSSE_MEDIA_TYPE, serde_json::to_vec(&envelope).unwrap_or_default(), annotations)
}

/// The layers of a signature manifest after signing: the ones there (other keys'
/// signatures, kept for consumers who verify with them) and the new one, once.
pub fn merge_signatures(existing: Vec<Layer>, new: Layer) -> Vec<Layer> {
    let mut out: Vec<Layer> = existing.into_iter().filter(|l| !l.same(&new)).collect();
    out.push(new);
    out
}

/// The layers of an attestation manifest after attesting for `release`: its earlier
/// attestations of the same predicate types are replaced, everything else is kept (other
/// releases of the same digest, attestations pushed by other tools).
pub fn merge_attestations(existing: Vec<Layer>, release: &str, new: Vec<Layer>) -> Vec<Layer> {
    let replaced = |l: &Layer| {
        l.annotations.get(RELEASE_ANNOTATION).map(String::as_str) == Some(release)
            && new
                .iter()
                .any(|n| n.annotations.get(PREDICATE_TYPE_ANNOTATION) == l.annotations.get(PREDICATE_TYPE_ANNOTATION))
    };
    let mut out: Vec<Layer> = existing.into_iter().filter(|l| !replaced(l) && !new.iter().any(|n| n.same(l))).collect();
    out.extend(new);
    out
}

#[cfg(test)]
mod tests;
