//! Judging a test report against the service contract: which guarantees held, which
//! did not, and why. Pure; the test Job only observes, the controller decides.

use std::cmp::Ordering;

use crate::api::{CheckResult, Contract, FileKind, ImageConfig};
use crate::results::TestReport;

/// Compares two package versions the way dpkg does (epoch, upstream, revision; `~` sorts
/// before anything, letters before other characters). RPM and apk versions order the
/// same way in all common cases.
pub fn compare_versions(a: &str, b: &str) -> Ordering {
    fn split(v: &str) -> (u64, &str, &str) {
        let (epoch, rest) = match v.split_once(':') {
            Some((e, r)) if e.chars().all(|c| c.is_ascii_digit()) && !e.is_empty() => (e.parse().unwrap_or(0), r),
            _ => (0, v),
        };
        match rest.rsplit_once('-') {
            Some((up, rev)) => (epoch, up, rev),
            None => (epoch, rest, ""),
        }
    }
    fn order(c: Option<char>) -> i32 {
        match c {
            None => 0,
            Some('~') => -1,
            Some(c) if c.is_ascii_digit() => 0,
            Some(c) if c.is_ascii_alphabetic() => c as i32,
            Some(c) => c as i32 + 256,
        }
    }
    fn part(a: &str, b: &str) -> Ordering {
        let (mut a, mut b) = (a.chars().peekable(), b.chars().peekable());
        loop {
            // Non-digit prefixes, character by character.
            loop {
                let (ca, cb) = (a.peek().copied(), b.peek().copied());
                let da = ca.is_none_or(|c| c.is_ascii_digit());
                let db = cb.is_none_or(|c| c.is_ascii_digit());
                if da && db {
                    break;
                }
                let (oa, ob) = (if da { 0 } else { order(ca) }, if db { 0 } else { order(cb) });
                if oa != ob {
                    return oa.cmp(&ob);
                }
                if !da {
                    a.next();
                }
                if !db {
                    b.next();
                }
            }
            // Digit runs, numerically.
            let mut na = String::new();
            while let Some(c) = a.peek().copied().filter(char::is_ascii_digit) {
                na.push(c);
                a.next();
            }
            let mut nb = String::new();
            while let Some(c) = b.peek().copied().filter(char::is_ascii_digit) {
                nb.push(c);
                b.next();
            }
            let (na, nb) = (na.trim_start_matches('0'), nb.trim_start_matches('0'));
            let ord = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
            if ord != Ordering::Equal {
                return ord;
            }
            if a.peek().is_none() && b.peek().is_none() {
                return Ordering::Equal;
            }
        }
    }
    let (ea, ua, ra) = split(a.trim());
    let (eb, ub, rb) = split(b.trim());
    ea.cmp(&eb).then_with(|| part(ua, ub)).then_with(|| part(ra, rb))
}

/// Whether `version` satisfies `constraint` (`>= 3.0, < 4`). A clause's version without
/// a revision matches any revision of it for `=` and `!=`.
pub fn satisfies(version: &str, constraint: &str) -> bool {
    constraint.split(',').map(str::trim).filter(|c| !c.is_empty()).all(|clause| {
        let ops = ["==", ">=", "<=", "!=", "=", ">", "<"];
        let Some(op) = ops.iter().find(|op| clause.starts_with(**op)) else {
            return false;
        };
        let wanted = clause[op.len()..].trim();
        let ord = compare_versions(version, wanted);
        // `= 5.2.15` accepts `5.2.15-2`: a clause without a revision ignores the revision.
        let eq = ord == Ordering::Equal
            || (!wanted.contains('-')
                && version.rsplit_once('-').is_some_and(|(up, _)| compare_versions(up, wanted) == Ordering::Equal));
        match *op {
            "=" | "==" => eq,
            "!=" => !eq,
            ">=" => eq || ord == Ordering::Greater,
            ">" => !eq && ord == Ordering::Greater,
            "<=" => eq || ord == Ordering::Less,
            "<" => !eq && ord == Ordering::Less,
            _ => false,
        }
    })
}

fn result(name: String, passed: bool, observed: impl Into<Option<String>>) -> CheckResult {
    CheckResult { name, passed, observed: observed.into(), output: None }
}

