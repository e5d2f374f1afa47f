//! Packaging: the Helm chart (`charts/coreforge`), the kustomize base (`deploy/`) and
//! the controller image (`Containerfile`, `tests/image.sh`), checked with the real
//! tools against the local control plane.
//!
//! - the copies the packages carry stay identical to their sources: the CRDs
//!   (`crds/` → `charts/coreforge/files/crds/`, `deploy/base/crds/`) and the monitoring
//!   bundle (`deploy/monitoring/` → `charts/coreforge/files/monitoring/`);
//! - `helm lint`; the values schema and the template checks refuse bad values; the
//!   binary accepts the arguments the chart gives it;
//! - `helm template` for several value sets renders what it should, and the API
//!   server accepts every object (`kubectl apply --dry-run=server`);
//! - `helm install` / `helm uninstall` work and leave the CRDs in place;
//! - the kustomize base is the chart's default rendering and the API server accepts it;
//! - the chart's RBAC refuses what the controller does not need (a real token);
//! - the image builds with buildah, runs `/coreforge --version` and is pushed to the
//!   local registry.
//!
//! helm is built from its Go module by `tests/cluster/build.sh helm` (pinned in
//! `tests/cluster/versions.env`) on first use and cached like the cluster binaries.

mod fixtures;
mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::ClusterRole;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, PostParams};
use kube::{Api, ResourceExt};
use serde::Deserialize;
use serde_json::{Value, json};

const CHART: &str = "charts/coreforge";
const CRD_NAMES: [&str; 2] = ["corebuilds.coreforge.dev", "imagereleases.coreforge.dev"];
/// The files of `deploy/monitoring/` the chart carries in `files/monitoring/`.
const MONITORING_FILES: [&str; 2] = ["prometheus-rule.yaml", "grafana-dashboard.json"];

/// The RBAC rules the controller gets in every namespace it watches: (API group,
/// resource, verbs). Widening them must be a deliberate change here too.
const RULES: &[(&str, &str, &[&str])] = &[
    ("coreforge.dev", "imagereleases", &["get", "list", "watch", "create"]),
    ("coreforge.dev", "imagereleases/status", &["get", "patch", "update"]),
    ("coreforge.dev", "corebuilds", &["get", "list", "watch", "patch"]),
    ("coreforge.dev", "corebuilds/status", &["get", "patch", "update"]),
    ("batch", "jobs", &["get", "list", "watch", "create", "delete"]),
    ("", "pods", &["get", "list", "watch"]),
    ("", "configmaps", &["get", "list", "watch", "create", "delete"]),
    ("events.k8s.io", "events", &["create", "patch"]),
    ("", "events", &["create", "patch", "list", "watch"]),
    ("", "secrets", &["get"]),
];

// ---------------------------------------------------------------------------------
// Tools

/// Like [`helm`], expecting it to fail; returns its stderr.
async fn helm_fails(args: &[&str]) -> anyhow::Result<String> {
    match fixtures::helm(args).await {
        Ok(out) => bail!("helm {args:?} succeeded but should have failed; it printed:\n{out}"),
        Err(e) => Ok(format!("{e:#}")),
    }
}

/// `helm template RELEASE charts/coreforge --namespace NS EXTRA...`.
async fn render(release: &str, ns: &str, extra: &[&str]) -> anyhow::Result<String> {
    let mut args = vec!["template", release, CHART, "--namespace", ns];
    args.extend_from_slice(extra);
    fixtures::helm(&args).await
}

/// The objects of a multi-document YAML stream (empty documents skipped).
fn documents(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc).context("parsing a YAML document")?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

fn kind(obj: &Value) -> &str {
    obj["kind"].as_str().unwrap_or_default()
}

fn name(obj: &Value) -> &str {
    obj["metadata"]["name"].as_str().unwrap_or_default()
}

/// `kind/namespace/name` of every object, sorted.
fn inventory(objs: &[Value]) -> Vec<String> {
    let mut out: Vec<String> = objs
        .iter()
        .map(|o| format!("{}/{}/{}", kind(o), o["metadata"]["namespace"].as_str().unwrap_or("-"), name(o)))
        .collect();
    out.sort();
    out
}

fn the<'a>(objs: &'a [Value], kind_: &str) -> anyhow::Result<&'a Value> {
    let found: Vec<&Value> = objs.iter().filter(|o| kind(o) == kind_).collect();
    match found.as_slice() {
        [one] => Ok(one),
        _ => bail!("expected exactly one {kind_}, found {}: {:?}", found.len(), inventory(objs)),
    }
}

/// The text of a YAML document from its top-level `spec:` line to its end.
fn spec_text(doc: &str) -> Option<&str> {
    doc.find("\nspec:\n").map(|i| &doc[i + 1..])
}

fn read(path: impl AsRef<Path>) -> anyhow::Result<String> {
    support::repo_file(path)
}

/// The file names in `dir` (relative to the repository root) with extension `ext`.
fn files_in(dir: &str, ext: &str) -> anyhow::Result<BTreeSet<String>> {
    let full = support::repo_root().join(dir);
    let mut out = BTreeSet::new();
    for entry in std::fs::read_dir(&full).with_context(|| format!("listing {}", full.display()))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        if name.ends_with(ext) {
            out.insert(name);
        }
    }
    Ok(out)
}

/// `kubectl apply --dry-run=server` of `manifests`: every object must be accepted.
async fn server_dry_run(ns: &str, case: &str, manifests: &str) -> anyhow::Result<()> {
    let file = fixtures::scratch(ns)?.join(format!("{case}.yaml"));
    std::fs::write(&file, manifests)?;
    let file_arg = file.to_string_lossy().into_owned();
    let out = support::run(support::kubectl().args(["apply", "--dry-run=server", "-f", &file_arg]))
        .await
        .with_context(|| format!("the API server refused the {case} rendering ({file_arg})"))?;
    let objects = documents(manifests)?.len();
    let accepted = out.lines().filter(|l| l.contains("(server dry run)")).count();
    ensure!(accepted == objects, "{case}: {objects} objects rendered but {accepted} accepted:\n{out}");
    Ok(())
}

