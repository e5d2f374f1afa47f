//! Reliability on the local cluster: bad objects that stop nothing, and a controller that
//! stops when told to, whatever state its watches are in.

mod fixtures;
mod support;

use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use coreforge::api::{CoreBuild, ImageRelease, Phase};
use fixtures::ControllerProcess;
use k8s_openapi::api::core::v1::Event as CoreEvent;
use k8s_openapi::api::events::v1::Event;
use k8s_openapi::api::rbac::v1::Role;
use kube::api::{ApiResource, DynamicObject, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::secs;

const SETTLE: Duration = Duration::from_secs(90);

/// Creates `manifest` as a `K`, sent as written (this test's own types could not hold
/// some of what it sends).
async fn create<K>(client: &Client, ns: &str, manifest: serde_json::Value) -> anyhow::Result<DynamicObject>
where
    K: kube::Resource<DynamicType = ()>,
{
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ApiResource::erase::<K>(&()));
    Ok(api.create(&PostParams::default(), &serde_json::from_value(manifest)?).await?)
}

async fn wait_phase(client: &Client, ns: &str, name: &str, phase: Phase) -> anyhow::Result<ImageRelease> {
    fixtures::wait_phase(client, ns, name, phase, SETTLE).await
}

/// The far end of the date range: the API server accepts it, the controller's
/// timestamps do not reach it. In a spec the schema refuses it; in an object of another
/// kind (any user may create an Event) the controller skips that object and goes on.
#[tokio::test]
async fn an_object_the_controller_cannot_read_stops_nothing() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("poison", |client, ns| async move {
        // The Events the controller watches (a Job's FailedCreate), dated past its range,
        // created before it starts: its first list of them holds an undecodable one.
        create::<CoreEvent>(
            &client,
            &ns,
            json!({
                "apiVersion": "v1", "kind": "Event",
                "metadata": {"name": "from-the-far-future"},
                "involvedObject": {"apiVersion": "batch/v1", "kind": "Job", "name": "some-job", "namespace": ns},
                "reason": "FailedCreate", "message": "dated past year 9999", "type": "Warning",
                "firstTimestamp": "9999-12-31T23:59:59Z", "lastTimestamp": "9999-12-31T23:59:59Z",
                "source": {"component": "someone"},
            }),
        )
        .await?;
        let port = fixtures::free_port()?;
        let addr = format!("127.0.0.1:{port}");
        let _controller = ControllerProcess::start_with(&ns, &["--http-addr", &addr]).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        create::<CoreBuild>(&client, &ns, fixtures::local_core_build("debian", &ns, &digest)).await?;

        // The last instant of year 9999 is refused at admission, saying why…
        let mut far = fixtures::release("far", "debian", "12.7.0");
        far["spec"]["target"] = json!("Published");
        far["spec"]["supportEndsAt"] = json!("9999-12-31T23:59:59Z");
        let refused = create::<ImageRelease>(&client, &ns, far.clone()).await.expect_err("refused at admission");
        ensure!(
            refused.to_string().contains("supportEndsAt must lie before 9999-01-01T00:00:00Z"),
            "refusal names the field and its bound: {refused}"
        );
        // …the latest the schema accepts is published with it…
        far["spec"]["supportEndsAt"] = json!("9998-12-31T23:59:59Z");
        create::<ImageRelease>(&client, &ns, far).await?;
        let published = wait_phase(&client, &ns, "far", Phase::Published).await?;
        let ends = published.status.as_ref().and_then(|s| s.support_ends_at.as_ref()).map(|t| t.0.to_string());
        ensure!(ends.as_deref() == Some("9998-12-31T23:59:59Z"), "support ends as asked: {ends:?}");
        // …and a release created after it is published too.
        let mut after = fixtures::release("after", "debian", "12.8.0");
        after["spec"]["target"] = json!("Published");
        create::<ImageRelease>(&client, &ns, after).await?;
        wait_phase(&client, &ns, "after", Phase::Published).await?;

        // The skipped object is reported on itself and counted.
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let reported = support::eventually("an Undecodable event on the skipped Event", secs(30), secs(1), || {
            let events = events.clone();
            async move {
                let list = events.list(&ListParams::default().fields("regarding.name=from-the-far-future")).await?;
                Ok(list.items.into_iter().find(|e| e.reason.as_deref() == Some("Undecodable")))
            }
        })
        .await?;
        let note = reported.note.unwrap_or_default();
        ensure!(note.contains("cannot read this Event"), "the event says what is wrong: {note}");
        let (_, metrics) = fixtures::http_get(&format!("http://{addr}/metrics")).await?;
        ensure!(
            metrics.lines().any(|l| l == "coreforge_undecodable_objects{kind=\"Event\"} 1"),
            "the skipped object is counted: {}",
            metrics.lines().filter(|l| l.contains("undecodable")).collect::<Vec<_>>().join("\n")
        );
        Ok(())
    })
    .await
}

