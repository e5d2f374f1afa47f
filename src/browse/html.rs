//! The catalog as one HTML page: no scripts, one inline style sheet, every value escaped.
//! Each value a consumer reads is also marked with `data-*` attributes (product, release,
//! channel, advisory, check, known-issue, field), the same names the JSON API uses, so that
//! tools and tests can read the page as reliably as the API.

use std::fmt::Write;

use jiff::Timestamp;

use super::markdown;
use super::{Advisory, Catalog, KnownIssue, Product, Release};

/// Escapes text for HTML content and double-quoted attributes.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2630;background:#f6f7f9}
header{background:#1d2630;color:#fff;padding:14px 28px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#c4ccd6;font-size:13px}header a{color:#9cc9ff}
main{padding:8px 28px 40px;max-width:1400px}
section.product{background:#fff;border:1px solid #d9dee5;border-radius:6px;margin:20px 0;padding:4px 20px 16px}
h2{margin:14px 0 2px;font-size:19px}h3{font-size:15px;margin:16px 0 6px}
.muted{color:#5d6b7a;font-size:13px}
table{border-collapse:collapse;width:100%;font-size:13.5px}
th,td{text-align:left;padding:5px 8px;border-bottom:1px solid #e6e9ee;vertical-align:top}
th{background:#f0f2f5;font-weight:600}
code{font:12.5px ui-monospace,Menlo,Consolas,monospace;background:#f0f2f5;padding:1px 4px;border-radius:3px;word-break:break-all}
.badge{display:inline-block;padding:1px 8px;border-radius:10px;font-size:12px;font-weight:600;color:#fff;background:#6b7785}
.phase-Published .badge{background:#1f8a4c}.phase-Deprecated .badge{background:#c77700}
.phase-Retired .badge{background:#6b7785}.phase-Failed .badge{background:#c62828}
.phase-Verified .badge{background:#2f6fb3}
tr.phase-Deprecated td{background:#fff7e6}tr.phase-Failed td{background:#fdecec}
tr.phase-Retired td{color:#6b7785}
.sev-Critical{color:#b00020;font-weight:700}.sev-Important{color:#c62828;font-weight:600}
.sev-Moderate{color:#c77700}.sev-Low{color:#5d6b7a}
ul.advisories{margin:0;padding-left:16px}
details{margin-top:4px}details .notes{border-left:3px solid #d9dee5;padding:0 12px;margin:6px 0}
.notready{color:#c62828}
.proof-passed{color:#1f8a4c}.proof-failed{color:#c62828;font-weight:600}.proof-notrun{color:#c77700}
ul.issues{margin:2px 0 6px;padding-left:16px}ul.issues a{word-break:break-all}
li.issue-open{font-weight:600}li.issue-open .badge{background:#c62828}
li.issue-closed{color:#5d6b7a}li.issue-closed .badge{background:#1f8a4c}
"#;

/// A policy duration as people say it: `2160h` is 90 days.
fn human(duration: &str) -> String {
    match crate::api::parse_duration(duration).map(|d| d.as_secs()) {
        Some(s) if s > 0 && s % 86_400 == 0 => format!("{} day{}", s / 86_400, if s == 86_400 { "" } else { "s" }),
        _ => duration.to_string(),
    }
}

fn time(t: Option<Timestamp>, field: &str) -> String {
    match t {
        Some(t) => {
            let full = t.to_string();
            let date = t.strftime("%Y-%m-%d").to_string();
            format!(r#"<td data-field="{field}"><time datetime="{full}">{date}</time></td>"#)
        }
        None => format!(r#"<td data-field="{field}"></td>"#),
    }
}

/// A link a consumer may follow: only http and https (as the schema guarantees), escaped;
/// anything else is shown as text.
fn link(url: &str, field: &str) -> String {
    let scheme = |s: &str| url.get(..s.len()).is_some_and(|u| u.eq_ignore_ascii_case(s));
    if scheme("https://") || scheme("http://") {
        format!(r#"<a data-field="{field}" href="{url}">{url}</a>"#, url = escape(url))
    } else {
        format!(r#"<code data-field="{field}">{}</code>"#, escape(url))
    }
}

fn advisory(out: &mut String, a: &Advisory) {
    let cves = a.cves.iter().map(|c| escape(c)).collect::<Vec<_>>().join(", ");
    let _ = write!(
        out,
        r#"<li data-advisory="{id}"><strong>{id}</strong> <span data-field="type">{type_}</span> <span class="sev-{sev}" data-field="severity">{sev}</span> <span data-field="cves">{cves}</span>: {summary}"#,
        id = escape(&a.id),
        type_ = escape(&a.type_),
        sev = escape(&a.severity),
        summary = escape(&a.summary),
    );
    if !a.resolved_by.is_empty() {
        let proofs = a
            .resolved_by
            .iter()
            .map(|p| {
                let class = match p.result.as_str() {
                    "passed" => "proof-passed",
                    "failed" => "proof-failed",
                    _ => "proof-notrun",
                };
                format!(
                    r#"<span class="{class}" data-check="{check}"><code>{check}</code> <span data-field="result">{result}</span></span>"#,
                    check = escape(&p.check),
                    result = escape(&p.result),
                )
            })
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(out, r#" · <span data-field="resolvedBy">proven by {proofs}</span>"#);
    }
    if !a.closes.is_empty() {
        let ids = a.closes.iter().map(|c| format!("<code>{}</code>", escape(c))).collect::<Vec<_>>().join(", ");
        let _ = write!(out, r#" · <span data-field="closes">closes {ids}</span>"#);
    }
    out.push_str("</li>");
}

fn known_issues(out: &mut String, issues: &[KnownIssue]) {
    let open = issues.iter().filter(|k| k.closed_by.is_none()).count();
    let state = match (open, issues.len() - open) {
        (0, _) => "all closed".to_string(),
        (open, 0) => format!(r#"<span class="notready">{open} open</span>"#),
        (open, closed) => format!(r#"<span class="notready">{open} open</span>, {closed} closed"#),
    };
    let _ = write!(out, r#"<div data-field="knownIssues">Known issues ({state}):<ul class="issues">"#);
    for k in issues {
        let (class, badge) = match &k.closed_by {
            Some(c) => (
                "issue-closed",
                format!(
                    r#"<span class="badge" data-field="closedBy">closed in <span data-field="version">{}</span> by <span data-field="advisory">{}</span></span>"#,
                    escape(&c.version),
                    escape(&c.advisory)
                ),
            ),
            None => ("issue-open", r#"<span class="badge">open</span>"#.to_string()),
        };
        let _ = write!(
            out,
            r#"<li class="{class}" data-known-issue="{id}">{badge} <strong>{id}</strong>: <span data-field="summary">{summary}</span>"#,
            id = escape(&k.id),
            summary = escape(&k.summary),
        );
        if let Some(url) = &k.link {
            let _ = write!(out, " ({})", link(url, "link"));
        }
        if let Some(w) = &k.workaround {
            let _ = write!(out, r#" — workaround: <span data-field="workaround">{}</span>"#, escape(w));
        }
        out.push_str("</li>");
    }
    out.push_str("</ul></div>");
}

fn release_row(out: &mut String, r: &Release) {
    let phase = escape(&r.phase);
    let marker = match r.phase.as_str() {
        "Deprecated" => " — deprecated, move off it",
        "Retired" => " — retired",
        _ => "",
    };
    let _ = write!(
        out,
        r#"<tr class="release phase-{phase}" data-release="{name}"><td data-field="version"><strong>{version}</strong></td><td data-field="phase"><span class="badge">{phase}</span>{marker}</td>"#,
        name = escape(&r.name),
        version = escape(&r.version),
    );
    let pull = r.pull.as_deref().map(|p| format!("<code>{}</code>", escape(p))).unwrap_or_default();
    let _ = write!(out, r#"<td data-field="pull">{pull}</td>"#);
    out.push_str(&time(r.published_at, "publishedAt"));
    out.push_str(&time(r.deprecated_at, "deprecatedAt"));
    out.push_str(&time(r.retired_at, "retiredAt"));
    out.push_str(&time(r.support_ends_at, "supportEndsAt"));
    let days = r.days_of_support_left.map(|d| d.to_string()).unwrap_or_default();
    let _ = write!(out, r#"<td data-field="daysOfSupportLeft">{days}</td><td data-field="advisories">"#);
    if !r.advisories.is_empty() {
        out.push_str(r#"<ul class="advisories">"#);
        for a in &r.advisories {
            advisory(out, a);
        }
        out.push_str("</ul>");
    }
    out.push_str("</td></tr>");
    // The details row: status, known issues, contract results and changes, release notes.
    let _ = write!(out, r#"<tr class="details phase-{phase}"><td></td><td colspan="8">"#);
    if !r.status_message.is_empty() {
        let _ = write!(out, r#"<div class="muted" data-field="statusMessage">{}</div>"#, escape(&r.status_message));
    }
    if !r.known_issues.is_empty() {
        known_issues(out, &r.known_issues);
    }
    if !r.checks.is_empty() {
        let passed = r.checks.values().filter(|p| **p).count();
        let failed: Vec<_> = r.checks.iter().filter(|(_, p)| !**p).map(|(n, _)| escape(n)).collect();
        let _ = write!(out, r#"<div class="muted">contract checks: {passed} of {} passed"#, r.checks.len());
        if !failed.is_empty() {
            let _ = write!(out, r#"; <span class="notready">failed: {}</span>"#, failed.join(", "));
        }
        out.push_str("</div>");
    }
    if let Some(s) = &r.signature {
        let _ = write!(
            out,
            r#"<div class="muted" data-field="signature">signed by key <code>{}</code>, attested: {} (<code>cosign verify --key &lt;public key&gt;</code>)</div>"#,
            escape(&s.key_fingerprint),
            s.attestations.iter().map(|a| escape(a)).collect::<Vec<_>>().join(", ")
        );
    }
    if let Some(base) = &r.contract_baseline {
        let changes = if r.contract_changes.is_empty() {
            "no contract changes".to_string()
        } else {
            r.contract_changes.iter().map(|c| escape(c)).collect::<Vec<_>>().join("; ")
        };
        let _ =
            write!(out, r#"<div class="muted" data-field="contractChanges">since {}: {changes}</div>"#, escape(base));
    }
    if let Some(notes) = &r.release_notes {
        let open = if r.supported { " open" } else { "" };
        let _ = write!(
            out,
            r#"<details{open}><summary>Release notes</summary><div class="notes" data-field="releaseNotes">{}</div></details>"#,
            markdown::to_html(notes)
        );
    }
    out.push_str("</td></tr>");
}

fn product(out: &mut String, p: &Product) {
    let id = format!("{}/{}", p.namespace, p.name);
    let _ = write!(
        out,
        r#"<section class="product" id="{id}" data-product="{id}"><h2>{name} <span class="muted">in {ns}</span></h2><div class="muted">repository <code>{repo}</code>"#,
        id = escape(&id),
        name = escape(&p.name),
        ns = escape(&p.namespace),
        repo = escape(&p.repository),
    );
    if let Some(latest) = &p.latest_version {
        let _ = write!(out, r#" · latest <strong data-field="latestVersion">{}</strong>"#, escape(latest));
    }
    if !p.ready.ready && !p.ready.reason.is_empty() {
        let _ = write!(
            out,
            r#" · <span class="notready">{}: {}</span>"#,
            escape(&p.ready.reason),
            escape(&p.ready.message)
        );
    }
    out.push_str("</div>");
    let mut links = Vec::new();
    if let Some(url) = &p.runbook_url {
        links.push(format!(r#"<a href="{}">Runbook</a>"#, escape(url)));
    }
    links.extend(p.docs.iter().map(|l| format!(r#"<a href="{}">{}</a>"#, escape(&l.url), escape(&l.title))));
    if !links.is_empty() {
        let _ = write!(out, r#"<div class="muted">{}</div>"#, links.join(" · "));
    }
    if let Some(notes) = &p.notes {
        out.push_str(&markdown::to_html(notes));
    }
    let s = &p.support;
    let mut policy = Vec::new();
    if let Some(n) = s.max_supported {
        policy.push(format!("at most {n} supported at once"));
    }
    if let Some(w) = &s.support_window {
        policy.push(format!("each supported for {}", escape(&human(w))));
    }
    if let Some(d) = &s.deprecate_after {
        policy.push(format!("deprecated {} after publishing", escape(&human(d))));
    }
    if let Some(r) = &s.retire_after {
        policy.push(format!("retired {} after deprecation", escape(&human(r))));
    }
    if !policy.is_empty() {
        let _ = write!(out, r#"<div class="muted">Support: {}</div>"#, policy.join("; "));
    }

    out.push_str("<h3>Channels</h3>");
    if p.channels.is_empty() {
        out.push_str(r#"<p class="muted">no channel points at a release yet</p>"#);
    } else {
        out.push_str("<table><tr><th>Channel</th><th>Version</th><th>Pull</th><th>Digest</th></tr>");
        for c in &p.channels {
            let _ = write!(
                out,
                r#"<tr data-channel="{name}"><td><strong>{name}</strong></td><td data-field="version">{version}</td><td data-field="pull"><code>{pull}</code></td><td data-field="digest"><code>{digest}</code></td></tr>"#,
                name = escape(&c.name),
                version = escape(&c.version),
                pull = escape(&c.pull),
                digest = escape(&c.digest),
            );
        }
        out.push_str("</table>");
    }

    out.push_str("<h3>Releases</h3>");
    if p.releases.is_empty() {
        out.push_str(r#"<p class="muted">no releases yet</p>"#);
    } else {
        out.push_str("<table><tr><th>Version</th><th>Phase</th><th>Pull</th><th>Published</th><th>Deprecated</th><th>Retired</th><th>Support ends</th><th>Days left</th><th>Advisories</th></tr>");
        for r in &p.releases {
            release_row(out, r);
        }
        out.push_str("</table>");
    }

    let c = &p.contract;
    out.push_str(r#"<h3>Contract</h3><ul class="contract">"#);
    let list =
        |items: &[String]| items.iter().map(|i| format!("<code>{}</code>", escape(i))).collect::<Vec<_>>().join(" ");
    if !c.packages.is_empty() {
        let _ = write!(out, "<li>Packages: {}</li>", list(&c.packages));
    }
    if !c.files.is_empty() {
        let _ = write!(out, "<li>Files: {}</li>", list(&c.files));
    }
    if let Some(user) = &c.user {
        let _ = write!(out, "<li>User: <code>{}</code></li>", escape(user));
    }
    if let Some(entrypoint) = &c.entrypoint {
        let _ = write!(out, "<li>Entrypoint: {}</li>", list(entrypoint));
    }
    if !c.ports.is_empty() {
        let _ = write!(out, "<li>Ports: {}</li>", list(&c.ports));
    }
    if !c.env.is_empty() {
        let _ = write!(out, "<li>Environment: {}</li>", list(&c.env));
    }
    for check in &c.checks {
        let description = check.description.as_deref().map(|d| format!(": {}", escape(d))).unwrap_or_default();
        let _ = write!(out, "<li>Check <code>{}</code>{description}</li>", escape(&check.name));
    }
    out.push_str("</ul></section>");
}

/// The whole page. `title` names what it covers (a namespace, or the controller's scope);
/// `json` is the address of the same view in the JSON API.
pub fn page(catalog: &Catalog, title: &str, json: &str) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let _ = write!(
        out,
        r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>{title} — coreforge catalog</title><style>{STYLE}</style></head><body><header><h1>Core build catalog: {title}</h1><p>{n} product(s) · as of <time datetime="{at}">{at}</time> · <a href="{json}">JSON</a></p></header><main>"#,
        title = escape(title),
        n = catalog.products.len(),
        at = catalog.generated_at,
        json = escape(json),
    );
    if catalog.products.is_empty() {
        out.push_str(r#"<p class="muted">No CoreBuilds here yet.</p>"#);
    }
    for p in &catalog.products {
        product(&mut out, p);
    }
    out.push_str("</main></body></html>\n");
    out
}
