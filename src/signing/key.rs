//! Signing keys in cosign's format, and the Secrets that hold them.
//!
//! A key is what `cosign generate-key-pair k8s://<namespace>/<name>` writes: a Secret with
//! `cosign.key` (an ECDSA P-256 private key, PKCS #8, encrypted with scrypt and NaCl's
//! secretbox in the PEM block `ENCRYPTED SIGSTORE PRIVATE KEY`, or
//! `ENCRYPTED COSIGN PRIVATE KEY` from older releases), `cosign.password` and
//! `cosign.pub`. A plain PKCS #8 (`PRIVATE KEY`) or SEC1 (`EC PRIVATE KEY`) P-256 key is
//! accepted too, for keys made by other tools.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use base64::Engine;
use crypto_secretbox::aead::Aead;
use crypto_secretbox::{KeyInit, XSalsa20Poly1305};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use p256::ecdsa::signature::{Signer, Verifier};
use p256::ecdsa::{Signature, SigningKey, VerifyingKey};
use p256::pkcs8::der::pem;
use p256::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey, LineEnding};
use serde::Deserialize;

/// Secret key of the private key.
pub const PRIVATE_KEY: &str = "cosign.key";
/// Secret key of the private key's password (may be empty, or absent for a plain key).
pub const PASSWORD: &str = "cosign.password";
/// Secret key of the public key (optional; checked against the private key when present).
pub const PUBLIC_KEY: &str = "cosign.pub";

/// scrypt costs above this are refused: a key asking for more would stall the controller
/// (cosign's own keys use N = 32768, r = 8, p = 1: 32 MiB).
const MAX_SCRYPT_MEMORY: u64 = 256 << 20;

