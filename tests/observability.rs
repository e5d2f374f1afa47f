//! Observability end to end: the controller's /livez, /readyz and /metrics, scraped by a
//! real Prometheus, queried through its HTTP API after one release publishes and another
//! fails.

mod fixtures;
mod support;

use std::time::Duration;

use anyhow::ensure;
use coreforge::api::{CoreBuild, ImageRelease, Phase};
use fixtures::ScrapedController;
use kube::Api;
use kube::api::PostParams;
use serde_json::json;

#[tokio::test]
async fn readyz_waits_for_the_caches_and_livez_answers_meanwhile() -> anyhow::Result<()> {
    support::ensure_cluster().await?;
    // A controller whose API server never answers: its watches can never sync.
    let dir = support::test_logs();
    std::fs::create_dir_all(&dir)?;
    let kubeconfig = dir.join("unreachable.kubeconfig");
    let text = std::fs::read_to_string(support::kubeconfig_path())?;
    let port = fixtures::free_port()?;
    let text = text
        .lines()
        .map(|l| {
            if l.trim_start().starts_with("server:") {
                format!("    server: https://127.0.0.1:{port}")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(&kubeconfig, text)?;
    let addr = format!("127.0.0.1:{}", fixtures::free_port()?);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coreforge"))
        .args(["controller", "--http-addr", &addr])
        .env("KUBECONFIG", &kubeconfig)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let live = support::eventually("/livez to answer", support::secs(30), Duration::from_millis(200), || {
        let url = format!("http://{addr}/livez");
        async move { Ok(fixtures::http_get(&url).await.ok().filter(|(c, _)| *c == 200)) }
    })
    .await?;
    ensure!(live.1 == "ok\n");
    // Several seconds of retries later, it is still alive and still not ready.
    for _ in 0..5 {
        let (code, body) = fixtures::http_get(&format!("http://{addr}/readyz")).await?;
        ensure!(code == 503 && body == "caches not synced\n", "{code} {body}");
        ensure!(fixtures::http_get(&format!("http://{addr}/livez")).await?.0 == 200);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    child.kill().await?;

    // Against the real API server it becomes ready.
    fixtures::install_crds().await?;
    support::with_namespace("readyz", |_client, ns| async move {
        let c = ScrapedController::start(&ns).await?;
        let url = format!("http://{}/readyz", c.addr);
        support::eventually("/readyz to turn ready", support::secs(30), Duration::from_millis(200), || {
            let url = url.clone();
            async move { Ok(fixtures::http_get(&url).await.ok().filter(|(c, _)| *c == 200)) }
        })
        .await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn prometheus_sees_a_publication_and_a_failed_build() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("prometheus", |client, ns| async move {
        let c = ScrapedController::start(&ns).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        cbs.create(&PostParams::default(), &serde_json::from_value(fixtures::local_core_build("good", &ns, &digest))?).await?;
        let mut broken = fixtures::local_core_build("broken", &ns, &digest);
        broken["spec"]["builder"]["podAnnotations"]["sim.coreforge.dev/exit-code"] = json!("2");
        cbs.create(&PostParams::default(), &serde_json::from_value(broken)?).await?;
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        let mut ok = fixtures::release("good-1-0-0", "good", "1.0.0");
        ok["spec"]["target"] = json!("Published");
        ok["spec"]["supportEndsAt"] = json!("2099-01-01T00:00:00Z");
        irs.create(&PostParams::default(), &serde_json::from_value(ok)?).await?;
        irs.create(&PostParams::default(), &serde_json::from_value(fixtures::release("broken-1-0-0", "broken", "1.0.0"))?).await?;
        for (name, phase) in [("good-1-0-0", Phase::Published), ("broken-1-0-0", Phase::Failed)] {
            support::wait_for(&irs, name, &format!("{name} {phase}"), support::secs(120), |r| {
                r.status.as_ref().and_then(|s| s.phase) == Some(phase)
            })
            .await?;
        }

        // The controller's own endpoint has the series…
        let (code, text) = fixtures::http_get(&format!("http://{}/metrics", c.addr)).await?;
        ensure!(code == 200 && text.contains("coreforge_info{"), "{code}");

        // …and Prometheus scraped them.
        let instance = format!("instance=\"{}\"", c.addr);
        let expectations = [
            (format!("coreforge_releases{{{instance},namespace=\"{ns}\",corebuild=\"good\",phase=\"Published\"}}"), 1.0),
            (format!("coreforge_releases{{{instance},namespace=\"{ns}\",corebuild=\"broken\",phase=\"Failed\"}}"), 1.0),
            (format!("coreforge_step_outcomes_total{{{instance},corebuild=\"broken\",step=\"build\",outcome=\"failed\"}}"), 1.0),
            (format!("coreforge_step_outcomes_total{{{instance},corebuild=\"good\",step=\"test\",outcome=\"succeeded\"}}"), 1.0),
            (format!("coreforge_phase_transitions_total{{{instance},from=\"Verified\",to=\"Published\"}}"), 1.0),
            (format!("count(coreforge_release_time_to_publish_seconds_count{{{instance},corebuild=\"good\"}})"), 1.0),
            (format!("coreforge_release_time_to_publish_seconds_count{{{instance},corebuild=\"good\"}}"), 1.0),
            (format!("coreforge_release_support_remaining_seconds{{{instance},release=\"good-1-0-0\",newest=\"true\"}} > 86400 * 365"), 1.0),
            (format!("sum(coreforge_registry_requests_total{{{instance},operation=\"put_manifest\",outcome=\"ok\"}}) > 0"), 1.0),
            (format!("coreforge_leader{{{instance}}}"), 1.0),
            (format!("up{{job=\"coreforge\",{instance}}}"), 1.0),
        ];
        for (query, want) in expectations {
            support::eventually(&format!("Prometheus to answer {query} with {want}"), support::secs(60), Duration::from_secs(1), || {
                let query = query.clone();
                async move {
                    let result = fixtures::prometheus_query(&query).await?;
                    Ok(match result.as_slice() {
                        [(_, v)] if (*v - want).abs() < 1e-9 || (query.contains(" > ") && v.is_finite()) => Some(()),
                        _ => None,
                    })
                }
            })
            .await?;
        }
        // The alert rules are loaded and the failed release is on its way to paging.
        support::eventually("CoreforgeReleaseFailed to be pending", support::secs(60), Duration::from_secs(1), || {
            let query = format!("ALERTS{{alertname=\"CoreforgeReleaseFailed\",namespace=\"{ns}\",corebuild=\"broken\"}}");
            async move { Ok((!fixtures::prometheus_query(&query).await?.is_empty()).then_some(())) }
        })
        .await?;
        Ok(())
    })
    .await
}
