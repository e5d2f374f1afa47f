//! The controller end to end on the local cluster: real API server, real Job controller,
//! pods simulated by kwok stages that report what a build or test would.

mod fixtures;
mod support;

use std::time::Duration;

use anyhow::ensure;
use coreforge::api::{CoreBuild, ImageRelease, Phase};
use fixtures::ControllerProcess;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{DeleteParams, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::secs;

const SETTLE: Duration = Duration::from_secs(90);

async fn apply(client: &Client, ns: &str, core_build: Value, release: Value) -> anyhow::Result<()> {
    let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), ns);
    cbs.create(&PostParams::default(), &serde_json::from_value(core_build)?).await?;
    let irs: Api<ImageRelease> = Api::namespaced(client.clone(), ns);
    irs.create(&PostParams::default(), &serde_json::from_value(release)?).await?;
    Ok(())
}

/// The common start: a controller, an image in staging, a CoreBuild whose build reports
/// it, and release `r` (12.7.0, target Verified), waited for until it is Verified. Returns
/// the controller, which runs until it is dropped.
async fn verified_default(client: &Client, ns: &str) -> anyhow::Result<ControllerProcess> {
    let controller = ControllerProcess::start(ns).await?;
    let digest = fixtures::seed_image(&fixtures::staging(ns)).await?;
    apply(client, ns, fixtures::local_core_build("debian", ns, &digest), fixtures::release("r", "debian", "12.7.0"))
        .await?;
    wait_phase(client, ns, "r", Phase::Verified).await?;
    Ok(controller)
}

async fn wait_phase(client: &Client, ns: &str, name: &str, phase: Phase) -> anyhow::Result<ImageRelease> {
    fixtures::wait_phase(client, ns, name, phase, SETTLE).await
}

/// Waits until release `name` has condition `type_` with reason `reason`.
async fn wait_reason(client: &Client, ns: &str, name: &str, type_: &str, reason: &str) -> anyhow::Result<ImageRelease> {
    let irs: Api<ImageRelease> = Api::namespaced(client.clone(), ns);
    support::wait_for(&irs, name, &format!("{name} to show {type_} with reason {reason}"), SETTLE, |r| {
        r.status
            .as_ref()
            .is_some_and(|s| coreforge::api::find_condition(&s.conditions, type_).is_some_and(|c| c.reason == reason))
    })
    .await
}

fn condition<'a>(r: &'a ImageRelease, t: &str) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let st = r.status.as_ref().expect("status");
    coreforge::api::find_condition(&st.conditions, t).unwrap_or_else(|| panic!("no {t} condition in {st:?}"))
}

async fn event_reasons(client: &Client, ns: &str, name: &str) -> anyhow::Result<Vec<String>> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = events.list(&ListParams::default().fields(&format!("regarding.name={name}"))).await?;
    Ok(list.items.into_iter().filter_map(|e| e.reason).collect())
}