/// Judges `report` (from the test Job) and `config` (from the build) against `contract`:
/// one result per guarantee, in contract order.
pub fn evaluate(contract: &Contract, report: &TestReport, config: Option<&ImageConfig>) -> Vec<CheckResult> {
    let mut out = Vec::new();
    for p in &contract.packages {
        let name = format!("package:{}", p.name);
        out.push(match report.packages.get(&p.name) {
            None => result(name, false, "not reported by the test run".to_string()),
            Some(None) if report.package_manager.is_none() => {
                result(name, false, "no package database (dpkg, rpm or apk) in the image".to_string())
            }
            Some(None) => result(name, false, "not installed".to_string()),
            Some(Some(v)) => match &p.version {
                Some(c) if !satisfies(v, c) => result(name, false, format!("{v} does not satisfy {c}")),
                _ => result(name, true, v.clone()),
            },
        });
    }
    for f in &contract.files {
        let name = format!("file:{}", f.path);
        out.push(match report.files.get(&f.path) {
            None => result(name, false, "not reported by the test run".to_string()),
            Some(None) => result(name, false, "missing".to_string()),
            Some(Some(kind)) => {
                let ok = match f.kind {
                    FileKind::Any => true,
                    FileKind::File => kind == "file" || kind == "executable",
                    FileKind::Executable => kind == "executable",
                    FileKind::Directory => kind == "directory",
                };
                let observed = if ok { kind.clone() } else { format!("is {kind}, expected {:?}", f.kind) };
                result(name, ok, observed)
            }
        });
    }
    if let Some(user) = &contract.user {
        let seen = [report.user.as_deref(), report.uid.as_deref()];
        let ok = seen.contains(&Some(user.as_str()));
        let observed = match seen {
            [Some(u), Some(id)] => format!("{u} (uid {id})"),
            [u, id] => u.or(id).unwrap_or("not reported by the test run").to_string(),
        };
        out.push(result("user".into(), ok, observed));
    }
    if let Some(entrypoint) = &contract.entrypoint {
        out.push(match config {
            None => result("entrypoint".into(), false, "the builder did not report the image config".to_string()),
            Some(c) => {
                let seen = c.entrypoint.clone().unwrap_or_default();
                result("entrypoint".into(), &seen == entrypoint, format!("{seen:?}"))
            }
        });
    }
    for p in &contract.ports {
        let proto = match p.protocol {
            crate::api::Protocol::Tcp => "tcp",
            crate::api::Protocol::Udp => "udp",
        };
        let key = format!("{}/{proto}", p.port);
        let name = format!("port:{key}");
        out.push(match config {
            None => result(name, false, "the builder did not report the image config".to_string()),
            Some(c)
                if c.ports
                    .iter()
                    .any(|x| x.eq_ignore_ascii_case(&key) || (proto == "tcp" && x == &p.port.to_string())) =>
            {
                result(name, true, "exposed".to_string())
            }
            Some(_) => result(name, false, "not exposed".to_string()),
        });
    }
    for e in &contract.env {
        let name = format!("env:{}", e.name);
        out.push(match report.env.get(&e.name) {
            None => result(name, false, "not reported by the test run".to_string()),
            Some(None) => result(name, false, "not set".to_string()),
            Some(Some(v)) => match &e.value {
                Some(want) if want != v => result(name, false, format!("{v:?}, expected {want:?}")),
                _ => result(name, true, v.clone()),
            },
        });
    }
    for c in &contract.checks {
        let name = format!("check:{}", c.name);
        out.push(match report.checks.iter().find(|r| r.name == c.name) {
            None => result(name, false, "not run".to_string()),
            Some(run) => CheckResult {
                name,
                passed: run.exit == 0,
                observed: Some(format!("exit {}", run.exit)),
                output: run.output.clone().filter(|o| !o.is_empty()),
            },
        });
    }
    out
}

