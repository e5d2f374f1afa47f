//! The catalog for the terminal (`coreforge catalog`): per product, its channels and a
//! table of its releases with their dates, days of support left, open known issues and
//! advisories (with the known issues they close).

use std::fmt::Write;

use jiff::Timestamp;

use super::{Catalog, Release};

fn date(t: Option<Timestamp>) -> String {
    t.map(|t| t.strftime("%Y-%m-%d").to_string()).unwrap_or_else(|| "-".into())
}

fn advisories(r: &Release) -> String {
    if r.advisories.is_empty() {
        return "-".into();
    }
    r.advisories
        .iter()
        .map(|a| {
            let mut s = format!("{} ({}", a.id, a.type_);
            if a.severity != "None" {
                let _ = write!(s, ", {}", a.severity);
            }
            if !a.cves.is_empty() {
                let _ = write!(s, ", {}", a.cves.join(" "));
            }
            if !a.closes.is_empty() {
                let _ = write!(s, ", closes {}", a.closes.join(" "));
            }
            s.push(')');
            s
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// How many known issues of the release are still open (`-`: none).
fn open_issues(r: &Release) -> String {
    match r.known_issues.iter().filter(|k| k.closed_by.is_none()).count() {
        0 => "-".into(),
        n => n.to_string(),
    }
}

/// Left-aligned columns, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let widths: Vec<usize> =
        (0..rows[0].len()).map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0)).collect();
    let mut out = String::new();
    for row in rows {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let _ = write!(line, "{cell:<w$}  ", w = widths[i]);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// The catalog as text.
pub fn catalog(catalog: &Catalog) -> String {
    let mut out = String::new();
    if catalog.products.is_empty() {
        return "No CoreBuilds found.\n".into();
    }
    for p in &catalog.products {
        let _ = writeln!(out, "{}/{}  {}", p.namespace, p.name, p.repository);
        if !p.ready.ready && !p.ready.reason.is_empty() {
            let _ = writeln!(out, "  not ready: {}: {}", p.ready.reason, p.ready.message);
        }
        for c in &p.channels {
            let _ = writeln!(out, "  channel {:<8} → {:<12} {}", c.name, c.version, c.pull);
        }
        if p.releases.is_empty() {
            out.push_str("  no releases yet\n\n");
            continue;
        }
        let mut rows = vec![
            [
                "VERSION",
                "PHASE",
                "PUBLISHED",
                "DEPRECATED",
                "RETIRED",
                "SUPPORT ENDS",
                "DAYS LEFT",
                "OPEN ISSUES",
                "ADVISORIES",
            ]
            .map(String::from)
            .to_vec(),
        ];
        for r in &p.releases {
            rows.push(vec![
                r.version.clone(),
                r.phase.clone(),
                date(r.published_at),
                date(r.deprecated_at),
                date(r.retired_at),
                date(r.support_ends_at),
                r.days_of_support_left.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                open_issues(r),
                advisories(r),
            ]);
        }
        for line in table(&rows).lines() {
            let _ = writeln!(out, "  {line}");
        }
        out.push('\n');
    }
    out
}

/// One release's notes, with where to pull it from: the release notes the controller
/// generated (advisories, base change, contract changes), or the release's own notes
/// before it was tested; then whether each of its known issues is still open or which
/// later release closed it.
pub fn notes(release: &Release) -> String {
    let mut out = String::new();
    match &release.release_notes {
        Some(notes) => out.push_str(notes.trim_end()),
        None => {
            let _ = write!(out, "# {} (notes are generated once it is tested)", release.version);
        }
    }
    out.push_str("\n\n");
    let _ = writeln!(out, "Phase: {}", release.phase);
    if let Some(pull) = &release.pull {
        let _ = writeln!(out, "Pull: {pull}");
    }
    if let Some(s) = &release.signature {
        let _ = writeln!(
            out,
            "Signed: key {} ({}); attested: {}",
            s.key_fingerprint,
            s.reference,
            s.attestations.join(", ")
        );
        if let Some(pull) = &release.pull {
            let _ = writeln!(out, "Verify: cosign verify --key <public key> --insecure-ignore-tlog {pull}");
        }
    }
    if let Some(end) = release.support_ends_at {
        let left = release.days_of_support_left.map(|d| format!(" ({d} days left)")).unwrap_or_default();
        let _ = writeln!(out, "Support ends: {}{left}", date(Some(end)));
    }
    for k in &release.known_issues {
        let state = match &k.closed_by {
            Some(c) => format!("closed in {} by {}", c.version, c.advisory),
            None => "OPEN".to_string(),
        };
        let _ = write!(out, "Known issue {}: {state}: {}", k.id, k.summary);
        if let Some(link) = &k.link {
            let _ = write!(out, " ({link})");
        }
        if let (None, Some(w)) = (&k.closed_by, &k.workaround) {
            let _ = write!(out, "; workaround: {w}");
        }
        out.push('\n');
    }
    out
}