/// Asserts a request was refused with 403 Forbidden.
fn forbidden<T: Debug>(result: Result<T, kube::Error>, what: &str) -> anyhow::Result<()> {
    match result {
        Err(kube::Error::Api(status)) if status.code == 403 => Ok(()),
        other => bail!("{what}: expected 403 Forbidden, got {other:?}"),
    }
}

fn image_releases() -> ApiResource {
    let gvk = GroupVersionKind::gvk("coreforge.dev", "v1alpha1", "ImageRelease");
    ApiResource::from_gvk_with_plural(&gvk, "imagereleases")
}

fn job(name: &str) -> anyhow::Result<Job> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "registry.invalid/noop:1"}],
            }},
        },
    }))?)
}

// ---------------------------------------------------------------------------------
// Copies stay in sync (no cluster, no helm)

/// The chart and the kustomize base carry byte-identical copies of `crds/`.
#[test]
fn crd_copies_are_identical_to_crds() -> anyhow::Result<()> {
    let sources = files_in("crds", ".yaml")?;
    ensure!(!sources.is_empty(), "crds/ has no CRDs");
    for copy_dir in ["charts/coreforge/files/crds", "deploy/base/crds"] {
        let copies = files_in(copy_dir, ".yaml")?;
        ensure!(
            copies == sources,
            "{copy_dir} holds {copies:?} but crds/ holds {sources:?}; refresh with: rm {copy_dir}/*.yaml && cp crds/*.yaml {copy_dir}/"
        );
        for file in &sources {
            ensure!(
                read(format!("{copy_dir}/{file}"))? == read(format!("crds/{file}"))?,
                "{copy_dir}/{file} differs from crds/{file}; refresh with: cp crds/*.yaml {copy_dir}/"
            );
        }
    }
    Ok(())
}

