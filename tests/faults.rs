//! The fault suite on the local environment: the API server restarted mid-flight after
//! an etcd compaction (the controller's watches expire and must list again), and a registry behind a fault
//! proxy that answers 503, resets connections and is slow.
//! (The paused leader is in `tests/leader.rs`.)
//!
//! The API server restart disturbs every test running at the time, so the tests of this
//! file take turns.

mod fixtures;
mod support;

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use coreforge::api::{CoreBuild, ImageRelease, Phase};
use fixtures::{ControllerProcess, REGISTRY};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::PostParams;
use kube::{Api, Client};
use serde_json::json;
use support::secs;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;

const SETTLE: Duration = Duration::from_secs(180);

/// One fault test at a time.
static TURN: Mutex<()> = Mutex::const_new(());

async fn wait_phase(client: &Client, ns: &str, name: &str, phase: Phase) -> anyhow::Result<ImageRelease> {
    fixtures::wait_phase(client, ns, name, phase, SETTLE).await
}

/// Kills `component` (SIGKILL, as a crash) and starts it again after `down_seconds`.
async fn restart(component: &str, down_seconds: u32) -> anyhow::Result<()> {
    let script = support::repo_root().join("tests/cluster/restart.sh");
    let mut cmd = tokio::process::Command::new(script);
    cmd.args([component, &down_seconds.to_string()]).env("COREFORGE_STOP_GRACE", "0");
    support::run(&mut cmd).await?;
    Ok(())
}

/// The API server crashes while the controller is publishing a release (through a slow
/// registry) and comes back a few seconds later: the controller's watches fail, then
/// resume (from a watch cache that starts anew, so with 410 Gone and a new list) or
/// list again. The publication completes and its status is written; a release created
/// after the restart gets its status too. (Only the controller's own work is in flight:
/// the Job controller and the simulated kubelet recover on client-go's schedule, which is
/// not what this proves.)
#[tokio::test]
async fn the_api_server_restarted_mid_flight_with_expired_watches() -> anyhow::Result<()> {
    let _turn = TURN.lock().await;
    fixtures::install_crds().await?;
    support::with_namespace("apiserver-restart", |client, ns| async move {
        let proxy = FaultProxy::start(REGISTRY).await?;
        let controller = ControllerProcess::start(&ns).await?;
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let cb = proxy.core_build(&ns, &digest);
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        cbs.create(&PostParams::default(), &serde_json::from_value(cb)?).await?;
        fixtures::create_release(&client, &ns, "r1", "12.7.0", "Verified").await?;
        wait_phase(&client, &ns, "r1", Phase::Verified).await?;

        // Publishing through a registry that takes 3 s a connection…
        proxy.arm(|f| f.delay = Duration::from_secs(3));
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        let publish = kube::api::Patch::Merge(json!({"spec": {"target": "Published"}}));
        irs.patch("r1", &kube::api::PatchParams::default(), &publish).await?;
        tokio::time::sleep(Duration::from_secs(1)).await;
        // …when etcd's history is compacted (every resourceVersion the controller holds
        // is gone), and the API server crashes, and comes back.
        compact_etcd().await?;
        restart("kube-apiserver", 2).await?;
        proxy.arm(|f| f.delay = Duration::ZERO);

        // A fresh client: the old one's connections went with the old API server.
        let client = support::try_client().await?;
        wait_phase(&client, &ns, "r1", Phase::Published).await?;
        let mut r2 = fixtures::release("r2", "absent", "1.0.0");
        r2["spec"]["target"] = json!("Verified");
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        irs.create(&PostParams::default(), &serde_json::from_value(r2)?).await?;
        // Within a minute: every watch resumes on its own backoff (at most 5 s). The
        // runtime's default paused all of them on each one's 410 in turn, and this
        // took up to three minutes.
        support::wait_for(&irs, "r2", "r2 to wait for its CoreBuild", secs(60), |r| {
            r.status.as_ref().is_some_and(|s| {
                coreforge::api::find_condition(&s.conditions, "Reconciling")
                    .is_some_and(|c| c.reason == "CoreBuildNotFound")
            })
        })
        .await?;
        let tag = fixtures::registry_digest(REGISTRY, &format!("{ns}/core"), "12.7.0", None).await?;
        ensure!(tag.as_deref() == Some(digest.as_str()), "12.7.0 resolves to {tag:?}");
        let names = fixtures::job_names(&client, &ns).await?;
        ensure!(names == ["r1-a1-build", "r1-a1-test"], "one Job per kind: {names:?}");
        // It happened as intended: the watches failed while the API server was away, and
        // resumed from a watch cache that started anew, with 410 Gone and a new list.
        let log = controller.log_text();
        ensure!(
            log.lines().any(|l| l.contains("a watch of releases or their children failed")),
            "no failed watch in the controller's log ({})",
            controller.log_path().display()
        );
        ensure!(
            log.lines().any(|l| l.contains("too old resource version")),
            "no watch met 410 Gone ({})",
            controller.log_path().display()
        );
        cluster_recovered(&client).await
    })
    .await
}