/// A private key that signs with ECDSA P-256 and SHA-256.
pub struct Key {
    signing: SigningKey,
    /// `sha256:<hex>` of the public key's DER (SubjectPublicKeyInfo).
    pub fingerprint: String,
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Key").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

#[derive(Deserialize)]
struct Envelope {
    kdf: Kdf,
    cipher: Cipher,
    ciphertext: String,
}

#[derive(Deserialize)]
struct Kdf {
    name: String,
    params: KdfParams,
    salt: String,
}

#[derive(Deserialize)]
struct KdfParams {
    #[serde(rename = "N")]
    n: u64,
    r: u32,
    p: u32,
}

#[derive(Deserialize)]
struct Cipher {
    name: String,
    nonce: String,
}

fn b64(field: &str, text: &str) -> Result<Vec<u8>, String> {
    base64::engine::general_purpose::STANDARD.decode(text).map_err(|e| format!("its {field} is not base64: {e}"))
}

/// Decrypts the body of an `ENCRYPTED SIGSTORE PRIVATE KEY` block: scrypt derives the
/// secretbox key from the password.
fn decrypt(body: &[u8], password: &[u8]) -> Result<Vec<u8>, String> {
    let envelope: Envelope =
        serde_json::from_slice(body).map_err(|e| format!("the encrypted key is not cosign's JSON envelope: {e}"))?;
    if envelope.kdf.name != "scrypt" || envelope.cipher.name != "nacl/secretbox" {
        return Err(format!(
            "the key is encrypted with {} and {}; only scrypt and nacl/secretbox (cosign's) are supported",
            envelope.kdf.name, envelope.cipher.name
        ));
    }
    let KdfParams { n, r, p } = envelope.kdf.params;
    let memory = 128 * u64::from(r) * n.max(1);
    if !n.is_power_of_two() || n < 2 || r == 0 || p == 0 || memory > MAX_SCRYPT_MEMORY || p > 16 {
        return Err(format!("the key's scrypt parameters N={n}, r={r}, p={p} are out of range"));
    }
    let params = scrypt::Params::new(n.trailing_zeros() as u8, r, p, 32)
        .map_err(|e| format!("the key's scrypt parameters are invalid: {e}"))?;
    let salt = b64("salt", &envelope.kdf.salt)?;
    let nonce = b64("nonce", &envelope.cipher.nonce)?;
    let ciphertext = b64("ciphertext", &envelope.ciphertext)?;
    if nonce.len() != 24 {
        return Err(format!("its nonce has {} bytes, not 24", nonce.len()));
    }
    let mut secret = [0u8; 32];
    scrypt::scrypt(password, &salt, &params, &mut secret).map_err(|e| format!("scrypt failed: {e}"))?;
    let cipher = XSalsa20Poly1305::new(&secret.into());
    cipher
        .decrypt(nonce.as_slice().into(), ciphertext.as_slice())
        .map_err(|_| "the password does not decrypt the key (wrong cosign.password, or a damaged key)".to_string())
}

impl Key {
    /// Parses a private key PEM (see the module's documentation for the formats).
    pub fn parse(private_pem: &[u8], password: &[u8]) -> Result<Key, String> {
        let text = std::str::from_utf8(private_pem).map_err(|_| "the private key is not PEM text".to_string())?;
        let (label, body) =
            pem::decode_vec(text.trim().as_bytes()).map_err(|e| format!("the private key is not a PEM block: {e}"))?;
        let signing = match label {
            "ENCRYPTED SIGSTORE PRIVATE KEY" | "ENCRYPTED COSIGN PRIVATE KEY" => {
                let der = decrypt(&body, password)?;
                SigningKey::from_pkcs8_der(&der)
                    .map_err(|e| format!("the decrypted key is not an ECDSA P-256 PKCS #8 key: {e}"))?
            }
            "PRIVATE KEY" => SigningKey::from_pkcs8_der(&body)
                .map_err(|e| format!("the key is not an ECDSA P-256 PKCS #8 key: {e}"))?,
            "EC PRIVATE KEY" => p256::SecretKey::from_sec1_der(&body)
                .map(SigningKey::from)
                .map_err(|e| format!("the key is not an ECDSA P-256 SEC1 key: {e}"))?,
            other => {
                return Err(format!(
                    "the private key's PEM block is {other:?}; expected ENCRYPTED SIGSTORE PRIVATE KEY (cosign generate-key-pair), PRIVATE KEY or EC PRIVATE KEY"
                ));
            }
        };
        let fingerprint = fingerprint(signing.verifying_key())?;
        Ok(Key { signing, fingerprint })
    }

    /// The key of a Secret in cosign's layout, checked against its `cosign.pub` when
    /// it has one.
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Result<Key, String> {
        let private = data.get(PRIVATE_KEY).ok_or_else(|| format!("it has no {PRIVATE_KEY}"))?;
        let password = data.get(PASSWORD).map(|p| p.0.as_slice()).unwrap_or_default();
        let key = Key::parse(&private.0, password).map_err(|e| format!("{PRIVATE_KEY}: {e}"))?;
        if let Some(public) = data.get(PUBLIC_KEY) {
            let text = std::str::from_utf8(&public.0).map_err(|_| format!("{PUBLIC_KEY} is not PEM text"))?;
            let public = VerifyingKey::from_public_key_pem(text.trim())
                .map_err(|e| format!("{PUBLIC_KEY} is not an ECDSA P-256 public key: {e}"))?;
            if &public != key.signing.verifying_key() {
                return Err(format!("{PUBLIC_KEY} is not the public key of {PRIVATE_KEY}"));
            }
        }
        Ok(key)
    }

    /// An ECDSA P-256 signature of SHA-256(`message`), ASN.1 DER. Deterministic
    /// (RFC 6979): signing the same message again gives the same bytes.
    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        let signature: Signature = self.signing.sign(message);
        signature.to_der().as_bytes().to_vec()
    }

    /// The public key, PEM (`PUBLIC KEY`), as `cosign.pub` holds it.
    pub fn public_pem(&self) -> String {
        self.signing.verifying_key().to_public_key_pem(LineEnding::LF).unwrap_or_default()
    }
}

