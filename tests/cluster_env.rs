//! The local control plane behaves like a real cluster where it matters to
//! coreforge: Jobs complete or fail as their simulated pods say, termination
//! messages arrive byte for byte, pods run for as long as asked, CRDs become
//! Established, ServiceAccount tokens work under RBAC, and the server is the
//! pinned version with Ready nodes; the real node runs containers whose pods reach the
//! registry and the apiserver and nothing else.
//!
//! Run with `cargo test --test cluster_env`; the cluster is started if needed
//! (see tests/cluster/README.md).

mod support;

use anyhow::{Context, ensure};
use k8s_openapi::api::authentication::v1::TokenRequest;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{ConfigMap, ContainerStateTerminated, Node, Pod, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Api, Client};
use serde_json::json;
use support::{has_condition, secs, wait_deleted, wait_for, with_namespace};

/// A Job of one pod whose template carries `annotations` (the simulation
/// knobs, see tests/cluster/stages/pod.yaml).
fn job(name: &str, annotations: serde_json::Value) -> Job {
    serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": { "name": name },
        "spec": {
            "backoffLimit": 0,
            "template": {
                "metadata": { "annotations": annotations },
                "spec": {
                    "restartPolicy": "Never",
                    "containers": [{ "name": "main", "image": "registry.invalid/build:1", "command": ["build"] }],
                },
            },
        },
    }))
    .expect("valid Job")
}

/// The single pod of Job `job_name`.
async fn job_pod(client: &Client, ns: &str, job_name: &str) -> anyhow::Result<Pod> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let list = pods.list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job_name}"))).await?;
    ensure!(list.items.len() == 1, "expected 1 pod of job {job_name}, found {}", list.items.len());
    Ok(list.items.into_iter().next().unwrap())
}

fn terminated(pod: &Pod, index: usize) -> anyhow::Result<ContainerStateTerminated> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|cs| cs.get(index))
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.clone())
        .with_context(|| format!("container {index} of pod is not terminated: {:?}", pod.status))
}

fn phase(pod: &Pod) -> &str {
    pod.status.as_ref().and_then(|s| s.phase.as_deref()).unwrap_or("")
}