/// Compacts etcd's history up to its current revision.
async fn compact_etcd() -> anyhow::Result<()> {
    let dir = support::cluster_dir();
    let ports = std::fs::read_to_string(dir.join("ports.env"))?;
    let port = ports.lines().find_map(|l| l.strip_prefix("ETCD_PORT=")).context("ports.env names no ETCD_PORT")?;
    let endpoint = format!("--endpoints=http://127.0.0.1:{port}");
    let etcdctl = || tokio::process::Command::new(dir.join("bin/etcdctl"));
    let status = support::run(etcdctl().args([endpoint.as_str(), "endpoint", "status", "-w", "json"])).await?;
    let status: serde_json::Value = serde_json::from_str(&status)?;
    let revision = status[0]["Status"]["header"]["revision"].as_i64().context("etcd reports no revision")?;
    support::run(etcdctl().args([endpoint.as_str(), "compact", &revision.to_string()])).await?;
    Ok(())
}

/// Makes the rest of the cluster work again after an API server restart, for the tests
/// that come next. The client-go components meet the restarted server's first 403s (sent
/// before its RBAC caches filled) and back off on client-go's schedule: the
/// kube-controller-manager took a minute and a half to create a new namespace's
/// ServiceAccount. Restarted, it and the scheduler list at once (kwok is not restarted:
/// a new kwok waits out its predecessor's node leases, 40 s). Then a new namespace gets
/// its default ServiceAccount, and a Job its simulated pod, run to completion.
async fn cluster_recovered(client: &Client) -> anyhow::Result<()> {
    for component in ["kube-controller-manager", "kube-scheduler"] {
        restart(component, 0).await?;
    }
    let name = support::unique_namespace_name("after-restart");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace = json!({"metadata": {"name": name, "labels": {support::TEST_NAMESPACE_LABEL: "true"}}});
    namespaces.create(&PostParams::default(), &serde_json::from_value(namespace)?).await?;
    let started = std::time::Instant::now();
    let recovered = async {
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
        support::wait_for(&accounts, "default", "the default ServiceAccount of a new namespace", SETTLE, |_| true)
            .await?;
        let job = json!({
            "metadata": {"name": "probe"},
            "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "probe", "image": "probe.invalid/none"}],
            }}},
        });
        let jobs: Api<Job> = Api::namespaced(client.clone(), &name);
        jobs.create(&PostParams::default(), &serde_json::from_value(job)?).await?;
        support::wait_for(&jobs, "probe", "a Job to complete", SETTLE, |j| {
            support::condition_status(j, "Complete").as_deref() == Some("True")
        })
        .await
    }
    .await;
    support::delete_namespace(client, &name).await?;
    eprintln!("the cluster worked again {:.0?} after the restarts", started.elapsed());
    recovered.map(|_| ())
}

/// What the fault proxy does to the next connections.
#[derive(Default)]
struct Faults {
    /// Answer this many with `503 Service Unavailable`.
    unavailable: u32,
    /// Reset this many at once.
    resets: u32,
    /// Hold every connection this long before passing it on.
    delay: Duration,
    /// Connections faulted so far.
    faulted: u32,
}

