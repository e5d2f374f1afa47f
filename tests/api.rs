//! The coreforge API on a real API server: the CRDs install, the examples apply, bad
//! input is refused with a message that names the problem, and kubectl shows what a
//! person needs.

mod fixtures;
mod support;

use anyhow::{Context, bail, ensure};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, PostParams};
use kube::core::GroupVersionKind;
use serde_json::{Value, json};

fn resource(kind: &str) -> ApiResource {
    ApiResource::from_gvk(&GroupVersionKind::gvk("coreforge.dev", "v1alpha1", kind))
}

fn dynamic(client: &kube::Client, ns: &str, kind: &str) -> Api<DynamicObject> {
    Api::namespaced_with(client.clone(), ns, &resource(kind))
}

/// Sets `value` at a JSON pointer (`None` removes it), creating objects on the way.
fn set(doc: &mut Value, pointer: &str, value: Option<Value>) {
    let (parent, key) = pointer.rsplit_once('/').expect("pointer");
    let mut target = doc;
    for part in parent.split('/').filter(|p| !p.is_empty()) {
        target = match target {
            Value::Array(items) => &mut items[part.parse::<usize>().expect("array index")],
            other => other.as_object_mut().expect("object").entry(part.to_string()).or_insert_with(|| json!({})),
        };
    }
    let object = target.as_object_mut().expect("object");
    match value {
        Some(v) => object.insert(key.to_string(), v),
        None => object.remove(key),
    };
}

/// Creates `doc` with a server-side dry run and returns the API server's refusal.
async fn refusal(api: &Api<DynamicObject>, doc: &Value) -> anyhow::Result<Option<String>> {
    let obj: DynamicObject = serde_json::from_value(doc.clone())?;
    match api.create(&PostParams { dry_run: true, ..Default::default() }, &obj).await {
        Ok(_) => Ok(None),
        Err(kube::Error::Api(e)) if e.code == 422 => Ok(Some(e.message)),
        Err(e) => Err(e).context("unexpected error"),
    }
}

#[tokio::test]
async fn crds_are_established_and_the_examples_apply() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("examples", |_client, ns| async move {
        let out = support::run(support::kubectl().args(["apply", "-n", &ns, "-f", "deploy/examples/"])).await?;
        for name in [
            "corebuild.coreforge.dev/debian-12",
            "imagerelease.coreforge.dev/debian-12-7-0",
            "imagerelease.coreforge.dev/debian-12-8-0",
        ] {
            ensure!(out.contains(&format!("{name} created")), "kubectl apply did not create {name}:\n{out}");
        }
        // Defaults are applied by the API server.
        let target = support::run(support::kubectl().args([
            "get",
            "-n",
            &ns,
            "ir",
            "debian-12-7-0",
            "-o",
            "jsonpath={.spec.target}",
        ]))
        .await?;
        ensure!(target == "Published", "target defaulted to {target:?}");
        Ok(())
    })
    .await
}

/// Each case: a description, the kind, how to break a valid manifest, and words the
/// API server's message must contain.
type Mutation = fn(&mut Value);