/// The chart carries byte-identical copies of the monitoring bundle it deploys.
#[test]
fn monitoring_copies_are_identical_to_deploy_monitoring() -> anyhow::Result<()> {
    for file in MONITORING_FILES {
        let original = read(format!("deploy/monitoring/{file}"))?;
        let copy = read(format!("charts/coreforge/files/monitoring/{file}"))
            .with_context(|| format!("refresh with: cp deploy/monitoring/{file} charts/coreforge/files/monitoring/"))?;
        ensure!(
            copy == original,
            "charts/coreforge/files/monitoring/{file} differs from deploy/monitoring/{file}; refresh with: cp deploy/monitoring/{file} charts/coreforge/files/monitoring/"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// The chart, offline

#[tokio::test]
async fn helm_lint_passes() -> anyhow::Result<()> {
    let out = fixtures::helm(&["lint", "--strict", CHART]).await?;
    ensure!(out.contains("0 chart(s) failed"), "helm lint:\n{out}");
    for values in [
        "watchNamespaces=[\"team-a\",\"team-b\"]",
        "leaderElection={\"enabled\":false}",
        "monitoring={\"serviceMonitor\":{\"enabled\":true},\"prometheusRule\":{\"enabled\":true},\"grafanaDashboard\":{\"enabled\":true}}",
    ] {
        let mut args = vec!["lint", "--strict", CHART, "--set-json", values];
        if values.starts_with("leaderElection") {
            args.extend(["--set", "replicas=1"]);
        }
        let out = fixtures::helm(&args).await.with_context(|| format!("helm lint with {values}"))?;
        ensure!(out.contains("0 chart(s) failed"), "helm lint with {values}:\n{out}");
    }
    Ok(())
}

/// The CRD templates render the spec of `crds/*.yaml` byte for byte, marked to be kept
/// on uninstall, and `crds.install=false` leaves them out.
#[tokio::test]
async fn chart_crds_render_crds_byte_for_byte() -> anyhow::Result<()> {
    let rendered = fixtures::helm(&["template", "cf", CHART, "--show-only", "templates/crds.yaml"]).await?;
    let docs: Vec<&str> = rendered.split("\n---\n").filter(|d| d.contains("kind: CustomResourceDefinition")).collect();
    let sources = files_in("crds", ".yaml")?;
    ensure!(docs.len() == sources.len(), "{} CRDs rendered, {} in crds/", docs.len(), sources.len());
    for file in &sources {
        let source = read(format!("crds/{file}"))?;
        let want = spec_text(&source).ok_or_else(|| anyhow!("crds/{file} has no top-level spec:"))?;
        let crd_name = documents(&source)?.first().map(|o| name(o).to_string()).unwrap_or_default();
        let doc = docs
            .iter()
            .find(|d| d.contains(&format!("\n  name: {crd_name}\n")))
            .ok_or_else(|| anyhow!("no rendered CRD named {crd_name}"))?;
        let got = spec_text(doc).ok_or_else(|| anyhow!("the rendered {crd_name} has no spec:"))?;
        ensure!(got.trim_end() == want.trim_end(), "the rendered spec of {crd_name} differs from crds/{file}");
        let obj = documents(doc)?.remove(0);
        ensure!(
            obj["metadata"]["annotations"]["helm.sh/resource-policy"] == "keep",
            "{crd_name} is not kept on uninstall: {}",
            obj["metadata"]
        );
        ensure!(
            obj["metadata"]["labels"]["app.kubernetes.io/managed-by"] == "Helm",
            "{crd_name} lacks the chart's labels"
        );
    }
    let without = fixtures::helm(&["template", "cf", CHART, "--set", "crds.install=false"]).await?;
    ensure!(
        !documents(&without)?.iter().any(|o| kind(o) == "CustomResourceDefinition"),
        "crds.install=false still renders CRDs"
    );
    Ok(())
}

/// Bad values are refused with a message naming the value.
#[tokio::test]
async fn chart_refuses_bad_values() -> anyhow::Result<()> {
    let cases: &[(&[&str], &str)] = &[
        (&["--set", "logFormat=xml"], "/logFormat"),
        (&["--set", "replicas=0"], "/replicas"),
        (&["--set", "maxConcurrentReconciles=0"], "/maxConcurrentReconciles"),
        (&["--set", "kubeApi.qps=0"], "/kubeApi/qps"),
        (&["--set", "kubeApi.burst=many"], "/kubeApi/burst"),
        (&["--set-json", "watchNamespaces=[\"Team_A\"]"], "/watchNamespaces/0"),
        (&["--set-json", "watchNamespaces=[\"a\",\"a\"]"], "/watchNamespaces"),
        (&["--set-json", "watchNamespaces=\"team-a\""], "/watchNamespaces"),
        (&["--set", "image.digest=sha256:123"], "/image/digest"),
        (&["--set", "resources.limits.memory=lots"], "/resources/limits/memory"),
        (&["--set", "monitoring.serviceMonitor.interval=often"], "/monitoring/serviceMonitor/interval"),
        (&["--set", "leaderElection.enabled=yes"], "/leaderElection/enabled"),
        (&["--set", "leaderElection.leaseDuration=0s"], "/leaderElection/leaseDuration"),
        (&["--set", "replica=1"], "additional properties 'replica'"),
        (&["--set", "leaderElection.enabled=false"], "leaderElection.enabled is false"),
        (&["--set", "leaderElection.enabled=false", "--set", "replicas=3"], "replicas is 3"),
    ];
    for (values, message) in cases {
        let mut args = vec!["template", "cf", CHART];
        args.extend_from_slice(values);
        let err = helm_fails(&args).await?;
        ensure!(err.contains(message), "helm template {values:?} failed without naming {message:?}:\n{err}");
    }
    Ok(())
}

/// The binary accepts the arguments every rendering gives it: clap parses them in
/// order and only then acts on the trailing `--help`, so an unknown flag or a bad value
/// fails the run.
#[tokio::test]
async fn chart_args_are_accepted_by_the_binary() -> anyhow::Result<()> {
    let bin = env!("CARGO_BIN_EXE_coreforge");
    let probe = |args: Vec<String>| async move {
        let mut cmd = tokio::process::Command::new(bin);
        cmd.args(&args).arg("--help").env_remove("KUBECONFIG").kill_on_drop(true);
        support::run(&mut cmd).await.with_context(|| format!("coreforge {args:?}"))
    };
    ensure!(probe(strings(&["controller", "--no-such-flag"])).await.is_err(), "the probe accepts anything");
    for values in [
        &[][..],
        &["--set-json", "watchNamespaces=[\"team-a\",\"team-b\"]", "--set", "logFormat=json"][..],
        &["--set", "leaderElection.enabled=false", "--set", "replicas=1"][..],
        &["--set", "maxConcurrentReconciles=4", "--set", "kubeApi.qps=20", "--set", "kubeApi.burst=30"][..],
        &["--set", "keepAttempts=5"][..],
        &["--set", "signing.keySecret=release-signing"][..],
        &[
            "--set",
            "builder.image=registry.example/buildah@sha256:0123",
            "--set-json",
            "builder.allowCapabilities=[\"SYS_ADMIN\"]",
            "--set-json",
            "builder.allowImages=[\"registry.example/builders/\",\"registry.example/kaniko\"]",
            "--set-json",
            "builder.allowServiceAccounts=[\"builder\"]",
            "--set",
            "builder.allowPrivileged=true",
            "--set",
            "builder.userNamespaces=true",
        ][..],
    ] {
        let objs = documents(&render("cf", "cf-system", values).await?)?;
        let container = &the(&objs, "Deployment")?["spec"]["template"]["spec"]["containers"][0];
        probe(args(container)).await?;
    }
    Ok(())
}

/// The ClusterRole is exactly [`RULES`], and every rule in the rendered RBAC is
/// preceded by a comment saying why it is there.
#[tokio::test]
async fn chart_rbac_is_least_privilege_and_commented() -> anyhow::Result<()> {
    let rendered =
        fixtures::helm(&["template", "cf", CHART, "--namespace", "cf-system", "--show-only", "templates/rbac.yaml"])
            .await?;
    let objs = documents(&rendered)?;
    let role: ClusterRole = serde_json::from_value(the(&objs, "ClusterRole")?.clone())?;
    let mut got = BTreeMap::new();
    for rule in role.rules.unwrap_or_default() {
        ensure!(rule.resource_names.is_none() && rule.non_resource_urls.is_none(), "unexpected rule {rule:?}");
        for group in rule.api_groups.unwrap_or_default() {
            for resource in rule.resources.clone().unwrap_or_default() {
                let verbs: BTreeSet<String> = rule.verbs.iter().cloned().collect();
                ensure!(
                    got.insert((group.clone(), resource.clone()), verbs).is_none(),
                    "{group}/{resource} granted twice"
                );
            }
        }
    }
    let want: BTreeMap<(String, String), BTreeSet<String>> = RULES
        .iter()
        .map(|(g, r, v)| ((g.to_string(), r.to_string()), v.iter().map(|s| s.to_string()).collect()))
        .collect();
    ensure!(got == want, "the ClusterRole grants\n{got:#?}\nbut the controller needs exactly\n{want:#?}");
    for obj in &objs {
        ensure!(!obj.to_string().contains('*'), "a wildcard in {}", name(obj));
    }
    // Leases: create, and get/update of the one Lease only.
    let lease_role = objs
        .iter()
        .find(|o| kind(o) == "Role" && name(o) == "cf-coreforge-leader-election")
        .ok_or_else(|| anyhow!("no leader election Role: {:?}", inventory(&objs)))?;
    ensure!(
        lease_role["rules"]
            == json!([
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["create"]},
                {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "resourceNames": ["cf-coreforge"], "verbs": ["get", "update"]},
            ]),
        "leader election Role: {}",
        lease_role["rules"]
    );
    ensure!(!objs.iter().any(|o| name(o) == "cf-coreforge-signing-key"), "a signing key Role without a key");
    // A default signing key: get on that one Secret of the release namespace, nothing else.
    let signing = fixtures::helm(&[
        "template",
        "cf",
        CHART,
        "--namespace",
        "cf-system",
        "--show-only",
        "templates/rbac.yaml",
        "--set",
        "signing.keySecret=release-signing",
    ])
    .await?;
    let signing_objs = documents(&signing)?;
    let key_role = signing_objs
        .iter()
        .find(|o| kind(o) == "Role" && name(o) == "cf-coreforge-signing-key")
        .ok_or_else(|| anyhow!("no signing key Role: {:?}", inventory(&signing_objs)))?;
    ensure!(key_role["metadata"]["namespace"] == "cf-system", "{key_role}");
    ensure!(
        key_role["rules"]
            == json!([{"apiGroups": [""], "resources": ["secrets"], "resourceNames": ["release-signing"], "verbs": ["get"]}]),
        "signing key Role: {}",
        key_role["rules"]
    );
    let rendered = format!("{rendered}\n{signing}");
    let lines: Vec<&str> = rendered.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        if line.trim_start().starts_with("- apiGroups:") {
            let before = lines[..i].last().map(|l| l.trim_start()).unwrap_or_default();
            ensure!(before.starts_with('#'), "rule at line {} of the rendered RBAC has no comment:\n{rendered}", i + 1);
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Renderings accepted by the API server

/// The controller container of the rendered Deployment, after checking what every
/// rendering must have: the restricted Pod Security profile, probes, downward API env.
fn check_deployment(objs: &[Value], replicas: i64) -> anyhow::Result<Value> {
    let deployment = the(objs, "Deployment")?;
    ensure!(deployment["spec"]["replicas"] == replicas, "replicas: {}", deployment["spec"]["replicas"]);
    let pod = &deployment["spec"]["template"]["spec"];
    ensure!(
        pod["securityContext"]
            == json!({"runAsNonRoot": true, "runAsUser": 65532, "runAsGroup": 65532, "seccompProfile": {"type": "RuntimeDefault"}}),
        "pod securityContext: {}",
        pod["securityContext"]
    );
    let container = &pod["containers"][0];
    ensure!(
        container["securityContext"]
            == json!({
                "allowPrivilegeEscalation": false,
                "readOnlyRootFilesystem": true,
                "runAsNonRoot": true,
                "runAsUser": 65532,
                "capabilities": {"drop": ["ALL"]},
                "seccompProfile": {"type": "RuntimeDefault"},
            }),
        "container securityContext: {}",
        container["securityContext"]
    );
    ensure!(container["ports"] == json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}]));
    ensure!(container["livenessProbe"]["httpGet"] == json!({"path": "/livez", "port": "http"}));
    ensure!(container["readinessProbe"]["httpGet"] == json!({"path": "/readyz", "port": "http"}));
    ensure!(
        container["env"]
            == json!([
                {"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
                {"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            ]),
        "env: {}",
        container["env"]
    );
    ensure!(container["image"] == "127.0.0.1:15000/coreforge:0.1.0", "image: {}", container["image"]);
    let service = the(objs, "Service")?;
    ensure!(
        service["spec"]["ports"] == json!([{"name": "http", "port": 8080, "targetPort": "http", "protocol": "TCP"}])
    );
    Ok(container.clone())
}

fn args(container: &Value) -> Vec<String> {
    container["args"].as_array().into_iter().flatten().filter_map(|a| a.as_str().map(str::to_string)).collect()
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[tokio::test]
async fn default_rendering_is_accepted() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("helm-defaults", |_client, ns| async move {
        let manifests = render("cf", &ns, &[]).await?;
        let objs = documents(&manifests)?;
        let container = check_deployment(&objs, 2)?;
        let want = [
            "controller",
            "--http-addr",
            "0.0.0.0:8080",
            "--log-format",
            "text",
            "--leader-elect",
            "--lease-namespace",
            &ns,
            "--lease-name",
            "cf-coreforge",
            "--lease-duration",
            "15s",
        ];
        ensure!(args(&container) == strings(&want), "args: {:?}", args(&container));
        let kinds: BTreeSet<&str> = objs.iter().map(kind).collect();
        let want_kinds = [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "Deployment",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ];
        ensure!(kinds == want_kinds.into_iter().collect(), "kinds: {kinds:?}");
        server_dry_run(&ns, "defaults", &manifests).await
    })
    .await
}

#[tokio::test]
async fn namespaced_rendering_is_accepted() -> anyhow::Result<()> {
    let client = support::try_client().await?;
    let team_a = support::create_namespace(&client, "helm-watched-a").await?;
    let team_b = support::create_namespace(&client, "helm-watched-b").await?;
    let (a, b) = (team_a.clone(), team_b.clone());
    let outcome = support::with_namespace("helm-namespaced", |_client, ns| async move {
        let list = serde_json::to_string(&[&a, &b])?;
        let manifests = render("cf", &ns, &["--set-json", &format!("watchNamespaces={list}")]).await?;
        let objs = documents(&manifests)?;
        let container = check_deployment(&objs, 2)?;
        let want = [
            "controller",
            "--http-addr",
            "0.0.0.0:8080",
            "--log-format",
            "text",
            "--namespace",
            &a,
            "--namespace",
            &b,
            "--leader-elect",
            "--lease-namespace",
            &ns,
            "--lease-name",
            "cf-coreforge",
            "--lease-duration",
            "15s",
        ];
        ensure!(args(&container) == strings(&want), "args: {:?}", args(&container));
        let rbac: Vec<String> =
            inventory(&objs).into_iter().filter(|o| o.starts_with("Role") || o.starts_with("ClusterRole")).collect();
        let mut want_rbac = strings(&[
            &format!("Role/{a}/cf-coreforge"),
            &format!("Role/{b}/cf-coreforge"),
            &format!("Role/{ns}/cf-coreforge-leader-election"),
            &format!("RoleBinding/{a}/cf-coreforge"),
            &format!("RoleBinding/{b}/cf-coreforge"),
            &format!("RoleBinding/{ns}/cf-coreforge-leader-election"),
        ]);
        want_rbac.sort();
        ensure!(rbac == want_rbac, "RBAC objects: {rbac:?}, want {want_rbac:?}");
        for binding in objs.iter().filter(|o| kind(o) == "RoleBinding") {
            ensure!(
                binding["subjects"] == json!([{"kind": "ServiceAccount", "name": "cf-coreforge", "namespace": ns}]),
                "subjects of {}: {}",
                name(binding),
                binding["subjects"]
            );
        }
        server_dry_run(&ns, "namespaced", &manifests).await
    })
    .await;
    for extra in [&team_a, &team_b] {
        support::delete_namespace(&client, extra).await?;
    }
    outcome
}

/// Minimal stand-ins for the prometheus-operator CRDs (the real schemas are thousands
/// of lines): the kinds and the fields the chart sets, typed, the rest preserved. Only
/// created when the cluster has no such CRD, so real ones are never replaced.
const MONITORING_CRDS: &str = r#"
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: servicemonitors.monitoring.coreos.com
  labels: {coreforge.dev/test: stand-in}
spec:
  group: monitoring.coreos.com
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              required: [endpoints, selector]
              x-kubernetes-preserve-unknown-fields: true
              properties:
                selector: {type: object, x-kubernetes-preserve-unknown-fields: true}
                namespaceSelector:
                  type: object
                  properties:
                    any: {type: boolean}
                    matchNames: {type: array, items: {type: string}}
                endpoints:
                  type: array
                  items:
                    type: object
                    x-kubernetes-preserve-unknown-fields: true
                    properties:
                      port: {type: string}
                      path: {type: string}
                      interval: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
                      scrapeTimeout: {type: string, pattern: '^(0|(([0-9]+)y)?(([0-9]+)w)?(([0-9]+)d)?(([0-9]+)h)?(([0-9]+)m)?(([0-9]+)s)?(([0-9]+)ms)?)$'}
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: prometheusrules.monitoring.coreos.com
  labels: {coreforge.dev/test: stand-in}
spec:
  group: monitoring.coreos.com
  names: {kind: PrometheusRule, listKind: PrometheusRuleList, plural: prometheusrules, singular: prometheusrule}
  scope: Namespaced
  versions:
    - name: v1
      served: true
      storage: true
      schema:
        openAPIV3Schema:
          type: object
          required: [spec]
          properties:
            spec:
              type: object
              properties:
                groups:
                  type: array
                  items:
                    type: object
                    required: [name, rules]
                    x-kubernetes-preserve-unknown-fields: true
                    properties:
                      name: {type: string, minLength: 1}
                      rules:
                        type: array
                        items:
                          type: object
                          required: [expr]
                          x-kubernetes-preserve-unknown-fields: true
                          properties:
                            alert: {type: string}
                            record: {type: string}
                            expr: {x-kubernetes-int-or-string: true}
                            for: {type: string}
                            labels: {type: object, additionalProperties: {type: string}}
                            annotations: {type: object, additionalProperties: {type: string}}
"#;

async fn install_monitoring_crds() -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(support::try_client().await?);
    for doc in documents(MONITORING_CRDS)? {
        let crd: CustomResourceDefinition = serde_json::from_value(doc)?;
        match crds.create(&PostParams::default(), &crd).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 => {}
            Err(e) => return Err(e).with_context(|| format!("creating the stand-in CRD {}", crd.name_any())),
        }
        support::wait_for(&crds, &crd.name_any(), "the monitoring CRD to be Established", support::secs(60), |c| {
            support::has_condition(c, "Established")
        })
        .await?;
    }
    Ok(())
}

#[tokio::test]
async fn monitoring_rendering_is_accepted() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    install_monitoring_crds().await?;
    support::with_namespace("helm-monitoring", |_client, ns| async move {
        let manifests = render(
            "cf",
            &ns,
            &[
                "--set",
                "monitoring.serviceMonitor.enabled=true",
                "--set",
                "monitoring.serviceMonitor.labels.release=prometheus",
                "--set",
                "monitoring.prometheusRule.enabled=true",
                "--set",
                "monitoring.grafanaDashboard.enabled=true",
            ],
        )
        .await?;
        let objs = documents(&manifests)?;
        check_deployment(&objs, 2)?;
        let monitor = the(&objs, "ServiceMonitor")?;
        ensure!(monitor["metadata"]["labels"]["release"] == "prometheus", "ServiceMonitor labels");
        ensure!(
            monitor["spec"]["endpoints"][0]["port"] == "http" && monitor["spec"]["endpoints"][0]["path"] == "/metrics"
        );
        ensure!(monitor["spec"]["selector"]["matchLabels"] == the(&objs, "Service")?["spec"]["selector"]);

        // The PrometheusRule's spec is deploy/monitoring/prometheus-rule.yaml's, verbatim.
        let source = read("deploy/monitoring/prometheus-rule.yaml")?;
        let rule = the(&objs, "PrometheusRule")?;
        ensure!(rule["spec"] == documents(&source)?[0]["spec"], "the PrometheusRule's spec differs from the source");
        let rule_doc = manifests
            .split("\n---\n")
            .find(|d| d.contains("\nkind: PrometheusRule\n"))
            .ok_or_else(|| anyhow!("no PrometheusRule document"))?;
        ensure!(
            spec_text(rule_doc).map(str::trim_end) == spec_text(&source).map(str::trim_end),
            "the PrometheusRule's spec is not rendered verbatim"
        );

        // The dashboard ConfigMap holds deploy/monitoring/grafana-dashboard.json.
        let dashboard = objs
            .iter()
            .find(|o| kind(o) == "ConfigMap" && name(o) == "cf-coreforge-dashboard")
            .ok_or_else(|| anyhow!("no dashboard ConfigMap: {:?}", inventory(&objs)))?;
        ensure!(dashboard["metadata"]["labels"]["grafana_dashboard"] == "1", "dashboard labels");
        let json_text = dashboard["data"]["coreforge.json"].as_str().unwrap_or_default();
        let got: Value = serde_json::from_str(json_text).context("the dashboard in the ConfigMap is not JSON")?;
        let want: Value = serde_json::from_str(&read("deploy/monitoring/grafana-dashboard.json")?)?;
        ensure!(got == want, "the dashboard ConfigMap differs from deploy/monitoring/grafana-dashboard.json");

        server_dry_run(&ns, "monitoring", &manifests).await
    })
    .await
}

#[tokio::test]
async fn single_replica_without_leader_election_is_accepted() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("helm-no-election", |_client, ns| async move {
        let manifests = render(
            "cf",
            &ns,
            &[
                "--set",
                "leaderElection.enabled=false",
                "--set",
                "replicas=1",
                "--set",
                "logFormat=json",
                "--set",
                "crds.install=false",
            ],
        )
        .await?;
        let objs = documents(&manifests)?;
        let container = check_deployment(&objs, 1)?;
        let want = ["controller", "--http-addr", "0.0.0.0:8080", "--log-format", "json"];
        ensure!(args(&container) == strings(&want), "args: {:?}", args(&container));
        ensure!(
            !objs.iter().any(|o| matches!(kind(o), "Role" | "RoleBinding" | "CustomResourceDefinition")),
            "no Lease RBAC and no CRDs expected: {:?}",
            inventory(&objs)
        );
        server_dry_run(&ns, "no-election", &manifests).await
    })
    .await
}

// ---------------------------------------------------------------------------------
// helm install / uninstall

/// Installs the chart for real (CRDs included) into a namespace that enforces the
/// restricted Pod Security profile, waits for the rollout (kwok runs the pods), then
/// uninstalls it: everything goes except the CRDs.
#[tokio::test]
async fn helm_install_and_uninstall_keep_the_crds() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("helm-install", |client, ns| async move {
        let release = format!("cf-{}", ns.rsplit('-').next().unwrap_or("x"));
        let outcome = install_and_uninstall(client, &ns, &release).await;
        if outcome.is_err() {
            // The ClusterRole and its binding are not in the namespace: do not leak them.
            let _ = fixtures::helm(&["uninstall", &release, "--namespace", &ns, "--wait", "--timeout", "60s"]).await;
        }
        // The kept CRDs still name this (gone) release as their owner, which would make
        // the next `helm install` refuse them: hand them back, as they were before.
        let released = disown_crds().await;
        outcome.and(released)
    })
    .await
}