#[tokio::test]
async fn a_release_builds_tests_and_becomes_verified() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("verified", |client, ns| async move {
        let controller = ControllerProcess::start(&ns).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let cb = fixtures::local_core_build("debian", &ns, &digest);
        apply(&client, &ns, cb, fixtures::release("debian-12-7-0", "debian", "12.7.0")).await?;
        let r = wait_phase(&client, &ns, "debian-12-7-0", Phase::Verified).await?;
        let st = r.status.clone().unwrap();
        ensure!(st.digest.as_deref() == Some(digest.as_str()), "digest {:?}", st.digest);
        ensure!(st.staging_image.as_deref() == Some(&*format!("{}@{digest}", fixtures::staging(&ns))));
        let names: Vec<_> = st.checks.iter().map(|c| (c.name.as_str(), c.passed)).collect();
        ensure!(
            names
                == [("package:bash", true), ("file:/etc/os-release", true), ("check:shell", true), ("check:tls", true)],
            "checks: {names:?}"
        );
        ensure!(condition(&r, "Ready").status == "True" && condition(&r, "Ready").reason == "Verified");
        ensure!(condition(&r, "Built").status == "True" && condition(&r, "Tested").status == "True");
        ensure!(condition(&r, "Stalled").status == "False" && condition(&r, "Reconciling").status == "False");
        ensure!(condition(&r, "Ready").observed_generation == r.metadata.generation);
        let p = st.provenance.as_ref().unwrap();
        ensure!(
            p.base_digest == fixtures::DIGEST
                && p.core_build_generation == 1
                && p.blueprint_hash.starts_with("sha256:")
        );
        let phases: Vec<_> = st.history.iter().map(|t| t.phase).collect();
        ensure!(phases == [Phase::Pending, Phase::Building, Phase::Testing, Phase::Verified], "history {phases:?}");
        ensure!(fixtures::job_names(&client, &ns).await? == ["debian-12-7-0-a1-build", "debian-12-7-0-a1-test"]);

        // Every transition told its story as an Event (the Job each one created included).
        let want = ["AttemptStarted", "BuildSucceeded", "ContractKept"];
        let reasons = support::eventually("the transition events", secs(30), Duration::from_millis(500), || {
            let client = client.clone();
            let ns = ns.clone();
            async move {
                let reasons = event_reasons(&client, &ns, "debian-12-7-0").await?;
                Ok(want.iter().all(|w| reasons.iter().any(|r| r == w)).then_some(reasons))
            }
        })
        .await?;
        ensure!(reasons.len() == want.len(), "one event per transition, got {reasons:?}");

        // Later edits of the CoreBuild do not change what the release means: once the
        // controller has seen the edit (the CoreBuild's status observes generation 2, and
        // a new generation re-runs its releases), the release is as it was, with no new
        // attempt and no new Job…
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"spec": {"blueprint": {"containerfile": "FROM scratch\nRUN false\n"}}});
        cbs.patch("debian", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(patch)).await?;
        support::wait_for(&cbs, "debian", "the CoreBuild's edit to be observed", SETTLE, |cb| {
            cb.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
        })
        .await?;
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        let after = irs.get("debian-12-7-0").await?.status.unwrap();
        ensure!(after.attempt == Some(1) && after.provenance == st.provenance, "{after:?}");
        ensure!(after.phase == Some(Phase::Verified) && after.checks == st.checks, "{after:?}");
        ensure!(fixtures::job_names(&client, &ns).await? == ["debian-12-7-0-a1-build", "debian-12-7-0-a1-test"]);
        // …and its snapshot cannot be changed: the API server refuses.
        let snapshot: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let cm = snapshot.get(&p.snapshot).await?;
        ensure!(cm.data.as_ref().unwrap()["Containerfile"] == "FROM scratch\nRUN true\n");
        let edit = kube::api::Patch::Merge(json!({"data": {"Containerfile": "FROM scratch\nRUN false\n"}}));
        match snapshot.patch(&p.snapshot, &kube::api::PatchParams::default(), &edit).await {
            Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains("immutable") => {}
            other => anyhow::bail!("the snapshot could be edited: {other:?}"),
        }
        let status = controller.terminate().await?;
        ensure!(status.success(), "SIGTERM should stop the controller cleanly, got {status}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_failing_build_fails_the_release_with_the_pods_reason() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("build-fails", |client, ns| async move {
        let _controller = ControllerProcess::start(&ns).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let mut cb = fixtures::local_core_build("debian", &ns, &digest);
        cb["spec"]["builder"]["podAnnotations"] = json!({
            "sim.coreforge.dev/exit-code": "3",
            "sim.coreforge.dev/reason": "BuildahRunFailed",
            "sim.coreforge.dev/message": "error building at STEP \"RUN apt-get install curl\": exit status 100",
        });
        apply(&client, &ns, cb, fixtures::release("r", "debian", "12.7.0")).await?;
        let r = wait_phase(&client, &ns, "r", Phase::Failed).await?;
        let ready = condition(&r, "Ready");
        ensure!(ready.reason == "BuildFailed", "{ready:?}");
        ensure!(ready.message.contains("BuildahRunFailed (exit code 3)") && ready.message.contains("exit status 100"), "{ready:?}");
        ensure!(condition(&r, "Stalled").status == "True" && condition(&r, "Built").status == "False");
        ensure!(fixtures::job_names(&client, &ns).await? == ["r-a1-build"], "no test Job after a failed build");
        let describe = support::run(support::kubectl().args(["describe", "ir", "r", "-n", &ns])).await?;
        ensure!(describe.contains("BuildFailed") && describe.contains("exit status 100"), "kubectl describe:\n{describe}");

        // The retry annotation starts attempt 2 with new Jobs; the fixed builder succeeds.
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        let fixed = json!({"spec": {"builder": {"podAnnotations": null}}});
        cbs.patch("debian", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(fixed)).await?;
        let fixed = json!({"spec": {"builder": {"podAnnotations": {"sim.coreforge.dev/termination-message": fixtures::build_result(&digest)}}}});
        cbs.patch("debian", &kube::api::PatchParams::default(), &kube::api::Patch::Merge(fixed)).await?;
        support::run(support::kubectl().args(["annotate", "ir", "r", "-n", &ns, "coreforge.dev/retry=1"])).await?;
        let r = wait_phase(&client, &ns, "r", Phase::Verified).await?;
        ensure!(r.status.as_ref().unwrap().attempt == Some(2));
        ensure!(fixtures::job_names(&client, &ns).await? == ["r-a1-build", "r-a2-build", "r-a2-test"]);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_failing_contract_check_fails_the_release_naming_the_check() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("check-fails", |client, ns| async move {
        let _controller = ControllerProcess::start(&ns).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let mut cb = fixtures::local_core_build("debian", &ns, &digest);
        cb["spec"]["tester"]["podAnnotations"]["sim.coreforge.dev/termination-message"] =
            json!(fixtures::test_report(false));
        apply(&client, &ns, cb, fixtures::release("r", "debian", "12.7.0")).await?;
        let r = wait_phase(&client, &ns, "r", Phase::Failed).await?;
        let tested = condition(&r, "Tested");
        ensure!(tested.status == "False" && tested.reason == "ContractBroken", "{tested:?}");
        ensure!(tested.message.contains("1 of 4 contract checks failed: check:tls (exit 1)"), "{tested:?}");
        let failed: Vec<_> =
            r.status.as_ref().unwrap().checks.iter().filter(|c| !c.passed).map(|c| c.name.clone()).collect();
        ensure!(failed == ["check:tls"]);
        let tls = r.status.as_ref().unwrap().checks.iter().find(|c| c.name == "check:tls").unwrap();
        ensure!(tls.output.as_deref() == Some("no trust store"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_missing_core_build_waits_and_resumes_when_it_appears() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("waits", |client, ns| async move {
        let _controller = ControllerProcess::start(&ns).await?;
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        irs.create(&PostParams::default(), &serde_json::from_value(fixtures::release("r", "debian", "12.7.0"))?)
            .await?;
        let r = wait_reason(&client, &ns, "r", "Ready", "CoreBuildNotFound").await?;
        ensure!(condition(&r, "Reconciling").status == "True" && condition(&r, "Stalled").status == "False");
        // A blueprint from a ConfigMap that does not exist yet.
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let mut cb = fixtures::local_core_build("debian", &ns, &digest);
        cb["spec"]["blueprint"] = json!({"configMapRef": {"name": "blueprint"}});
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        cbs.create(&PostParams::default(), &serde_json::from_value(cb)?).await?;
        let r = wait_reason(&client, &ns, "r", "Ready", "BlueprintNotFound").await?;
        let waiting = condition(&r, "Ready");
        ensure!(waiting.message.contains("blueprint ConfigMap blueprint does not exist"), "{waiting:?}");
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let cm: ConfigMap = serde_json::from_value(
            json!({"metadata": {"name": "blueprint"}, "data": {"Containerfile": "FROM scratch\n"}}),
        )?;
        cms.create(&PostParams::default(), &cm).await?;
        let r = wait_phase(&client, &ns, "r", Phase::Verified).await?;
        ensure!(r.status.unwrap().provenance.unwrap().blueprint_hash == coreforge::names::sha256(b"FROM scratch\n"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_second_release_of_a_version_waits_for_the_first_to_go() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("duplicate", |client, ns| async move {
        let _controller = verified_default(&client, &ns).await?;
        // The same version again under another name (a copied manifest in Git).
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        irs.create(&PostParams::default(), &serde_json::from_value(fixtures::release("r-copy", "debian", "12.7.0"))?)
            .await?;
        let copy = wait_reason(&client, &ns, "r-copy", "Stalled", "DuplicateVersion").await?;
        let stalled = condition(&copy, "Stalled");
        ensure!(stalled.status == "True", "{stalled:?}");
        ensure!(stalled.message.contains("belongs to ImageRelease r, created first"), "{stalled:?}");
        ensure!(condition(&copy, "Ready").status == "False" && condition(&copy, "Reconciling").status == "False");
        let st = copy.status.as_ref().unwrap();
        ensure!(st.phase == Some(Phase::Pending) && st.attempt.is_none(), "{st:?}");
        let names = fixtures::job_names(&client, &ns).await?;
        ensure!(names == ["r-a1-build", "r-a1-test"], "the copy built nothing: {names:?}");
        let warned = support::eventually("a DuplicateVersion event", secs(30), Duration::from_millis(500), || {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                Ok(event_reasons(&client, &ns, "r-copy").await?.contains(&"DuplicateVersion".to_string()).then_some(()))
            }
        });
        warned.await?;

        // Once the first release is deleted, the version is free and the copy is released.
        irs.delete("r", &DeleteParams::default()).await?;
        support::wait_deleted(&irs, "r", "the first release", SETTLE).await?;
        let copy = wait_phase(&client, &ns, "r-copy", Phase::Verified).await?;
        ensure!(condition(&copy, "Stalled").status == "False");
        ensure!(fixtures::job_names(&client, &ns).await?.contains(&"r-copy-a1-test".to_string()));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_killed_controller_resumes_without_duplicate_jobs() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("crash", |client, ns| async move {
        let controller = ControllerProcess::start(&ns).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let mut cb = fixtures::local_core_build("debian", &ns, &digest);
        cb["spec"]["builder"]["podAnnotations"]["sim.coreforge.dev/run-seconds"] = json!("10");
        apply(&client, &ns, cb, fixtures::release("r", "debian", "12.7.0")).await?;
        let jobs_api: Api<Job> = Api::namespaced(client.clone(), &ns);
        support::wait_for(&jobs_api, "r-a1-build", "the build Job to run", SETTLE, |j| {
            j.status.as_ref().and_then(|s| s.active).unwrap_or(0) > 0
        })
        .await?;
        controller.kill().await?;
        let _controller = ControllerProcess::start(&ns).await?;
        wait_phase(&client, &ns, "r", Phase::Verified).await?;
        ensure!(
            fixtures::job_names(&client, &ns).await? == ["r-a1-build", "r-a1-test"],
            "exactly one build and one test Job"
        );
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let snapshots = cms.list(&ListParams::default().labels("coreforge.dev/release=r")).await?.items.len();
        ensure!(snapshots == 1, "one snapshot, found {snapshots}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn deleting_a_release_removes_its_jobs() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("gc", |client, ns| async move {
        let _controller = verified_default(&client, &ns).await?;
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        irs.delete("r", &DeleteParams::foreground()).await?;
        support::wait_deleted(&irs, "r", "the release (foreground deletion)", SETTLE).await?;
        let jobs_api: Api<Job> = Api::namespaced(client.clone(), &ns);
        for job in ["r-a1-build", "r-a1-test"] {
            support::wait_deleted(&jobs_api, job, "the release's Job", SETTLE).await?;
        }
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        support::wait_deleted(&cms, "r-a1-snapshot", "the release's snapshot", SETTLE).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_settled_release_gets_no_writes_for_60_seconds() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("idle", |client, ns| async move {
        let _controller = verified_default(&client, &ns).await?;
        // The last write that settles things is the CoreBuild's status counting the
        // release as Verified (it follows the release's own)…
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        support::wait_for(&cbs, "debian", "the CoreBuild to count the release as Verified", SETTLE, |cb| {
            cb.status.as_ref().and_then(|s| s.releases.as_ref()).is_some_and(|c| c.verified == 1 && c.in_progress == 0)
        })
        .await?;
        // …wait until it is in the audit log…
        let settled = support::eventually(
            "the CoreBuild's status write to show in the audit log",
            secs(30),
            Duration::from_millis(500),
            || {
                let ns = ns.clone();
                async move {
                    let writes = fixtures::controller_writes(&ns)?;
                    let last = writes.last().is_some_and(|w| w.contains("corebuilds/debian/status"));
                    Ok(last.then_some(writes.len()))
                }
            },
        )
        .await?;
        ensure!(settled > 0);
        let before = fixtures::controller_writes(&ns)?;
        // …then measure a 60 s idle window: the controller keeps watching, and writes nothing.
        tokio::time::sleep(secs(60)).await;
        let after = fixtures::controller_writes(&ns)?;
        let new: Vec<_> = after.iter().skip(before.len()).collect();
        ensure!(new.is_empty(), "writes during the idle window: {new:#?}");
        // The window was real: the controller was alive and watching through it, so a
        // change right after it is acted on (publishing, here) within seconds.
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        let publish = kube::api::Patch::Merge(json!({"spec": {"target": "Published"}}));
        irs.patch("r", &kube::api::PatchParams::default(), &publish).await?;
        support::wait_for(&irs, "r", "the release to be published after the window", secs(30), |r| {
            r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Published)
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_builder_asking_for_more_than_the_administrator_allows_gets_no_pod() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("privileges", |client, ns| async move {
        let controller = ControllerProcess::start(&ns).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let mut cb = fixtures::local_core_build("debian", &ns, &digest);
        cb["spec"]["builder"]["securityContext"] = json!({"privileged": true, "capabilities": {"add": ["SYS_ADMIN"]}});
        apply(&client, &ns, cb, fixtures::release("r", "debian", "12.7.0")).await?;
        // Another image as the builder, and the pods run as another ServiceAccount.
        let mut other = fixtures::local_core_build("other", &ns, &digest);
        other["spec"]["builder"]["image"] = json!("evil.example/miner:1");
        other["spec"]["builder"]["serviceAccountName"] = json!("deployer");
        other["spec"]["tester"]["serviceAccountName"] = json!("deployer");
        apply(&client, &ns, other, fixtures::release("o", "other", "1.0.0")).await?;
        let expected = [
            ("r", &["spec.builder.securityContext.privileged", "--allow-privileged-builders", "SYS_ADMIN"][..]),
            (
                "o",
                &[
                    "spec.builder.image evil.example/miner:1",
                    "--allow-builder-image",
                    "spec.builder.serviceAccountName is deployer",
                    "spec.tester.serviceAccountName is deployer",
                    "--allow-builder-service-account",
                ][..],
            ),
        ];
        for (name, needles) in expected {
            let r = wait_phase(&client, &ns, name, Phase::Failed).await?;
            let built = condition(&r, "Built");
            ensure!(built.status == "False" && built.reason == "PrivilegesNotAllowed", "{built:?}");
            for needle in needles {
                ensure!(built.message.contains(needle), "{needle:?} missing from {built:?}");
            }
            ensure!(condition(&r, "Stalled").status == "True");
        }
        ensure!(fixtures::job_names(&client, &ns).await?.is_empty(), "no Job, so no pod, for a refused builder");

        // The administrator allows exactly that; a retry then creates the build pod as asked.
        controller.kill().await?;
        let _controller = ControllerProcess::start_with(
            &ns,
            &["--http-addr", "127.0.0.1:0", "--allow-privileged-builders", "--allow-builder-capability", "sys_admin"],
        )
        .await?;
        support::run(support::kubectl().args(["annotate", "ir", "r", "-n", &ns, "coreforge.dev/retry=1"])).await?;
        wait_phase(&client, &ns, "r", Phase::Verified).await?;
        let job = Api::<Job>::namespaced(client.clone(), &ns).get("r-a2-build").await?;
        let sc = job.spec.unwrap().template.spec.unwrap().containers[0].security_context.clone().unwrap();
        ensure!(sc.privileged == Some(true), "{sc:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_build_pod_refused_by_pod_security_or_unschedulable_is_named_within_seconds() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("pod-refused", |client, ns| async move {
        // The default build pod needs more than `restricted` allows (see "Builder privileges").
        support::run(support::kubectl().args(["label", "ns", &ns, "pod-security.kubernetes.io/enforce=restricted"]))
            .await?;
        let _controller = ControllerProcess::start(&ns).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        apply(
            &client,
            &ns,
            fixtures::local_core_build("debian", &ns, &digest),
            fixtures::release("r", "debian", "12.7.0"),
        )
        .await?;
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        let r = support::wait_for(&irs, "r", "r to name the Pod Security refusal", secs(30), |r| {
            r.status.as_ref().is_some_and(|s| {
                coreforge::api::find_condition(&s.conditions, "Built").is_some_and(|c| c.reason == "PodSecurityRefused")
            })
        })
        .await?;
        let built = condition(&r, "Built");
        ensure!(built.status == "Unknown" && built.message.contains("violates PodSecurity"), "{built:?}");
        ensure!(condition(&r, "Ready").reason == "PodSecurityRefused" && condition(&r, "Stalled").status == "True");
        ensure!(r.status.as_ref().unwrap().phase == Some(Phase::Building), "still Building, until the deadline");

        // A second release whose builder selects no node: the scheduler's words, not stalled.
        support::run(support::kubectl().args([
            "label",
            "ns",
            &ns,
            "--overwrite",
            "pod-security.kubernetes.io/enforce=privileged",
        ]))
        .await?;
        let mut cb = fixtures::local_core_build("nowhere", &ns, &digest);
        cb["spec"]["builder"]["nodeSelector"] = json!({"coreforge.dev/no-such-node": "true"});
        apply(&client, &ns, cb, fixtures::release("u", "nowhere", "1.0.0")).await?;
        let u = support::wait_for(&irs, "u", "u to say it is unschedulable", secs(30), |r| {
            r.status.as_ref().is_some_and(|s| {
                coreforge::api::find_condition(&s.conditions, "Built").is_some_and(|c| c.reason == "Unschedulable")
            })
        })
        .await?;
        ensure!(condition(&u, "Built").message.contains("didn't match Pod's node affinity/selector"), "{u:?}");
        ensure!(condition(&u, "Stalled").status == "False" && condition(&u, "Reconciling").status == "True");
        let warnings = support::eventually("the Unschedulable warning", secs(30), Duration::from_millis(500), || {
            let (client, ns) = (client.clone(), ns.clone());
            async move {
                let reasons = event_reasons(&client, &ns, "u").await?;
                Ok(reasons.iter().any(|r| r == "Unschedulable").then_some(reasons))
            }
        })
        .await?;
        ensure!(warnings.iter().filter(|r| *r == "Unschedulable").count() == 1, "one warning: {warnings:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_build_pod_evicted_by_a_drain_is_replaced_not_judged() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("evicted", |client, ns| async move {
        let _controller = ControllerProcess::start(&ns).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let mut cb = fixtures::local_core_build("debian", &ns, &digest);
        cb["spec"]["builder"]["podAnnotations"]["sim.coreforge.dev/run-seconds"] = json!("15");
        apply(&client, &ns, cb, fixtures::release("r", "debian", "12.7.0")).await?;
        let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), &ns);
        let selector = ListParams::default().labels("batch.kubernetes.io/job-name=r-a1-build");
        let build_pods = || {
            let (pods, selector) = (pods.clone(), selector.clone());
            async move { anyhow::Ok(pods.list(&selector).await?.items) }
        };
        let first = support::eventually("the build pod to run", secs(30), Duration::from_millis(250), || {
            let list = build_pods();
            async move {
                Ok(list
                    .await?
                    .into_iter()
                    .find(|p| p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")))
            }
        })
        .await?;
        let first_name = first.metadata.name.clone().unwrap_or_default();
        // What `kubectl drain` does: the Eviction API (the pod gets DisruptionTarget).
        pods.evict(&first_name, &Default::default()).await?;
        support::eventually("the Job to start another pod", secs(30), Duration::from_millis(250), || {
            let (list, first_name) = (build_pods(), first_name.clone());
            async move { Ok(list.await?.into_iter().find(|p| p.metadata.name.as_deref() != Some(first_name.as_str()))) }
        })
        .await?;
        let r = wait_phase(&client, &ns, "r", Phase::Verified).await?;
        let st = r.status.as_ref().unwrap();
        ensure!(st.attempt == Some(1), "the same attempt went on: {:?}", st.attempt);
        let phases: Vec<_> = st.history.iter().map(|t| t.phase).collect();
        ensure!(!phases.contains(&Phase::Failed), "never Failed: {phases:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn the_children_of_old_attempts_are_deleted_beyond_the_kept_ones() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("keep-attempts", |client, ns| async move {
        let _controller =
            ControllerProcess::start_with(&ns, &["--http-addr", "127.0.0.1:0", "--keep-attempts", "2"]).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let mut cb = fixtures::local_core_build("debian", &ns, &digest);
        cb["spec"]["builder"]["podAnnotations"]["sim.coreforge.dev/exit-code"] = json!("3");
        apply(&client, &ns, cb, fixtures::release("r", "debian", "12.7.0")).await?;
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        for attempt in 1..=3 {
            if attempt > 1 {
                let token = format!("coreforge.dev/retry={attempt}");
                support::run(support::kubectl().args(["annotate", "--overwrite", "ir", "r", "-n", &ns, &token]))
                    .await?;
            }
            support::wait_for(&irs, "r", &format!("attempt {attempt} to fail"), SETTLE, |r| {
                r.status.as_ref().is_some_and(|s| s.attempt == Some(attempt) && s.phase == Some(Phase::Failed))
            })
            .await?;
        }
        let cms: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let kept = support::eventually("attempt 1's children to be deleted", secs(30), secs(1), || {
            let (client, ns, cms) = (client.clone(), ns.clone(), cms.clone());
            async move {
                let jobs = fixtures::job_names(&client, &ns).await?;
                let mut snapshots: Vec<String> = cms
                    .list(&ListParams::default().labels("coreforge.dev/release=r"))
                    .await?
                    .items
                    .into_iter()
                    .filter_map(|c| c.metadata.name)
                    .collect();
                snapshots.sort();
                Ok((jobs == ["r-a2-build", "r-a3-build"]).then_some(snapshots))
            }
        })
        .await?;
        ensure!(kept == ["r-a2-snapshot", "r-a3-snapshot"], "the kept attempts' snapshots: {kept:?}");
        let told = event_reasons(&client, &ns, "r").await?;
        ensure!(told.iter().filter(|r| *r == "OldAttemptsDeleted").count() == 1, "{told:?}");
        Ok(())
    })
    .await
}
