//! The lifecycle policy as a table over times, counts and targets.

use super::*;
use crate::api::{Advisory, ImageReleaseSpec, ImageReleaseStatus};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

const T0: i64 = 1_800_000_000;

fn ts(secs: i64) -> Timestamp {
    Timestamp::from_second(T0 + secs).unwrap()
}

fn release(version: &str, phase: Phase, target: Target, published: Option<i64>) -> ImageRelease {
    let mut r = ImageRelease::new(
        "r",
        ImageReleaseSpec { core_build: "debian".into(), version: version.into(), target, ..Default::default() },
    );
    r.status = Some(ImageReleaseStatus {
        phase: Some(phase),
        published_at: published.map(|s| Time(ts(s))),
        ..Default::default()
    });
    r
}

fn sibling(version: &str, phase: Phase) -> Sibling {
    Sibling {
        name: format!("r-{version}"),
        version: Version::parse(version).unwrap(),
        phase,
        published_at: Some(ts(0)),
        base_digest: None,
        checks: vec![],
        known_issues: vec![],
    }
}

fn policy(max: Option<i32>, deprecate: Option<&str>, retire: Option<&str>) -> LifecyclePolicy {
    LifecyclePolicy {
        max_supported: max,
        deprecate_after: deprecate.map(String::from),
        retire_after: retire.map(String::from),
        ..Default::default()
    }
}

#[test]
fn policy_table() {
    let published = |v: &str| release(v, Phase::Published, Target::Published, Some(0));
    let mut deprecated_at_50 = release("1.0.0", Phase::Deprecated, Target::Published, Some(0));
    deprecated_at_50.status.as_mut().unwrap().deprecated_at = Some(Time(ts(50)));
    let mut support_ends_30 = published("1.0.0");
    support_ends_30.status.as_mut().unwrap().support_ends_at = Some(Time(ts(30)));

    let two_newer = [sibling("1.1.0", Phase::Published), sibling("1.2.0", Phase::Published)];
    let one_newer =
        [sibling("1.1.0", Phase::Published), sibling("1.2.0", Phase::Deprecated), sibling("0.9.0", Phase::Published)];
    type Case<'a> = (&'a str, ImageRelease, LifecyclePolicy, &'a [Sibling], i64, Option<(Phase, &'a str)>, Option<u64>);
    let cases: Vec<Case> = vec![
        ("nothing to do", published("1.0.0"), policy(None, None, None), &[], 10, None, None),
        (
            "target deprecates",
            release("1.0.0", Phase::Published, Target::Deprecated, Some(0)),
            policy(None, None, None),
            &[],
            10,
            Some((Phase::Deprecated, "TargetDeprecated")),
            None,
        ),
        (
            "target retires a published release: first deprecate",
            release("1.0.0", Phase::Published, Target::Retired, Some(0)),
            policy(None, None, None),
            &[],
            10,
            Some((Phase::Deprecated, "TargetDeprecated")),
            None,
        ),
        (
            "target retires a deprecated one",
            release("1.0.0", Phase::Deprecated, Target::Retired, Some(0)),
            policy(None, None, None),
            &[],
            10,
            Some((Phase::Retired, "TargetRetired")),
            None,
        ),
        (
            "maxSupported 2, two newer",
            published("1.0.0"),
            policy(Some(2), None, None),
            &two_newer,
            10,
            Some((Phase::Deprecated, "Superseded")),
            None,
        ),
        (
            "maxSupported 2, one newer published (others deprecated or older)",
            published("1.0.0"),
            policy(Some(2), None, None),
            &one_newer,
            10,
            None,
            None,
        ),
        ("maxSupported 3, two newer", published("1.0.0"), policy(Some(3), None, None), &two_newer, 10, None, None),
        (
            "deprecateAfter not yet: due in 50 s",
            published("1.0.0"),
            policy(None, Some("60s"), None),
            &[],
            10,
            None,
            Some(50),
        ),
        (
            "deprecateAfter exactly due",
            published("1.0.0"),
            policy(None, Some("60s"), None),
            &[],
            60,
            Some((Phase::Deprecated, "DeprecateAfterElapsed")),
            None,
        ),
        (
            "deprecateAfter overdue (after a restart)",
            published("1.0.0"),
            policy(None, Some("60s"), None),
            &[],
            3600,
            Some((Phase::Deprecated, "DeprecateAfterElapsed")),
            None,
        ),
        ("support ends first", support_ends_30.clone(), policy(None, Some("60s"), None), &[], 10, None, Some(20)),
        (
            "support ended",
            support_ends_30,
            policy(None, Some("60s"), None),
            &[],
            30,
            Some((Phase::Deprecated, "SupportEnded")),
            None,
        ),
        (
            "retireAfter counts from publication",
            deprecated_at_50.clone(),
            policy(None, None, Some("120s")),
            &[],
            100,
            None,
            Some(20),
        ),
        (
            "retireAfter due",
            deprecated_at_50.clone(),
            policy(None, None, Some("120s")),
            &[],
            120,
            Some((Phase::Retired, "RetireAfterElapsed")),
            None,
        ),
        (
            "never retired before deprecation: retireAfter already passed when deprecated",
            deprecated_at_50.clone(),
            policy(None, None, Some("10s")),
            &[],
            50,
            Some((Phase::Retired, "RetireAfterElapsed")),
            None,
        ),
        ("deprecated without retireAfter stays", deprecated_at_50, policy(None, None, None), &[], 100_000, None, None),
        (
            "a Verified release is not the policy's business",
            release("1.0.0", Phase::Verified, Target::Retired, None),
            policy(Some(1), Some("1s"), Some("2s")),
            &two_newer,
            100,
            None,
            None,
        ),
        (
            "a Retired release stays retired",
            release("1.0.0", Phase::Retired, Target::Retired, Some(0)),
            policy(Some(1), Some("1s"), Some("2s")),
            &two_newer,
            100,
            None,
            None,
        ),
    ];
    for (what, r, p, siblings, now, want_step, want_next) in cases {
        let (step, next) = policy_step(&r, Some(&p), siblings, ts(now));
        assert_eq!(step.map(|s| (s.phase, s.reason)), want_step, "{what}");
        assert_eq!(next.map(|d| d.as_secs()), want_next, "{what}");
    }
}