/// A TCP proxy in front of the local registry that injects faults. Arming it cuts the
/// connections it carries (a reset too), so the client's next request opens a new one
/// and meets the fault.
struct FaultProxy {
    addr: String,
    faults: Arc<std::sync::Mutex<Faults>>,
    connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
    accept: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    async fn start(upstream: &'static str) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?.to_string();
        let faults: Arc<std::sync::Mutex<Faults>> = Arc::default();
        let connections: Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>> = Arc::default();
        let accept = {
            let (faults, connections) = (faults.clone(), connections.clone());
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let faults = faults.clone();
                    let task = tokio::spawn(async move {
                        let _ = carry(client, upstream, &faults).await;
                    });
                    connections.lock().unwrap().push(task.abort_handle());
                }
            })
        };
        Ok(Self { addr, faults, connections, accept })
    }

    /// The local CoreBuild `debian` of namespace `ns` at `digest`, whose catalog and
    /// staging repositories are reached through this proxy.
    fn core_build(&self, ns: &str, digest: &str) -> serde_json::Value {
        let mut cb = fixtures::local_core_build("debian", ns, digest);
        cb["spec"]["catalog"]["repository"] = json!(format!("{}/{ns}/core", self.addr));
        cb["spec"]["catalog"]["stagingRepository"] = json!(format!("{}/{ns}/staging", self.addr));
        cb
    }

    fn arm(&self, set: impl FnOnce(&mut Faults)) {
        set(&mut self.faults.lock().unwrap());
        for c in self.connections.lock().unwrap().drain(..) {
            c.abort();
        }
    }

    fn faulted(&self) -> u32 {
        self.faults.lock().unwrap().faulted
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

async fn carry(mut client: TcpStream, upstream: &str, faults: &std::sync::Mutex<Faults>) -> anyhow::Result<()> {
    let (unavailable, reset, delay) = {
        let mut f = faults.lock().unwrap();
        let fault = if f.resets > 0 {
            f.resets -= 1;
            (false, true)
        } else if f.unavailable > 0 {
            f.unavailable -= 1;
            (true, false)
        } else {
            (false, false)
        };
        if fault.0 || fault.1 {
            f.faulted += 1;
        }
        (fault.0, fault.1, f.delay)
    };
    if reset {
        client.set_zero_linger()?;
        return Ok(());
    }
    if unavailable {
        // Read the request head, then refuse it as an overloaded registry would.
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = client.read(&mut buf).await?;
            if n == 0 {
                return Ok(());
            }
            head.extend_from_slice(&buf[..n]);
        }
        let body = r#"{"errors":[{"code":"UNAVAILABLE","message":"injected by the fault proxy"}]}"#;
        let response = format!(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        client.write_all(response.as_bytes()).await?;
        return Ok(());
    }
    tokio::time::sleep(delay).await;
    let mut server = TcpStream::connect(upstream).await?;
    tokio::io::copy_bidirectional(&mut client, &mut server).await?;
    Ok(())
}

/// The registry answers 503, resets connections and is slow while a release is
/// verified, published and its channels moved: the controller retries (its registry
/// requests, and the reconcile), the release is published once, and the catalog is
/// exactly right.
#[tokio::test]
async fn a_registry_that_fails_resets_and_is_slow_still_gets_an_exact_catalog() -> anyhow::Result<()> {
    let _turn = TURN.lock().await;
    fixtures::install_crds().await?;
    support::with_namespace("registry-faults", |client, ns| async move {
        let proxy = FaultProxy::start(REGISTRY).await?;
        let addr = format!("127.0.0.1:{}", fixtures::free_port()?);
        let _controller = ControllerProcess::start_with(&ns, &["--http-addr", &addr]).await?;
        // The image is pushed straight to the registry; the controller sees it only
        // through the proxy.
        let digest = fixtures::seed_image(&fixtures::staging(&ns)).await?;
        let mut cb = proxy.core_build(&ns, &digest);
        cb["spec"]["builder"]["podAnnotations"]["sim.coreforge.dev/run-seconds"] = json!("3");
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        cbs.create(&PostParams::default(), &serde_json::from_value(cb)?).await?;

        // Slow and unavailable from the start: the staging check and the publication
        // meet 503s, then resets, through a second of latency on every connection.
        proxy.arm(|f| {
            f.unavailable = 6;
            f.resets = 6;
            f.delay = Duration::from_millis(1000);
        });
        fixtures::create_release(&client, &ns, "r", "12.7.0", "Published").await?;
        let r = wait_phase(&client, &ns, "r", Phase::Published).await?;
        ensure!(proxy.faulted() == 12, "every injected fault was met: {} of 12", proxy.faulted());

        let repo = format!("{ns}/core");
        for tag in ["12.7.0", "12", "latest"] {
            let found = support::eventually(&format!("{repo}:{tag}"), SETTLE, secs(1), || {
                let repo = repo.clone();
                async move {
                    fixtures::registry_digest(REGISTRY, &repo, tag, None).await.map(|d| d.filter(|d| !d.is_empty()))
                }
            })
            .await?;
            ensure!(found == digest, "{tag} resolves to {found}, not {digest}");
        }
        // Nothing else: a retried push is the same manifest under the same tag.
        let tags = fixtures::registry_tags(&repo).await?;
        ensure!(tags == ["12", "12.7.0", "latest"], "the repository's tags: {tags:?}");
        let st = r.status.expect("status");
        ensure!(st.checks.iter().all(|c| c.passed) && st.attempt == Some(1), "{st:?}");
        // The faults are visible where an operator looks.
        let (_, metrics) = fixtures::http_get(&format!("http://{addr}/metrics")).await?;
        let failed: f64 = metrics
            .lines()
            .filter(|l| l.starts_with("coreforge_registry_requests_total{") && !l.contains("outcome=\"ok\""))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum();
        ensure!(failed >= 1.0, "failed registry requests are counted:\n{metrics}");
        Ok(())
    })
    .await
}
