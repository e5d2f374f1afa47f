//! The contract over time, as pure functions of statuses and the clock:
//!
//! - [`policy_step`]: when a Published release is deprecated and a Deprecated one retired
//!   (by `target`, by `maxSupported`, by `deprecateAfter` / `supportEndsAt`, by
//!   `retireAfter`), and when to look again — the exact instant of the next due
//!   transition, computed from status timestamps, so it survives restarts;
//! - [`contract_diff`]: what changed in the contract results since a baseline release,
//!   and which of those changes break consumers;
//! - [`release_notes`]: the Markdown notes of a release.

use std::time::Duration;

use jiff::Timestamp;
use semver::Version;

use crate::advisories;
use crate::api::{AdvisoryType, CheckResult, ImageRelease, LifecyclePolicy, Phase, Severity, Target, parse_duration};
use crate::contract::compare_versions;

/// Another release of the same CoreBuild, as the lifecycle sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sibling {
    /// Its name.
    pub name: String,
    /// Its version.
    pub version: Version,
    /// Its phase.
    pub phase: Phase,
    /// When it was published.
    pub published_at: Option<Timestamp>,
    /// Its base image digest.
    pub base_digest: Option<String>,
    /// Its contract results.
    pub checks: Vec<CheckResult>,
    /// The ids of its known issues.
    pub known_issues: Vec<String>,
}

impl Sibling {
    /// The sibling view of a release (`None` for a version that is not semver).
    pub fn of(r: &ImageRelease) -> Option<Sibling> {
        let st = r.status.clone().unwrap_or_default();
        Some(Sibling {
            name: r.metadata.name.clone().unwrap_or_default(),
            version: Version::parse(&r.spec.version).ok()?,
            phase: st.phase.unwrap_or_default(),
            published_at: st.published_at.map(|t| t.0),
            base_digest: st.provenance.map(|p| p.base_digest),
            checks: st.checks,
            known_issues: r.spec.known_issues.iter().map(|k| k.id.clone()).collect(),
        })
    }
}

/// A transition the policy asks for.
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The phase to enter.
    pub phase: Phase,
    /// Why (a condition reason).
    pub reason: &'static str,
    /// Why, for a person.
    pub message: String,
}

fn at_or_after(start: Timestamp, after: Option<&str>) -> Option<Timestamp> {
    let d = parse_duration(after?)?;
    start.checked_add(jiff::SignedDuration::try_from(d).ok()?).ok()
}

/// What should happen to a Published or Deprecated release now, and when the next
/// transition falls due if nothing else happens (`None`: nothing is scheduled).
pub fn policy_step(
    release: &ImageRelease,
    policy: Option<&LifecyclePolicy>,
    siblings: &[Sibling],
    now: Timestamp,
) -> (Option<Step>, Option<Duration>) {
    let st = release.status.clone().unwrap_or_default();
    let phase = st.phase.unwrap_or_default();
    let published = st.published_at.as_ref().map(|t| t.0);
    let due_in = |t: Timestamp| Duration::try_from(t.duration_since(now)).ok().filter(|d| !d.is_zero());
    match phase {
        Phase::Published => {
            if release.spec.target >= Target::Deprecated {
                let message = format!("spec.target is {:?}", release.spec.target);
                return (Some(Step { phase: Phase::Deprecated, reason: "TargetDeprecated", message }), None);
            }
            if let Some(max) = policy.and_then(|p| p.max_supported)
                && let Ok(mine) = Version::parse(&release.spec.version)
            {
                let newer = siblings.iter().filter(|s| s.phase == Phase::Published && s.version > mine).count();
                if newer >= max.max(1) as usize {
                    let message = format!("{newer} newer release(s) are published and lifecycle.maxSupported is {max}");
                    return (Some(Step { phase: Phase::Deprecated, reason: "Superseded", message }), None);
                }
            }
            let by_age = published.and_then(|p| at_or_after(p, policy.and_then(|p| p.deprecate_after.as_deref())));
            let by_support = st.support_ends_at.as_ref().map(|t| t.0);
            let due = [by_age.map(|t| (t, "DeprecateAfterElapsed")), by_support.map(|t| (t, "SupportEnded"))]
                .into_iter()
                .flatten()
                .min_by_key(|(t, _)| *t);
            match due {
                Some((t, reason)) if t <= now => {
                    let message = match reason {
                        "SupportEnded" => format!("support ended at {t}"),
                        _ => format!("lifecycle.deprecateAfter elapsed at {t}"),
                    };
                    (Some(Step { phase: Phase::Deprecated, reason, message }), None)
                }
                Some((t, _)) => (None, due_in(t)),
                None => (None, None),
            }
        }
        Phase::Deprecated => {
            if release.spec.target >= Target::Retired {
                let message = "spec.target is Retired".to_string();
                return (Some(Step { phase: Phase::Retired, reason: "TargetRetired", message }), None);
            }
            let deprecated = st.deprecated_at.as_ref().map(|t| t.0);
            let due = published.and_then(|p| at_or_after(p, policy.and_then(|p| p.retire_after.as_deref())));
            // Never retired before it was deprecated.
            let due = match (due, deprecated) {
                (Some(d), Some(dep)) => Some(d.max(dep)),
                (d, _) => d,
            };
            match due {
                Some(t) if t <= now => {
                    let message = format!("lifecycle.retireAfter elapsed at {t}");
                    (Some(Step { phase: Phase::Retired, reason: "RetireAfterElapsed", message }), None)
                }
                Some(t) => (None, due_in(t)),
                None => (None, None),
            }
        }
        _ => (None, None),
    }
}

