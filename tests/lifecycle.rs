//! The contract over time, end to end: policy-driven deprecation and retirement (through
//! a controller restart), explicit retirement, contract diffs that block a minor release
//! but not a major one, and release notes.

mod fixtures;
mod support;

use std::time::Duration;

use anyhow::ensure;
use coreforge::api::{CoreBuild, ImageRelease, Phase};
use fixtures::{ControllerProcess, REGISTRY};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(120);

fn phase(r: &ImageRelease) -> Option<Phase> {
    r.status.as_ref().and_then(|s| s.phase)
}

async fn wait_phase(client: &Client, ns: &str, name: &str, want: Phase) -> anyhow::Result<ImageRelease> {
    fixtures::wait_phase(client, ns, name, want, SETTLE).await
}

use fixtures::{create_built_release as release, create_local_core_build as create_core_build};

fn seconds(t: &k8s_openapi::apimachinery::pkg::apis::meta::v1::Time) -> f64 {
    t.0.as_millisecond() as f64 / 1000.0
}

#[tokio::test]
async fn max_supported_deprecates_and_retire_after_retires_through_a_restart() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("policy", |client, ns| async move {
        let controller = ControllerProcess::start(&ns).await?;
        create_core_build(&client, &ns, json!({"maxSupported": 2})).await?;
        let mut digests = Vec::new();
        for (name, version) in [("r1", "12.0.0"), ("r2", "12.0.1")] {
            digests.push(release(&client, &ns, name, version, "Published").await?);
            wait_phase(&client, &ns, name, Phase::Published).await?;
        }
        digests.push(release(&client, &ns, "r3", "12.0.2", "Published").await?);
        wait_phase(&client, &ns, "r3", Phase::Published).await?;
        // The third publication deprecates the oldest; the other two stay supported.
        let r1 = wait_phase(&client, &ns, "r1", Phase::Deprecated).await?;
        let st = r1.status.clone().unwrap();
        ensure!(st.history.last().is_some_and(|t| t.reason == "Superseded"), "{:?}", st.history);
        ensure!(coreforge::api::find_condition(&st.conditions, "Ready").is_some_and(|c| c.status == "True"));
        ensure!(wait_phase(&client, &ns, "r2", Phase::Published).await.is_ok());

        // A retirement policy set while the controller is down, due 15 s from now (counted
        // from r1's publication, whenever that was): after the restart it retires r1 on
        // time, from the schedule in status.
        controller.kill().await?;
        let published_at = seconds(st.published_at.as_ref().unwrap());
        let now = jiff::Timestamp::now().as_millisecond() as f64 / 1000.0;
        let retire_after = (now - published_at).ceil() as u64 + 15;
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        let policy = json!({"spec": {"lifecycle": {"retireAfter": format!("{retire_after}s")}}});
        cbs.patch("debian", &PatchParams::default(), &Patch::Merge(policy)).await?;
        let _controller = ControllerProcess::start(&ns).await?;
        let r1 = wait_phase(&client, &ns, "r1", Phase::Retired).await?;
        let st = r1.status.unwrap();
        let due = seconds(st.published_at.as_ref().unwrap()) + retire_after as f64;
        let late = seconds(st.retired_at.as_ref().unwrap()) - due;
        ensure!((-0.5..5.0).contains(&late), "retired {late:.1}s after its due time");
        ensure!(st.deprecated_at.is_some());

        // Channels follow the newest supported release and never the retired one.
        let repo = format!("{ns}/core");
        for tag in ["12", "latest"] {
            ensure!(fixtures::registry_digest(REGISTRY, &repo, tag, None).await? == Some(digests[2].clone()), "{tag}");
        }
        ensure!(
            fixtures::registry_digest(REGISTRY, &repo, "12.0.0", None).await? == Some(digests[0].clone()),
            "the version tag stays"
        );
        support::wait_for(&cbs, "debian", "the CoreBuild to count the retired release", SETTLE, |cb| {
            cb.status.as_ref().is_some_and(|s| {
                s.releases.as_ref().is_some_and(|r| r.retired == 1 && r.published == 2)
                    && !s.channels.is_empty()
                    && s.channels.iter().all(|c| c.version == "12.0.2")
            })
        })
        .await?;
        Ok(())
    })
    .await
}