fn result(name: &str, observed: &str) -> CheckResult {
    CheckResult { name: name.into(), passed: true, observed: Some(observed.into()), output: None }
}

#[test]
fn contract_diffs() {
    let old = [
        result("package:bash", "5.2.15-2"),
        result("package:curl", "7.88.1-10"),
        result("file:/etc/ssl/certs/ca-certificates.crt", "file"),
        result("user", "app (uid 1001)"),
        result("check:tls", "exit 0"),
    ];
    let new = [
        result("package:bash", "5.2.15-3"),
        result("package:curl", "7.74.0-1"),
        result("user", "root (uid 0)"),
        result("check:tls", "exit 0"),
        result("env:LANG", "C.UTF-8"),
    ];
    let d = contract_diff(&old, &new);
    assert_eq!(
        d.incompatible,
        [
            "package:curl was downgraded from 7.88.1-10 to 7.74.0-1",
            "file:/etc/ssl/certs/ca-certificates.crt was removed",
            "user changed from app (uid 1001) to root (uid 0)",
        ]
    );
    assert_eq!(d.compatible, ["package:bash was upgraded from 5.2.15-2 to 5.2.15-3", "env:LANG was added"]);
    assert_eq!(contract_diff(&old, &old), ContractDiff::default());
}

#[test]
fn baselines() {
    let s = [
        sibling("11.9.0", Phase::Published),
        sibling("12.6.0", Phase::Published),
        sibling("12.6.5", Phase::Deprecated),
        sibling("12.8.0", Phase::Published),
        sibling("13.0.0", Phase::Published),
    ];
    let v = Version::parse("12.7.0").unwrap();
    assert_eq!(baseline(&v, &s, true).map(|b| b.version.to_string()), Some("12.6.0".into()));
    let v = Version::parse("13.1.0").unwrap();
    assert_eq!(baseline(&v, &s, true).map(|b| b.version.to_string()), Some("13.0.0".into()));
    let v = Version::parse("14.0.0").unwrap();
    assert_eq!(baseline(&v, &s, true), None);
    assert_eq!(baseline(&v, &s, false).map(|b| b.version.to_string()), Some("13.0.0".into()));
    assert_eq!(previous(&Version::parse("12.7.0").unwrap(), &s).map(|b| b.version.to_string()), Some("12.6.5".into()));
}