/// Removes what the release put on the coreforge CRDs besides their spec: Helm's
/// ownership marks, the chart's labels and the keep policy (idempotent).
async fn disown_crds() -> anyhow::Result<()> {
    for crd in CRD_NAMES {
        let target = format!("crd/{crd}");
        support::run(support::kubectl().args([
            "annotate",
            &target,
            "meta.helm.sh/release-name-",
            "meta.helm.sh/release-namespace-",
            "helm.sh/resource-policy-",
        ]))
        .await?;
        let mut label = support::kubectl();
        label.args(["label", &target, "helm.sh/chart-"]);
        for key in ["name", "instance", "component", "version", "part-of", "managed-by"] {
            label.arg(format!("app.kubernetes.io/{key}-"));
        }
        support::run(&mut label).await?;
    }
    Ok(())
}

async fn install_and_uninstall(client: kube::Client, ns: &str, release: &str) -> anyhow::Result<()> {
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    // The CRDs exist already (other tests, or a previous install): let this release
    // adopt them, as a user would with `kubectl annotate` / `kubectl label`.
    let mut uids = BTreeMap::new();
    for crd in CRD_NAMES {
        support::run(support::kubectl().args([
            "annotate",
            "--overwrite",
            &format!("crd/{crd}"),
            &format!("meta.helm.sh/release-name={release}"),
            &format!("meta.helm.sh/release-namespace={ns}"),
        ]))
        .await?;
        support::run(support::kubectl().args([
            "label",
            "--overwrite",
            &format!("crd/{crd}"),
            "app.kubernetes.io/managed-by=Helm",
        ]))
        .await?;
        uids.insert(crd, crds.get(crd).await?.uid());
    }
    support::run(support::kubectl().args([
        "label",
        "namespace",
        ns,
        "pod-security.kubernetes.io/enforce=restricted",
        "pod-security.kubernetes.io/enforce-version=latest",
    ]))
    .await?;

    let out = fixtures::helm(&["install", release, CHART, "--namespace", ns, "--wait", "--timeout", "120s"]).await?;
    ensure!(out.contains("STATUS: deployed"), "helm install:\n{out}");
    ensure!(out.contains("Uninstalling leaves the CRDs"), "helm install printed no NOTES:\n{out}");

    let fullname = format!("{release}-coreforge");
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let deployment = deployments.get(&fullname).await?;
    let available = deployment.status.as_ref().and_then(|s| s.available_replicas).unwrap_or(0);
    ensure!(available == 2, "{fullname}: {available} available replicas after helm install --wait");
    let roles: Api<ClusterRole> = Api::all(client.clone());
    ensure!(roles.get_opt(&fullname).await?.is_some(), "no ClusterRole {fullname}");
    for crd in CRD_NAMES {
        let live = crds.get(crd).await?;
        // Checked before uninstalling: without it, uninstall would delete the CRDs and
        // with them every CoreBuild and ImageRelease in the cluster.
        ensure!(
            live.annotations().get("helm.sh/resource-policy").map(String::as_str) == Some("keep"),
            "{crd} is not marked keep after install: {:?}",
            live.annotations()
        );
    }

    let out = fixtures::helm(&["uninstall", release, "--namespace", ns, "--wait", "--timeout", "60s"]).await?;
    ensure!(out.contains("uninstalled"), "helm uninstall:\n{out}");
    ensure!(deployments.get_opt(&fullname).await?.is_none(), "the Deployment survived helm uninstall");
    ensure!(roles.get_opt(&fullname).await?.is_none(), "the ClusterRole survived helm uninstall");
    for crd in CRD_NAMES {
        let live = crds.get_opt(crd).await?.ok_or_else(|| anyhow!("helm uninstall deleted the CRD {crd}"))?;
        ensure!(live.metadata.deletion_timestamp.is_none(), "helm uninstall is deleting the CRD {crd}");
        ensure!(live.uid() == uids[crd], "the CRD {crd} was replaced");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// RBAC, with a real ServiceAccount token

/// The chart's ServiceAccount and RBAC for a namespaced install (watchNamespaces=[ns],
/// leader election on), exercised with the ServiceAccount's own token: what the
/// controller needs is allowed, the rest refused. Refusals that would change shared
/// state if they were wrongly allowed are asked as dry runs (authorization comes first).
#[tokio::test]
async fn chart_rbac_refuses_what_the_controller_does_not_need() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("helm-rbac", |_client, ns| async move {
        let manifests = render(
            "cf",
            &ns,
            &[
                "--set-json",
                &format!("watchNamespaces=[\"{ns}\"]"),
                "--show-only",
                "templates/serviceaccount.yaml",
                "--show-only",
                "templates/rbac.yaml",
            ],
        )
        .await?;
        let file = fixtures::scratch(&ns)?.join("rbac.yaml");
        std::fs::write(&file, &manifests)?;
        support::run(support::kubectl().args(["apply", "-f", &file.to_string_lossy()])).await?;
        let token =
            support::run(support::kubectl().args(["create", "token", "cf-coreforge", "-n", &ns, "--duration", "10m"]))
                .await?;
        let sa = support::client_with_token(token.trim()).await?;
        let lp = ListParams::default();
        let dry_post = PostParams { dry_run: true, ..PostParams::default() };
        let dry_delete = DeleteParams { dry_run: true, ..DeleteParams::default() };

        // Allowed: what the controller does in the watched namespace. The authorizer
        // learns about new bindings asynchronously: the first check waits for it.
        let releases: Api<DynamicObject> = Api::namespaced_with(sa.clone(), &ns, &image_releases());
        support::eventually(
            "the ServiceAccount to list ImageReleases",
            support::secs(30),
            Duration::from_millis(200),
            || {
                let releases = releases.clone();
                async move { Ok(releases.list(&ListParams::default()).await.map(Some)?) }
            },
        )
        .await?;
        let jobs: Api<Job> = Api::namespaced(sa.clone(), &ns);
        jobs.create(&PostParams::default(), &job("allowed")?)
            .await
            .context("creating a Job in the watched namespace")?;
        let secrets: Api<Secret> = Api::namespaced(sa.clone(), &ns);
        match secrets.get("named-by-a-corebuild").await {
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            other => bail!("getting a Secret by name: expected 404 (allowed, absent), got {other:?}"),
        }
        let leases: Api<Lease> = Api::namespaced(sa.clone(), &ns);
        match leases.get("cf-coreforge").await {
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            other => bail!("getting the election Lease: expected 404 (allowed, absent), got {other:?}"),
        }

        // Refused.
        forbidden(secrets.list(&lp).await, "listing Secrets in the watched namespace")?;
        forbidden(Api::<Secret>::all(sa.clone()).list(&lp).await, "listing Secrets cluster-wide")?;
        let crds: Api<CustomResourceDefinition> = Api::all(sa.clone());
        forbidden(crds.delete("imagereleases.coreforge.dev", &dry_delete).await, "deleting a CRD")?;
        let elsewhere: Api<Job> = Api::namespaced(sa.clone(), "default");
        forbidden(elsewhere.create(&dry_post, &job("elsewhere")?).await, "creating a Job in another namespace")?;
        forbidden(elsewhere.delete("someone-elses", &dry_delete).await, "deleting a Job in another namespace")?;
        let updated = jobs.replace("allowed", &dry_post, &jobs.get("allowed").await?).await;
        forbidden(updated, "updating a Job")?;
        let elsewhere: Api<DynamicObject> = Api::namespaced_with(sa.clone(), "default", &image_releases());
        forbidden(elsewhere.list(&lp).await, "listing ImageReleases in another namespace")?;
        let everywhere: Api<DynamicObject> = Api::all_with(sa.clone(), &image_releases());
        forbidden(everywhere.list(&lp).await, "listing ImageReleases cluster-wide")?;
        forbidden(leases.get("someone-elses-lease").await, "reading another Lease")?;
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------
// kustomize

/// `deploy/` renders the chart's default objects in coreforge-system (plus the
/// Namespace), and nothing from deploy/examples/.
#[tokio::test]
async fn kustomize_base_matches_the_chart() -> anyhow::Result<()> {
    support::ensure_cluster().await?;
    let built =
        support::run(support::kubectl().args(["kustomize", "deploy/"]).current_dir(support::repo_root())).await?;
    let chart = render("coreforge", "coreforge-system", &[]).await?;
    let normalize = |objs: Vec<Value>| -> BTreeMap<String, Value> {
        objs.into_iter()
            .filter(|o| !matches!(kind(o), "Namespace" | "CustomResourceDefinition"))
            .map(|mut o| {
                for labels in ["/metadata/labels", "/spec/template/metadata/labels"] {
                    if let Some(map) = o.pointer_mut(labels).and_then(Value::as_object_mut) {
                        map.remove("helm.sh/chart");
                        map.remove("app.kubernetes.io/managed-by");
                    }
                }
                (inventory(std::slice::from_ref(&o)).remove(0), o)
            })
            .collect()
    };
    let kustomized = documents(&built)?;
    let kinds: Vec<String> = inventory(&kustomized);
    ensure!(
        kustomized.iter().any(|o| kind(o) == "Namespace" && name(o) == "coreforge-system"),
        "no Namespace coreforge-system: {kinds:?}"
    );
    ensure!(
        !kustomized.iter().any(|o| kind(o).starts_with("CoreBuild") || kind(o).starts_with("ImageRelease")),
        "deploy/examples leaked into the kustomization: {kinds:?}"
    );
    let crd_names: BTreeSet<&str> =
        kustomized.iter().filter(|o| kind(o) == "CustomResourceDefinition").map(name).collect();
    ensure!(crd_names == CRD_NAMES.into_iter().collect(), "CRDs: {crd_names:?}");
    let (got, want) = (normalize(kustomized.clone()), normalize(documents(&chart)?));
    let (got_names, want_names): (Vec<_>, Vec<_>) = (got.keys().collect(), want.keys().collect());
    ensure!(got_names == want_names, "kustomize renders {got_names:?}, the chart {want_names:?}");
    for (key, obj) in &got {
        ensure!(
            obj == &want[key],
            "{key} differs between deploy/ and the chart's default rendering:\nkustomize: {obj}\nchart:     {}",
            want[key]
        );
    }
    Ok(())
}

/// The API server accepts every object of `kubectl apply -k deploy/`. A server-side dry
/// run cannot create coreforge-system first, so the base is applied through an overlay
/// that moves it into the test's namespace (kustomize renames the Namespace object too).
#[tokio::test]
async fn kustomize_base_is_accepted() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("kustomize", |_client, ns| async move {
        let overlay = fixtures::scratch(&format!("kustomize-{ns}"))?;
        std::fs::write(
            overlay.join("kustomization.yaml"),
            format!(
                "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: {ns}\nresources:\n  - ../../../deploy\n"
            ),
        )?;
        let dir = overlay.to_string_lossy().into_owned();
        let rendered = support::run(support::kubectl().args(["kustomize", &dir])).await?;
        let objects = documents(&rendered)?.len();
        let out = support::run(support::kubectl().args(["apply", "--dry-run=server", "-k", &dir])).await?;
        let accepted = out.lines().filter(|l| l.contains("(server dry run)")).count();
        ensure!(accepted == objects && objects >= 10, "{objects} objects, {accepted} accepted:\n{out}");
        std::fs::remove_dir_all(&overlay).ok();
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------
// The image

/// The port of the local open registry (tests/cluster/up.sh records it).
fn registry_port() -> String {
    std::fs::read_to_string(support::cluster_dir().join("ports.env"))
        .ok()
        .and_then(|text| text.lines().find_map(|l| l.strip_prefix("REGISTRY_PORT=").map(|p| p.trim().to_string())))
        .unwrap_or_else(|| "15000".into())
}

/// `tests/image.sh` builds the image from the Containerfile with buildah, it runs
/// `/coreforge --version` as uid 65532, and it is pushed to the local registry.
#[tokio::test]
async fn image_builds_runs_and_is_pushed() -> anyhow::Result<()> {
    // The cluster environment runs the local registry.
    support::ensure_cluster().await?;
    let registry = format!("127.0.0.1:{}", registry_port());
    let out = fixtures::image_sh(&["--push", &registry]).await?;
    let lines: Vec<&str> = out.lines().collect();
    let version = env!("CARGO_PKG_VERSION");
    let image = format!("localhost/coreforge:{version}");
    ensure!(lines.first() == Some(&image.as_str()), "tests/image.sh printed {out:?}");
    let pushed = lines.get(1).ok_or_else(|| anyhow!("tests/image.sh printed no pushed reference: {out:?}"))?;
    let digest = pushed
        .strip_prefix(&format!("{registry}/coreforge:{version}@"))
        .ok_or_else(|| anyhow!("unexpected pushed reference {pushed}"))?;

    let inspected = fixtures::image_sh(&["buildah", "inspect", "--type", "image", &image]).await?;
    let inspected: Value = serde_json::from_str(&inspected).context("buildah inspect printed no JSON")?;
    let config = &inspected["OCIv1"]["config"];
    ensure!(config["User"] == "65532:65532" && config["Entrypoint"] == json!(["/coreforge"]), "image config: {config}");

    let container = fixtures::image_sh(&["buildah", "from", "--pull=never", &image]).await?;
    let container = container.trim().to_string();
    let ran =
        fixtures::image_sh(&["buildah", "run", "--isolation", "chroot", &container, "--", "/coreforge", "--version"])
            .await;
    fixtures::image_sh(&["buildah", "rm", &container]).await?;
    let ran = ran?;
    ensure!(ran.trim() == format!("coreforge {version}"), "/coreforge --version printed {ran:?}");

    // The registry serves the pushed manifest under the tag, with the same digest.
    let mut curl = tokio::process::Command::new("curl");
    curl.args([
        "-fsSI",
        "-H",
        "Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json",
        &format!("http://{registry}/v2/coreforge/manifests/{version}"),
    ]);
    let headers = support::run(&mut curl).await?;
    ensure!(
        headers.lines().any(|l| l.to_ascii_lowercase().starts_with("docker-content-digest:") && l.contains(digest)),
        "the registry serves a different manifest for coreforge:{version} than the pushed {digest}:\n{headers}"
    );
    Ok(())
}
