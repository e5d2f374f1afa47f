//! `make demo`, the README's first command, run as a user runs it (`tests/demo.sh`) on
//! the local environment: it must end with the release Published and the digest that
//! the node's containerd pulled back from the catalog. Afterwards its controller is
//! stopped and its namespace deleted; the environment stays for the other tests.

mod support;

use anyhow::{Context, ensure};
use coreforge::api::{ImageRelease, Phase};
use kube::Api;

const NAMESPACE: &str = "coreforge-demo";

#[tokio::test]
async fn make_demo_publishes_a_release_that_containerd_pulls_back() -> anyhow::Result<()> {
    support::ensure_cluster().await?;
    let mut demo = tokio::process::Command::new(support::repo_root().join("tests/demo.sh"));
    demo.current_dir(support::repo_root()).kill_on_drop(true);
    let outcome = support::run(&mut demo).await;

    // Whatever happened, the demo's controller does not outlive the test.
    let pid_file = support::repo_root().join("target/demo/controller.pid");
    if let Ok(pid) = std::fs::read_to_string(&pid_file) {
        std::process::Command::new("kill").arg(pid.trim()).status().ok();
        std::fs::remove_file(&pid_file).ok();
    }
    let out = outcome.context("tests/demo.sh failed")?;

    let client = support::try_client().await?;
    let irs: Api<ImageRelease> = Api::namespaced(client.clone(), NAMESPACE);
    let release = irs.get("demo-debian-12-7-0").await?;
    let status = release.status.context("the demo's release has no status")?;
    ensure!(status.phase == Some(Phase::Published), "the demo's release is {:?}", status.phase);
    let digest = status.digest.context("the demo's release has no digest")?;
    let pulled = format!("/demo/core/debian:12.7.0 -> {digest}");
    ensure!(out.contains(&pulled), "the demo does not show containerd's pull of {digest}:\n{out}");
    let listed = out.lines().any(|l| l.trim_start().starts_with("12.7.0") && l.contains("Published"));
    ensure!(listed, "the demo's catalog does not list 12.7.0 as Published:\n{out}");
    support::run(support::kubectl().args(["delete", "namespace", NAMESPACE, "--timeout=120s"])).await?;
    Ok(())
}
