//! The local control plane behaves like a real cluster where it matters to
//! coreforge: Jobs complete or fail as their simulated pods say, termination
//! messages arrive byte for byte, pods run for as long as asked, CRDs become
//! Established, ServiceAccount tokens work under RBAC, and the server is the
//! pinned version with Ready nodes.
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
