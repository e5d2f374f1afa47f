use std::collections::BTreeMap;

use base64::Engine;
use k8s_openapi::ByteString;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::{EncodePrivateKey, LineEnding};

use super::*;

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A 32-byte big-endian integer from its decimal digits.
fn scalar(decimal: &str) -> [u8; 32] {
    let mut out = [0u8; 32];
    for digit in decimal.bytes().map(|b| u32::from(b - b'0')) {
        let mut carry = digit;
        for byte in out.iter_mut().rev() {
            let v = u32::from(*byte) * 10 + carry;
            *byte = v as u8;
            carry = v >> 8;
        }
        assert_eq!(carry, 0, "{decimal} does not fit in 32 bytes");
    }
    out
}

fn key_from_scalar(d: [u8; 32]) -> Key {
    let signing = SigningKey::from_bytes(&d.into()).unwrap();
    let pem = signing.to_pkcs8_pem(LineEnding::LF).unwrap();
    Key::parse(pem.as_bytes(), b"").unwrap()
}

/// The test vector of the DSSE specification (protocol.md, "Test Vectors"): its PAE, and
/// its ECDSA P-256 signature (deterministic, RFC 6979), which our key reproduces bit for bit.
#[test]
fn dsse_known_vector() {
    let payload_type = "http://example.com/HelloWorld";
    assert_eq!(pae(payload_type, b"hello world"), b"DSSEv1 29 http://example.com/HelloWorld 11 hello world");
    let key = key_from_scalar(scalar("97358161215184420915383655311931858321456579547487070936769975997791359926199"));
    let envelope = Envelope::sign(&key, payload_type, b"hello world");
    assert_eq!(envelope.payload, "aGVsbG8gd29ybGQ=");
    let der = B64.decode(&envelope.signatures[0].sig).unwrap();
    let raw = Signature::from_der(&der).unwrap().to_bytes();
    assert_eq!(
        B64.encode(raw),
        "A3JqsQGtVsJ2O2xqrI5IcnXip5GToJ3F+FnZ+O88SjtR6rDAajabZKciJTfUiHqJPcIAriEGAHTVeCUjW2JIZA=="
    );
    assert_eq!(envelope.verify(&key.public_pem()).unwrap(), b"hello world");
    // Another payload type, or another key, does not verify.
    let mut retyped = envelope.clone();
    retyped.payload_type = "http://example.com/Other".into();
    assert!(retyped.verify(&key.public_pem()).is_err());
    let other = key_from_scalar(scalar("12345"));
    assert!(envelope.verify(&other.public_pem()).is_err());
}

#[test]
fn pae_counts_bytes_not_characters() {
    assert_eq!(pae("t", "é".as_bytes()), "DSSEv1 1 t 2 é".as_bytes());
    assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
}

/// A key pair made by `cosign generate-key-pair` (password `coreforge-test`), with a
/// signature cosign made with it: the decryption, the public key and the signature scheme
/// all match cosign's.
mod cosign_made {
    use super::*;

    const PRIVATE: &str = include_str!("testdata/cosign.key");
    const PUBLIC: &str = include_str!("testdata/cosign.pub");
    const PASSWORD: &[u8] = b"coreforge-test";

    fn data(password: &[u8], public: Option<&str>) -> BTreeMap<String, ByteString> {
        let mut d = BTreeMap::from([
            (key::PRIVATE_KEY.to_string(), ByteString(PRIVATE.as_bytes().to_vec())),
            (key::PASSWORD.to_string(), ByteString(password.to_vec())),
        ]);
        if let Some(p) = public {
            d.insert(key::PUBLIC_KEY.to_string(), ByteString(p.as_bytes().to_vec()));
        }
        d
    }

    #[test]
    fn decrypts_and_matches_its_public_key() {
        let key = Key::from_secret_data(&data(PASSWORD, Some(PUBLIC))).unwrap();
        assert_eq!(key.public_pem().trim(), PUBLIC.trim());
        assert!(key.fingerprint.starts_with("sha256:") && key.fingerprint.len() == 71, "{}", key.fingerprint);
    }

    #[test]
    fn refuses_what_a_person_must_fix() {
        let wrong = Key::from_secret_data(&data(b"not-it", None)).unwrap_err();
        assert!(wrong.contains("password does not decrypt"), "{wrong}");
        let other = key_from_scalar(scalar("12345")).public_pem();
        let mismatch = Key::from_secret_data(&data(PASSWORD, Some(&other))).unwrap_err();
        assert!(mismatch.contains("cosign.pub is not the public key of cosign.key"), "{mismatch}");
        let missing = Key::from_secret_data(&BTreeMap::new()).unwrap_err();
        assert!(missing.contains("no cosign.key"), "{missing}");
        let garbage = Key::parse(b"-----BEGIN RSA PRIVATE KEY-----\nAAAA\n-----END RSA PRIVATE KEY-----\n", b"");
        assert!(garbage.unwrap_err().contains("RSA PRIVATE KEY"));
        assert!(Key::parse(b"not a key", b"").unwrap_err().contains("not a PEM block"));
    }

