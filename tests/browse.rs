//! The consumers' catalog, end to end: a product with a published, a deprecated and a
//! failed release is rendered by a real headless browser from the controller's HTTP port;
//! the page shows each release's dates, support days and advisories, marks the deprecated
//! one, and says what the JSON API says. The terminal commands print the same. The
//! browser's screenshot is kept in `target/test-logs/catalog-<namespace>.png`.

mod fixtures;
mod support;

use std::time::Duration;

use anyhow::{Context, bail, ensure};
use coreforge::api::{CoreBuild, ImageRelease, Phase};
use fixtures::{ControllerProcess, create_built_release, create_local_core_build};
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::{Value, json};

const SETTLE: Duration = Duration::from_secs(120);

/// The headless browser (Debian's `chromium-headless-shell`, installed by tests/deps.sh).
const BROWSER: &str = "chromium-headless-shell";

async fn browser(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::time::timeout(
        Duration::from_secs(60),
        tokio::process::Command::new(BROWSER)
            .args(["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--no-first-run"])
            .args(args)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .context("the browser did not finish within 60 s")?
    .with_context(|| format!("running {BROWSER}"))?;
    ensure!(out.status.success(), "{BROWSER} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// The text of an element's content: tags dropped, entities of the page's escaping
/// undone, whitespace collapsed.
fn text(html: &str) -> String {
    let mut out = String::new();
    let mut in_tag = false;
    for c in html.chars() {
        match c {
            '<' => in_tag = true,
            '>' => in_tag = false,
            c if !in_tag => out.push(c),
            _ => {}
        }
    }
    let out = out.replace("&lt;", "<").replace("&gt;", ">").replace("&quot;", "\"").replace("&#39;", "'");
    out.replace("&amp;", "&").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// The markup of the element that opens with `open` (up to its `close` tag).
fn element<'a>(html: &'a str, open: &str, close: &str) -> anyhow::Result<&'a str> {
    let start = html.find(open).with_context(|| format!("no {open} in the page"))?;
    let end = html[start..].find(close).with_context(|| format!("{open} is not closed"))?;
    Ok(&html[start..start + end])
}

/// A release row's cell `field`: its text, or the `datetime` of the `<time>` in it.
fn cell(row: &str, field: &str) -> anyhow::Result<String> {
    let td = element(row, &format!(r#"data-field="{field}""#), "</td>")?;
    Ok(match td.split_once(r#"datetime=""#) {
        Some((_, rest)) => rest.split('"').next().unwrap_or_default().to_string(),
        None => text(&format!("<{td}")),
    })
}

fn string(v: &Value) -> String {
    match v {
        Value::Null => String::new(),
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// The page says, for every release of the product, what the JSON says.
fn page_matches_json(page: &str, product: &Value) -> anyhow::Result<()> {
    let name = format!("{}/{}", string(&product["namespace"]), string(&product["name"]));
    let section = element(page, &format!(r#"data-product="{name}""#), "</section>")?;
    for r in product["releases"].as_array().context("releases")? {
        let row = element(section, &format!(r#"data-release="{}""#, string(&r["name"])), "</tr>")?;
        for (field, json_field) in [
            ("version", "version"),
            ("publishedAt", "publishedAt"),
            ("deprecatedAt", "deprecatedAt"),
            ("retiredAt", "retiredAt"),
            ("supportEndsAt", "supportEndsAt"),
            ("daysOfSupportLeft", "daysOfSupportLeft"),
            ("pull", "pull"),
        ] {
            let shown = cell(row, field)?;
            ensure!(
                shown == string(&r[json_field]),
                "{name} {}: the page shows {field} {shown:?}, the JSON {}",
                r["name"],
                r[json_field]
            );
        }
        ensure!(cell(row, "phase")?.starts_with(&string(&r["phase"])), "{name} {}: phase", r["name"]);
        for a in r["advisories"].as_array().context("advisories")? {
            let li = element(row, &format!(r#"data-advisory="{}""#, string(&a["id"])), "</li>")?;
            let li = format!("<{li}");
            for field in ["type", "severity"] {
                ensure!(
                    text(
                        element(&li, &format!(r#"data-field="{field}""#), "</span>")?
                            .split_once('>')
                            .context("span")?
                            .1
                    ) == string(&a[field]),
                    "advisory {} {field}",
                    a["id"]
                );
            }
            let cves: Vec<String> = a["cves"].as_array().context("cves")?.iter().map(string).collect();
            ensure!(text(&li).contains(&cves.join(", ")), "advisory {} CVEs {cves:?} in {li}", a["id"]);
            ensure!(text(&li).contains(&string(&a["summary"])), "advisory {} summary", a["id"]);
        }
    }
    for c in product["channels"].as_array().context("channels")? {
        let row = element(section, &format!(r#"data-channel="{}""#, string(&c["name"])), "</tr>")?;
        ensure!(cell(row, "version")? == string(&c["version"]), "channel {}", c["name"]);
        ensure!(cell(row, "pull")? == string(&c["pull"]), "channel {}", c["name"]);
    }
    Ok(())
}

async fn coreforge(args: &[&str]) -> anyhow::Result<String> {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_coreforge"))
        .args(args)
        .env("KUBECONFIG", support::kubeconfig_path())
        .output()
        .await?;
    ensure!(out.status.success(), "coreforge {args:?} failed: {}", String::from_utf8_lossy(&out.stderr));
    Ok(String::from_utf8(out.stdout)?)
}

/// The JSON API, once it shows every release in the phase wanted (the view is read again
/// at most every few seconds).
async fn api_once(addr: &str, ns: &str, phases: &[(&str, &str)]) -> anyhow::Result<Value> {
    let url = format!("http://{addr}/api/v1/catalog/{ns}");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (code, body) = fixtures::http_get(&url).await?;
        if code == 200 {
            let v: Value = serde_json::from_str(&body)?;
            let releases = v["products"][0]["releases"].as_array().cloned().unwrap_or_default();
            let phase_of = |name: &str| releases.iter().find(|r| r["name"] == name).map(|r| string(&r["phase"]));
            if phases.iter().all(|(name, phase)| phase_of(name).as_deref() == Some(phase)) {
                return Ok(v);
            }
        }
        if tokio::time::Instant::now() > deadline {
            bail!("the catalog API never showed {phases:?}: last answer {code} {body}");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

#[tokio::test]
async fn the_catalog_page_shows_what_consumers_need_in_a_real_browser() -> anyhow::Result<()> {
    fixtures::install_crds().await?;
    support::with_namespace("browse", |client, ns| async move {
        let addr = format!("127.0.0.1:{}", fixtures::free_port()?);
        let _controller = ControllerProcess::start_with(&ns, &["--http-addr", &addr]).await?;
        // One supported release at a time: publishing 12.8.0 deprecates 12.7.0.
        create_local_core_build(&client, &ns, json!({"maxSupported": 1, "supportWindow": "2160h"})).await?;
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        let docs = json!({"spec": {"docs": {"runbookUrl": "https://runbooks.example/debian",
            "upstream": [{"title": "Debian 12", "url": "https://www.debian.org/releases/bookworm/"}],
            "notes": "The **baseline** for every service. <script>alert(1)</script>"}}});
        cbs.patch("debian", &PatchParams::default(), &Patch::Merge(docs)).await?;

        create_built_release(&client, &ns, "debian-12-7-0", "12.7.0", "Published").await?;
        fixtures::wait_phase(&client, &ns, "debian-12-7-0", Phase::Published, SETTLE).await?;
        create_built_release(&client, &ns, "debian-12-8-0", "12.8.0", "Published").await?;
        fixtures::wait_phase(&client, &ns, "debian-12-8-0", Phase::Published, SETTLE).await?;
        fixtures::wait_phase(&client, &ns, "debian-12-7-0", Phase::Deprecated, SETTLE).await?;
        // A release whose contract test fails.
        let failing = json!({"spec": {"tester": {"podAnnotations": {"sim.coreforge.dev/termination-message": fixtures::test_report(false)}}}});
        cbs.patch("debian", &PatchParams::default(), &Patch::Merge(failing)).await?;
        create_built_release(&client, &ns, "debian-12-9-0", "12.9.0", "Published").await?;
        fixtures::wait_phase(&client, &ns, "debian-12-9-0", Phase::Failed, SETTLE).await?;

        let want = [("debian-12-7-0", "Deprecated"), ("debian-12-8-0", "Published"), ("debian-12-9-0", "Failed")];
        let api = api_once(&addr, &ns, &want).await?;
        let product = &api["products"][0];
        let release = |name: &str| product["releases"].as_array().unwrap().iter().find(|r| r["name"] == name).unwrap().clone();
        let (old, new, failed) = (release("debian-12-7-0"), release("debian-12-8-0"), release("debian-12-9-0"));
        ensure!(new["supported"] == true && old["supported"] == false, "{new} {old}");
        ensure!(string(&new["pull"]).contains("/core@sha256:"), "{new}");
        ensure!(!string(&old["deprecatedAt"]).is_empty() && !string(&old["pull"]).is_empty(), "{old}");
        ensure!(new["daysOfSupportLeft"].as_i64().is_some_and(|d| (89..=90).contains(&d)), "a 90-day window: {new}");
        ensure!(failed["pull"].is_null() && failed["checks"]["check:tls"] == false, "{failed}");
        ensure!(string(&failed["statusMessage"]).contains("tls"), "a failed release says why: {failed}");
        ensure!(product["channels"].as_array().is_some_and(|c| c.iter().any(|c| c["name"] == "latest" && c["version"] == "12.8.0")));

        // The page, as a browser renders it, says the same.
        let url = format!("http://{addr}/catalog/{ns}");
        let dom = browser(&["--dump-dom", &url]).await?;
        page_matches_json(&dom, product)?;
        let old_row = element(&dom, r#"data-release="debian-12-7-0""#, "</tr>")?;
        ensure!(text(&format!("<{old_row}")).contains("Deprecated — deprecated, move off it"), "the deprecated release is marked: {old_row}");
        ensure!(dom.contains(r#"class="release phase-Deprecated""#), "and styled as such");
        ensure!(dom.contains("&lt;script&gt;alert(1)&lt;/script&gt;") && !dom.contains("<script>alert"), "notes are shown as text");
        ensure!(dom.contains("<h2>Security</h2>") && dom.contains("DSA-5800-1"), "release notes rendered from Markdown");
        let shot = support::test_logs().join(format!("catalog-{ns}.png"));
        browser(&["--window-size=1400,1600", &format!("--screenshot={}", shot.display()), &url]).await?;
        let png = std::fs::read(&shot).with_context(|| format!("no screenshot at {}", shot.display()))?;
        ensure!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real screenshot: {} bytes", png.len());

        // The same view is only shown for the namespaces the controller covers.
        let (code, body) = fixtures::http_get(&format!("http://{addr}/catalog/kube-system")).await?;
        ensure!(code == 404 && body.contains("not covered by this controller"), "{code} {body}");

        // The terminal: the same releases and dates, and the release notes.
        let table = coreforge(&["catalog", "-n", &ns]).await?;
        let line = |version: &str| table.lines().find(|l| l.trim_start().starts_with(version)).map(str::to_string);
        let old_line = line("12.7.0").with_context(|| format!("12.7.0 missing from\n{table}"))?;
        ensure!(old_line.contains("Deprecated") && old_line.contains(&string(&old["publishedAt"])[..10]), "{old_line}");
        ensure!(line("12.9.0").is_some_and(|l| l.contains("Failed")), "{table}");
        ensure!(table.contains("channel latest   → 12.8.0"), "{table}");
        let cli: Value = serde_json::from_str(&coreforge(&["catalog", "-n", &ns, "-o", "json"]).await?)?;
        ensure!(cli["products"][0]["releases"] == product["releases"], "the terminal's JSON is the API's");
        let notes = coreforge(&["notes", "debian-12-8-0", "-n", &ns]).await?;
        ensure!(notes.starts_with("# debian 12.8.0") && notes.contains("DSA-5800-1") && notes.contains("Phase: Published"), "{notes}");
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        ensure!(irs.get("debian-12-8-0").await?.status.and_then(|s| s.release_notes).is_some_and(|n| notes.starts_with(n.trim_end())));
        let missing = tokio::process::Command::new(env!("CARGO_BIN_EXE_coreforge"))
            .args(["notes", "nope", "-n", &ns])
            .env("KUBECONFIG", support::kubeconfig_path())
            .output()
            .await?;
        let err = String::from_utf8_lossy(&missing.stderr);
        ensure!(!missing.status.success() && err.contains(&format!("ImageRelease nope not found in namespace {ns}")), "{err}");
        Ok(())
    })
    .await
}
