//! GitOps health: what Argo CD and Flux make of CoreBuilds and ImageReleases.
//!
//! - every captured status in `deploy/argocd/coreforge.dev/<Kind>/testdata/` gets the Argo
//!   CD health and the kstatus its `health_test.yaml` expects, judged by the harness in
//!   `tests/gitops/` (Argo CD's Lua VM set-up and kstatus' `Compute`; built and cached by
//!   `tests/cluster/build.sh gitops-check`); no cluster needed;
//! - end to end, a controller drives releases and CoreBuilds through every phase, in flight,
//!   held, failed, stalled and not yet observed, and at each state the harness judges the
//!   live object. With `COREFORGE_CAPTURE_HEALTH=1` it writes each one into `testdata/`:
//!   that is how the fixtures are made;
//! - the chart's health checks are `deploy/argocd`'s, and its ConfigMap merges server-side
//!   into an existing `argocd-cm` without touching what another field manager owns.

mod fixtures;
mod support;

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt;

const KINDS: [&str; 2] = ["CoreBuild", "ImageRelease"];
const SETTLE: Duration = Duration::from_secs(120);
/// The keys of Argo CD's ConfigMap that hold the health Lua of each kind.
const CM_KEYS: [(&str, &str); 2] = [
    ("resource.customizations.health.coreforge.dev_CoreBuild", "CoreBuild"),
    ("resource.customizations.health.coreforge.dev_ImageRelease", "ImageRelease"),
];

// ---------------------------------------------------------------------------------
// The harness

/// `deploy/argocd/coreforge.dev/<kind>`, relative to the repository root.
fn health_dir(kind: &str) -> String {
    format!("deploy/argocd/coreforge.dev/{kind}")
}

/// The harness binary, built by `tests/cluster/build.sh gitops-check` unless cached
/// (once per test process; it prints the binary's path).
async fn harness() -> anyhow::Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    let outcome = tokio::task::spawn_blocking(|| {
        BIN.get_or_init(|| {
            let script = support::repo_root().join("tests/cluster/build.sh");
            let out = std::process::Command::new(&script)
                .arg("gitops-check")
                .current_dir(support::repo_root())
                .stdin(Stdio::null())
                .output()
                .map_err(|e| format!("could not run {}: {e}", script.display()))?;
            let stdout = String::from_utf8_lossy(&out.stdout);
            let bin = PathBuf::from(stdout.lines().last().unwrap_or_default().trim());
            if !out.status.success() || !bin.is_file() {
                return Err(format!(
                    "{} gitops-check failed ({}):\n{stdout}{}",
                    script.display(),
                    out.status,
                    String::from_utf8_lossy(&out.stderr)
                ));
            }
            Ok(bin)
        })
        .clone()
    })
    .await?;
    outcome.map_err(|e| anyhow!(e))
}

#[derive(Debug, Deserialize, PartialEq)]
struct Verdict {
    status: String,
    message: String,
}

#[derive(Debug, Deserialize)]
struct Judgement {
    argocd: Verdict,
    kstatus: Verdict,
}

/// What Argo CD (with `<kind>/health.lua`) and kstatus make of `obj`.
async fn judge(kind: &str, obj: &Value) -> anyhow::Result<Judgement> {
    let script = support::repo_root().join(health_dir(kind)).join("health.lua");
    let mut child = tokio::process::Command::new(harness().await?)
        .arg(&script)
        .arg("-")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    let mut stdin = child.stdin.take().context("the harness' stdin")?;
    stdin.write_all(serde_json::to_string(obj)?.as_bytes()).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    ensure!(out.status.success(), "the harness failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout)
        .with_context(|| format!("the harness printed {:?}", String::from_utf8_lossy(&out.stdout)))
}

// ---------------------------------------------------------------------------------
// The committed fixtures (no cluster)

#[derive(Debug, Deserialize)]
struct HealthTests {
    tests: Vec<HealthTest>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct HealthTest {
    input_path: String,
}

/// The captured objects of `kind`, by file name.
fn fixtures_of(kind: &str) -> anyhow::Result<Vec<(String, Value)>> {
    let dir = support::repo_root().join(health_dir(kind)).join("testdata");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).with_context(|| format!("listing {}", dir.display()))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        let value: Value = serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        out.push((path.file_name().unwrap_or_default().to_string_lossy().into_owned(), value));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

fn condition<'a>(obj: &'a Value, type_: &str) -> Option<&'a Value> {
    obj.pointer("/status/conditions")?.as_array()?.iter().find(|c| c["type"] == type_)
}