fn create_cases() -> Vec<(&'static str, &'static str, Mutation, &'static [&'static str])> {
    vec![
        (
            "unpinned base image",
            "CoreBuild",
            |d| set(d, "/spec/base", Some(json!("docker.io/library/debian:12"))),
            &["spec.base", "pinned by digest"],
        ),
        (
            "base with a short digest",
            "CoreBuild",
            |d| set(d, "/spec/base", Some(json!("debian@sha256:abc"))),
            &["spec.base", "pinned by digest"],
        ),
        ("missing contract", "CoreBuild", |d| set(d, "/spec/contract", None), &["spec.contract", "Required value"]),
        (
            "empty contract",
            "CoreBuild",
            |d| set(d, "/spec/contract", Some(json!({}))),
            &["contract must guarantee something"],
        ),
        ("missing catalog", "CoreBuild", |d| set(d, "/spec/catalog", None), &["spec.catalog", "Required value"]),
        (
            "blueprint with both sources",
            "CoreBuild",
            |d| set(d, "/spec/blueprint/configMapRef", Some(json!({"name": "bp"}))),
            &["exactly one of containerfile or configMapRef"],
        ),
        (
            "blueprint with no source",
            "CoreBuild",
            |d| set(d, "/spec/blueprint", Some(json!({}))),
            &["exactly one of containerfile or configMapRef"],
        ),
        (
            "duplicate check names",
            "CoreBuild",
            |d| {
                set(
                    d,
                    "/spec/contract/checks",
                    Some(json!([{"name": "a", "run": "true"}, {"name": "a", "run": "false"}])),
                )
            },
            &["check names must be unique"],
        ),
        (
            "check name not a DNS label",
            "CoreBuild",
            |d| set(d, "/spec/contract/checks", Some(json!([{"name": "Bad_Name", "run": "true"}]))),
            &["spec.contract.checks[0].name"],
        ),
        (
            "duplicate package names",
            "CoreBuild",
            |d| set(d, "/spec/contract/packages", Some(json!([{"name": "bash"}, {"name": "bash"}]))),
            &["package names must be unique"],
        ),
        (
            "package version constraint without operator",
            "CoreBuild",
            |d| set(d, "/spec/contract/packages", Some(json!([{"name": "bash", "version": "about 5"}]))),
            &["spec.contract.packages[0].version"],
        ),
        (
            "relative file path",
            "CoreBuild",
            |d| set(d, "/spec/contract/files", Some(json!([{"path": "etc/os-release"}]))),
            &["spec.contract.files[0].path"],
        ),
        (
            "port out of range",
            "CoreBuild",
            |d| set(d, "/spec/contract/ports", Some(json!([{"port": 70000}]))),
            &["spec.contract.ports[0].port", "65535"],
        ),
        (
            "bad duration",
            "CoreBuild",
            |d| set(d, "/spec/lifecycle/deprecateAfter", Some(json!("10 days"))),
            &["spec.lifecycle.deprecateAfter"],
        ),
        (
            "deprecate after retire",
            "CoreBuild",
            |d| set(d, "/spec/lifecycle/deprecateAfter", Some(json!("2000h"))),
            &["deprecateAfter must be shorter than retireAfter"],
        ),
        (
            "maxSupported zero",
            "CoreBuild",
            |d| set(d, "/spec/lifecycle/maxSupported", Some(json!(0))),
            &["spec.lifecycle.maxSupported", "greater than or equal to 1"],
        ),
        (
            "channel that is no version prefix",
            "CoreBuild",
            |d| set(d, "/spec/catalog/channels", Some(json!(["v12"]))),
            &["spec.catalog.channels[0]"],
        ),
        (
            "duplicate channels",
            "CoreBuild",
            |d| set(d, "/spec/catalog/channels", Some(json!(["12", "12"]))),
            &["spec.catalog.channels[1]", "Duplicate value"],
        ),
        (
            "staging is the catalog",
            "CoreBuild",
            |d| set(d, "/spec/catalog/stagingRepository", Some(json!("registry.local/core/debian"))),
            &["stagingRepository must differ from repository"],
        ),
        (
            "repository with a tag",
            "CoreBuild",
            |d| set(d, "/spec/catalog/repository", Some(json!("registry.local/core/debian:12"))),
            &["spec.catalog.repository"],
        ),
        ("version not semver", "ImageRelease", |d| set(d, "/spec/version", Some(json!("12.7"))), &["spec.version"]),
        (
            "version with a v prefix",
            "ImageRelease",
            |d| set(d, "/spec/version", Some(json!("v12.7.0"))),
            &["spec.version"],
        ),
        (
            "missing coreBuild",
            "ImageRelease",
            |d| set(d, "/spec/coreBuild", None),
            &["spec.coreBuild", "Required value"],
        ),
        (
            "coreBuild not a DNS name",
            "ImageRelease",
            |d| set(d, "/spec/coreBuild", Some(json!("Debian_12"))),
            &["spec.coreBuild"],
        ),
        (
            "unknown advisory type",
            "ImageRelease",
            |d| set(d, "/spec/advisories/0/type", Some(json!("Feature"))),
            &["spec.advisories[0].type", "Unsupported value"],
        ),
        (
            "malformed CVE id",
            "ImageRelease",
            |d| set(d, "/spec/advisories/0/cves", Some(json!(["CVE-24-1"]))),
            &["spec.advisories[0].cves[0]"],
        ),
        (
            "duplicate advisory ids",
            "ImageRelease",
            |d| {
                set(
                    d,
                    "/spec/advisories",
                    Some(
                        json!([{"id": "A-1", "type": "Bugfix", "summary": "x"}, {"id": "A-1", "type": "Security", "summary": "y"}]),
                    ),
                )
            },
            &["advisory ids must be unique"],
        ),
        (
            "unknown target",
            "ImageRelease",
            |d| set(d, "/spec/target", Some(json!("Shipped"))),
            &["spec.target", "Unsupported value"],
        ),
        (
            "support end is no date",
            "ImageRelease",
            |d| set(d, "/spec/supportEndsAt", Some(json!("next week"))),
            &["spec.supportEndsAt"],
        ),
        // The far ends of the ranges: accepted by the API server's types, past the
        // controller's (timestamps end in year 9999, numbers at 64 bits).
        (
            "support end in the last year the API server accepts",
            "ImageRelease",
            |d| set(d, "/spec/supportEndsAt", Some(json!("9999-12-31T23:59:59Z"))),
            &["supportEndsAt must lie before 9999-01-01T00:00:00Z"],
        ),
        (
            "version number past 64 bits",
            "ImageRelease",
            |d| set(d, "/spec/version", Some(json!("18446744073709551616.0.0"))),
            &["spec.version"],
        ),
        (
            "support window of more than a century",
            "CoreBuild",
            |d| set(d, "/spec/lifecycle/supportWindow", Some(json!("876001h"))),
            &["spec.lifecycle.supportWindow", "must be at most 876000h (100 years)"],
        ),
        (
            "retirement past the duration type's range",
            "CoreBuild",
            |d| set(d, "/spec/lifecycle/retireAfter", Some(json!("99999999999h"))),
            &["spec.lifecycle.retireAfter", "must be at most 876000h (100 years)"],
        ),
        (
            "channel number past 64 bits",
            "CoreBuild",
            |d| set(d, "/spec/catalog/channels", Some(json!(["18446744073709551616"]))),
            &["spec.catalog.channels[0]"],
        ),
        (
            "tracked base named by digest instead of a tag",
            "CoreBuild",
            |d| {
                set(
                    d,
                    "/spec/baseTracking",
                    Some(json!({"tag": format!("registry.local/debian@{}", fixtures::DIGEST)})),
                )
            },
            &["spec.baseTracking.tag"],
        ),
        (
            "base tracked more often than every 10 seconds",
            "CoreBuild",
            |d| set(d, "/spec/baseTracking", Some(json!({"tag": "registry.local/debian:12-slim", "interval": "5s"}))),
            &["spec.baseTracking.interval", "interval must be between 10s and 8760h"],
        ),
        (
            "unknown refresh policy",
            "CoreBuild",
            |d| {
                set(
                    d,
                    "/spec/baseTracking",
                    Some(json!({"tag": "registry.local/debian:12-slim", "refresh": "Nightly"})),
                )
            },
            &["spec.baseTracking.refresh", "Unsupported value"],
        ),
        (
            "release base not pinned by digest",
            "ImageRelease",
            |d| set(d, "/spec/base", Some(json!("registry.local/debian:12-slim"))),
            &["spec.base"],
        ),
        (
            "proving check that cannot be a check name",
            "ImageRelease",
            |d| set(d, "/spec/advisories/0/resolvedBy", Some(json!(["TLS Works"]))),
            &["spec.advisories[0].resolvedBy[0]"],
        ),
        (
            "proving check named twice",
            "ImageRelease",
            |d| set(d, "/spec/advisories/0/resolvedBy", Some(json!(["tls", "tls"]))),
            &["resolvedBy names each check once"],
        ),
        (
            "duplicate known issue ids",
            "ImageRelease",
            |d| {
                set(
                    d,
                    "/spec/knownIssues",
                    Some(json!([{"id": "KI-1", "summary": "x"}, {"id": "KI-1", "summary": "y"}])),
                )
            },
            &["known issue ids must be unique"],
        ),
        (
            "known issue link that is no URL",
            "ImageRelease",
            |d| {
                set(
                    d,
                    "/spec/knownIssues",
                    Some(json!([{"id": "KI-1", "summary": "x", "link": "javascript:alert(1)"}])),
                )
            },
            &["spec.knownIssues[0].link"],
        ),
    ]
}

