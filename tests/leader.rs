//! Leader election with two controller processes on the real API server: only the leader
//! writes; when it is killed, the follower takes over and the in-flight release completes
//! exactly once; when it is paused past its lease, it writes nothing once the follower
//! has taken over, and exits; when it is stopped, it gives the Lease up first.

mod fixtures;
mod support;

use std::time::{Duration, Instant};

use anyhow::ensure;
use coreforge::api::{CoreBuild, ImageRelease, Phase};
use fixtures::ControllerProcess;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{ListParams, PostParams};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(6);

async fn start(ns: &str, identity: &str) -> anyhow::Result<(ControllerProcess, String)> {
    let addr = format!("127.0.0.1:{}", fixtures::free_port()?);
    let args = ["--http-addr", &addr, "--leader-elect", "--lease-namespace", ns, "--lease-duration", "6s"];
    let c = ControllerProcess::start_as(ns, &args, &[("POD_NAME", identity)]).await?;
    Ok((c, addr))
}

async fn readyz(addr: &str, want: &str, timeout: Duration) -> anyhow::Result<()> {
    support::eventually(&format!("{addr}/readyz to say {want:?}"), timeout, Duration::from_millis(200), || {
        let url = format!("http://{addr}/readyz");
        async move { Ok(fixtures::http_get(&url).await.ok().filter(|(c, b)| *c == 200 && b == want).map(|_| ())) }
    })
    .await
}

/// Leader `leader-a`, then follower `leader-b`, each ready as such: the controllers and
/// their HTTP addresses.
async fn leader_and_follower(ns: &str) -> anyhow::Result<(ControllerProcess, String, ControllerProcess, String)> {
    let (a, a_addr) = start(ns, "leader-a").await?;
    readyz(&a_addr, "ok\n", support::secs(30)).await?;
    let (b, b_addr) = start(ns, "leader-b").await?;
    readyz(&b_addr, "ok: follower\n", support::secs(30)).await?;
    Ok((a, a_addr, b, b_addr))
}

/// A CoreBuild whose builds run `run_seconds`, and release `r` of it, waited for until its
/// build Job runs.
async fn a_build_running(client: &kube::Client, ns: &str, run_seconds: u32) -> anyhow::Result<()> {
    let digest = fixtures::seed_image(&fixtures::staging(ns)).await?;
    let mut cb = fixtures::local_core_build("debian", ns, &digest);
    cb["spec"]["builder"]["podAnnotations"]["sim.coreforge.dev/run-seconds"] = json!(run_seconds.to_string());
    let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), ns);
    cbs.create(&PostParams::default(), &serde_json::from_value(cb)?).await?;
    let irs: Api<ImageRelease> = Api::namespaced(client.clone(), ns);
    irs.create(&PostParams::default(), &serde_json::from_value(fixtures::release("r", "debian", "12.7.0"))?).await?;
    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    support::wait_for(&jobs, "r-a1-build", "the build Job to run", support::secs(60), |j| {
        j.status.as_ref().and_then(|s| s.active).unwrap_or(0) > 0
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_follower_takes_over_from_a_killed_leader_and_the_release_completes_once() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("leader", |client, ns| async move {
        let (a, _, _b, b_addr) = leader_and_follower(&ns).await?;
        let (_, metrics) = fixtures::http_get(&format!("http://{b_addr}/metrics")).await?;
        ensure!(metrics.contains("coreforge_leader 0"), "the follower says it does not lead");
        a_build_running(&client, &ns, 10).await?;
        // The follower serves the consumers' catalog too (read through the API server).
        let (code, body) = fixtures::http_get(&format!("http://{b_addr}/api/v1/catalog/{ns}")).await?;
        let catalog: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
        ensure!(
            code == 200 && catalog["products"][0]["releases"][0]["name"] == "r",
            "the follower's catalog: {code} {body}"
        );
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);

        a.kill().await?;
        let killed = Instant::now();
        readyz(&b_addr, "ok\n", LEASE * 3).await?;
        let takeover = killed.elapsed();
        // The follower waits out one lease duration from the leader's last renewal.
        ensure!(takeover <= LEASE * 2, "took over after {takeover:?}");

        support::wait_for(&irs, "r", "Verified under the new leader", support::secs(120), |r| {
            r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Verified)
        })
        .await?;
        let names = fixtures::job_names(&client, &ns).await?;
        ensure!(names == ["r-a1-build", "r-a1-test"], "exactly one build and one test Job: {names:?}");

        // Only one writer at a time: A's writes all come before B's first (leases aside).
        let writes: Vec<String> =
            fixtures::controller_writes(&ns)?.into_iter().filter(|w| !w.contains(" leases/")).collect();
        let first_b = writes.iter().position(|w| w.contains("(leader-b)")).expect("B wrote after taking over");
        let last_a = writes.iter().rposition(|w| w.contains("(leader-a)")).expect("A wrote while it led");
        ensure!(last_a < first_b, "writes interleave:\n{}", writes.join("\n"));
        Ok(())
    })
    .await
}

