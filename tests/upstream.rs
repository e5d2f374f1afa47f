//! Upstream moves, end to end on the local registry: a CoreBuild follows the tag its
//! pinned base comes from, the controller notices when the tag moves, and with
//! `refresh: Automatic` releases the product again on the new base (built, tested,
//! published, channels moved, `spec.base` moved). Advisories proven by contract checks,
//! and known issues in the release notes. Build and test pods are simulated by kwok.

mod fixtures;
mod support;

use std::time::Duration;

use anyhow::{Context, ensure};
use coreforge::api::{BaseState, BaseStatus, CoreBuild, ImageRelease, Phase};
use fixtures::{ControllerProcess, REGISTRY};
use k8s_openapi::api::events::v1::Event;
use kube::api::{ListParams, Patch, PatchParams};
use kube::{Api, Client, ResourceExt};
use serde_json::json;

const SETTLE: Duration = Duration::from_secs(120);
/// `baseTracking.interval` of the tests' CoreBuilds (the least the API accepts).
const INTERVAL: Duration = Duration::from_secs(10);
/// How long after one poll interval the controller may take to have asked and written
/// what it learnt: a reconcile and a status write.
const REACT: Duration = Duration::from_secs(20);

fn upstream(ns: &str) -> String {
    format!("{REGISTRY}/{ns}/upstream")
}

fn tag(ns: &str) -> String {
    format!("{}:12-slim", upstream(ns))
}

fn phase(r: &ImageRelease) -> Option<Phase> {
    r.status.as_ref().and_then(|s| s.phase)
}

fn base(cb: &CoreBuild) -> Option<&BaseStatus> {
    cb.status.as_ref().and_then(|s| s.base.as_ref())
}

fn base_condition(cb: &CoreBuild) -> Option<(String, String, String)> {
    let c = coreforge::api::find_condition(&cb.status.as_ref()?.conditions, "BaseCurrent")?;
    Some((c.status.clone(), c.reason.clone(), c.message.clone()))
}

async fn wait_core_build(
    client: &Client,
    ns: &str,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&CoreBuild) -> bool,
) -> anyhow::Result<CoreBuild> {
    let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), ns);
    support::wait_for(&cbs, "debian", what, timeout, cond).await
}

/// Pushes the upstream image under the tracked tag, and creates CoreBuild `debian` pinned
/// to it and tracking the tag with `refresh`; returns the upstream digest.
async fn tracked_core_build(client: &Client, ns: &str, refresh: &str) -> anyhow::Result<String> {
    let u0 = fixtures::push_tagged(&upstream(ns), "12-slim").await?;
    let staged = fixtures::seed_image(&fixtures::staging(ns)).await?;
    let mut cb = fixtures::local_core_build("debian", ns, &staged);
    cb["spec"]["base"] = json!(format!("{}@{u0}", upstream(ns)));
    cb["spec"]["baseTracking"] = json!({
        "tag": tag(ns), "interval": "10s", "refresh": refresh, "tls": {"insecure": true},
    });
    fixtures::create::<CoreBuild>(client, ns, cb).await?;
    Ok(u0)
}

/// Creates release 12.8.0 and waits until it is published and the base is current.
async fn first_release(client: &Client, ns: &str, u0: &str) -> anyhow::Result<()> {
    fixtures::create::<ImageRelease>(client, ns, fixtures::published_release("debian-12-8-0", "12.8.0")).await?;
    fixtures::wait_release(client, ns, "debian-12-8-0", "Published", SETTLE, |r| phase(r) == Some(Phase::Published))
        .await?;
    let cb = wait_core_build(client, ns, "the base to be current", INTERVAL + REACT, |cb| {
        base(cb).is_some_and(|b| b.state == BaseState::Current)
    })
    .await?;
    let (status, reason, message) = base_condition(&cb).context("no BaseCurrent condition")?;
    ensure!((status.as_str(), reason.as_str()) == ("True", "BaseCurrent"), "{reason}: {message}");
    ensure!(message.contains(u0), "{message}");
    Ok(())
}

async fn event_messages(client: &Client, ns: &str, name: &str, reason: &str) -> anyhow::Result<Vec<String>> {
    let events: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = events.list(&ListParams::default().fields(&format!("regarding.name={name}"))).await?;
    Ok(list.items.into_iter().filter(|e| e.reason.as_deref() == Some(reason)).filter_map(|e| e.note).collect())
}

/// The controller's `/metrics` at `addr`.
async fn scrape(addr: &str) -> anyhow::Result<String> {
    let (code, body) = fixtures::http_get(&format!("http://{addr}/metrics")).await?;
    ensure!(code == 200, "GET /metrics: {code}");
    Ok(body)
}