#[tokio::test]
async fn invalid_manifests_are_refused_with_a_message_naming_the_problem() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("invalid", |client, ns| async move {
        let cases = create_cases();
        ensure!(cases.len() >= 20, "at least 20 invalid manifests");
        let mut failures = Vec::new();
        for (what, kind, mutate, words) in cases {
            let base =
                if kind == "CoreBuild" { fixtures::core_build("cb") } else { fixtures::release("r", "cb", "12.7.0") };
            // The untouched manifest is accepted: the refusal is about the mutation.
            let api = dynamic(&client, &ns, kind);
            if let Some(msg) = refusal(&api, &base).await? {
                bail!("the valid {kind} fixture was refused: {msg}");
            }
            let mut doc = base;
            mutate(&mut doc);
            match refusal(&api, &doc).await? {
                None => failures.push(format!("{what}: accepted")),
                Some(msg) => {
                    if let Some(missing) = words.iter().find(|w| !msg.contains(**w)) {
                        failures.push(format!("{what}: message lacks {missing:?}: {msg}"));
                    }
                }
            }
        }
        ensure!(failures.is_empty(), "{} cases misbehaved:\n{}", failures.len(), failures.join("\n"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn immutable_fields_and_forward_only_target_are_enforced_on_update() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("updates", |client, ns| async move {
        let api = dynamic(&client, &ns, "ImageRelease");
        let mut doc = fixtures::release("r", "cb", "12.7.0");
        doc["spec"]["target"] = json!("Published");
        doc["spec"]["base"] = json!(format!("registry.local/debian@{}", fixtures::DIGEST));
        api.create(&PostParams::default(), &serde_json::from_value(doc)?).await?;
        let pp = PatchParams::default();
        let cases: [(&str, Value, &str); 6] = [
            ("change version", json!({"spec": {"version": "12.7.1"}}), "version is immutable"),
            (
                "change base",
                json!({"spec": {"base": format!("registry.local/debian@{}", fixtures::DIGEST2)}}),
                "base is immutable",
            ),
            ("change coreBuild", json!({"spec": {"coreBuild": "other"}}), "coreBuild is immutable"),
            ("target Published → Verified", json!({"spec": {"target": "Verified"}}), "target only moves forward"),
            ("target Retired → Deprecated", json!({"spec": {"target": "Deprecated"}}), "target only moves forward"),
            ("target Retired → Published", json!({"spec": {"target": "Published"}}), "target only moves forward"),
        ];
        let mut failures = Vec::new();
        for (i, (what, patch, words)) in cases.into_iter().enumerate() {
            if i == 4 {
                // Forward moves are allowed: go to Retired, then try to come back.
                api.patch("r", &pp, &Patch::Merge(json!({"spec": {"target": "Deprecated"}}))).await?;
                api.patch("r", &pp, &Patch::Merge(json!({"spec": {"target": "Retired"}}))).await?;
            }
            match api.patch("r", &pp, &Patch::Merge(patch)).await {
                Ok(_) => failures.push(format!("{what}: accepted")),
                Err(kube::Error::Api(e)) if e.code == 422 && e.message.contains(words) => {}
                Err(e) => failures.push(format!("{what}: {e}")),
            }
        }
        ensure!(failures.is_empty(), "{}", failures.join("\n"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn kubectl_shows_printer_columns_categories_and_field_docs() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("kubectl-view", |client, ns| async move {
        let cbs = dynamic(&client, &ns, "CoreBuild");
        let irs = dynamic(&client, &ns, "ImageRelease");
        cbs.create(&PostParams::default(), &serde_json::from_value(fixtures::core_build("debian"))?).await?;
        irs.create(&PostParams::default(), &serde_json::from_value(fixtures::release("debian-12-7-0", "debian", "12.7.0"))?).await?;
        // A status as the controller would write it, to see the columns filled.
        let status = json!({"status": {"phase": "Verified", "shortDigest": "0123456789ab", "supportEndsAt": "2030-01-01T00:00:00Z"}});
        irs.patch_status("debian-12-7-0", &PatchParams::default(), &Patch::Merge(status)).await?;

        let out = support::run(support::kubectl().args(["get", "ir", "-n", &ns])).await?;
        let header: Vec<&str> = out.lines().next().unwrap_or_default().split_whitespace().collect();
        ensure!(header == ["NAME", "COREBUILD", "VERSION", "PHASE", "DIGEST", "SUPPORT", "ENDS", "AGE"], "header: {out}");
        let row: Vec<&str> = out.lines().nth(1).unwrap_or_default().split_whitespace().collect();
        ensure!(row[..5] == ["debian-12-7-0", "debian", "12.7.0", "Verified", "0123456789ab"], "row: {out}");

        let out = support::run(support::kubectl().args(["get", "coreforge", "-n", &ns])).await?;
        ensure!(out.contains("corebuild.coreforge.dev/debian") && out.contains("imagerelease.coreforge.dev/debian-12-7-0"), "category: {out}");
        let out = support::run(support::kubectl().args(["get", "cb", "-n", &ns])).await?;
        ensure!(out.starts_with("NAME") && out.contains("registry.local/core/debian"), "corebuild columns: {out}");

        let out = support::run(support::kubectl().args(["explain", "imagerelease.spec.advisories"])).await?;
        for words in ["Typed changes this release carries", "cves", "CVE ids addressed", "severity", "RHSA-2024:1234"] {
            ensure!(out.contains(words), "explain lacks {words:?}:\n{out}");
        }
        Ok(())
    })
    .await
}
