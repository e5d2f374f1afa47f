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
    let irs: Api<ImageRelease> = Api::namespaced(client.clone(), ns);
    support::wait_for(&irs, name, &format!("release {name} to be {phase}"), SETTLE, |r| {
        r.status.as_ref().and_then(|s| s.phase) == Some(phase)
    })
    .await
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