/// A leader that is stopped (SIGTERM, as in a rollout or a drain) gives the Lease up once
/// its controllers have stopped: when it has exited the Lease no longer names it, and the
/// follower leads without waiting out a lease duration.
#[tokio::test]
async fn a_stopped_leader_gives_the_lease_up_for_the_follower() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("leader-stop", |client, ns| async move {
        let (a, _, _b, b_addr) = leader_and_follower(&ns).await?;
        let log = a.log_path();
        let status = a.terminate().await?;
        ensure!(status.success(), "the stopped leader exited with {status}");
        let log = std::fs::read_to_string(log)?;
        ensure!(log.contains("released the lease"), "the stopped leader's log:\n{log}");
        let leases: Api<Lease> = Api::namespaced(client.clone(), &ns);
        let holder = leases.get("coreforge").await?.spec.and_then(|s| s.holder_identity);
        ensure!(holder.as_deref() != Some("leader-a"), "the Lease still names the stopped leader: {holder:?}");
        readyz(&b_addr, "ok\n", support::secs(30)).await?;
        Ok(())
    })
    .await
}

/// A leader frozen (SIGSTOP) past its lease while it had work in flight: the follower
/// takes over and finishes the work; when the old leader runs again, its renew deadline
/// has passed, so it writes nothing (the audit log shows none of its writes after the
/// new leader's first) and exits to start again as a follower.
#[tokio::test]
async fn a_leader_paused_past_its_lease_writes_nothing_after_the_new_leader_starts() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("leader-pause", |client, ns| async move {
        let (a, _, _b, b_addr) = leader_and_follower(&ns).await?;
        a_build_running(&client, &ns, 8).await?;
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);

        // Frozen with a build running; more work arrives while it is.
        a.signal("STOP")?;
        irs.create(&PostParams::default(), &serde_json::from_value(fixtures::release("r2", "debian", "12.8.0"))?)
            .await?;
        readyz(&b_addr, "ok\n", LEASE * 3).await?;
        for name in ["r", "r2"] {
            support::wait_for(&irs, name, "Verified under the new leader", support::secs(120), |r| {
                r.status.as_ref().and_then(|s| s.phase) == Some(Phase::Verified)
            })
            .await?;
        }

        // Running again, it finds its deadline passed, and exits without writing.
        a.signal("CONT")?;
        let status = a.exited(support::secs(30)).await?;
        ensure!(!status.success(), "the old leader exits with an error, to restart as a follower: {status}");
        let writes: Vec<String> =
            fixtures::controller_writes(&ns)?.into_iter().filter(|w| !w.contains(" leases/")).collect();
        let first_b = writes.iter().position(|w| w.contains("(leader-b)")).expect("B wrote after taking over");
        ensure!(
            writes[..first_b].iter().any(|w| w.contains("(leader-a)")),
            "A wrote while it led:\n{}",
            writes.join("\n")
        );
        let late: Vec<_> = writes[first_b..].iter().filter(|w| w.contains("(leader-a)")).collect();
        ensure!(late.is_empty(), "the paused leader wrote after the new leader's first write:\n{}", writes.join("\n"));
        let names = fixtures::job_names(&client, &ns).await?;
        ensure!(names == ["r-a1-build", "r-a1-test", "r2-a1-build", "r2-a1-test"], "one Job per kind: {names:?}");
        Ok(())
    })
    .await
}

/// The fence every write of the controller's client passes: closed (no lease, or a lease
/// not renewed in time) it refuses writes before they leave, and lets reads through.
#[tokio::test]
async fn writes_pass_the_fence_only_while_it_is_open() -> anyhow::Result<()> {
    support::with_namespace("fence", |_client, ns| async move {
        use coreforge::fence::Fence;
        use k8s_openapi::api::core::v1::ConfigMap;
        let fence = Fence::closed();
        let client = coreforge::kubeclient::build(support::config().await?, 50, 100, fence.clone())?;
        let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
        let cm = |name: &str| -> anyhow::Result<ConfigMap> {
            Ok(serde_json::from_value(json!({"metadata": {"name": name}, "data": {"k": "v"}}))?)
        };
        let refused = cms.create(&PostParams::default(), &cm("while-closed")?).await.expect_err("fenced");
        ensure!(refused.to_string().contains("could not renew its leader lease"), "{refused}");
        let listed = cms.list(&ListParams::default()).await?.items;
        ensure!(listed.iter().all(|c| c.metadata.name.as_deref() != Some("while-closed")), "reads pass; no write");
        fence.extend(Instant::now() + Duration::from_secs(60));
        cms.create(&PostParams::default(), &cm("while-open")?).await?;
        fence.extend(Instant::now() - Duration::from_millis(1));
        ensure!(cms.create(&PostParams::default(), &cm("after-the-deadline")?).await.is_err(), "fenced again");
        let names: Vec<_> =
            cms.list(&ListParams::default()).await?.items.into_iter().filter_map(|c| c.metadata.name).collect();
        ensure!(names.contains(&"while-open".to_string()), "{names:?}");
        ensure!(!names.iter().any(|n| n == "while-closed" || n == "after-the-deadline"), "{names:?}");
        Ok(())
    })
    .await
}