fn is_true(obj: &Value, type_: &str) -> bool {
    condition(obj, type_).is_some_and(|c| c["status"] == "True")
}

fn reason(obj: &Value, type_: &str) -> String {
    condition(obj, type_).and_then(|c| c["reason"].as_str()).unwrap_or_default().to_string()
}

fn phase(obj: &Value) -> &str {
    obj.pointer("/status/phase").and_then(Value::as_str).unwrap_or_default()
}

/// Whether the controller has written a status for the current generation.
fn observed(obj: &Value) -> bool {
    let generation = obj.pointer("/metadata/generation").and_then(Value::as_i64);
    generation.is_some() && obj.pointer("/status/observedGeneration").and_then(Value::as_i64) == generation
}

/// Runs the harness over both `health_test.yaml` files: every Argo CD status and message
/// and every kstatus must be as expected, every captured file judged, and no object with a
/// field taken away may make a script fail. The fixtures cover what the docs promise.
#[tokio::test]
async fn the_health_checks_judge_every_captured_status() -> anyhow::Result<()> {
    let bin = harness().await?;
    for kind in KINDS {
        let tests = format!("{}/health_test.yaml", health_dir(kind));
        let out = tokio::process::Command::new(&bin)
            .args(["test", &tests])
            .current_dir(support::repo_root())
            .output()
            .await?;
        let stdout = String::from_utf8_lossy(&out.stdout);
        ensure!(out.status.success(), "{tests}:\n{stdout}{}", String::from_utf8_lossy(&out.stderr));
        let declared: HealthTests = serde_yaml::from_str(&support::repo_file(&tests)?)?;
        let summary = stdout.lines().last().unwrap_or_default();
        ensure!(
            summary.starts_with(&format!("{} cases, ", declared.tests.len())) && summary.ends_with(", 0 failures"),
            "{tests}: {summary}"
        );
        let variants: usize = summary.split(", ").nth(1).and_then(|v| v.split(' ').next()?.parse().ok()).unwrap_or(0);
        ensure!(variants > 10 * declared.tests.len(), "{tests}: too few objects without a field: {summary}");
        let inputs: BTreeSet<&str> = declared.tests.iter().map(|t| t.input_path.as_str()).collect();
        ensure!(inputs.len() == declared.tests.len(), "{tests} judges a file twice");
    }

    // What the captures must cover.
    let releases = fixtures_of("ImageRelease")?;
    ensure!(releases.len() >= 8, "only {} captured ImageReleases", releases.len());
    let phases: BTreeSet<&str> = releases.iter().map(|(_, r)| phase(r)).collect();
    for want in ["Pending", "Building", "Testing", "Verified", "Published", "Deprecated", "Retired", "Failed"] {
        ensure!(phases.contains(want), "no captured ImageRelease in phase {want}: {phases:?}");
    }
    let covered = |objs: &[(String, Value)], what: &str, f: &dyn Fn(&Value) -> bool| -> anyhow::Result<()> {
        ensure!(objs.iter().any(|(_, o)| f(o)), "no captured object {what}");
        Ok(())
    };
    covered(&releases, "stalled", &|r| observed(r) && is_true(r, "Stalled"))?;
    covered(&releases, "in flight", &|r| {
        observed(r) && is_true(r, "Reconciling") && matches!(phase(r), "Building" | "Testing")
    })?;
    covered(&releases, "held at Verified", &|r| {
        observed(r) && r["spec"]["target"] == "Verified" && phase(r) == "Verified"
    })?;
    covered(&releases, "waiting for its CoreBuild", &|r| reason(r, "Reconciling") == "CoreBuildNotFound")?;
    covered(&releases, "whose generation is not observed", &|r| r.get("status").is_some() && !observed(r))?;
    covered(&releases, "without a status", &|r| r.get("status").is_none())?;
    let builds = fixtures_of("CoreBuild")?;
    covered(&builds, "CoreBuild ready", &|b| observed(b) && is_true(b, "Ready"))?;
    covered(&builds, "CoreBuild stalled", &|b| observed(b) && is_true(b, "Stalled"))?;
    covered(&builds, "CoreBuild retrying", &|b| observed(b) && is_true(b, "Reconciling"))?;
    covered(&builds, "CoreBuild whose generation is not observed", &|b| !observed(b))?;
    Ok(())
}

