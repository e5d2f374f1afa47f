//! Signed releases end to end: keys made by the real `cosign` CLI (built from its Go
//! module by `tests/cluster/build.sh cosign`), releases published into the local registry,
//! and the same `cosign` verifying what the controller pushed: the signature, the SLSA
//! provenance and the contract attestation, and refusing another key. Build and test pods
//! are simulated, as in `tests/catalog.rs`.

mod fixtures;
mod support;

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, ensure};
use base64::Engine;
use coreforge::api::{CoreBuild, ImageRelease, Phase};
use fixtures::{ControllerProcess, REGISTRY};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(120);
const CONTRACT: &str = "https://coreforge.dev/attestations/contract/v1";

/// `cosign ARGS...` with the local cluster's kubeconfig and its state under `dir`; stdout
/// on success, the whole output as the error.
async fn cosign(dir: &Path, args: &[&str], password: &str) -> anyhow::Result<Result<String, String>> {
    let bin = fixtures::cosign_binary().await?;
    let out = tokio::process::Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env("KUBECONFIG", support::kubeconfig_path())
        .env("COSIGN_PASSWORD", password)
        .env("HOME", dir)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .context("running cosign")?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    Ok(if out.status.success() { Ok(stdout) } else { Err(format!("{}:\n{stdout}{stderr}", out.status)) })
}

/// `cosign verify` (or `verify-attestation`) of `image` with the public key `key`,
/// against the local plain-HTTP registry, without a transparency log.
async fn verify(
    dir: &Path,
    command: &str,
    key: &Path,
    image: &str,
    extra: &[&str],
) -> anyhow::Result<Result<String, String>> {
    let key = key.to_string_lossy();
    // An empty trusted root: with a key and no transparency log, cosign needs none, and
    // would otherwise try to fetch sigstore's from the internet.
    let root = dir.join("trusted-root.json");
    std::fs::write(&root, r#"{"mediaType":"application/vnd.dev.sigstore.trustedroot+json;version=0.1"}"#)?;
    let root = root.to_string_lossy();
    let mut args =
        vec![command, "--key", &key, "--insecure-ignore-tlog", "--allow-http-registry", "--trusted-root", &root];
    args.extend(extra);
    args.push(image);
    cosign(dir, &args, "").await
}

/// The in-toto statements `cosign verify-attestation` printed (one envelope per line).
fn statements(output: &str) -> anyhow::Result<Vec<Value>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    output
        .lines()
        .filter(|l| l.trim_start().starts_with('{'))
        .map(|line| {
            let envelope: Value = serde_json::from_str(line)?;
            let payload = b64.decode(envelope["payload"].as_str().context("no payload")?)?;
            Ok(serde_json::from_slice(&payload)?)
        })
        .collect()
}

fn scratch(ns: &str) -> anyhow::Result<PathBuf> {
    fixtures::scratch(&format!("signing-{ns}"))
}

/// Makes key pair `name` with `cosign generate-key-pair k8s://<ns>/<name>`: the Secret
/// the controller reads, exactly as platform teams make it.
async fn generate_key_secret(dir: &Path, ns: &str, name: &str, password: &str) -> anyhow::Result<()> {
    cosign(dir, &["generate-key-pair", &format!("k8s://{ns}/{name}")], password)
        .await?
        .map_err(|e| anyhow::anyhow!("cosign generate-key-pair k8s://{ns}/{name}: {e}"))?;
    Ok(())
}

/// The public key of Secret `name`, written to a file for `cosign verify --key`.
async fn public_key(client: &Client, dir: &Path, ns: &str, name: &str) -> anyhow::Result<PathBuf> {
    let secret = Api::<Secret>::namespaced(client.clone(), ns).get(name).await?;
    let public = secret.data.unwrap_or_default().remove("cosign.pub").context("the Secret has no cosign.pub")?;
    let path = dir.join(format!("{name}.pub"));
    std::fs::write(&path, public.0)?;
    Ok(path)
}

fn signing_core_build(ns: &str, digest: &str, key: &str) -> Value {
    let mut cb = fixtures::local_core_build("debian", ns, digest);
    cb["spec"]["catalog"]["signingKeySecret"] = json!({"name": key});
    cb["spec"]["lifecycle"] = json!({"deleteRetiredTags": true});
    cb
}