    #[test]
    fn verifies_cosigns_own_signature() {
        let payload = include_bytes!("testdata/cosign-payload.json");
        let signature = B64.decode(include_str!("testdata/cosign-payload.sig").trim()).unwrap();
        key::verify(PUBLIC, payload, &signature).unwrap();
        // Our signature of the same payload verifies with cosign's public key too.
        let key = Key::from_secret_data(&data(PASSWORD, None)).unwrap();
        key::verify(PUBLIC, payload, &key.sign(payload)).unwrap();
    }
}

#[test]
fn simple_signing_payload_is_cosigns() {
    let payload = simple_signing_payload("registry.example/core/debian", "sha256:abc");
    assert_eq!(
        std::str::from_utf8(&payload).unwrap(),
        r#"{"critical":{"identity":{"docker-reference":"registry.example/core/debian"},"image":{"docker-manifest-digest":"sha256:abc"},"type":"cosign container image signature"},"optional":null}"#
    );
    assert_eq!(signature_tag("sha256:abc"), "sha256-abc.sig");
    assert_eq!(attestation_tag("sha256:abc"), "sha256-abc.att");
}

#[test]
fn key_refs_are_namespace_slash_name() {
    let k: KeyRef = "coreforge-system/release-signing".parse().unwrap();
    assert_eq!((k.namespace.as_str(), k.name.as_str()), ("coreforge-system", "release-signing"));
    assert_eq!(k.to_string(), "coreforge-system/release-signing");
    for bad in ["release-signing", "/x", "x/", "a/b/c", "A/b"] {
        assert!(bad.parse::<KeyRef>().is_err(), "{bad}");
    }
}

fn layer(data: &str, annotations: &[(&str, &str)]) -> Layer {
    let a = annotations.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    Layer::new(DSSE_MEDIA_TYPE, data.as_bytes().to_vec(), a)
}

#[test]
fn signing_again_adds_nothing_and_keeps_other_keys() {
    let key = key_from_scalar(scalar("4242"));
    let ours = signature_layer(&key, "r/x", "sha256:abc");
    let again = signature_layer(&key, "r/x", "sha256:abc");
    assert_eq!(ours, again, "signatures are deterministic");
    let rotated_out = signature_layer(&key_from_scalar(scalar("77")), "r/x", "sha256:abc");
    let merged = merge_signatures(vec![rotated_out.clone(), ours.clone()], again);
    assert_eq!(merged, vec![rotated_out, ours]);
}

#[test]
fn attesting_again_replaces_the_releases_own_attestations_only() {
    let mine_old = layer("old", &[(PREDICATE_TYPE_ANNOTATION, SLSA_PROVENANCE_V1), (RELEASE_ANNOTATION, "ns/a")]);
    let theirs = layer("theirs", &[(PREDICATE_TYPE_ANNOTATION, SLSA_PROVENANCE_V1), (RELEASE_ANNOTATION, "ns/b")]);
    let foreign = layer("sbom", &[(PREDICATE_TYPE_ANNOTATION, "https://spdx.dev/Document")]);
    let mine_new = layer("new", &[(PREDICATE_TYPE_ANNOTATION, SLSA_PROVENANCE_V1), (RELEASE_ANNOTATION, "ns/a")]);
    let merged = merge_attestations(vec![mine_old, theirs.clone(), foreign.clone()], "ns/a", vec![mine_new.clone()]);
    assert_eq!(merged, vec![theirs, foreign, mine_new.clone()]);
    let again = merge_attestations(merged.clone(), "ns/a", vec![mine_new]);
    assert_eq!(again, merged);
}

#[test]
fn statements_name_the_image_by_digest() {
    let s = statement("r/x", "sha256:abc", CONTRACT_PREDICATE_V1, serde_json::json!({"passed": true}));
    let v: serde_json::Value = serde_json::from_slice(&s.payload).unwrap();
    assert_eq!(v["_type"], STATEMENT_TYPE);
    assert_eq!(v["subject"], serde_json::json!([{"name": "r/x", "digest": {"sha256": "abc"}}]));
    assert_eq!(v["predicateType"], CONTRACT_PREDICATE_V1);
    assert_eq!(v["predicate"]["passed"], true);
}
