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

/// `r` with more advisories (after its CFSA-1) and with known issues.
fn with(mut r: ImageRelease, advisories: serde_json::Value, known_issues: serde_json::Value) -> ImageRelease {
    let more: Vec<crate::api::Advisory> = serde_json::from_value(advisories).unwrap();
    r.spec.advisories.extend(more);
    r.spec.known_issues = serde_json::from_value(known_issues).unwrap();
    r
}

/// Known issues: CFKI-0 of 12.6.0 is closed by 12.7.0 (the lowest later release closing
/// it, though 12.8.0 closes it too); of 12.7.0, CFKI-1 is closed by 12.8.0 and CFKI-2
/// stays open (12.6.0 is older, 12.10.0 failed). 12.8.0's enhancement CFEA-3 is proven by
/// a check that passed, one that failed and one that did not run.
fn scenario() -> Catalog {
    let releases = vec![
        with(
            release(
                "old",
                "12.7.0",
                json!({"phase": "Deprecated", "digest": "sha256:aa",
            "publishedAt": at(-40).to_string(), "deprecatedAt": at(-10).to_string(), "supportEndsAt": at(5).to_string() + "",
            "published": [format!("{REPO}:12.7.0")]}),
            ),
            json!([{"id": "CFBA-0", "type": "Bugfix", "summary": "restart-free", "closes": ["CFKI-0"]}]),
            json!([
                {"id": "CFKI-1", "summary": "DNS <script>alert(1)</script> slow",
                 "link": "https://issues.local/CFKI-1?a=1&b=\"2\"", "workaround": "set ndots:<1>"},
                {"id": "CFKI-2", "summary": "no IPv6", "link": "javascript:alert(2)", "workaround": "use IPv4"}
            ]),
        ),
        with(
            release(
                "new",
                "12.8.0",
                json!({"phase": "Published", "digest": "sha256:bb",
                "publishedAt": at(-10).to_string(), "supportEndsAt": at(80).to_string(),
                "checks": [{"name": "check:tls", "passed": true}, {"name": "check:dns", "passed": false}],
                "releaseNotes": "# debian 12.8.0\n"}),
            ),
            json!([
                {"id": "CFBA-2", "type": "Bugfix", "severity": "Low", "summary": "fast DNS",
                 "resolvedBy": ["tls"], "closes": ["CFKI-1", "CFKI-0"]},
                {"id": "CFEA-3", "type": "Enhancement", "summary": "more checks", "resolvedBy": ["tls", "dns", "later"]}
            ]),
            json!([]),
        ),
        with(
            release(
                "broken",
                "12.10.0",
                json!({"phase": "Failed", "digest": "sha256:cc",
                "checks": [{"name": "tls", "passed": false}],
                "conditions": [{"type": "Stalled", "status": "True", "reason": "ContractBroken", "message": "check tls failed",
                                "lastTransitionTime": at(0).to_string()}]}),
            ),
            json!([{"id": "CFBA-4", "type": "Bugfix", "summary": "IPv6", "closes": ["CFKI-2"]}]),
            json!([]),
        ),
        with(
            release(
                "ended",
                "12.6.0",
                json!({"phase": "Deprecated", "digest": "sha256:dd", "supportEndsAt": at(-1).to_string()}),
            ),
            json!([{"id": "CFBA-9", "type": "Bugfix", "summary": "older", "closes": ["CFKI-2"]}]),
            json!([{"id": "CFKI-0", "summary": "needs a restart"}]),
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

#[test]
fn known_issues_are_closed_by_the_lowest_later_release_that_was_published() {
    let c = scenario();
    let p = &c.products[0];
    let by = |v: &str| p.releases.iter().find(|r| r.version == v).unwrap();
    let closed = |v: &str| -> Vec<(String, Option<(String, String)>)> {
        by(v)
            .known_issues
            .iter()
            .map(|k| (k.id.clone(), k.closed_by.as_ref().map(|c| (c.version.clone(), c.advisory.clone()))))
            .collect()
    };
    assert_eq!(
        closed("12.6.0"),
        [("CFKI-0".to_string(), Some(("12.7.0".to_string(), "CFBA-0".to_string())))],
        "a deprecated release closes it, and the lowest later one wins"
    );
    assert_eq!(
        closed("12.7.0"),
        [("CFKI-1".to_string(), Some(("12.8.0".to_string(), "CFBA-2".to_string()))), ("CFKI-2".to_string(), None),],
        "an older release and a failed one close nothing"
    );
    let k = &by("12.7.0").known_issues[0];
    assert_eq!(k.summary, "DNS <script>alert(1)</script> slow");
    assert_eq!(k.workaround.as_deref(), Some("set ndots:<1>"));
    assert_eq!(by("12.8.0").advisories[1].closes, ["CFKI-1", "CFKI-0"]);
}

#[test]
fn closing_releases_are_ordered_by_semver_and_retired_ones_count() {
    let issue = |r: ImageRelease| with(r, json!([]), json!([{"id": "CFKI-7", "summary": "s"}]));
    let closing = |name: &str, version: &str, phase: &str| {
        with(
            release(name, version, json!({"phase": phase})),
            json!([{"id": format!("CFBA-{name}"), "type": "Bugfix", "summary": "s", "closes": ["CFKI-7"]}]),
            json!([]),
        )
    };
    let closed_in = |releases: Vec<ImageRelease>| {
        let c = view(&[core_build()], &releases, at(0));
        let r = c.products[0].releases.iter().find(|r| r.version == "12.8.0").unwrap();
        r.known_issues[0].closed_by.as_ref().map(|c| (c.version.clone(), c.advisory.clone()))
    };
    let base = issue(release("base", "12.8.0", json!({"phase": "Published"})));
    assert_eq!(
        closed_in(vec![
            base.clone(),
            closing("ten", "12.10.0", "Published"),
            closing("nine", "12.9.0", "Retired"),
            closing("rc", "12.8.1-rc.1", "Verified"),
        ]),
        Some(("12.9.0".into(), "CFBA-nine".into())),
        "a retired release was published; a verified one was not"
    );
    assert_eq!(
        closed_in(vec![
            base.clone(),
            closing("ten", "12.10.0", "Published"),
            closing("eleven", "12.11.0", "Deprecated")
        ]),
        Some(("12.10.0".into(), "CFBA-ten".into())),
        "12.10.0 is lower than 12.11.0 (and higher than 12.8.0) as semver"
    );
    assert_eq!(
        closed_in(vec![
            base.clone(),
            closing("rc", "12.8.0-rc.1", "Published"),
            closing("same", "12.8.0+b2", "Published")
        ]),
        None,
        "neither an earlier pre-release nor the same version (build metadata aside) closes it"
    );
    let mut elsewhere = closing("other", "12.9.0", "Published");
    elsewhere.spec.core_build = "other".into();
    assert_eq!(closed_in(vec![base, elsewhere]), None, "only releases of the same CoreBuild close it");
}

#[test]
fn advisories_show_their_proving_checks_with_results() {
    let c = scenario();
    let new = c.products[0].releases.iter().find(|r| r.version == "12.8.0").unwrap();
    let proofs = |i: usize| -> Vec<(&str, &str)> {
        new.advisories[i].resolved_by.iter().map(|p| (p.check.as_str(), p.result.as_str())).collect()
    };
    assert_eq!(proofs(0), [], "CFSA-1 names no check");
    assert_eq!(proofs(1), [("tls", "passed")]);
    assert_eq!(proofs(2), [("tls", "passed"), ("dns", "failed"), ("later", "not run")]);
}

#[test]
fn the_json_carries_proofs_and_known_issues_in_camel_case() {
    let json = serde_json::to_value(scenario()).unwrap();
    let releases = &json["products"][0]["releases"];
    let by = |v: &str| releases.as_array().unwrap().iter().find(|r| r["version"] == v).unwrap();
    assert_eq!(
        by("12.8.0")["advisories"][2]["resolvedBy"],
        json!([{"check": "tls", "result": "passed"}, {"check": "dns", "result": "failed"},
               {"check": "later", "result": "not run"}])
    );
    assert_eq!(by("12.8.0")["advisories"][1]["closes"], json!(["CFKI-1", "CFKI-0"]));
    assert_eq!(by("12.8.0")["advisories"][0]["closes"], json!([]));
    assert_eq!(
        by("12.7.0")["knownIssues"],
        json!([
            {"id": "CFKI-1", "summary": "DNS <script>alert(1)</script> slow",
             "link": "https://issues.local/CFKI-1?a=1&b=\"2\"", "workaround": "set ndots:<1>",
             "closedBy": {"version": "12.8.0", "advisory": "CFBA-2"}},
            {"id": "CFKI-2", "summary": "no IPv6", "link": "javascript:alert(2)", "workaround": "use IPv4",
             "closedBy": null}
        ])
    );
    assert_eq!(by("12.8.0")["knownIssues"], json!([]));
    let back: Catalog = serde_json::from_value(json).unwrap();
    assert_eq!(back, scenario(), "the JSON reads back");
}

#[test]
fn the_page_shows_known_issues_escaped_and_marks_closed_and_open_ones() {
    let page = html::page(&scenario(), "team-a", "/api/v1/catalog/team-a");
    assert!(!page.contains("<script"), "a known issue's summary is escaped: {page}");
    assert!(page.contains(r#"<span data-field="summary">DNS &lt;script&gt;alert(1)&lt;/script&gt; slow</span>"#));
    assert!(page.contains(r#"<span data-field="workaround">set ndots:&lt;1&gt;</span>"#));
    assert!(page.contains(
        r#"<a data-field="link" href="https://issues.local/CFKI-1?a=1&amp;b=&quot;2&quot;">https://issues.local/CFKI-1?a=1&amp;b=&quot;2&quot;</a>"#
    ));
    assert!(!page.contains(r#"href="javascript"#), "only http and https links are followed");
    assert!(page.contains(r#"<code data-field="link">javascript:alert(2)</code>"#));
    assert!(page.contains(
        r#"<li class="issue-closed" data-known-issue="CFKI-1"><span class="badge" data-field="closedBy">closed in <span data-field="version">12.8.0</span> by <span data-field="advisory">CFBA-2</span></span> <strong>CFKI-1</strong>"#
    ));
    assert!(page.contains(
        r#"<li class="issue-open" data-known-issue="CFKI-2"><span class="badge">open</span> <strong>CFKI-2</strong>"#
    ));
    assert!(page.contains(r#"Known issues (<span class="notready">1 open</span>, 1 closed):"#));
    assert!(page.contains(r#"<span data-field="closes">closes <code>CFKI-1</code>, <code>CFKI-0</code></span>"#));
    assert!(page.contains(
        r#"<span data-field="resolvedBy">proven by <span class="proof-passed" data-check="tls"><code>tls</code> <span data-field="result">passed</span></span>, <span class="proof-failed" data-check="dns"><code>dns</code> <span data-field="result">failed</span></span>, <span class="proof-notrun" data-check="later"><code>later</code> <span data-field="result">not run</span></span></span>"#
    ));
}

#[test]
fn the_terminal_counts_open_known_issues_and_names_what_advisories_close() {
    let text = text::catalog(&scenario());
    let header = text.lines().find(|l| l.trim_start().starts_with("VERSION")).unwrap();
    assert!(header.contains("DAYS LEFT  OPEN ISSUES  ADVISORIES"), "{header}");
    let column = header.find("OPEN ISSUES").unwrap();
    let cell = |v: &str| {
        let line = text.lines().find(|l| l.trim_start().starts_with(v)).unwrap();
        line[column..].split_whitespace().next().unwrap().to_string()
    };
    assert_eq!(cell("12.7.0"), "1", "{text}");
    assert_eq!(cell("12.6.0"), "-", "its only issue is closed: {text}");
    assert_eq!(cell("12.8.0"), "-", "{text}");
    let line = text.lines().find(|l| l.trim_start().starts_with("12.8.0")).unwrap();
    assert!(line.contains("CFBA-2 (Bugfix, Low, closes CFKI-1 CFKI-0)"), "{line}");
    let c = scenario();
    let notes = text::notes(c.products[0].releases.iter().find(|r| r.version == "12.7.0").unwrap());
    assert!(
        notes.ends_with(
            "Known issue CFKI-1: closed in 12.8.0 by CFBA-2: DNS <script>alert(1)</script> slow (https://issues.local/CFKI-1?a=1&b=\"2\")\n\
             Known issue CFKI-2: OPEN: no IPv6 (javascript:alert(2)); workaround: use IPv4\n"
        ),
        "{notes}"
    );
}