#[tokio::test]
async fn cosign_verifies_the_signature_and_attestations_of_a_published_release() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("signed", |client, ns| async move {
        let dir = scratch(&ns)?;
        generate_key_secret(&dir, &ns, "release-signing", "s3cret-passphrase").await?;
        // Another key pair, as files: a consumer holding the wrong key.
        cosign(&dir, &["generate-key-pair", "--output-key-prefix", "other"], "other")
            .await?
            .map_err(|e| anyhow::anyhow!("cosign generate-key-pair: {e}"))?;
        let _controller = ControllerProcess::start(&ns).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        fixtures::create::<CoreBuild>(&client, &ns, signing_core_build(&ns, &digest, "release-signing")).await?;
        fixtures::create::<ImageRelease>(&client, &ns, fixtures::published_release("debian-12-7-0", "12.7.0")).await?;
        let r = fixtures::wait_release(&client, &ns, "debian-12-7-0", "Published", SETTLE, |r| {
            r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Published)
        })
        .await?;
        let st = r.status.clone().unwrap();
        let repo = format!("{REGISTRY}/{ns}/core");
        let hex = digest.strip_prefix("sha256:").unwrap();

        // The status names the proofs.
        let signature = st.signature.clone().context("status.signature")?;
        ensure!(signature.key == format!("{ns}/release-signing"), "{signature:?}");
        ensure!(signature.reference == format!("{repo}:sha256-{hex}.sig"), "{signature:?}");
        let types: Vec<&str> = signature.attestations.iter().map(|a| a.predicate_type.as_str()).collect();
        ensure!(types == ["https://slsa.dev/provenance/v1", CONTRACT], "{types:?}");
        ensure!(signature.attestations.iter().all(|a| a.reference == format!("{repo}:sha256-{hex}.att")));

        // Consumers see it in the catalog (`coreforge notes`, like the page and the API).
        let notes = support::run(
            tokio::process::Command::new(env!("CARGO_BIN_EXE_coreforge"))
                .args(["notes", "debian-12-7-0", "-n", &ns])
                .env("KUBECONFIG", support::kubeconfig_path()),
        )
        .await?;
        ensure!(notes.contains(&format!("Signed: key {}", signature.key_fingerprint)), "{notes}");

        // cosign verifies the signature with the public key, by digest and by version tag.
        let key = public_key(&client, &dir, &ns, "release-signing").await?;
        for image in [format!("{repo}@{digest}"), format!("{repo}:12.7.0")] {
            let out =
                verify(&dir, "verify", &key, &image, &[]).await?.map_err(|e| anyhow::anyhow!("verify {image}: {e}"))?;
            let verified: Vec<Value> =
                serde_json::from_str(out.trim()).with_context(|| format!("cosign verify printed {out}"))?;
            ensure!(
                verified.iter().any(|v| v["critical"]["image"]["docker-manifest-digest"] == digest.as_str()),
                "{out}"
            );
        }
        // Another key does not verify it.
        let other = dir.join("other.pub");
        let refused = verify(&dir, "verify", &other, &format!("{repo}@{digest}"), &[]).await?;
        ensure!(refused.is_err(), "cosign verify with another key succeeded: {refused:?}");

        // The SLSA provenance names the base by digest and the Jobs that made and tested it.
        let out = verify(&dir, "verify-attestation", &key, &format!("{repo}@{digest}"), &["--type", "slsaprovenance1"])
            .await?
            .map_err(|e| anyhow::anyhow!("verify-attestation slsaprovenance1: {e}"))?;
        let provenance = statements(&out)?;
        let provenance = provenance
            .iter()
            .find(|s| s["predicateType"] == "https://slsa.dev/provenance/v1")
            .with_context(|| format!("no SLSA provenance in {out}"))?;
        ensure!(provenance["subject"][0]["digest"]["sha256"] == hex, "{provenance}");
        let p = st.provenance.clone().unwrap();
        let deps = &provenance["predicate"]["buildDefinition"]["resolvedDependencies"];
        ensure!(deps[0]["digest"]["sha256"] == p.base_digest.strip_prefix("sha256:").unwrap(), "{deps}");
        ensure!(deps[1]["digest"]["sha256"] == p.blueprint_hash.strip_prefix("sha256:").unwrap(), "{deps}");
        let external = &provenance["predicate"]["buildDefinition"]["externalParameters"];
        ensure!(external["coreBuild"]["specHash"] == p.core_build_spec_hash.as_str(), "{external}");
        let jobs = &provenance["predicate"]["runDetails"]["byproducts"];
        let test_job = st.test.as_ref().unwrap().job_name.clone();
        ensure!(jobs[1]["uri"] == format!("k8s://{ns}/jobs/{test_job}").as_str(), "{jobs}");

        // The contract attestation carries every contract result, and the advisories.
        let out = verify(&dir, "verify-attestation", &key, &format!("{repo}@{digest}"), &["--type", CONTRACT])
            .await?
            .map_err(|e| anyhow::anyhow!("verify-attestation {CONTRACT}: {e}"))?;
        let contract = statements(&out)?;
        let contract = contract
            .iter()
            .find(|s| s["predicateType"] == CONTRACT)
            .with_context(|| format!("no contract in {out}"))?;
        let predicate = &contract["predicate"];
        ensure!(predicate["passed"] == true, "{predicate}");
        ensure!(predicate["checks"] == serde_json::to_value(&st.checks)?, "{predicate}");
        ensure!(predicate["advisories"][0]["id"] == "DSA-5800-1", "{predicate}");
        let refused =
            verify(&dir, "verify-attestation", &other, &format!("{repo}@{digest}"), &["--type", CONTRACT]).await?;
        ensure!(refused.is_err(), "verify-attestation with another key succeeded");

        // Retired with deleteRetiredTags: the version tag goes, and with it the signature
        // and attestations; no tag of the repository is left dangling.
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        irs.patch("debian-12-7-0", &PatchParams::default(), &Patch::Merge(json!({"spec": {"target": "Retired"}})))
            .await?;
        let r = fixtures::wait_release(&client, &ns, "debian-12-7-0", "its tags deleted", SETTLE, |r| {
            fixtures::release_condition(r, "Published").is_some_and(|c| c.1 == "VersionTagDeleted")
        })
        .await?;
        ensure!(r.status.unwrap().signature.is_none(), "the status no longer names deleted proofs");
        let tags = fixtures::registry_tags(&format!("{ns}/core")).await?;
        ensure!(tags.is_empty(), "tags left after retirement: {tags:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_missing_or_unusable_key_blocks_publishing_until_it_is_fixed() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("unsigned", |client, ns| async move {
        let dir = scratch(&ns)?;
        // The controller's default key, since the CoreBuild names none.
        let default = format!("{ns}/platform-signing");
        let _controller = ControllerProcess::start_with(&ns, &["--signing-key-secret", &default]).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        fixtures::create::<CoreBuild>(&client, &ns, fixtures::local_core_build("debian", &ns, &digest)).await?;
        fixtures::create::<ImageRelease>(&client, &ns, fixtures::published_release("r", "12.7.0")).await?;
        let r = fixtures::wait_release(&client, &ns, "r", "a SigningKeyNotFound condition", SETTLE, |r| {
            fixtures::release_condition(r, "Published").is_some_and(|c| c.1 == "SigningKeyNotFound")
        })
        .await?;
        ensure!(r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Verified), "nothing is published unsigned");
        ensure!(fixtures::release_condition(&r, "Stalled").unwrap().0 == "True", "a person has to act");
        let (_, _, message) = fixtures::release_condition(&r, "Ready").unwrap();
        ensure!(
            message.contains(&format!("signing key Secret {default}")) && message.contains("does not exist"),
            "{message}"
        );
        let repo = format!("{ns}/core");
        ensure!(fixtures::registry_tags(&repo).await?.is_empty(), "nothing reached the catalog");

        // The key made (by cosign, as files), in a Secret whose password does not decrypt
        // it: still blocked, saying so.
        cosign(&dir, &["generate-key-pair", "--output-key-prefix", "platform"], "right")
            .await?
            .map_err(|e| anyhow::anyhow!("cosign generate-key-pair: {e}"))?;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "platform-signing"},
            "data": {
                "cosign.key": b64(&std::fs::read(dir.join("platform.key"))?),
                "cosign.pub": b64(&std::fs::read(dir.join("platform.pub"))?),
                "cosign.password": b64(b"wrong"),
            },
        });
        fixtures::create::<Secret>(&client, &ns, secret).await?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let r = fixtures::wait_release(&client, &ns, "r", "a SigningKeyInvalid condition", SETTLE, |r| {
            fixtures::release_condition(r, "Published").is_some_and(|c| c.1 == "SigningKeyInvalid")
        })
        .await?;
        let (_, _, message) = fixtures::release_condition(&r, "Ready").unwrap();
        ensure!(message.contains("password does not decrypt the key"), "{message}");
        ensure!(fixtures::registry_tags(&repo).await?.is_empty(), "nothing reached the catalog");

        // The right password: published, and signed with that key.
        let right = b64(b"right");
        secrets
            .patch(
                "platform-signing",
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"cosign.password": right}})),
            )
            .await?;
        let r = fixtures::wait_release(&client, &ns, "r", "Published", SETTLE, |r| {
            r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Published)
        })
        .await?;
        ensure!(r.status.unwrap().signature.is_some_and(|s| s.key == default));
        let key = public_key(&client, &dir, &ns, "platform-signing").await?;
        let image = format!("{REGISTRY}/{repo}:12.7.0");
        verify(&dir, "verify", &key, &image, &[]).await?.map_err(|e| anyhow::anyhow!("verify {image}: {e}"))?;
        Ok(())
    })
    .await
}
