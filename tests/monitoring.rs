//! The monitoring bundle in `deploy/monitoring/`: the alert rules load, their unit tests
//! pass, the plain rule file is what `render.sh` makes of the PrometheusRule, every
//! alert is documented and tested both ways, and every dashboard query parses. No
//! cluster needed; `promtool` (Debian package `prometheus`, installed by
//! `tests/deps.sh`) does the PromQL work. Set `PROMTOOL` to use another binary.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value as Json;
use serde_yaml::Value as Yaml;

/// The metrics the controller exports; rules and dashboard may use nothing else.
const METRICS: &[&str] = &[
    "coreforge_reconcile_total",
    "coreforge_reconcile_errors_total",
    "coreforge_reconcile_duration_seconds",
    "coreforge_releases",
    "coreforge_phase_transitions_total",
    "coreforge_build_duration_seconds",
    "coreforge_test_duration_seconds",
    "coreforge_step_outcomes_total",
    "coreforge_release_time_to_publish_seconds",
    "coreforge_release_support_remaining_seconds",
    "coreforge_release_phase_since_timestamp_seconds",
    "coreforge_base_behind_since_timestamp_seconds",
    "coreforge_base_tracking",
    "coreforge_base_refresh_failed",
    "coreforge_registry_requests_total",
    "coreforge_info",
    "coreforge_leader",
];
const HISTOGRAMS: &[&str] = &[
    "coreforge_reconcile_duration_seconds",
    "coreforge_build_duration_seconds",
    "coreforge_test_duration_seconds",
    "coreforge_release_time_to_publish_seconds",
];

/// What the dashboard's template variables stand for when its queries are checked.
const VARIABLES: &[(&str, &str)] = &[
    ("namespace", ".*"),
    ("corebuild", ".*"),
    ("window", "1h"),
    ("__rate_interval", "5m"),
    ("__interval", "1m"),
    ("__range", "1h"),
];

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy/monitoring")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn yaml(path: &Path) -> Yaml {
    serde_yaml::from_str(&read(path)).unwrap_or_else(|e| panic!("{} is not valid YAML: {e}", path.display()))
}

fn dashboard() -> Json {
    let path = dir().join("grafana-dashboard.json");
    serde_json::from_str(&read(&path)).unwrap_or_else(|e| panic!("{} is not valid JSON: {e}", path.display()))
}

/// The `promtool` binary; fails (never skips) when it is missing.
fn promtool() -> Command {
    let bin = std::env::var_os("PROMTOOL").unwrap_or_else(|| "promtool".into());
    match Command::new(&bin).arg("--version").output() {
        Ok(out) if out.status.success() => Command::new(bin),
        Ok(out) => panic!("`{} --version` failed: {}", bin.to_string_lossy(), output_text(&out)),
        Err(e) => panic!(
            "promtool not found ({}: {e}): tests/deps.sh installs it (Debian package `prometheus`), \
             or set PROMTOOL to its path",
            bin.to_string_lossy()
        ),
    }
}

