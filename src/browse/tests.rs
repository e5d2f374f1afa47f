use serde_json::json;

use super::*;

const REPO: &str = "registry.local/platform/debian";

fn at(day: i64) -> Timestamp {
    Timestamp::from_second(1_800_000_000 + day * 86_400).unwrap()
}

fn core_build() -> CoreBuild {
    serde_json::from_value(json!({
        "apiVersion": "coreforge.dev/v1alpha1", "kind": "CoreBuild",
        "metadata": {"name": "debian", "namespace": "team-a"},
        "spec": {
            "base": "registry.local/debian@sha256:0000000000000000000000000000000000000000000000000000000000000000",
            "blueprint": {"containerfile": "FROM base"},
            "catalog": {"repository": REPO, "stagingRepository": "registry.local/staging/debian"},
            "contract": {
                "packages": [{"name": "bash"}, {"name": "openssl", "version": ">=3"}],
                "ports": [{"port": 8080}],
                "checks": [{"name": "tls", "run": "openssl version", "description": "TLS works"}]
            },
            "lifecycle": {"maxSupported": 2, "supportWindow": "2160h", "deprecateAfter": "90m"},
            "docs": {"runbookUrl": "https://runbooks.local/debian", "notes": "Use <b>this</b>."}
        },
        "status": {"channels": [{"name": "latest", "version": "12.8.0", "digest": "sha256:bb"}], "latestVersion": "12.8.0"}
    }))
    .unwrap()
}

fn release(name: &str, version: &str, status: serde_json::Value) -> ImageRelease {
    serde_json::from_value(json!({
        "apiVersion": "coreforge.dev/v1alpha1", "kind": "ImageRelease",
        "metadata": {"name": name, "namespace": "team-a"},
        "spec": {"coreBuild": "debian", "version": version,
                 "advisories": [{"id": "CFSA-1", "type": "Security", "severity": "Important", "cves": ["CVE-2026-0001"], "summary": "fix <tls>"}]},
        "status": status
    }))
    .unwrap()
}

fn scenario() -> Catalog {
    let releases = vec![
        release(
            "old",
            "12.7.0",
            json!({"phase": "Deprecated", "digest": "sha256:aa",
            "publishedAt": at(-40).to_string(), "deprecatedAt": at(-10).to_string(), "supportEndsAt": at(5).to_string() + "",
            "published": [format!("{REPO}:12.7.0")]}),
        ),
        release(
            "new",
            "12.8.0",
            json!({"phase": "Published", "digest": "sha256:bb",
            "publishedAt": at(-10).to_string(), "supportEndsAt": at(80).to_string(),
            "checks": [{"name": "tls", "passed": true}], "releaseNotes": "# debian 12.8.0\n"}),
        ),
        release(
            "broken",
            "12.10.0",
            json!({"phase": "Failed", "digest": "sha256:cc",
            "checks": [{"name": "tls", "passed": false}],
            "conditions": [{"type": "Stalled", "status": "True", "reason": "ContractBroken", "message": "check tls failed",
                            "lastTransitionTime": at(0).to_string()}]}),
        ),
        release(
            "ended",
            "12.6.0",
            json!({"phase": "Deprecated", "digest": "sha256:dd", "supportEndsAt": at(-1).to_string()}),
        ),
        release("orphan", "1.0.0", json!({})),
    ];
    let mut orphan = releases[4].clone();
    orphan.spec.core_build = "gone".into();
    let mut releases = releases;
    releases[4] = orphan;
    view(&[core_build()], &releases, at(0))
}

#[test]
fn releases_newest_first_with_pull_references_and_support_days() {
    let c = scenario();
    assert_eq!(c.products.len(), 1, "a release without its CoreBuild is not shown");
    let p = &c.products[0];
    let versions: Vec<_> = p.releases.iter().map(|r| r.version.as_str()).collect();
    assert_eq!(versions, ["12.10.0", "12.8.0", "12.7.0", "12.6.0"], "semantic order, not text order");
    let by = |v: &str| p.releases.iter().find(|r| r.version == v).unwrap();
    assert_eq!(by("12.8.0").pull.as_deref(), Some("registry.local/platform/debian@sha256:bb"));
    assert!(by("12.8.0").supported);
    assert_eq!(by("12.8.0").days_of_support_left, Some(80));
    assert_eq!(
        by("12.7.0").pull.as_deref(),
        Some("registry.local/platform/debian@sha256:aa"),
        "deprecated: still pullable"
    );
    assert!(!by("12.7.0").supported);
    assert_eq!(by("12.7.0").days_of_support_left, Some(5));
    assert_eq!(by("12.6.0").days_of_support_left, Some(0), "support ended: never negative");
    assert_eq!(by("12.10.0").pull, None, "a failed release is not offered");
    assert_eq!(by("12.10.0").days_of_support_left, None);
    assert_eq!(by("12.10.0").status_message, "check tls failed", "a failed release says why");
    assert_eq!(by("12.8.0").advisories[0].severity, "Important");
    assert_eq!(p.channels[0].pull, "registry.local/platform/debian:latest");
    assert_eq!(p.contract.packages, ["bash", "openssl >=3"]);
    assert_eq!(p.contract.ports, ["8080/TCP"]);
}

#[test]
fn days_left_round_up_to_whole_days() {
    assert_eq!(days_left(at(1), at(0)), 1);
    assert_eq!(days_left(Timestamp::from_second(at(0).as_second() + 1).unwrap(), at(0)), 1);
    assert_eq!(days_left(at(0), at(0)), 0);
}

#[test]
fn the_page_escapes_and_marks_every_value() {
    let page = html::page(&scenario(), "team-a", "/api/v1/catalog/team-a");
    assert!(page.contains(r#"data-product="team-a/debian""#));
    assert!(page.contains(r#"<tr class="release phase-Deprecated" data-release="old">"#));
    assert!(page.contains("deprecated, move off it"), "a deprecated release is visibly marked");
    assert!(page.contains("fix &lt;tls&gt;"), "advisory text is escaped");
    assert!(page.contains("Use &lt;b&gt;this&lt;/b&gt;."), "raw HTML in notes is shown as text");
    assert!(!page.contains("<script"), "the page runs no script");
    assert!(page.contains(r#"<span class="notready">failed: tls</span>"#));
    assert!(
        page.contains(
            "Support: at most 2 supported at once; each supported for 90 days; deprecated 90m after publishing"
        )
    );
    assert!(page.contains(&format!(r#"<td data-field="supportEndsAt"><time datetime="{}">"#, at(80))));
}

#[test]
fn the_terminal_table_lists_dates_and_advisories() {
    let text = text::catalog(&scenario());
    assert!(text.starts_with("team-a/debian  registry.local/platform/debian\n"), "{text}");
    assert!(text.contains("channel latest   → 12.8.0"), "{text}");
    let line = text.lines().find(|l| l.trim_start().starts_with("12.7.0")).unwrap();
    assert!(
        line.contains("Deprecated")
            && line.contains(" 5 ")
            && line.contains("CFSA-1 (Security, Important, CVE-2026-0001)"),
        "{line}"
    );
    let notes = text::notes(&scenario().products[0].releases[1]);
    assert!(
        notes.starts_with("# debian 12.8.0\n\nPhase: Published\nPull: registry.local/platform/debian@sha256:bb\n"),
        "{notes}"
    );
}