#[tokio::test]
async fn job_completes() -> anyhow::Result<()> {
    with_namespace("job_completes", |client, ns| async move {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        jobs.create(&PostParams::default(), &job("ok", json!({}))).await?;
        let done = wait_for(&jobs, "ok", "job ok to complete", secs(60), |j| {
            has_condition(j, "Complete") || has_condition(j, "Failed")
        })
        .await?;
        ensure!(has_condition(&done, "Complete"), "job failed: {:?}", done.status);

        let pod = job_pod(&client, &ns, "ok").await?;
        ensure!(phase(&pod) == "Succeeded", "pod phase {}", phase(&pod));
        let t = terminated(&pod, 0)?;
        ensure!(t.exit_code == 0 && t.reason.as_deref() == Some("Completed"), "{t:?}");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn failing_job_reports_exit_code_reason_and_message() -> anyhow::Result<()> {
    with_namespace("failing_job", |client, ns| async move {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let message = "compiler exited: undefined reference to `main'";
        let annotations = json!({
            "sim.coreforge.dev/exit-code": "3",
            "sim.coreforge.dev/reason": "BuildFailed",
            "sim.coreforge.dev/message": message,
        });
        jobs.create(&PostParams::default(), &job("broken", annotations)).await?;
        let done = wait_for(&jobs, "broken", "job broken to fail", secs(60), |j| {
            has_condition(j, "Failed") || has_condition(j, "Complete")
        })
        .await?;
        ensure!(has_condition(&done, "Failed"), "job did not fail: {:?}", done.status);

        let pod = job_pod(&client, &ns, "broken").await?;
        ensure!(phase(&pod) == "Failed", "pod phase {}", phase(&pod));
        let t = terminated(&pod, 0)?;
        ensure!(t.exit_code == 3, "exit code {}", t.exit_code);
        ensure!(t.reason.as_deref() == Some("BuildFailed"), "reason {:?}", t.reason);
        ensure!(t.message.as_deref() == Some(message), "message {:?}", t.message);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn termination_message_arrives_byte_for_byte() -> anyhow::Result<()> {
    with_namespace("termination_message", |client, ns| async move {
        let jobs: Api<Job> = Api::namespaced(client.clone(), &ns);
        let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
        let one_line = format!(r#"{{"digest":"{digest}"}}"#);
        let multi_line = format!(
            "{{\n  \"digest\": \"{digest}\",\n  \"tags\": [\"v1\", \"with \\\"quotes\\\"\"],\n  \"note\": \"tab\\tand <html> & ünïcødé\"\n}}\n"
        );
        let cases = [("one-line", one_line), ("multi-line", multi_line)];
        for (name, text) in &cases {
            let annotations = json!({ "sim.coreforge.dev/termination-message": text });
            jobs.create(&PostParams::default(), &job(name, annotations)).await?;
        }
        for (name, text) in &cases {
            wait_for(&jobs, name, &format!("job {name} to complete"), secs(60), |j| has_condition(j, "Complete"))
                .await?;
            let pod = job_pod(&client, &ns, name).await?;
            let t = terminated(&pod, 0)?;
            ensure!(t.message.as_deref() == Some(text.as_str()), "{name}: got {:?}, want {text:?}", t.message);
            let parsed: serde_json::Value = serde_json::from_str(t.message.as_deref().unwrap())?;
            ensure!(parsed["digest"] == digest.as_str(), "{name}: digest lost in {parsed}");
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn run_seconds_keeps_the_pod_running() -> anyhow::Result<()> {
    const RUN_SECONDS: i64 = 4;
    with_namespace("run_seconds", |client, ns| async move {
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let pod: Pod = serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "sleeper",
                "annotations": { "sim.coreforge.dev/run-seconds": RUN_SECONDS.to_string() },
            },
            "spec": {
                "restartPolicy": "Never",
                "containers": [{ "name": "main", "image": "registry.invalid/sleep:1" }],
            },
        }))?;
        pods.create(&PostParams::default(), &pod).await?;

        let running = wait_for(&pods, "sleeper", "pod sleeper to run", secs(30), |p| {
            matches!(phase(p), "Running" | "Succeeded" | "Failed")
        })
        .await?;
        ensure!(phase(&running) == "Running", "pod was never seen Running, phase {}", phase(&running));
        ensure!(has_condition(&running, "Ready"), "running pod is not Ready: {:?}", running.status);

        let done = wait_for(&pods, "sleeper", "pod sleeper to finish", secs(30 + RUN_SECONDS as u64), |p| {
            matches!(phase(p), "Succeeded" | "Failed")
        })
        .await?;
        ensure!(phase(&done) == "Succeeded", "phase {}", phase(&done));
        let t = terminated(&done, 0)?;
        let started = t.started_at.context("no startedAt")?.0;
        let finished = t.finished_at.context("no finishedAt")?.0;
        let ran = finished.duration_since(started);
        // Status times have one-second resolution.
        ensure!(
            ran.as_secs() >= RUN_SECONDS - 1,
            "container ran {ran:?} (startedAt {started}, finishedAt {finished}), want >= {}s",
            RUN_SECONDS - 1
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn custom_resource_definition_becomes_established() -> anyhow::Result<()> {
    with_namespace("crd_established", |client, ns| async move {
        // A group of its own, so parallel runs never share the CRD.
        let group = format!("{ns}.test.coreforge.dev");
        let crd_name = format!("widgets.{group}");
        let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
        let crd: CustomResourceDefinition = serde_json::from_value(json!({
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": { "name": crd_name, "labels": { support::TEST_NAMESPACE_LABEL: "true" } },
            "spec": {
                "group": group,
                "scope": "Namespaced",
                "names": { "plural": "widgets", "singular": "widget", "kind": "Widget" },
                "versions": [{
                    "name": "v1",
                    "served": true,
                    "storage": true,
                    "schema": { "openAPIV3Schema": {
                        "type": "object",
                        "properties": { "spec": {
                            "type": "object",
                            "properties": { "size": { "type": "integer", "minimum": 1 } },
                        }},
                    }},
                }],
            },
        }))?;
        crds.create(&PostParams::default(), &crd).await?;

        // The CRD is cluster-scoped: the namespace deletion would not remove it.
        let checks = async {
            wait_for(&crds, &crd_name, "the CRD to be Established", secs(60), |c| has_condition(c, "Established"))
                .await?;
            let gvk = GroupVersionKind::gvk(&group, "v1", "Widget");
            let widgets: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), &ns, &ApiResource::from_gvk_with_plural(&gvk, "widgets"));
            let widget: DynamicObject = serde_json::from_value(json!({
                "apiVersion": format!("{group}/v1"),
                "kind": "Widget",
                "metadata": { "name": "w" },
                "spec": { "size": 2 },
            }))?;
            widgets.create(&PostParams::default(), &widget).await.context("creating a Widget")?;
            anyhow::Ok(())
        }
        .await;

        crds.delete(&crd_name, &DeleteParams::default()).await?;
        wait_deleted(&crds, &crd_name, "the CRD to be deleted", secs(60)).await?;
        checks
    })
    .await
}

#[tokio::test]
async fn service_account_tokens_work_and_rbac_is_enforced() -> anyhow::Result<()> {
    with_namespace("sa_token_rbac", |client, ns| async move {
        // The controller manager publishes the cluster CA into every namespace.
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let root_ca =
            wait_for(&config_maps, "kube-root-ca.crt", "the kube-root-ca.crt ConfigMap", secs(30), |_| true).await?;
        let ca = root_ca.data.unwrap_or_default().remove("ca.crt").unwrap_or_default();
        ensure!(ca.contains("BEGIN CERTIFICATE"), "kube-root-ca.crt has no certificate: {ca:?}");

        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
        let request: TokenRequest = serde_json::from_value(json!({
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenRequest",
            "spec": { "expirationSeconds": 600 },
        }))?;
        let issued = accounts.create_token_request("default", &PostParams::default(), &request).await?;
        let token = issued.status.context("TokenRequest without status")?.token;

        let as_default = support::client_with_token(&token).await?;
        let pods: Api<Pod> = Api::namespaced(as_default, &ns);
        match pods.list(&ListParams::default()).await {
            Err(kube::Error::Api(status)) if status.code == 403 => {
                ensure!(
                    status.message.contains(&format!("system:serviceaccount:{ns}:default")),
                    "unexpected identity in {status:?}"
                );
                Ok(())
            }
            Ok(_) => {
                anyhow::bail!("the default ServiceAccount may list pods: RBAC is not enforced")
            }
            Err(e) => Err(e).context("listing pods with the ServiceAccount token"),
        }
    })
    .await
}

#[tokio::test]
async fn server_is_the_pinned_version_with_ready_nodes() -> anyhow::Result<()> {
    with_namespace("server_version", |client, _ns| async move {
        let want = support::pinned_version("KUBERNETES_VERSION")?;
        let info = client.apiserver_version().await?;
        ensure!(info.git_version == want, "server is {}, versions.env pins {want}", info.git_version);

        let nodes: Api<Node> = Api::all(client.clone());
        let ready: Vec<String> = nodes
            .list(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|n| has_condition(n, "Ready"))
            .filter_map(|n| n.metadata.name)
            .collect();
        ensure!(ready.len() >= 2, "want >= 2 Ready nodes, have {ready:?}");
        Ok(())
    })
    .await
}

/// `$STATE_DIR/node.env`, written by up.sh: the real node's name, selector, taint and
/// the addresses its pods use (see tests/cluster/README.md, "The real node").
fn node_env() -> anyhow::Result<std::collections::HashMap<String, String>> {
    let path = support::cluster_dir().join("node.env");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// Runs buildah with a store of its own under `dir` (vfs, chroot: as tests/builder.rs).
fn buildah(dir: &std::path::Path, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("buildah")
        .args(["--storage-driver", "vfs", "--root"])
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(args)
        .output()
        .context("running buildah (tests/deps.sh installs it)")?;
    ensure!(out.status.success(), "buildah {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Debian's busybox-static in a scratch image, pushed to `repo`; the reference by digest.
fn busybox_image(dir: &std::path::Path, repo: &str) -> anyhow::Result<String> {
    let ctr = buildah(dir, &["from", "scratch"])?;
    buildah(dir, &["copy", &ctr, "/bin/busybox", "/bin/busybox"])?;
    buildah(dir, &["run", "--isolation", "chroot", &ctr, "--", "/bin/busybox", "--install", "-s", "/bin"])?;
    buildah(dir, &["commit", "--rm", &ctr, "busybox"])?;
    let digest_file = dir.join("digest");
    let target = format!("docker://{repo}:1");
    buildah(dir, &["push", "--tls-verify=false", "--digestfile", &digest_file.to_string_lossy(), "busybox", &target])?;
    Ok(format!("{repo}@{}", std::fs::read_to_string(digest_file)?.trim()))
}

/// A pod for the real node: its selector, and the toleration of its taint unless
/// `tolerate` is false.
fn real_node_pod(name: &str, env: &std::collections::HashMap<String, String>, image: &str, tolerate: bool) -> Pod {
    let (key, value) = env["NODE_SELECTOR"].split_once('=').expect("NODE_SELECTOR is key=value");
    let taint_key = env["NODE_TAINT"].split_once('=').expect("NODE_TAINT is key=value:effect").0;
    let tolerations = if tolerate { json!([{ "key": taint_key, "operator": "Exists" }]) } else { json!([]) };
    serde_json::from_value(json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": { "name": name },
        "spec": {
            "nodeSelector": { key: value },
            "tolerations": tolerations,
            "restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "main",
                "image": image,
                "command": ["/bin/sh", "-c", "echo hello from the real node; exec sleep 600"],
            }],
        },
    }))
    .expect("valid Pod")
}

#[tokio::test]
async fn real_node_runs_containers_that_reach_only_the_environment() -> anyhow::Result<()> {
    with_namespace("real_node", |client, ns| async move {
        let env = node_env()?;
        let dir = support::repo_root().join("target/real-node").join(&ns);
        std::fs::create_dir_all(&dir)?;
        let image = busybox_image(&dir, &format!("{}/{ns}/busybox", env["REGISTRY"]));
        buildah(&dir, &["rmi", "--all", "--force"]).ok();
        std::fs::remove_dir_all(&dir).ok();
        let image = image?;

        // Without the toleration nothing lands there: the taint keeps it Pending.
        let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
        pods.create(&PostParams::default(), &real_node_pod("untolerated", &env, &image, false)).await?;
        let pending = wait_for(&pods, "untolerated", "the scheduler to reject untolerated", secs(30), |p| {
            support::condition_status(p, "PodScheduled").is_some()
        })
        .await?;
        ensure!(
            support::condition_status(&pending, "PodScheduled").as_deref() == Some("False"),
            "a pod without the toleration was scheduled: {:?}",
            pending.status
        );

        // With it, a real container runs: Ready, with an IP from the pods' subnet.
        pods.create(&PostParams::default(), &real_node_pod("shell", &env, &image, true)).await?;
        let running = wait_for(&pods, "shell", "pod shell to be Ready on the real node", secs(90), |p| {
            has_condition(p, "Ready") || matches!(phase(p), "Succeeded" | "Failed")
        })
        .await?;
        ensure!(phase(&running) == "Running", "phase {}: {:?}", phase(&running), running.status);
        let spec = running.spec.as_ref().context("no spec")?;
        ensure!(spec.node_name.as_deref() == Some(env["NODE_NAME"].as_str()), "on {:?}", spec.node_name);
        let status = running.status.as_ref().context("no status")?;
        ensure!(status.host_ip.as_deref() == Some(env["POD_GATEWAY"].as_str()), "hostIP {:?}", status.host_ip);
        let subnet_prefix = env["POD_GATEWAY"].rsplit_once('.').unwrap().0.to_string() + ".";
        let pod_ip = status.pod_ip.clone().unwrap_or_default();
        ensure!(pod_ip.starts_with(&subnet_prefix), "pod IP {pod_ip:?} is not in {}", env["POD_SUBNET"]);

        // Logs and exec go through the apiserver to the kubelet.
        let logs = support::run(support::kubectl().args(["-n", &ns, "logs", "shell"])).await?;
        ensure!(logs.contains("hello from the real node"), "logs: {logs:?}");
        let exec = |script: String| {
            let ns = ns.clone();
            async move {
                support::run(support::kubectl().args(["-n", &ns, "exec", "shell", "--", "/bin/sh", "-c", &script]))
                    .await
            }
        };

        // The registry, at the gateway (the v2 API answers `{}`), and the apiserver at
        // the `kubernetes` Service IP (DNAT to its forwarder) with the pod's
        // ServiceAccount token. busybox's wget does not verify certificates (up.sh puts
        // the Service IP and the gateway in the apiserver's), and its `-T` crashes in
        // Debian's build: `timeout` bounds it instead.
        let v2 = exec(format!("timeout 10 wget -q -O - http://{}/v2/", env["POD_REGISTRY"])).await?;
        ensure!(v2.trim() == "{}", "registry at {}: {v2:?}", env["POD_REGISTRY"]);
        let version = exec(
            "timeout 10 wget -q -O - --header \"Authorization: Bearer $(cat /var/run/secrets/kubernetes.io/serviceaccount/token)\" \
             https://$KUBERNETES_SERVICE_HOST:$KUBERNETES_SERVICE_PORT/version"
                .into(),
        )
        .await?;
        ensure!(version.contains("\"gitVersion\""), "apiserver via the Service IP: {version:?}");

        // Nothing else: no default route (only the subnet and the Service IP).
        let routes = exec("cat /proc/net/route".into()).await?;
        let destinations: Vec<&str> = routes.lines().skip(1).filter_map(|l| l.split_whitespace().nth(1)).collect();
        ensure!(!destinations.is_empty(), "no routes at all: {routes:?}");
        ensure!(!destinations.contains(&"00000000"), "the pod has a default route:\n{routes}");
        Ok(())
    })
    .await
}