/// The chart's copies of the scripts and `deploy/argocd/argocd-cm.yaml` hold exactly the
/// scripts of `deploy/argocd/`.
#[test]
fn the_copies_of_the_health_checks_are_identical() -> anyhow::Result<()> {
    let patch: Value = serde_yaml::from_str(&support::repo_file("deploy/argocd/argocd-cm.yaml")?)?;
    let keys: BTreeSet<&str> = patch["data"].as_object().into_iter().flatten().map(|(k, _)| k.as_str()).collect();
    ensure!(keys == CM_KEYS.iter().map(|(k, _)| *k).collect(), "deploy/argocd/argocd-cm.yaml has keys {keys:?}");
    for (key, kind) in CM_KEYS {
        let original = support::repo_file(format!("{}/health.lua", health_dir(kind)))?;
        let copy = format!("charts/coreforge/files/argocd/coreforge.dev/{kind}/health.lua");
        ensure!(
            support::repo_file(&copy)? == original,
            "{copy} differs from {}/health.lua; refresh it with `make crds`",
            health_dir(kind)
        );
        ensure!(patch["data"][key] == original, "deploy/argocd/argocd-cm.yaml's {key} differs from the script");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// End to end

fn api_resource(kind: &str) -> ApiResource {
    let gvk = GroupVersionKind::gvk("coreforge.dev", "v1alpha1", kind);
    ApiResource::from_gvk_with_plural(&gvk, &format!("{}s", kind.to_lowercase()))
}

/// The scenario's objects, as the API server has them.
struct Scene {
    client: Client,
    ns: String,
    capture: bool,
}

impl Scene {
    fn api(&self, kind: &str) -> Api<DynamicObject> {
        Api::namespaced_with(self.client.clone(), &self.ns, &api_resource(kind))
    }

    async fn create(&self, obj: Value) -> anyhow::Result<()> {
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let obj: DynamicObject = serde_json::from_value(obj)?;
        self.api(&kind).create(&PostParams::default(), &obj).await?;
        Ok(())
    }

    async fn patch(&self, kind: &str, name: &str, patch: Value) -> anyhow::Result<()> {
        self.api(kind).patch(name, &PatchParams::default(), &Patch::Merge(patch)).await?;
        Ok(())
    }

    /// Waits until `kind/name` satisfies `cond` and returns it as JSON.
    async fn wait(&self, kind: &str, name: &str, what: &str, cond: impl Fn(&Value) -> bool) -> anyhow::Result<Value> {
        let to_json = |o: &DynamicObject| serde_json::to_value(o).unwrap_or_default();
        let obj =
            support::wait_for(&self.api(kind), name, &format!("{kind} {name} {what}"), SETTLE, |o| cond(&to_json(o)))
                .await?;
        Ok(to_json(&obj))
    }

    /// Judges `obj` (in state `state`): Argo CD's health must be `health` with a message
    /// containing `fragment`, kstatus must say `kstatus`. With capture on, the object goes
    /// into `testdata/<state>.yaml`.
    async fn expect(&self, state: &str, obj: Value, health: &str, fragment: &str, kstatus: &str) -> anyhow::Result<()> {
        let kind = obj["kind"].as_str().unwrap_or_default().to_string();
        let obj = stable(obj);
        let got = judge(&kind, &obj).await?;
        if self.capture {
            let path = support::repo_root().join(health_dir(&kind)).join("testdata").join(format!("{state}.yaml"));
            std::fs::create_dir_all(path.parent().unwrap_or(&path))?;
            std::fs::write(&path, serde_yaml::to_string(&obj)?)?;
        }
        ensure!(
            got.argocd.status == health && got.argocd.message.contains(fragment) && got.kstatus.status == kstatus,
            "{kind} {state}: expected Argo CD {health} (message with {fragment:?}) and kstatus {kstatus}, got {got:?}\n{}",
            serde_json::to_string_pretty(&obj["status"])?
        );
        Ok(())
    }
}

/// The object without what changes at every capture and means nothing to a health
/// check (conditions keep their times).
fn stable(mut obj: Value) -> Value {
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["managedFields", "uid", "resourceVersion", "creationTimestamp"] {
            meta.remove(field);
        }
    }
    obj
}

fn release(name: &str, core_build: &str, version: &str, target: &str) -> Value {
    let mut r = fixtures::release(name, core_build, version);
    r["spec"]["target"] = json!(target);
    r
}

/// A CoreBuild publishing into its own repository of the local registry, whose simulated
/// build reports a freshly pushed image.
async fn core_build(name: &str, ns: &str) -> anyhow::Result<Value> {
    let digest = fixtures::seed_image(&fixtures::staging(ns)).await?;
    let mut cb = fixtures::local_core_build(name, ns, &digest);
    cb["spec"]["catalog"]["repository"] = json!(format!("{}/{ns}/{name}", fixtures::REGISTRY));
    cb["spec"]["lifecycle"] = json!({"maxSupported": 10});
    Ok(cb)
}

fn running_for_an_hour(cb: &mut Value, step: &str) {
    cb["spec"][step]["podAnnotations"]["sim.coreforge.dev/run-seconds"] = json!("3600");
}

#[tokio::test]
async fn argo_cd_and_kstatus_read_every_state_of_a_live_release() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    harness().await?;
    let capture = std::env::var("COREFORGE_CAPTURE_HEALTH").is_ok_and(|v| v == "1");
    support::with_namespace("gitops-health", move |client, ns| async move {
        let s = Scene { client, ns: ns.clone(), capture };
        let controller = fixtures::ControllerProcess::start(&ns).await?;
        let ready = |o: &Value| observed(o) && is_true(o, "Ready");
        let in_phase = |p: &'static str| move |o: &Value| observed(o) && phase(o) == p && is_true(o, "Ready");

        // Waiting for a CoreBuild that does not exist yet, then for a blueprint ConfigMap.
        s.create(release("r1", "debian", "12.0.0", "Verified")).await?;
        let r1 = s.wait("ImageRelease", "r1", "waiting for its CoreBuild", |o| {
            observed(o) && reason(o, "Reconciling") == "CoreBuildNotFound"
        });
        s.expect(
            "pending-corebuild-not-found",
            r1.await?,
            "Suspended",
            "Pending: CoreBuild debian does not exist",
            "InProgress",
        )
        .await?;
        let mut from_cm = core_build("from-configmap", &ns).await?;
        from_cm["spec"]["blueprint"] = json!({"configMapRef": {"name": "blueprint", "key": "Containerfile"}});
        s.create(from_cm).await?;
        s.create(release("r-blueprint", "from-configmap", "12.0.0", "Verified")).await?;
        let r = s.wait("ImageRelease", "r-blueprint", "waiting for its blueprint", |o| {
            observed(o) && reason(o, "Reconciling") == "BlueprintNotFound"
        });
        s.expect("pending-blueprint-not-found", r.await?, "Suspended", "Pending: ", "InProgress").await?;

        // The CoreBuild appears: r1 is built, tested, and held at its target, Verified.
        s.create(core_build("debian", &ns).await?).await?;
        let r1 = s.wait("ImageRelease", "r1", "held at Verified", in_phase("Verified")).await?;
        s.expect("verified-held", r1, "Healthy", "Verified: ", "Current").await?;

        // In flight: a build and a contract test that take an hour.
        let mut slow = core_build("slow-build", &ns).await?;
        running_for_an_hour(&mut slow, "builder");
        s.create(slow).await?;
        s.create(release("r-building", "slow-build", "12.0.0", "Published")).await?;
        let r = s.wait("ImageRelease", "r-building", "building", |o| observed(o) && phase(o) == "Building").await?;
        s.expect("building", r, "Progressing", "Building: ", "InProgress").await?;
        let mut slow = core_build("slow-test", &ns).await?;
        running_for_an_hour(&mut slow, "tester");
        s.create(slow).await?;
        s.create(release("r-testing", "slow-test", "12.0.0", "Published")).await?;
        let r = s.wait("ImageRelease", "r-testing", "testing", |o| observed(o) && phase(o) == "Testing").await?;
        s.expect("testing", r, "Progressing", "Testing: ", "InProgress").await?;

        // A contract test that fails.
        let mut broken = core_build("broken", &ns).await?;
        broken["spec"]["tester"]["podAnnotations"]["sim.coreforge.dev/termination-message"] =
            json!(fixtures::test_report(false));
        s.create(broken).await?;
        s.create(release("r-failed", "broken", "12.0.0", "Published")).await?;
        let r = s.wait("ImageRelease", "r-failed", "failed", |o| observed(o) && phase(o) == "Failed").await?;
        s.expect("failed-contract-test", r, "Degraded", "tls", "Failed").await?;

        // Published, Deprecated and Retired by their targets; the CoreBuild's channels follow.
        s.create(release("r-published", "debian", "12.1.0", "Published")).await?;
        let r = s.wait("ImageRelease", "r-published", "published", in_phase("Published")).await?;
        s.expect("published", r, "Healthy", "Published: ", "Current").await?;
        let cb = s.wait("CoreBuild", "debian", "with its channels at 12.1.0", |o| {
            ready(o)
                && o.pointer("/status/channels")
                    .and_then(Value::as_array)
                    .is_some_and(|c| c.len() == 2 && c.iter().all(|c| c["version"] == "12.1.0"))
        });
        s.expect("ready", cb.await?, "Healthy", "2 channel(s) current", "Current").await?;
        s.create(release("r-deprecated", "debian", "12.2.0", "Deprecated")).await?;
        let r = s.wait("ImageRelease", "r-deprecated", "deprecated", in_phase("Deprecated")).await?;
        s.expect("deprecated", r, "Healthy", "Deprecated: deprecated at ", "Current").await?;
        s.create(release("r-retired", "debian", "12.3.0", "Retired")).await?;
        let r = s.wait("ImageRelease", "r-retired", "retired", in_phase("Retired")).await?;
        s.expect("retired", r, "Healthy", "Retired: ", "Current").await?;

        // Stalled: a version already released, and a spec the controller refuses.
        s.create(release("r-duplicate", "debian", "12.1.0", "Published")).await?;
        let stalled = |o: &Value| observed(o) && is_true(o, "Stalled");
        let r = s.wait("ImageRelease", "r-duplicate", "stalled", stalled).await?;
        s.expect("duplicate-version", r, "Degraded", "DuplicateVersion: version 12.1.0", "Failed").await?;
        let mut invalid = release("r-invalid", "debian", "12.4.0", "Published");
        invalid["spec"]["supportEndsAt"] = json!("2020-01-01T00:00:00Z");
        s.create(invalid).await?;
        let r = s.wait("ImageRelease", "r-invalid", "stalled", stalled).await?;
        s.expect("invalid-spec", r, "Degraded", "InvalidSpec: spec.supportEndsAt", "Failed").await?;

        // Not observed yet: the controller is stopped while Git moves r1 on, a release is
        // created and the CoreBuild's spec changes.
        controller.signal("STOP")?;
        s.patch("ImageRelease", "r1", json!({"spec": {"target": "Published"}})).await?;
        let r1 = s.wait("ImageRelease", "r1", "at generation 2", |o| o["metadata"]["generation"] == 2).await?;
        s.expect("target-raised-not-observed", r1, "Progressing", "observe generation 2", "InProgress").await?;
        s.create(release("r-new", "debian", "12.5.0", "Verified")).await?;
        let r = s.wait("ImageRelease", "r-new", "created", |_| true).await?;
        // kstatus has no observedGeneration to compare, and no conditions: Current.
        s.expect("created-not-observed", r, "Progressing", "observe generation 1", "Current").await?;
        let generation = s.wait("CoreBuild", "debian", "", |_| true).await?["metadata"]["generation"].as_i64();
        s.patch("CoreBuild", "debian", json!({"spec": {"lifecycle": {"maxSupported": 9}}})).await?;
        let cb = s.wait("CoreBuild", "debian", "at its next generation", |o| {
            o["metadata"]["generation"].as_i64() > generation
        });
        s.expect("spec-changed-not-observed", cb.await?, "Progressing", "observe generation", "InProgress").await?;
        controller.signal("CONT")?;
        let r1 = s.wait("ImageRelease", "r1", "published", in_phase("Published")).await?;
        ensure!(judge("ImageRelease", &r1).await?.argocd.status == "Healthy");
        let r = s.wait("ImageRelease", "r-new", "held at Verified", in_phase("Verified")).await?;
        ensure!(judge("ImageRelease", &r).await?.argocd.status == "Healthy");

        // The CoreBuild cannot move a new channel: its credentials Secret is missing (a
        // person must act), then its registry does not answer (it retries).
        let channels = json!(["12", "12.1", "latest"]);
        s.patch(
            "CoreBuild",
            "debian",
            json!({"spec": {"catalog": {"channels": channels, "credentialsSecret": {"name": "no-such-secret"}}}}),
        )
        .await?;
        let cb = s.wait("CoreBuild", "debian", "stalled", stalled).await?;
        s.expect("credentials-missing", cb, "Degraded", "CredentialsInvalid: ", "Failed").await?;
        let unreachable = format!("127.0.0.1:1/{ns}/debian");
        s.patch(
            "CoreBuild",
            "debian",
            json!({"spec": {"catalog": {"repository": unreachable, "credentialsSecret": null}}}),
        )
        .await?;
        let cb = s.wait("CoreBuild", "debian", "retrying", |o| observed(o) && is_true(o, "Reconciling")).await?;
        s.expect("registry-unavailable", cb, "Progressing", "moving channels: ", "InProgress").await?;
        Ok(())
    })
    .await
}