/// A watch that keeps failing (its list is forbidden) leaves the caches unfilled and the
/// reconciles waiting for them; SIGTERM still stops the controller within seconds.
#[tokio::test]
async fn sigterm_stops_the_controller_within_seconds_while_a_watch_fails() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("sigterm", |client, ns| async move {
        // The chart's RBAC for this namespace, without ImageReleases.
        fixtures::chart_identity(&ns).await?;
        let roles: Api<Role> = Api::namespaced(client.clone(), &ns);
        let mut role = roles.get("coreforge").await.context("the chart's Role")?;
        for rule in role.rules.iter_mut().flatten() {
            if let Some(resources) = rule.resources.as_mut() {
                resources.retain(|r| !r.starts_with("imagereleases"));
            }
        }
        if let Some(rules) = role.rules.as_mut() {
            rules.retain(|r| r.resources.as_ref().is_none_or(|r| !r.is_empty()));
        }
        roles.replace("coreforge", &PostParams::default(), &role).await?;
        let controller = ControllerProcess::start(&ns).await?;
        // A CoreBuild to reconcile: its reconcile waits for the release cache.
        let digest = fixtures::DIGEST2;
        create::<CoreBuild>(&client, &ns, fixtures::local_core_build("debian", &ns, digest)).await?;
        let log = controller.log_path();
        support::eventually("the controller to log its failing ImageRelease watch", secs(60), secs(1), || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move { Ok(text.lines().any(|l| l.contains("imagereleases") && l.contains("forbidden")).then_some(())) }
        })
        .await?;
        let started = Instant::now();
        let status = controller.terminate().await?;
        let took = started.elapsed();
        ensure!(status.success(), "the controller exits cleanly: {status}");
        ensure!(took < secs(10), "the controller stopped {took:?} after SIGTERM");
        Ok(())
    })
    .await
}

/// A reconcile that never finishes (a failure point makes it hang, as a request without
/// timeout would) makes `/livez` fail once it has run past the stall threshold, naming
/// it, so the kubelet restarts the controller; until then, and on a healthy controller,
/// `/livez` is ok.
#[tokio::test]
async fn livez_fails_when_a_reconcile_is_wedged() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("wedged", |client, ns| async move {
        let addr = format!("127.0.0.1:{}", fixtures::free_port()?);
        let args = ["--http-addr", &addr, "--liveness-stall-after", "3s"];
        let _controller =
            ControllerProcess::start_as(&ns, &args, &[(coreforge::failpoint::ENV, "build-job-created=hang")]).await?;
        let livez = format!("http://{addr}/livez");
        support::eventually("the controller to serve /livez", secs(30), secs(1), || {
            let livez = livez.clone();
            async move { Ok(fixtures::http_get(&livez).await.ok().filter(|(code, _)| *code == 200)) }
        })
        .await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        create::<CoreBuild>(&client, &ns, fixtures::local_core_build("debian", &ns, &digest)).await?;
        create::<ImageRelease>(&client, &ns, fixtures::release("r", "debian", "12.7.0")).await?;
        let (_, body) = support::eventually("/livez to report the wedged reconcile", secs(60), secs(1), || {
            let livez = livez.clone();
            async move { Ok(fixtures::http_get(&livez).await.ok().filter(|(code, _)| *code == 503)) }
        })
        .await?;
        ensure!(body.contains(&format!("ImageRelease {ns}/r")) && body.contains("no progress"), "{body}");
        let (code, _) = fixtures::http_get(&format!("http://{addr}/readyz")).await?;
        ensure!(code == 200, "readiness is not liveness: /readyz answered {code}");
        Ok(())
    })
    .await
}

/// Someone deletes a published release's snapshot ConfigMap: the release says so, and
/// its lifecycle goes on (here: deprecated and retired on request).
#[tokio::test]
async fn a_release_whose_snapshot_is_deleted_goes_on_with_its_lifecycle_and_says_why() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("snapshot-gone", |client, ns| async move {
        let _controller = ControllerProcess::start(&ns).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        create::<CoreBuild>(&client, &ns, fixtures::local_core_build("debian", &ns, &digest)).await?;
        let mut r = fixtures::release("r", "debian", "12.7.0");
        r["spec"]["target"] = json!("Published");
        create::<ImageRelease>(&client, &ns, r).await?;
        wait_phase(&client, &ns, "r", Phase::Published).await?;

        let cms: Api<k8s_openapi::api::core::v1::ConfigMap> = Api::namespaced(client.clone(), &ns);
        cms.delete("r-a1-snapshot", &Default::default()).await?;
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        let ready_reason = |r: &ImageRelease| {
            r.status
                .as_ref()
                .and_then(|s| coreforge::api::find_condition(&s.conditions, "Ready"))
                .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
        };
        let said = support::wait_for(&irs, "r", "Ready to say the snapshot is gone", SETTLE, |r| {
            ready_reason(r).is_some_and(|(_, reason, _)| reason == "SnapshotMissing")
        })
        .await?;
        let (status, _, message) = ready_reason(&said).expect("Ready");
        ensure!(status == "True" && message.contains("r-a1-snapshot is gone"), "{message}");

        let patch = kube::api::Patch::Merge(json!({"spec": {"target": "Retired"}}));
        irs.patch("r", &kube::api::PatchParams::default(), &patch).await?;
        let retired = wait_phase(&client, &ns, "r", Phase::Retired).await?;
        let phases: Vec<_> = retired.status.iter().flat_map(|s| s.history.iter().map(|t| t.phase)).collect();
        ensure!(phases.ends_with(&[Phase::Published, Phase::Deprecated, Phase::Retired]), "{phases:?}");
        let events: Api<Event> = Api::namespaced(client.clone(), &ns);
        let list = events.list(&ListParams::default().fields("regarding.name=r")).await?;
        let warned = list.items.iter().filter(|e| e.reason.as_deref() == Some("SnapshotMissing")).count();
        ensure!(warned == 1, "one SnapshotMissing warning, found {warned}");
        Ok(())
    })
    .await
}
