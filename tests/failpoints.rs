//! The failure point matrix: the controller is made to exit right after each write of a
//! release's life (see `coreforge::failpoint`), a fresh one takes over, and the product
//! must come out exactly as if nothing had happened: every release at its goal with its
//! results, one Job per kind per attempt, the catalog's tags exactly right, and no storm
//! of events.
//!
//! The life each scenario drives: release 12.7.0 signed and published (channels `12` and
//! `latest` move to it), then 12.8.0 (the channels move on, and `maxSupported: 1`
//! deprecates 12.7.0), then 12.7.0 retired (with `deleteRetiredTags`, its tag goes, and
//! its signature and attestations with it).
//!
//! At the points right after a catalog write was decided (or half made: signed, not yet
//! tagged), the test also checks what the stopped controller left: the write recorded as
//! the release's intent, and the version tag not yet (or still) in the registry.

mod fixtures;
mod support;

use std::time::Duration;

use anyhow::ensure;
use coreforge::api::{CoreBuild, ImageRelease, IntentAction, Phase};
use coreforge::{failpoint, signing};
use fixtures::{ControllerProcess, REGISTRY};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::secs;

const SETTLE: Duration = Duration::from_secs(120);

/// At most this many events per release over the whole scenario (each change is told
/// once; a restart may tell one again).
const EVENTS_PER_RELEASE: usize = 13;

/// The signing key Secret of the scenario: a throwaway key pair cosign made (see
/// `src/signing/testdata/README.md`).
fn signing_key_secret() -> serde_json::Value {
    use base64::Engine;
    let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
    json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": "release-signing"},
        "data": {
            "cosign.key": b64(include_str!("../src/signing/testdata/cosign.key")),
            "cosign.pub": b64(include_str!("../src/signing/testdata/cosign.pub")),
            "cosign.password": b64("coreforge-test"),
        },
    })
}

fn phase(r: &ImageRelease) -> Option<Phase> {
    r.status.as_ref().and_then(|s| s.phase)
}

/// Runs the scenario with the controller armed to exit at `point`.
async fn crash_at(test: &str, point: &'static str) -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace(test, |client, ns| async move {
        let armed = ControllerProcess::start_as(
            &ns,
            &["--http-addr", "127.0.0.1:0"],
            &[(failpoint::ENV, &format!("{point}=exit"))],
        )
        .await?;
        // When it exits at the point, a controller without failure points takes over.
        let successor = {
            let (client, ns) = (client.clone(), ns.clone());
            tokio::spawn(async move {
                let status = armed.exited(secs(300)).await?;
                ensure!(status.code() == Some(failpoint::EXIT_CODE), "the armed controller exited with {status}");
                intent_left_at(point, &client, &ns).await?;
                ControllerProcess::start(&ns).await
            })
        };

        let staging = fixtures::staging(&ns);
        let a = fixtures::seed_image(&staging).await?;
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
        secrets.create(&PostParams::default(), &serde_json::from_value(signing_key_secret())?).await?;
        let mut cb = fixtures::local_core_build("debian", &ns, &a);
        cb["spec"]["lifecycle"] = json!({"maxSupported": 1, "deleteRetiredTags": true});
        cb["spec"]["catalog"]["signingKeySecret"] = json!({"name": "release-signing"});
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        cbs.create(&PostParams::default(), &serde_json::from_value(cb)?).await?;
        fixtures::create_release(&client, &ns, "r1", "12.7.0", "Published").await?;
        fixtures::wait_phase(&client, &ns, "r1", Phase::Published, SETTLE).await?;

        let b = fixtures::seed_image(&staging).await?;
        let build = json!({"spec": {"builder": {"podAnnotations": {"sim.coreforge.dev/termination-message": fixtures::build_result(&b)}}}});
        cbs.patch("debian", &PatchParams::default(), &Patch::Merge(build)).await?;
        fixtures::create_release(&client, &ns, "r2", "12.8.0", "Published").await?;
        fixtures::wait_phase(&client, &ns, "r2", Phase::Published, SETTLE).await?;
        fixtures::wait_phase(&client, &ns, "r1", Phase::Deprecated, SETTLE).await?;

        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        irs.patch("r1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"target": "Retired"}}))).await?;
        let r1 = support::wait_for(&irs, "r1", "r1 Retired, its tag deleted", SETTLE, |r| {
            phase(r) == Some(Phase::Retired) && r.status.as_ref().is_some_and(|s| s.published.is_empty())
        })
        .await?;
        support::wait_for(&cbs, "debian", "both channels at 12.8.0", SETTLE, |cb| {
            let channels: Vec<_> = cb.status.iter().flat_map(|s| s.channels.iter()).collect();
            channels.len() == 2 && channels.iter().all(|c| c.version == "12.8.0" && c.digest == b)
        })
        .await?;
        // The point was reached, and the controller after it finished the work.
        let _controller = successor.await??;

        // No lost result: each release kept its results and references. 12.8.0 learns of
        // the channels from the CoreBuild's status, written after the channels moved.
        let repo = format!("{REGISTRY}/{ns}/core");
        let r2_refs = [format!("{repo}:12.8.0"), format!("{repo}:12"), format!("{repo}:latest")];
        let r2 = support::wait_for(&irs, "r2", "r2 pulled by its version and both channels", SETTLE, |r| {
            r.status.as_ref().is_some_and(|s| s.published == r2_refs)
        })
        .await?;
        for r in [&r1, &r2] {
            let st = r.status.as_ref().expect("status");
            ensure!(!st.checks.is_empty() && st.checks.iter().all(|c| c.passed), "{st:?}");
            ensure!(st.published_at.is_some(), "{st:?}");
        }
        let (b_sig, b_att) = (signing::signature_tag(&b), signing::attestation_tag(&b));
        let signature = r2.status.as_ref().and_then(|s| s.signature.clone());
        ensure!(signature.as_ref().is_some_and(|s| s.reference == format!("{repo}:{b_sig}")), "{signature:?}");
        ensure!(r1.status.as_ref().is_some_and(|s| s.signature.is_none()), "r1's proofs went with its tag");

        // One Job per kind per attempt.
        let names = fixtures::job_names(&client, &ns).await?;
        ensure!(names == ["r1-a1-build", "r1-a1-test", "r2-a1-build", "r2-a1-test"], "{names:?}");

        // The catalog is exactly right: 12.7.0 gone with its signature and attestations,
        // the rest at 12.8.0's digest, signed and attested once.
        let path = format!("{ns}/core");
        let tags = fixtures::registry_tags(&path).await?;
        let want = ["12".to_string(), "12.8.0".into(), "latest".into(), b_att.clone(), b_sig.clone()];
        ensure!(tags == want, "the repository's tags: {tags:?}");
        let tls = coreforge::api::RegistryTls { insecure: true, skip_verify: false };
        let registry = coreforge::registry::Registry::new(Some(&tls), coreforge::registry::Credentials::default());
        let sig_layers = registry.artifact_layers(&repo, &b_sig).await?;
        ensure!(sig_layers.len() == 1, "one signature: {sig_layers:?}");
        let att_layers = registry.artifact_layers(&repo, &b_att).await?;
        ensure!(att_layers.len() == 2, "two attestations (provenance, contract): {att_layers:?}");
        for tag in ["12", "12.8.0", "latest"] {
            let digest = fixtures::registry_digest(REGISTRY, &path, tag, None).await?;
            ensure!(digest.as_deref() == Some(b.as_str()), "{tag} resolves to {digest:?}, not {b}");
        }

        // No event storm.
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        for name in ["r1", "r2"] {
            let list = events.list(&ListParams::default().fields(&format!("regarding.name={name}"))).await?;
            let total: usize = list.items.iter().map(|e| e.deprecated_count.unwrap_or(1).max(1) as usize).sum();
            ensure!(total <= EVENTS_PER_RELEASE, "{total} events for {name}: {:?}", list.items.iter().map(|e| &e.reason).collect::<Vec<_>>());
        }
        Ok(())
    })
    .await
}