fn output_text(out: &Output) -> String {
    format!(
        "{}\n--- stdout\n{}--- stderr\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Runs `cmd` and fails the test with its whole output unless it succeeds.
fn succeed(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap_or_else(|e| panic!("running {cmd:?}: {e}"));
    assert!(out.status.success(), "{cmd:?} failed: {}", output_text(&out));
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn alerts(rules: &Yaml) -> Vec<&Yaml> {
    let groups = rules["groups"].as_sequence().expect("groups: a list");
    groups
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules: a list"))
        .filter(|r| r.get("alert").is_some())
        .collect()
}

fn str_of<'a>(v: &'a Yaml, key: &str) -> Option<&'a str> {
    v.get(key).and_then(Yaml::as_str)
}

#[test]
fn rules_file_is_valid() {
    let out = succeed(promtool().arg("check").arg("rules").arg(dir().join("rules.yaml")));
    assert!(out.contains("SUCCESS"), "promtool check rules: {out}");
}

#[test]
fn alert_unit_tests_pass() {
    let out = succeed(promtool().arg("test").arg("rules").arg(dir().join("tests/alerts_test.yaml")));
    assert!(out.contains("SUCCESS"), "promtool test rules: {out}");
}

#[test]
fn rules_yaml_is_rendered_from_the_prometheus_rule() {
    // Byte for byte: what render.sh makes of prometheus-rule.yaml is what is checked in.
    succeed(Command::new("bash").arg(dir().join("render.sh")).arg("--check"));

    // And by meaning, independently of render.sh.
    let rule = yaml(&dir().join("prometheus-rule.yaml"));
    assert_eq!(str_of(&rule, "apiVersion"), Some("monitoring.coreos.com/v1"));
    assert_eq!(str_of(&rule, "kind"), Some("PrometheusRule"));
    assert_eq!(str_of(&rule["metadata"], "name"), Some("coreforge"));
    let plain = yaml(&dir().join("rules.yaml"));
    assert_eq!(
        rule["spec"]["groups"], plain["groups"],
        "rules.yaml differs from prometheus-rule.yaml's spec.groups; run deploy/monitoring/render.sh"
    );
    assert_eq!(plain.as_mapping().map(|m| m.len()), Some(1), "rules.yaml has only `groups`");
}

#[test]
fn every_alert_is_labelled_documented_and_tested_both_ways() {
    let rules = yaml(&dir().join("rules.yaml"));
    let readme = read(&dir().join("README.md"));
    let tests = yaml(&dir().join("tests/alerts_test.yaml"));

    // alertname → (has a firing case, has a quiet case)
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for test in tests["tests"].as_sequence().expect("tests: a list") {
        for case in test.get("alert_rule_test").and_then(Yaml::as_sequence).into_iter().flatten() {
            let name = str_of(case, "alertname").expect("alertname").to_string();
            let fires = case.get("exp_alerts").and_then(Yaml::as_sequence).is_some_and(|a| !a.is_empty());
            let entry = cases.entry(name).or_default();
            if fires {
                entry.0 = true;
            } else {
                entry.1 = true;
            }
        }
    }

    let required = [
        "CoreforgeReleaseFailed",
        "CoreforgeReleaseStuck",
        "CoreforgeSupportEndingSoon",
        "CoreforgeSupportEndingNoSuccessor",
        "CoreforgeBaseBehind",
        "CoreforgeBaseRefreshFailed",
        "CoreforgeControllerDown",
        "CoreforgeReconcileErrors",
        "CoreforgeNoLeader",
    ];
    let alerts = alerts(&rules);
    let names: BTreeSet<&str> = alerts.iter().filter_map(|a| str_of(a, "alert")).collect();
    for name in required {
        assert!(names.contains(name), "alert {name} is missing from rules.yaml");
    }

    let mut problems = Vec::new();
    for alert in alerts {
        let name = str_of(alert, "alert").expect("alert name");
        match str_of(&alert["labels"], "severity") {
            Some("warning" | "critical" | "info") => {}
            other => problems.push(format!("{name}: severity label is {other:?}")),
        }
        for key in ["summary", "description", "runbook_url"] {
            if str_of(&alert["annotations"], key).is_none_or(|s| s.trim().is_empty()) {
                problems.push(format!("{name}: annotation {key} is missing"));
            }
        }
        let runbook = str_of(&alert["annotations"], "runbook_url").unwrap_or_default();
        let anchor = runbook.rsplit_once('#').map(|(_, a)| a).unwrap_or_default();
        if anchor != name.to_lowercase() || !readme.lines().any(|l| l.trim() == format!("### {name}")) {
            problems
                .push(format!("{name}: runbook_url {runbook:?} must point to a `### {name}` section of the README"));
        }
        match cases.get(name) {
            Some((true, true)) => {}
            Some((fires, _)) => {
                let missing = if *fires { "quiet" } else { "firing" };
                problems.push(format!("{name}: alerts_test.yaml lacks a {missing} case"));
            }
            None => problems.push(format!("{name}: not tested in alerts_test.yaml")),
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Every `expr` in the dashboard, with where it is.
fn dashboard_exprs(value: &Json, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Json::Object(map) => {
            let here = match (map.get("title"), map.get("refId"), map.get("name")) {
                (Some(Json::String(t)), _, _) => format!("{at}/{t}"),
                (_, Some(Json::String(r)), _) => format!("{at}/{r}"),
                (_, _, Some(Json::String(n))) => format!("{at}/${n}"),
                _ => at.to_string(),
            };
            for (key, v) in map {
                match (key.as_str(), v) {
                    ("expr", Json::String(e)) => out.push((here.clone(), e.clone())),
                    _ => dashboard_exprs(v, &here, out),
                }
            }
        }
        Json::Array(items) => items.iter().for_each(|v| dashboard_exprs(v, at, out)),
        _ => {}
    }
}

/// Replaces `$name` and `${name}` by what [`VARIABLES`] says; an unknown one is an error.
fn substitute(expr: &str) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = expr;
    while let Some(i) = rest.find('$') {
        out.push_str(&rest[..i]);
        let after = &rest[i + 1..];
        let (name, len) = if let Some(braced) = after.strip_prefix('{') {
            let end = braced.find('}').ok_or_else(|| format!("unclosed ${{ in {expr:?}"))?;
            (braced[..end].split(':').next().unwrap_or_default(), end + 2)
        } else {
            let end = after.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(after.len());
            (&after[..end], end)
        };
        let value = VARIABLES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| *v)
            .ok_or_else(|| format!("unknown variable ${name} in {expr:?}"))?;
        out.push_str(value);
        rest = &after[len..];
    }
    out.push_str(rest);
    Ok(out)
}

/// The PromQL queries of the dashboard: panel targets and the variables' `label_values(query, label)`.
fn dashboard_queries() -> Vec<(String, String)> {
    let dash = dashboard();
    let mut exprs = Vec::new();
    dashboard_exprs(&dash["panels"], "panels", &mut exprs);
    assert!(exprs.len() >= 20, "expected the dashboard's panels to have queries, found {}", exprs.len());
    for var in dash["templating"]["list"].as_array().expect("templating.list") {
        if var["type"] == "query" {
            let name = var["name"].as_str().unwrap_or_default();
            let query = var["query"].as_str().or_else(|| var["query"]["query"].as_str()).unwrap_or_default();
            let inner = query
                .strip_prefix("label_values(")
                .and_then(|q| q.strip_suffix(')'))
                .and_then(|q| q.rsplit_once(','))
                .map(|(selector, _label)| selector.trim())
                .unwrap_or_else(|| panic!("variable ${name}: expected label_values(<query>, <label>), got {query:?}"));
            exprs.push((format!("templating/${name}"), inner.to_string()));
        }
    }
    exprs
}

#[test]
fn dashboard_queries_parse() {
    let mut file = String::from(
        "# One recording rule per dashboard query, for promtool to parse.\ngroups:\n  - name: dashboard\n    rules:\n",
    );
    let mut errors = Vec::new();
    let mut index = Vec::new();
    for (i, (at, expr)) in dashboard_queries().into_iter().enumerate() {
        match substitute(&expr) {
            Ok(e) => {
                let quoted = serde_json::to_string(&e).expect("JSON string"); // a JSON string is a YAML string
                file.push_str(&format!("      - record: dashboard:query_{i}\n        expr: {quoted}\n"));
                index.push(format!("dashboard:query_{i} = {at}: {e}"));
            }
            Err(err) => errors.push(format!("{at}: {err}")),
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));

    let path = Path::new(env!("CARGO_TARGET_TMPDIR")).join("coreforge-dashboard-queries.yaml");
    std::fs::write(&path, &file).expect("write the query rule file");
    let out = promtool().arg("check").arg("rules").arg(&path).output().expect("run promtool");
    assert!(
        out.status.success(),
        "a dashboard query does not parse: {}\nqueries:\n{}",
        output_text(&out),
        index.join("\n")
    );
}

#[test]
fn dashboard_is_well_formed() {
    let dash = dashboard();
    assert_eq!(dash["uid"], "coreforge");
    let schema = dash["schemaVersion"].as_u64().expect("schemaVersion");
    assert!((36..=41).contains(&schema), "schemaVersion {schema}");

    let vars = dash["templating"]["list"].as_array().expect("templating.list");
    let var = |name: &str| vars.iter().find(|v| v["name"] == name).unwrap_or_else(|| panic!("no ${name} variable"));
    assert_eq!(var("datasource")["type"], "datasource");
    assert_eq!(var("datasource")["query"], "prometheus");
    for name in ["namespace", "corebuild"] {
        let v = var(name);
        assert_eq!(v["type"], "query", "${name}");
        assert_eq!(v["includeAll"], true, "${name}");
        assert_eq!(v["allValue"], ".*", "${name}");
    }
    // The consumers' catalog is one click away, at the address the $catalog textbox holds.
    assert_eq!(var("catalog")["type"], "textbox");
    let links = dash["links"].as_array().expect("links");
    assert!(links.iter().any(|l| l["url"] == "${catalog}/catalog"), "no link to the catalog: {links:?}");

    let mut ids = BTreeSet::new();
    let mut problems = Vec::new();
    let mut titles = Vec::new();
    for panel in dash["panels"].as_array().expect("panels") {
        let title = panel["title"].as_str().unwrap_or("<untitled>");
        titles.push(title.to_lowercase());
        if !ids.insert(panel["id"].as_u64().expect("panel id")) {
            problems.push(format!("{title}: duplicate id {}", panel["id"]));
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["datasource"]["uid"] != "${datasource}" {
            problems.push(format!("{title}: datasource is {} instead of ${{datasource}}", panel["datasource"]));
        }
        let targets = panel["targets"].as_array().map(Vec::as_slice).unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{title}: no queries"));
        }
        for t in targets {
            if t["datasource"]["uid"] != "${datasource}" {
                problems.push(format!("{title}: target {} does not use ${{datasource}}", t["refId"]));
            }
        }
        let g = &panel["gridPos"];
        if ["h", "w", "x", "y"].iter().any(|k| g[k].as_u64().is_none())
            || g["x"].as_u64().unwrap_or(0) + g["w"].as_u64().unwrap_or(0) > 24
        {
            problems.push(format!("{title}: bad gridPos {g}"));
        }
    }
    for wanted in [
        "releases by phase per corebuild",
        "phase transitions",
        "build duration",
        "test duration",
        "failure ratio",
        "time to publish",
        "support remaining",
        "registry errors",
        "reconciles",
        "reconcile errors",
        "reconcile latency",
        "leader",
        "replicas",
    ] {
        if !titles.iter().any(|t| t.contains(wanted)) {
            problems.push(format!("no panel titled like {wanted:?}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Metric names (`coreforge_…`) used in `text`.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("coreforge_") {
        let before = text.len() - rest.len() + i;
        let preceded = text[..before].chars().next_back().is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        if !preceded {
            names.insert(tail[..end].to_string());
        }
        rest = &tail[end..];
    }
    names
}

#[test]
fn only_exported_metrics_are_used() {
    let known = |name: &str| {
        METRICS.contains(&name)
            || HISTOGRAMS.iter().any(|h| ["_bucket", "_sum", "_count"].iter().any(|s| name == format!("{h}{s}")))
    };
    let mut used = BTreeSet::new();
    for alert in alerts(&yaml(&dir().join("rules.yaml"))) {
        used.extend(metric_names(str_of(alert, "expr").expect("expr")));
    }
    for (_, expr) in dashboard_queries() {
        used.extend(metric_names(&expr));
    }
    let unknown: Vec<_> = used.iter().filter(|m| !known(m)).collect();
    assert!(unknown.is_empty(), "not metrics the controller exports: {unknown:?}");
    for histogram in HISTOGRAMS {
        assert!(used.iter().any(|m| m.starts_with(histogram)), "{histogram} is used nowhere");
    }
}

#[test]
fn substitution_replaces_known_variables_only() {
    assert_eq!(
        substitute(r#"rate(x{namespace=~"$namespace",corebuild=~"${corebuild}"}[$__rate_interval])"#).as_deref(),
        Ok(r#"rate(x{namespace=~".*",corebuild=~".*"}[5m])"#)
    );
    assert_eq!(substitute("rate(x[${window}])").as_deref(), Ok("rate(x[1h])"));
    assert!(substitute("x{a=~\"$nope\"}").is_err());
    assert_eq!(
        metric_names("sum(rate(coreforge_a_bucket[5m])) / my_coreforge_b + coreforge_c"),
        ["coreforge_a_bucket", "coreforge_c"].into_iter().map(String::from).collect()
    );
}