// ---------------------------------------------------------------------------------
// The chart

fn documents(yaml: &str) -> anyhow::Result<Vec<Value>> {
    let mut out = Vec::new();
    for doc in serde_yaml::Deserializer::from_str(yaml) {
        let value = Value::deserialize(doc)?;
        if !value.is_null() {
            out.push(value);
        }
    }
    Ok(out)
}

/// `helm template` of the chart with the health checks on, only their ConfigMap.
async fn render_health_checks(extra: &[&str]) -> anyhow::Result<String> {
    let mut args = vec![
        "template",
        "coreforge",
        "charts/coreforge",
        "--set",
        "argocd.healthChecks.enabled=true",
        "--show-only",
        "templates/argocd-health.yaml",
    ];
    args.extend_from_slice(extra);
    fixtures::helm(&args).await
}

/// Argo CD's installation owns `argocd-cm` (here: another field manager, with a setting
/// and Argo CD's labels). The chart's rendering, applied server-side, adds the two health
/// keys and leaves everything else as it was, owned by whom it was.
#[tokio::test]
async fn the_chart_merges_its_health_checks_into_argo_cds_configmap() -> anyhow::Result<()> {
    // Off by default; on, lint passes and the schema refuses a bad namespace.
    let defaults = fixtures::helm(&["template", "coreforge", "charts/coreforge"]).await?;
    ensure!(!defaults.contains("resource.customizations"), "the health checks render by default");
    let lint =
        fixtures::helm(&["lint", "--strict", "charts/coreforge", "--set", "argocd.healthChecks.enabled=true"]).await?;
    ensure!(lint.contains("0 chart(s) failed"), "helm lint:\n{lint}");
    match render_health_checks(&["--set", "argocd.namespace=Argo_CD"]).await {
        Err(e) if format!("{e:#}").contains("/argocd/namespace") => {}
        other => bail!("a bad argocd.namespace was not refused by the schema: {other:?}"),
    }

    // With the defaults it is deploy/argocd/argocd-cm.yaml.
    let rendered = documents(&render_health_checks(&[]).await?)?;
    let patch = documents(&support::repo_file("deploy/argocd/argocd-cm.yaml")?)?;
    ensure!(rendered == patch, "deploy/argocd/argocd-cm.yaml differs from the chart's rendering:\n{rendered:#?}");

    // As a kustomize patch of an Argo CD installation (whose objects have no namespace).
    support::ensure_cluster().await?;
    let dir = fixtures::scratch("gitops-kustomize")?;
    let installed = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "argocd-cm", "labels": {
        "app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"}},
        "data": {"url": "https://argocd.example.com"}});
    std::fs::write(dir.join("install.yaml"), serde_yaml::to_string(&installed)?)?;
    std::fs::write(dir.join("argocd-cm.yaml"), support::repo_file("deploy/argocd/argocd-cm.yaml")?)?;
    std::fs::write(
        dir.join("kustomization.yaml"),
        "namespace: argo\nresources: [install.yaml]\npatches:\n  - path: argocd-cm.yaml\n    target: {kind: ConfigMap, name: argocd-cm}\n",
    )?;
    let built = support::run(support::kubectl().arg("kustomize").arg(&dir)).await?;
    let built = documents(&built)?;
    ensure!(built.len() == 1, "kustomize built {built:?}");
    let cm = &built[0];
    ensure!(cm["metadata"]["namespace"] == "argo" && cm["metadata"]["labels"] == installed["metadata"]["labels"]);
    ensure!(cm["data"]["url"] == "https://argocd.example.com", "{cm}");
    for (key, kind) in CM_KEYS {
        let lua = support::repo_file(format!("{}/health.lua", health_dir(kind)))?;
        ensure!(cm["data"][key] == lua, "kustomize: {key} is not {}/health.lua", health_dir(kind));
    }

    fixtures::install_crds().await?;
    support::with_namespace("gitops-argocd-cm", |client, ns| async move {
        let cms: Api<ConfigMap> = Api::namespaced(client, &ns);
        let installed = json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "argocd-cm", "labels": {
                "app.kubernetes.io/name": "argocd-cm", "app.kubernetes.io/part-of": "argocd"}},
            "data": {"url": "https://argocd.example.com", "resource.customizations.ignoreDifferences.all": "{}"},
        });
        cms.patch("argocd-cm", &PatchParams::apply("argocd-install"), &Patch::Apply(&installed)).await?;

        let manifest = render_health_checks(&["--set", &format!("argocd.namespace={ns}")]).await?;
        let mut apply = support::kubectl();
        apply
            .args(["apply", "--server-side", "--field-manager=coreforge", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = apply.spawn()?;
        let mut stdin = child.stdin.take().context("kubectl's stdin")?;
        stdin.write_all(manifest.as_bytes()).await?;
        drop(stdin);
        let out = child.wait_with_output().await?;
        ensure!(out.status.success(), "kubectl apply --server-side: {}", String::from_utf8_lossy(&out.stderr));

        let cm = cms.get("argocd-cm").await?;
        let data = cm.data.clone().unwrap_or_default();
        for (key, kind) in CM_KEYS {
            let lua = support::repo_file(format!("{}/health.lua", health_dir(kind)))?;
            ensure!(data.get(key) == Some(&lua), "{key} is not {}/health.lua: {:?}", health_dir(kind), data.get(key));
        }
        ensure!(data.get("url").map(String::as_str) == Some("https://argocd.example.com"), "url: {data:?}");
        ensure!(data.len() == 4, "keys: {:?}", data.keys());
        let labels = cm.metadata.labels.clone().unwrap_or_default();
        ensure!(
            labels.len() == 2 && labels.get("app.kubernetes.io/part-of").map(String::as_str) == Some("argocd"),
            "labels: {labels:?}"
        );
        // Each manager owns its own fields.
        let owned = |manager: &str| -> String {
            let fields = cm.metadata.managed_fields.iter().flatten().filter(|m| m.manager.as_deref() == Some(manager));
            fields.map(|m| serde_json::to_string(&m.fields_v1).unwrap_or_default()).collect()
        };
        let (ours, theirs) = (owned("coreforge"), owned("argocd-install"));
        for (key, _) in CM_KEYS {
            ensure!(ours.contains(key) && !theirs.contains(key), "{key}: ours {ours}, theirs {theirs}");
        }
        ensure!(
            theirs.contains("\"f:url\"") && !ours.contains("\"f:url\"") && !ours.contains("f:labels"),
            "ours {ours}, theirs {theirs}"
        );
        Ok(())
    })
    .await
}