/// At the points where a catalog write was decided and not yet made: 12.7.0's status
/// records it as its intent, and the registry is as it was.
async fn intent_left_at(point: &str, client: &Client, ns: &str) -> anyhow::Result<()> {
    let (phase_then, action, tag_there, proofs) = match point {
        "status-written:Verified" => (Phase::Verified, IntentAction::Publish, false, 0),
        "signed" => (Phase::Verified, IntentAction::Publish, false, 1),
        "attested" => (Phase::Verified, IntentAction::Publish, false, 2),
        "status-written:Retired" => (Phase::Retired, IntentAction::DeleteVersionTag, true, 2),
        _ => return Ok(()),
    };
    let r1 = Api::<ImageRelease>::namespaced(client.clone(), ns).get("r1").await?;
    let st = r1.status.clone().unwrap_or_default();
    ensure!(st.phase == Some(phase_then), "r1 is {:?}, not {phase_then:?}", st.phase);
    let intent = st.intent.as_ref().ok_or_else(|| anyhow::anyhow!("r1 records no intent: {st:?}"))?;
    ensure!(intent.action == action, "{intent:?}");
    ensure!(intent.reference == format!("{REGISTRY}/{ns}/core:12.7.0"), "{intent:?}");
    ensure!(Some(&intent.digest) == st.digest.as_ref() && intent.decided_on.is_some(), "{intent:?}");
    let tags = fixtures::registry_tags(&format!("{ns}/core")).await?;
    ensure!(tags.contains(&"12.7.0".to_string()) == tag_there, "the tags before the write: {tags:?}");
    // Signed before the version tag: the signature, then the attestations.
    let a = &intent.digest;
    let made: Vec<bool> =
        [signing::signature_tag(a), signing::attestation_tag(a)].iter().map(|t| tags.contains(t)).collect();
    ensure!(made == [proofs >= 1, proofs >= 2], "the proofs before the write: {tags:?}");
    Ok(())
}

macro_rules! matrix {
    ($($test:ident => $point:literal,)*) => {
        $(
            #[tokio::test]
            async fn $test() -> anyhow::Result<()> {
                crash_at(stringify!($test), $point).await
            }
        )*

        /// Every failure point the controller has is in the matrix, and nothing else.
        #[test]
        fn the_matrix_covers_every_failure_point() {
            let mut tested = vec![$($point),*];
            let mut points = failpoint::POINTS.to_vec();
            tested.sort();
            points.sort();
            assert_eq!(tested, points);
        }
    };
}

matrix! {
    crash_after_snapshot_created => "snapshot-created",
    crash_after_build_job_created => "build-job-created",
    crash_after_building_written => "status-written:Building",
    crash_after_test_job_created => "test-job-created",
    crash_after_testing_written => "status-written:Testing",
    crash_after_verified_written => "status-written:Verified",
    crash_after_signed => "signed",
    crash_after_attested => "attested",
    crash_after_published_to_the_registry => "published",
    crash_after_published_written => "status-written:Published",
    crash_after_event_recorded => "event-recorded",
    crash_after_channel_moved => "channel-moved",
    crash_after_corebuild_status_written => "corebuild-status-written",
    crash_after_deprecated_written => "status-written:Deprecated",
    crash_after_retired_written => "status-written:Retired",
    crash_after_tag_deleted => "tag-deleted",
}