/// Changes of contract results since a baseline.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ContractDiff {
    /// Changes that break consumers: a guarantee removed, a value changed, a package downgraded.
    pub incompatible: Vec<String>,
    /// Changes that do not: a guarantee added, a package upgraded.
    pub compatible: Vec<String>,
}

/// The previous result of each guarantee against the current one.
pub fn contract_diff(baseline: &[CheckResult], current: &[CheckResult]) -> ContractDiff {
    let mut d = ContractDiff::default();
    for old in baseline {
        let Some(new) = current.iter().find(|c| c.name == old.name) else {
            d.incompatible.push(format!("{} was removed", old.name));
            continue;
        };
        if old.name.starts_with("check:") || old.observed == new.observed {
            continue;
        }
        let (o, n) = (old.observed.clone().unwrap_or_default(), new.observed.clone().unwrap_or_default());
        if old.name.starts_with("package:") {
            match compare_versions(&n, &o) {
                std::cmp::Ordering::Less => d.incompatible.push(format!("{} was downgraded from {o} to {n}", old.name)),
                _ => d.compatible.push(format!("{} was upgraded from {o} to {n}", old.name)),
            }
        } else {
            d.incompatible.push(format!("{} changed from {o} to {n}", old.name));
        }
    }
    for new in current {
        if !baseline.iter().any(|c| c.name == new.name) {
            d.compatible.push(format!("{} was added", new.name));
        }
    }
    d
}

/// The release a new one is compared with: the newest Published release with a lower
/// version (of the same major when `same_major`).
pub fn baseline<'a>(version: &Version, siblings: &'a [Sibling], same_major: bool) -> Option<&'a Sibling> {
    siblings
        .iter()
        .filter(|s| s.phase == Phase::Published && s.version < *version)
        .filter(|s| !same_major || s.version.major == version.major)
        .max_by(|a, b| a.version.cmp(&b.version))
}

/// The release before this one: the newest lower version that was ever published.
pub fn previous<'a>(version: &Version, siblings: &'a [Sibling]) -> Option<&'a Sibling> {
    siblings
        .iter()
        .filter(|s| s.published_at.is_some() && s.version < *version)
        .max_by(|a, b| a.version.cmp(&b.version))
}

fn advisory_heading(t: AdvisoryType) -> &'static str {
    match t {
        AdvisoryType::Security => "Security",
        AdvisoryType::Bugfix => "Bug fixes",
        AdvisoryType::Enhancement => "Enhancements",
        AdvisoryType::Workaround => "Workarounds",
    }
}