fn fingerprint(key: &VerifyingKey) -> Result<String, String> {
    let der = key.to_public_key_der().map_err(|e| format!("the public key cannot be encoded: {e}"))?;
    Ok(crate::names::sha256(der.as_bytes()))
}

/// Whether `signature` (ASN.1 DER) is a signature of `message` by the public key
/// `public_pem`.
pub fn verify(public_pem: &str, message: &[u8], signature: &[u8]) -> Result<(), String> {
    let key =
        VerifyingKey::from_public_key_pem(public_pem.trim()).map_err(|e| format!("not a P-256 public key: {e}"))?;
    let signature = Signature::from_der(signature).map_err(|e| format!("not a DER signature: {e}"))?;
    key.verify(message, &signature).map_err(|_| "the signature does not verify".to_string())
}

/// Why a key could not be used: what the condition on the release says.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("signing key Secret {secret}: {message}")]
pub struct KeyError {
    /// `namespace/name` of the Secret.
    pub secret: String,
    /// `SigningKeyNotFound` or `SigningKeyInvalid`.
    pub reason: &'static str,
    /// What is wrong, for a person.
    pub message: String,
}

/// (namespace, name) of a Secret.
type SecretName = (String, String);
/// The key of a Secret, and the resourceVersion it was decrypted from.
type Decrypted = (String, Arc<Key>);

/// The signing keys of the controller, read from their Secrets with one GET each time
/// they are needed (a rotated key is used from the next publication on) and decrypted
/// once per version of the Secret: scrypt is slow on purpose.
pub struct Keys {
    client: Client,
    /// The controller's default key (`--signing-key-secret`).
    default: Option<super::KeyRef>,
    decrypted: Mutex<HashMap<SecretName, Decrypted>>,
}

impl Keys {
    /// Keys read with `client`; `default` signs the releases of CoreBuilds that name no key.
    pub fn new(client: Client, default: Option<super::KeyRef>) -> Self {
        Keys { client, default, decrypted: Mutex::default() }
    }

    /// The controller's default key, if it has one.
    pub fn default_key(&self) -> Option<&super::KeyRef> {
        self.default.as_ref()
    }

    /// The key in Secret `namespace/name`. The outer error is the API server's; the inner
    /// one says what is wrong with the Secret.
    pub async fn get(&self, namespace: &str, name: &str) -> Result<Result<Arc<Key>, KeyError>, kube::Error> {
        let secret = format!("{namespace}/{name}");
        let fail = |reason, message: String| Ok(Err(KeyError { secret: secret.clone(), reason, message }));
        let found = match Api::<Secret>::namespaced(self.client.clone(), namespace).get_opt(name).await {
            Ok(s) => s,
            Err(kube::Error::Api(e)) if e.code == 403 => {
                return fail("SigningKeyNotFound", format!("reading it is forbidden: {}", e.message));
            }
            Err(e) => return Err(e),
        };
        let Some(found) = found else {
            return fail(
                "SigningKeyNotFound",
                "it does not exist; create it with `cosign generate-key-pair k8s://<namespace>/<name>`".into(),
            );
        };
        let version = found.metadata.resource_version.clone().unwrap_or_default();
        let key = (namespace.to_string(), name.to_string());
        if let Ok(cache) = self.decrypted.lock()
            && let Some((v, k)) = cache.get(&key)
            && *v == version
        {
            return Ok(Ok(k.clone()));
        }
        let data = found.data.unwrap_or_default();
        // scrypt takes a noticeable moment: off the async workers.
        let parsed = tokio::task::spawn_blocking(move || Key::from_secret_data(&data))
            .await
            .unwrap_or_else(|e| Err(format!("decrypting it failed: {e}")));
        match parsed {
            Ok(k) => {
                let k = Arc::new(k);
                if let Ok(mut cache) = self.decrypted.lock() {
                    cache.insert(key, (version, k.clone()));
                }
                Ok(Ok(k))
            }
            Err(message) => fail("SigningKeyInvalid", message),
        }
    }
}