#[test]
fn release_notes_list_advisories_base_change_and_contract_changes() {
    let mut r = release("12.8.0", Phase::Verified, Target::Published, None);
    r.spec.release_notes = Some("Point release.".into());
    let adv = |id: &str, t, sev, cves: &[&str]| Advisory {
        id: id.into(),
        type_: t,
        severity: sev,
        cves: cves.iter().map(|c| c.to_string()).collect(),
        summary: format!("summary of {id}"),
        ..Default::default()
    };
    let mut fix = adv("CFBA-3", AdvisoryType::Bugfix, Severity::Low, &[]);
    fix.resolved_by = vec!["tls".into()];
    fix.closes = vec!["CFKI-1".into(), "CFKI-9".into()];
    r.spec.advisories = vec![
        adv("CFEA-1", AdvisoryType::Enhancement, Severity::None, &[]),
        adv("DSA-2", AdvisoryType::Security, Severity::Moderate, &["CVE-2024-0002"]),
        adv("DSA-1", AdvisoryType::Security, Severity::Critical, &["CVE-2024-0001", "CVE-2024-0003"]),
        fix,
    ];
    r.spec.known_issues = vec![crate::api::KnownIssue {
        id: "CFKI-2".into(),
        summary: "slow DNS".into(),
        link: Some("https://issues.example/CFKI-2".into()),
        workaround: Some("set ndots:1".into()),
    }];
    let checks = vec![CheckResult { name: "check:tls".into(), passed: true, observed: None, output: None }];
    let mut prev = sibling("12.7.0", Phase::Published);
    prev.base_digest = Some("sha256:old".into());
    prev.known_issues = vec!["CFKI-1".into()];
    let later = sibling("12.9.0", Phase::Published);
    let siblings = vec![prev.clone(), later];
    let diff = ContractDiff { incompatible: vec![], compatible: vec!["env:LANG was added".into()] };
    let notes = release_notes(&r, &checks, Some("sha256:new"), Some(&prev), &siblings, Some((&prev, &diff)));
    let want = "# debian 12.8.0

Point release.

## Security

- **DSA-1** (Critical): summary of DSA-1 — CVE-2024-0001, CVE-2024-0003
- **DSA-2** (Moderate): summary of DSA-2 — CVE-2024-0002

## Bug fixes

- **CFBA-3** (Low): summary of CFBA-3
  - proven by check `tls`: passed
  - closes known issue CFKI-1 of 12.7.0
  - closes CFKI-9 (no earlier release lists it)

## Enhancements

- **CFEA-1**: summary of CFEA-1

## Known issues

- **CFKI-2**: slow DNS (https://issues.example/CFKI-2)
  - workaround: set ndots:1

## Base image

- `sha256:old` → `sha256:new` (since 12.7.0)

## Contract changes since 12.7.0

- env:LANG was added
";
    assert_eq!(notes, want);
    let first = release_notes(&r, &[], Some("sha256:new"), None, &[], None);
    assert!(first.contains("  - proven by check `tls`: not run"));
    assert!(first.contains("- `sha256:new` (first release)"));
}