/// The release notes of `release` in Markdown: its own notes, its advisories grouped by
/// type (with ids, severities, CVEs, the checks that prove them with their results in
/// `checks`, and the known issues of earlier `siblings` they close), its known issues, the
/// base image change since the previous release, and the contract changes since the
/// baseline.
pub fn release_notes(
    release: &ImageRelease,
    checks: &[CheckResult],
    base_digest: Option<&str>,
    previous: Option<&Sibling>,
    siblings: &[Sibling],
    diff: Option<(&Sibling, &ContractDiff)>,
) -> String {
    let mut out = format!("# {} {}\n", release.spec.core_build, release.spec.version);
    if let Some(notes) = release.spec.release_notes.as_deref().map(str::trim).filter(|n| !n.is_empty()) {
        out.push_str(&format!("\n{notes}\n"));
    }
    let version = Version::parse(&release.spec.version).ok();
    for t in [AdvisoryType::Security, AdvisoryType::Bugfix, AdvisoryType::Enhancement, AdvisoryType::Workaround] {
        let mut items: Vec<_> = release.spec.advisories.iter().filter(|a| a.type_ == t).collect();
        if items.is_empty() {
            continue;
        }
        items.sort_by_key(|a| (a.severity, a.id.clone()));
        out.push_str(&format!("\n## {}\n\n", advisory_heading(t)));
        for a in items {
            let severity = if a.severity == Severity::None { String::new() } else { format!(" ({:?})", a.severity) };
            let cves = if a.cves.is_empty() { String::new() } else { format!(" — {}", a.cves.join(", ")) };
            out.push_str(&format!("- **{}**{severity}: {}{cves}\n", a.id, a.summary));
            for p in advisories::proofs(std::slice::from_ref(a), checks) {
                out.push_str(&format!("  - proven by check `{}`: {}\n", p.check, p.state.as_str()));
            }
            for id in &a.closes {
                let known_in = siblings
                    .iter()
                    .filter(|s| version.as_ref().is_none_or(|v| s.version < *v))
                    .filter(|s| s.known_issues.contains(id))
                    .map(|s| s.version.to_string())
                    .collect::<Vec<_>>();
                match known_in.as_slice() {
                    [] => out.push_str(&format!("  - closes {id} (no earlier release lists it)\n")),
                    v => out.push_str(&format!("  - closes known issue {id} of {}\n", v.join(", "))),
                }
            }
        }
    }
    if !release.spec.known_issues.is_empty() {
        out.push_str("\n## Known issues\n\n");
        for k in &release.spec.known_issues {
            let link = k.link.as_deref().map(|l| format!(" ({l})")).unwrap_or_default();
            out.push_str(&format!("- **{}**: {}{link}\n", k.id, k.summary));
            if let Some(w) = k.workaround.as_deref().map(str::trim).filter(|w| !w.is_empty()) {
                out.push_str(&format!("  - workaround: {w}\n"));
            }
        }
    }
    out.push_str("\n## Base image\n\n");
    match (previous, base_digest) {
        (Some(p), Some(new)) => match p.base_digest.as_deref() {
            Some(old) if old == new => out.push_str(&format!("- unchanged since {} (`{new}`)\n", p.version)),
            Some(old) => out.push_str(&format!("- `{old}` → `{new}` (since {})\n", p.version)),
            None => out.push_str(&format!("- `{new}`\n")),
        },
        (None, Some(new)) => out.push_str(&format!("- `{new}` (first release)\n")),
        (_, None) => out.push_str("- not built yet\n"),
    }
    if let Some((base, d)) = diff {
        out.push_str(&format!("\n## Contract changes since {}\n\n", base.version));
        if d.incompatible.is_empty() && d.compatible.is_empty() {
            out.push_str("- none\n");
        }
        for c in &d.incompatible {
            out.push_str(&format!("- **incompatible**: {c}\n"));
        }
        for c in &d.compatible {
            out.push_str(&format!("- {c}\n"));
        }
    }
    out
}

#[cfg(test)]
#[path = "lifecycle_tests.rs"]
mod tests;