/// Waits until CoreBuild `name` says channel `channel` points at `version`.
async fn wait_channel(client: &Client, ns: &str, name: &str, channel: &str, version: &str) -> anyhow::Result<()> {
    let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), ns);
    support::wait_for(&cbs, name, &format!("channel {channel} of {name} at {version}"), SETTLE, |cb| {
        cb.status.iter().flat_map(|s| s.channels.iter()).any(|c| c.name == channel && c.version == version)
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_explicit_target_retires_at_once_and_cannot_go_back() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("retire", |client, ns| async move {
        let _controller = ControllerProcess::start(&ns).await?;
        create_core_build(&client, &ns, json!({"maxSupported": 5})).await?;
        let a = release(&client, &ns, "r1", "12.0.0", "Published").await?;
        wait_phase(&client, &ns, "r1", Phase::Published).await?;
        wait_channel(&client, &ns, "debian", "latest", "12.0.0").await?;
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        irs.patch("r1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"target": "Retired"}}))).await?;
        let r = wait_phase(&client, &ns, "r1", Phase::Retired).await?;
        let phases: Vec<_> = r.status.unwrap().history.iter().map(|t| t.phase).collect();
        ensure!(phases.ends_with(&[Phase::Published, Phase::Deprecated, Phase::Retired]), "{phases:?}");
        match irs.patch("r1", &PatchParams::default(), &Patch::Merge(json!({"spec": {"target": "Published"}}))).await {
            Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains("target only moves forward") => {}
            other => anyhow::bail!("moving target back was not refused: {other:?}"),
        }
        // By default the version tag stays pullable.
        let repo = format!("{ns}/core");
        let digest_of = |tag: &'static str| {
            let repo = repo.clone();
            async move { fixtures::registry_digest(REGISTRY, &repo, tag, None).await }
        };
        ensure!(digest_of("12.0.0").await? == Some(a.clone()));

        // A newer release takes the channels.
        let b = release(&client, &ns, "r2", "12.0.1", "Published").await?;
        wait_phase(&client, &ns, "r2", Phase::Published).await?;
        wait_channel(&client, &ns, "debian", "latest", "12.0.1").await?;
        ensure!(digest_of("latest").await? == Some(b.clone()));

        // With deleteRetiredTags, the retired release's tag goes: nothing else points at
        // its digest. The policy holds for releases retired before it was switched on.
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        cbs.patch(
            "debian",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"lifecycle": {"deleteRetiredTags": true}}})),
        )
        .await?;
        support::wait_for(&irs, "r1", "r1's tag deleted", SETTLE, |r| {
            r.status.as_ref().is_some_and(|s| s.published.is_empty())
        })
        .await?;
        ensure!(digest_of("12.0.0").await?.is_none(), "the version tag is gone");

        // Another product publishes the same digest into the same repository.
        let mut other = fixtures::local_core_build("other", &ns, &b);
        other["spec"]["catalog"]["channels"] = json!(["13"]);
        cbs.create(&PostParams::default(), &serde_json::from_value(other)?).await?;
        let mut o1 = fixtures::release("o1", "other", "13.0.0");
        o1["spec"]["target"] = json!("Published");
        irs.create(&PostParams::default(), &serde_json::from_value(o1)?).await?;
        wait_phase(&client, &ns, "o1", Phase::Published).await?;
        wait_channel(&client, &ns, "other", "13", "13.0.0").await?;

        // Retiring r2 would delete the manifest, and with it the other product's version
        // and channel and this product's last channel tags: its tag stays, saying why.
        irs.patch("r2", &PatchParams::default(), &Patch::Merge(json!({"spec": {"target": "Retired"}}))).await?;
        let r2 = support::wait_for(&irs, "r2", "r2 retired, its tag kept", SETTLE, |r| {
            phase(r) == Some(Phase::Retired)
                && r.status.as_ref().is_some_and(|s| {
                    coreforge::api::find_condition(&s.conditions, "Published")
                        .is_some_and(|c| c.reason == "VersionTagKept")
                })
        })
        .await?;
        let st = r2.status.unwrap();
        let kept = coreforge::api::find_condition(&st.conditions, "Published").unwrap().message.clone();
        ensure!(kept.contains("12, 13, 13.0.0, latest"), "the condition names the other tags: {kept}");
        ensure!(st.published == [format!("{REGISTRY}/{repo}:12.0.1")], "still pullable: {:?}", st.published);
        for tag in ["12.0.1", "12", "latest", "13.0.0", "13"] {
            ensure!(digest_of(tag).await? == Some(b.clone()), "{tag} still resolves to {b}");
        }
        // Each version was pushed to the catalog once, and one manifest was deleted: r1's.
        let writes = fixtures::registry_manifest_writes(&repo)?;
        for version in ["12.0.0", "12.0.1", "13.0.0"] {
            let pushes = writes.iter().filter(|w| **w == format!("PUT {version}")).count();
            ensure!(pushes == 1, "{version} pushed {pushes} times: {writes:#?}");
        }
        let deletes: Vec<_> = writes.iter().filter(|w| w.starts_with("DELETE ")).collect();
        ensure!(deletes == [&format!("DELETE {a}")], "{writes:#?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_patch_release_that_drops_a_package_is_blocked_but_a_major_one_publishes() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("contract-diff", |client, ns| async move {
        let _controller = ControllerProcess::start(&ns).await?;
        create_core_build(&client, &ns, json!({"maxSupported": 5})).await?;
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        // 12.0.0 guarantees bash and curl.
        let report = |packages: Value| {
            let mut r: Value = serde_json::from_str(&fixtures::test_report(true)).unwrap();
            r["packages"] = packages;
            r.to_string()
        };
        let contract = |packages: Value| json!({"spec": {"contract": {"packages": packages}}});
        cbs.patch(
            "debian",
            &PatchParams::default(),
            &Patch::Merge(contract(json!([{"name": "bash"}, {"name": "curl"}]))),
        )
        .await?;
        let with_curl = report(json!({"bash": "5.2.15-2", "curl": "7.88.1-10"}));
        cbs.patch(
            "debian",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"tester": {"podAnnotations": {"sim.coreforge.dev/termination-message": with_curl}}}}),
            ),
        )
        .await?;
        release(&client, &ns, "r1", "12.0.0", "Published").await?;
        wait_phase(&client, &ns, "r1", Phase::Published).await?;

        // The next CoreBuild drops curl from the contract (and the image).
        cbs.patch("debian", &PatchParams::default(), &Patch::Merge(contract(json!([{"name": "bash"}])))).await?;
        let without = report(json!({"bash": "5.2.15-2"}));
        cbs.patch(
            "debian",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"spec": {"tester": {"podAnnotations": {"sim.coreforge.dev/termination-message": without}}}}),
            ),
        )
        .await?;
        release(&client, &ns, "r2", "12.0.1", "Published").await?;
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        let r2 = support::wait_for(&irs, "r2", "ContractKept=False", SETTLE, |r| {
            r.status.as_ref().is_some_and(|s| {
                coreforge::api::find_condition(&s.conditions, "ContractKept").is_some_and(|c| c.status == "False")
            })
        })
        .await?;
        let st = r2.status.unwrap();
        let kept = coreforge::api::find_condition(&st.conditions, "ContractKept").unwrap();
        ensure!(kept.reason == "IncompatibleChange" && kept.message.contains("package:curl was removed"), "{kept:?}");
        ensure!(st.phase == Some(Phase::Verified), "blocked before publishing");
        ensure!(coreforge::api::find_condition(&st.conditions, "Stalled").is_some_and(|c| c.status == "True"));
        ensure!(fixtures::registry_digest(REGISTRY, &format!("{ns}/core"), "12.0.1", None).await?.is_none());

        // The same change in a new major version publishes, and the diff is recorded.
        release(&client, &ns, "r3", "13.0.0", "Published").await?;
        let r3 = wait_phase(&client, &ns, "r3", Phase::Published).await?;
        let st = r3.status.unwrap();
        ensure!(st.contract_baseline.as_deref() == Some("12.0.0"));
        ensure!(st.contract_changes == ["incompatible: package:curl was removed"], "{:?}", st.contract_changes);
        let kept = coreforge::api::find_condition(&st.conditions, "ContractKept").unwrap();
        ensure!(kept.status == "True" && kept.reason == "NewMajorVersion");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn release_notes_list_every_advisory_and_the_base_change() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("notes", |client, ns| async move {
        let _controller = ControllerProcess::start(&ns).await?;
        create_core_build(&client, &ns, json!({"maxSupported": 5})).await?;
        release(&client, &ns, "r1", "12.0.0", "Published").await?;
        let r1 = wait_phase(&client, &ns, "r1", Phase::Published).await?;
        let old_base = r1.status.unwrap().provenance.unwrap().base_digest;
        // A new base for the next release.
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        let new_base = fixtures::DIGEST2;
        cbs.patch("debian", &PatchParams::default(), &Patch::Merge(json!({"spec": {"base": format!("{REGISTRY}/base@{new_base}")}}))).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let patch = json!({"spec": {"builder": {"podAnnotations": {"sim.coreforge.dev/termination-message": fixtures::build_result(&digest)}}}});
        cbs.patch("debian", &PatchParams::default(), &Patch::Merge(patch)).await?;
        let mut r = fixtures::release("r2", "debian", "12.1.0");
        r["spec"]["target"] = json!("Published");
        r["spec"]["releaseNotes"] = json!("Refresh on the new point release.");
        r["spec"]["advisories"] = json!([
            {"id": "DSA-5800-1", "type": "Security", "severity": "Critical", "cves": ["CVE-2024-45490", "CVE-2024-45491"], "summary": "expat"},
            {"id": "CFBA-2026-7", "type": "Bugfix", "summary": "tzdata 2026a"},
            {"id": "CFWA-2026-2", "type": "Workaround", "severity": "Low", "summary": "pin the locale archive"},
        ]);
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        irs.create(&PostParams::default(), &serde_json::from_value(r)?).await?;
        let r2 = wait_phase(&client, &ns, "r2", Phase::Published).await?;
        let notes = r2.status.unwrap().release_notes.unwrap_or_default();
        for want in [
            "# debian 12.1.0",
            "Refresh on the new point release.",
            "## Security\n\n- **DSA-5800-1** (Critical): expat — CVE-2024-45490, CVE-2024-45491\n",
            "## Bug fixes\n\n- **CFBA-2026-7**: tzdata 2026a\n",
            "## Workarounds\n\n- **CFWA-2026-2** (Low): pin the locale archive\n",
            &format!("- `{old_base}` → `{new_base}` (since 12.0.0)"),
            "## Contract changes since 12.0.0\n\n- none\n",
        ] {
            ensure!(notes.contains(want), "the notes lack {want:?}:\n{notes}");
        }
        // Readable with kubectl.
        let out = support::run(support::kubectl().args(["get", "ir", "r2", "-n", &ns, "-o", "jsonpath={.status.releaseNotes}"])).await?;
        ensure!(out == notes);
        Ok(())
    })
    .await
}