/// Names of the results that failed.
pub fn failures(results: &[CheckResult]) -> Vec<&str> {
    results.iter().filter(|r| !r.passed).map(|r| r.name.as_str()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{Check, EnvGuarantee, FileGuarantee, PackageGuarantee, PortGuarantee, Protocol};
    use crate::results::CheckRun;
    use std::cmp::Ordering::*;

    #[test]
    fn versions_order_like_dpkg() {
        let cases = [
            ("1.0", "1.0", Equal),
            ("1.0", "1.1", Less),
            ("1.10", "1.9", Greater),
            ("1.0~rc1", "1.0", Less),
            ("1.0", "1.0+b1", Less),
            ("1:0.9", "2.0", Greater),
            ("5.2.15-2", "5.2.15-10", Less),
            ("5.2.15-2", "5.2.15", Greater),
            ("2.36-9+deb12u4", "2.36-9+deb12u10", Less),
            ("1.0a", "1.0", Greater),
            ("1.001", "1.1", Equal),
            ("3.0.15-1~deb12u1", "3.0.15-1", Less),
        ];
        for (a, b, want) in cases {
            assert_eq!(compare_versions(a, b), want, "{a} vs {b}");
            assert_eq!(compare_versions(b, a), want.reverse(), "{b} vs {a}");
        }
    }

    #[test]
    fn constraints() {
        let cases = [
            ("5.2.15-2", ">= 5.0", true),
            ("5.2.15-2", ">= 5.0, < 6", true),
            ("5.2.15-2", "< 5", false),
            ("5.2.15-2", "= 5.2.15", true),
            ("5.2.15-2", "= 5.2.15-3", false),
            ("5.2.15-2", "!= 5.2.15", false),
            ("5.2.15-2", "> 5.2.15", false),
            ("5.2.16", "> 5.2.15", true),
            ("1.0", "<= 1.0", true),
            ("1.0", "== 1.0", true),
            ("1.0", "~ 1.0", false),
        ];
        for (v, c, want) in cases {
            assert_eq!(satisfies(v, c), want, "{v} {c}");
        }
    }

    fn contract() -> Contract {
        Contract {
            packages: vec![
                PackageGuarantee { name: "bash".into(), version: Some(">= 5".into()) },
                PackageGuarantee { name: "curl".into(), version: None },
            ],
            files: vec![
                FileGuarantee { path: "/etc/os-release".into(), kind: FileKind::File },
                FileGuarantee { path: "/bin/sh".into(), kind: FileKind::Executable },
            ],
            user: Some("1001".into()),
            entrypoint: Some(vec!["/bin/sh".into()]),
            ports: vec![PortGuarantee { port: 8080, protocol: Protocol::Tcp }],
            env: vec![EnvGuarantee { name: "LANG".into(), value: Some("C.UTF-8".into()) }],
            checks: vec![Check { name: "shell".into(), run: "true".into(), description: None }],
        }
    }

    fn good_report() -> TestReport {
        TestReport {
            package_manager: Some("dpkg".into()),
            packages: [("bash".to_string(), Some("5.2.15-2".to_string())), ("curl".into(), Some("7.88.1-10".into()))]
                .into(),
            files: [
                ("/etc/os-release".to_string(), Some("file".to_string())),
                ("/bin/sh".into(), Some("executable".into())),
            ]
            .into(),
            user: Some("app".into()),
            uid: Some("1001".into()),
            env: [("LANG".to_string(), Some("C.UTF-8".to_string()))].into(),
            checks: vec![CheckRun { name: "shell".into(), exit: 0, output: Some("ok".into()) }],
        }
    }

    fn config() -> ImageConfig {
        ImageConfig {
            entrypoint: Some(vec!["/bin/sh".into()]),
            ports: vec!["8080/tcp".into()],
            user: Some("1001".into()),
        }
    }

    #[test]
    fn a_kept_contract_passes_every_item() {
        let r = evaluate(&contract(), &good_report(), Some(&config()));
        assert_eq!(r.len(), 9);
        assert!(failures(&r).is_empty(), "{r:?}");
        assert_eq!(r.last().unwrap().output.as_deref(), Some("ok"));
    }

    #[test]
    fn every_broken_item_is_named() {
        let mut rep = good_report();
        rep.packages.insert("bash".into(), Some("4.4-1".into()));
        rep.packages.insert("curl".into(), None);
        rep.files.insert("/bin/sh".into(), Some("file".into()));
        rep.files.remove("/etc/os-release");
        rep.uid = Some("0".into());
        rep.user = Some("root".into());
        rep.env.insert("LANG".into(), Some("C".into()));
        rep.checks[0].exit = 3;
        let cfg = ImageConfig { entrypoint: None, ports: vec![], user: None };
        let r = evaluate(&contract(), &rep, Some(&cfg));
        assert_eq!(
            failures(&r),
            vec![
                "package:bash",
                "package:curl",
                "file:/etc/os-release",
                "file:/bin/sh",
                "user",
                "entrypoint",
                "port:8080/tcp",
                "env:LANG",
                "check:shell"
            ]
        );
        assert_eq!(r[0].observed.as_deref(), Some("4.4-1 does not satisfy >= 5"));
        // Without a reported config, image-config guarantees fail with a reason.
        let r = evaluate(&contract(), &good_report(), None);
        assert_eq!(failures(&r), vec!["entrypoint", "port:8080/tcp"]);
        // A check the report does not mention was not run.
        rep.checks.clear();
        let r = evaluate(&contract(), &rep, Some(&config()));
        assert_eq!(r.last().unwrap().observed.as_deref(), Some("not run"));
    }
}