/// The series of metric `name` in `body` whose labels contain `containing`: the series as
/// exported (`name{label="value",…}`) and its value.
fn series<'a>(body: &'a str, name: &str, containing: &str) -> anyhow::Result<(&'a str, f64)> {
    let line = body
        .lines()
        .find(|l| l.starts_with(&format!("{name}{{")) && l.contains(containing))
        .with_context(|| format!("no {name} series with {containing} in:\n{body}"))?;
    let (labels, value) = line.rsplit_once(' ').context("series without value")?;
    Ok((labels, value.parse()?))
}

#[tokio::test]
async fn automatic_refresh_releases_the_product_again_on_the_moved_base() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("refresh-auto", |client, ns| async move {
        let controller = ControllerProcess::start(&ns).await?;
        let u0 = tracked_core_build(&client, &ns, "Automatic").await?;
        first_release(&client, &ns, &u0).await?;

        // What the refresh's (simulated) build reports: an image of its own in staging.
        let s1 = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"spec": {"builder": {"podAnnotations": {"sim.coreforge.dev/termination-message": fixtures::build_result(&s1)}}}});
        cbs.patch("debian", &PatchParams::default(), &Patch::Merge(patch)).await?;

        // Upstream moves.
        let u1 = fixtures::push_tagged(&upstream(&ns), "12-slim").await?;
        ensure!(u1 != u0);
        let cb = wait_core_build(&client, &ns, "the refresh to be recorded", INTERVAL + REACT, |cb| {
            base(cb).and_then(|b| b.refresh.as_ref()).is_some_and(|r| r.to_digest == u1)
        })
        .await?;
        let refresh = base(&cb).and_then(|b| b.refresh.clone()).context("refresh")?;
        ensure!(refresh.from_digest == u0 && refresh.version == "12.8.1", "{refresh:?}");
        let behind = event_messages(&client, &ns, "debian", "BaseBehind").await?;
        ensure!(behind.iter().any(|m| m.contains(&u0) && m.contains(&u1)), "BaseBehind events: {behind:?}");

        // The refresh release: the next patch, on the new base, owned by the CoreBuild.
        let name = format!("debian-base-{}", &u1[7..19]);
        ensure!(refresh.release == name, "{} != {name}", refresh.release);
        let r = fixtures::wait_release(&client, &ns, &name, "Published", SETTLE, |r| phase(r) == Some(Phase::Published))
            .await?;
        ensure!(r.spec.version == "12.8.1");
        ensure!(r.spec.base.as_deref() == Some(format!("{}@{u1}", upstream(&ns)).as_str()), "{:?}", r.spec.base);
        ensure!(r.labels().get("coreforge.dev/refresh").map(String::as_str) == Some("base"));
        let owner = r.owner_references().first().context("no owner")?;
        ensure!(owner.kind == "CoreBuild" && owner.name == "debian", "{owner:?}");
        let st = r.status.clone().context("status")?;
        let provenance = st.provenance.clone().context("provenance")?;
        ensure!(provenance.base_digest == u1, "built from {}", provenance.base_digest);
        ensure!(st.digest.as_deref() == Some(s1.as_str()), "{:?}", st.digest);
        let notes = st.release_notes.clone().unwrap_or_default();
        ensure!(notes.contains(&format!("`{u0}` → `{u1}` (since 12.8.0)")), "{notes}");
        ensure!(notes.contains(&format!("BASE-{}", &u1[7..19])) && notes.contains(&tag(&ns)), "{notes}");
        let created = event_messages(&client, &ns, "debian", "RefreshReleaseCreated").await?;
        ensure!(created.len() == 1 && created[0].contains(&name), "{created:?}");

        // Channels move to it, and the CoreBuild's base is the one it was built from.
        let cb = wait_core_build(&client, &ns, "channels on 12.8.1 and the base moved", SETTLE, |cb| {
            let channels: Vec<(&str, &str)> = cb
                .status
                .iter()
                .flat_map(|s| s.channels.iter().map(|c| (c.name.as_str(), c.version.as_str())))
                .collect();
            channels == [("12", "12.8.1"), ("latest", "12.8.1")]
                && cb.spec.base.ends_with(&u1)
                && base(cb).is_some_and(|b| b.state == BaseState::Current)
        })
        .await?;
        for channel in ["12", "latest"] {
            let digest = fixtures::registry_digest(REGISTRY, &format!("{ns}/core"), channel, None).await?;
            ensure!(digest.as_deref() == Some(s1.as_str()), "channel {channel} → {digest:?}");
        }
        ensure!(cb.spec.base == provenance.base, "spec.base {} is not the base 12.8.1 was built from", cb.spec.base);
        let moved_by = cb
            .managed_fields()
            .iter()
            .filter(|m| m.fields_v1.as_ref().is_some_and(|f| f.0.pointer("/f:spec/f:base").is_some()))
            .filter_map(|m| m.manager.clone())
            .collect::<Vec<_>>();
        ensure!(moved_by == ["coreforge-base-refresh"], "spec.base managed by {moved_by:?}");
        ensure!(base(&cb).and_then(|b| b.refresh.as_ref()).is_some_and(|r| r.base_moved_at.is_some()));
        let releases: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        let all = releases.list(&ListParams::default()).await?.items;
        ensure!(all.len() == 2, "one refresh, no more: {:?}", all.iter().map(|r| r.name_any()).collect::<Vec<_>>());

        // Polling cost: one conditional request per interval, answered 304 while the
        // tag stays where it is (from the registry's own log).
        let since = jiff::Timestamp::now();
        let reference = "12-slim";
        let polls = support::eventually("three more polls of the tag", INTERVAL * 4 + REACT, Duration::from_secs(1), || async {
            let polls: Vec<fixtures::ManifestRequest> = fixtures::registry_manifest_requests(&format!("{ns}/upstream"))?
                .into_iter()
                .filter(|r| r.at > since && r.reference == reference && r.user_agent.starts_with("coreforge/"))
                .collect();
            Ok((polls.len() >= 3).then_some(polls))
        })
        .await?;
        let gaps: Vec<f64> = polls.windows(2).map(|w| (w[1].at - w[0].at).total(jiff::Unit::Second).unwrap_or(0.0)).collect();
        println!("polls of {reference} after {since}: {:?}; gaps (s): {gaps:?}", polls.iter().map(|p| (p.method.as_str(), p.status)).collect::<Vec<_>>());
        ensure!(polls.iter().all(|p| p.method == "GET" && p.status == 304), "not all conditional: {polls:?}");
        // The schedule is computed from the last question's time in status, which the API
        // keeps in whole seconds: a gap may be up to a second short of the interval.
        ensure!(gaps.iter().all(|g| *g >= INTERVAL.as_secs_f64() - 1.5), "more than one request per interval: {gaps:?}");
        drop(controller);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn manual_tracking_reports_the_moved_base_creates_nothing_and_feeds_the_alert() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("refresh-manual", |client, ns| async move {
        let addr = format!("127.0.0.1:{}", fixtures::free_port()?);
        let _controller = ControllerProcess::start_with(&ns, &["--http-addr", &addr]).await?;
        let u0 = tracked_core_build(&client, &ns, "Manual").await?;
        first_release(&client, &ns, &u0).await?;

        let u1 = fixtures::push_tagged(&upstream(&ns), "12-slim").await?;
        let cb = wait_core_build(&client, &ns, "BaseBehind", INTERVAL + REACT, |cb| {
            base_condition(cb).is_some_and(|(_, reason, _)| reason == "BaseBehind")
        })
        .await?;
        let (status, _, message) = base_condition(&cb).context("condition")?;
        ensure!(status == "False" && message.contains(&u0) && message.contains(&u1), "{message}");
        let b = base(&cb).cloned().context("status.base")?;
        ensure!(b.pinned_digest == u0 && b.latest_digest.as_deref() == Some(u1.as_str()), "{b:?}");
        let since = b.behind_since.clone().context("behindSince")?;

        // It asks again, and still creates nothing: a person moves the base.
        let checked = b.checked_at.clone().context("checkedAt")?;
        let cb = wait_core_build(&client, &ns, "another question", INTERVAL + REACT, |cb| {
            base(cb).and_then(|b| b.checked_at.as_ref()).is_some_and(|at| at.0 > checked.0)
        })
        .await?;
        ensure!(base(&cb).and_then(|b| b.behind_since.clone()) == Some(since.clone()), "behind since moved");
        ensure!(cb.spec.base.ends_with(&u0), "spec.base moved: {}", cb.spec.base);
        let releases: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        let all = releases.list(&ListParams::default()).await?.items;
        ensure!(all.len() == 1, "Manual created releases: {:?}", all.iter().map(|r| r.name_any()).collect::<Vec<_>>());

        // The metric the alert reads, as the controller exports it.
        let body = scrape(&addr).await?;
        let (labels, value) = series(&body, "coreforge_base_behind_since_timestamp_seconds", &ns)?;
        ensure!(value == since.0.as_second() as f64, "{labels} {value} vs {since:?}");
        ensure!(body.lines().any(|l| l.starts_with("coreforge_base_tracking{")
            && l.contains(&ns)
            && l.contains("state=\"Behind\"")
            && l.ends_with(" 1")));

        // The alert's rule, fed that series as if the CoreBuild fell behind at time 0:
        // quiet at 6 days 23 hours, firing at 7 days 1 hour, with the series' labels.
        let out = fixtures::promtool_alert_test(
            "CoreforgeBaseBehind",
            labels,
            0.0,
            &[(167 * 3600, false), (169 * 3600, true)],
        )
        .await?;
        ensure!(out.contains("SUCCESS"), "{out}");

        // The person moves spec.base: current again, still nothing created by the controller.
        let patch = json!({"spec": {"base": format!("{}@{u1}", upstream(&ns))}});
        Api::<CoreBuild>::namespaced(client.clone(), &ns)
            .patch("debian", &PatchParams::default(), &Patch::Merge(patch))
            .await?;
        wait_core_build(&client, &ns, "the base to be current again", REACT, |cb| {
            base(cb).is_some_and(|b| b.state == BaseState::Current && b.behind_since.is_none())
        })
        .await?;
        ensure!(releases.list(&ListParams::default()).await?.items.len() == 1);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_refresh_that_breaks_the_contract_stays_failed_and_the_alert_says_so() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("refresh-broken", |client, ns| async move {
        let addr = format!("127.0.0.1:{}", fixtures::free_port()?);
        let _controller = ControllerProcess::start_with(&ns, &["--http-addr", &addr]).await?;
        let u0 = tracked_core_build(&client, &ns, "Automatic").await?;
        first_release(&client, &ns, &u0).await?;

        // The new upstream image breaks a promise: check `tls` fails in what is built on it.
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"spec": {"tester": {"podAnnotations": {"sim.coreforge.dev/termination-message": fixtures::test_report(false)}}}});
        cbs.patch("debian", &PatchParams::default(), &Patch::Merge(patch)).await?;
        let u1 = fixtures::push_tagged(&upstream(&ns), "12-slim").await?;
        let name = format!("debian-base-{}", &u1[7..19]);
        let r = fixtures::wait_release(&client, &ns, &name, "Failed", INTERVAL + SETTLE, |r| phase(r) == Some(Phase::Failed))
            .await?;
        ensure!(fixtures::release_condition(&r, "Tested").is_some_and(|c| c.1 == "ContractBroken"), "{:?}", r.status);

        // The base stays, and the CoreBuild says why.
        let cb = wait_core_build(&client, &ns, "the failure in BaseCurrent", REACT, |cb| {
            base_condition(cb).is_some_and(|(_, _, m)| m.contains("failed, so spec.base stays"))
        })
        .await?;
        let (status, reason, message) = base_condition(&cb).context("condition")?;
        ensure!((status.as_str(), reason.as_str()) == ("False", "BaseBehind"), "{reason}: {message}");
        ensure!(message.contains(&name) && message.contains("check:tls"), "{message}");
        ensure!(cb.spec.base.ends_with(&u0), "spec.base moved to a base that broke the contract: {}", cb.spec.base);
        ensure!(fixtures::registry_digest(REGISTRY, &format!("{ns}/core"), "12.8.1", None).await?.is_none(), "published");

        // The series the alert reads, and the alert's rule fed with it: quiet at 4 minutes,
        // firing from 5.
        let body = scrape(&addr).await?;
        let (labels, value) = series(&body, "coreforge_base_refresh_failed", &name)?;
        ensure!(value == 1.0, "{labels} {value}");
        let out = fixtures::promtool_alert_test("CoreforgeBaseRefreshFailed", labels, 1.0, &[(4 * 60, false), (6 * 60, true)])
            .await?;
        ensure!(out.contains("SUCCESS"), "{out}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn advisories_are_proven_by_contract_checks_and_known_issues_reach_the_notes() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("proven", |client, ns| async move {
        let _controller = ControllerProcess::start(&ns).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        fixtures::create::<CoreBuild>(&client, &ns, fixtures::local_core_build("debian", &ns, &digest)).await?;

        // 12.8.0 ships with a known issue; 12.9.0 closes it with a fix its check proves,
        // and has a known issue of its own.
        let mut first = fixtures::published_release("debian-12-8-0", "12.8.0");
        first["spec"]["knownIssues"] = json!([{"id": "CFKI-1", "summary": "no trust store", "workaround": "mount one"}]);
        fixtures::create::<ImageRelease>(&client, &ns, first).await?;
        let r = fixtures::wait_release(&client, &ns, "debian-12-8-0", "Published", SETTLE, |r| phase(r) == Some(Phase::Published)).await?;
        let notes = r.status.and_then(|s| s.release_notes).unwrap_or_default();
        ensure!(notes.contains("## Known issues\n\n- **CFKI-1**: no trust store\n  - workaround: mount one"), "{notes}");
        ensure!(fixtures::registry_digest(REGISTRY, &format!("{ns}/core"), "12.8.0", None).await?.is_some(), "12.8.0 not in the catalog");

        let mut second = fixtures::published_release("debian-12-9-0", "12.9.0");
        second["spec"]["advisories"] = json!([{"id": "CFBA-2026-9", "type": "Bugfix", "summary": "trust store restored", "resolvedBy": ["tls"], "closes": ["CFKI-1"]}]);
        second["spec"]["knownIssues"] = json!([{"id": "CFKI-2", "summary": "slow DNS lookups", "link": "https://issues.example/CFKI-2"}]);
        fixtures::create::<ImageRelease>(&client, &ns, second).await?;
        let r = fixtures::wait_release(&client, &ns, "debian-12-9-0", "Published", SETTLE, |r| phase(r) == Some(Phase::Published)).await?;
        let (status, reason, message) = fixtures::release_condition(&r, "AdvisoriesProven").context("no AdvisoriesProven")?;
        ensure!((status.as_str(), reason.as_str(), message.as_str()) == ("True", "Proven", "proven: CFBA-2026-9 by check tls"));
        let notes = r.status.and_then(|s| s.release_notes).unwrap_or_default();
        for want in [
            "- **CFBA-2026-9**: trust store restored\n  - proven by check `tls`: passed\n  - closes known issue CFKI-1 of 12.8.0",
            "- **CFKI-2**: slow DNS lookups (https://issues.example/CFKI-2)",
        ] {
            ensure!(notes.contains(want), "notes lack {want:?}:\n{notes}");
        }

        // From now on check `tls` fails in this CoreBuild's images.
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        let patch = json!({"spec": {"tester": {"podAnnotations": {"sim.coreforge.dev/termination-message": fixtures::test_report(false)}}}});
        cbs.patch("debian", &PatchParams::default(), &Patch::Merge(patch)).await?;

        // A Bugfix proven by the failing check: never published, both names in the message.
        let mut fix = fixtures::published_release("fix", "12.9.1");
        fix["spec"]["advisories"] = json!([{"id": "CFBA-2026-10", "type": "Bugfix", "summary": "trust store kept", "resolvedBy": ["tls"]}]);
        fixtures::create::<ImageRelease>(&client, &ns, fix).await?;
        let r = fixtures::wait_release(&client, &ns, "fix", "Failed", SETTLE, |r| phase(r) == Some(Phase::Failed)).await?;
        let (status, reason, message) = fixtures::release_condition(&r, "AdvisoriesProven").context("no AdvisoriesProven")?;
        ensure!((status.as_str(), reason.as_str()) == ("False", "ProvingCheckFailed"), "{reason}: {message}");
        ensure!(message.contains("advisory CFBA-2026-10 (Bugfix) is not proven: its check tls failed"), "{message}");
        let (_, _, ready) = fixtures::release_condition(&r, "Ready").context("Ready")?;
        ensure!(ready.contains("CFBA-2026-10") && ready.contains("check tls"), "{ready}");
        ensure!(fixtures::registry_digest(REGISTRY, &format!("{ns}/core"), "12.9.1", None).await?.is_none(), "12.9.1 was published");

        // An advisory naming a check the contract does not have: refused before any build.
        let mut typo = fixtures::published_release("typo", "12.9.2");
        typo["spec"]["advisories"] = json!([{"id": "CFBA-2026-11", "type": "Security", "summary": "x", "resolvedBy": ["tsl"]}]);
        fixtures::create::<ImageRelease>(&client, &ns, typo).await?;
        let r = fixtures::wait_release(&client, &ns, "typo", "Failed", SETTLE, |r| phase(r) == Some(Phase::Failed)).await?;
        let (_, reason, message) = fixtures::release_condition(&r, "AdvisoriesProven").context("no AdvisoriesProven")?;
        ensure!(reason == "UnknownCheck", "{reason}: {message}");
        ensure!(message.contains("advisory CFBA-2026-11 names check tsl") && message.contains("its checks: shell, tls"), "{message}");
        let jobs = fixtures::job_names(&client, &ns).await?;
        ensure!(!jobs.iter().any(|j| j.starts_with("typo-")), "a Job was made for it: {jobs:?}");
        Ok(())
    })
    .await
}
