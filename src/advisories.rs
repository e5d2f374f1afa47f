//! Advisories proven by contract checks (`resolvedBy`), and known issues closed by later
//! advisories (`closes`), as pure functions of a release's spec and its check results.
//!
//! A Security, Bugfix or Workaround advisory that names proving checks is a claim the
//! release's own test must back: each named check is a check of the contract, run inside
//! the release's image, and it passed. Until then the release is not published.

use crate::api::{Advisory, AdvisoryType, CheckResult, Contract};

/// Whether an advisory of this type holds publishing back until its proving checks pass.
pub fn must_be_proven(t: AdvisoryType) -> bool {
    t != AdvisoryType::Enhancement
}

/// Where one proving check of an advisory stands.
#[derive(Debug, Clone, PartialEq)]
pub enum ProofState {
    /// It passed in the release's image.
    Passed,
    /// It failed; what it observed or printed.
    Failed(Option<String>),
    /// It has not run (yet).
    NotRun,
}

impl ProofState {
    /// How release notes and the catalog say it.
    pub fn as_str(&self) -> &'static str {
        match self {
            ProofState::Passed => "passed",
            ProofState::Failed(_) => "failed",
            ProofState::NotRun => "not run",
        }
    }
}

/// One proving check of one advisory.
#[derive(Debug, Clone, PartialEq)]
pub struct Proof<'a> {
    /// The advisory.
    pub advisory: &'a Advisory,
    /// The check's name (`contract.checks[].name`).
    pub check: &'a str,
    /// Its result in the release's image.
    pub state: ProofState,
}

impl Proof<'_> {
    /// Whether this proof holds publishing back.
    pub fn blocks(&self) -> bool {
        must_be_proven(self.advisory.type_) && self.state != ProofState::Passed
    }

    /// The advisory and the check, for a person: `advisory CFBA-1 (Bugfix) is not proven:
    /// its check tls failed (no trust store)`.
    pub fn describe(&self) -> String {
        let a = self.advisory;
        let detail = match &self.state {
            ProofState::Failed(Some(why)) => format!(" ({why})"),
            _ => String::new(),
        };
        format!(
            "advisory {} ({:?}) is not proven: its check {} {}{detail}",
            a.id,
            a.type_,
            self.check,
            match self.state {
                ProofState::NotRun => "did not run",
                _ => self.state.as_str(),
            }
        )
    }
}

/// The result of check `name` in `results` (`check:<name>`).
pub fn check_result<'r>(results: &'r [CheckResult], name: &str) -> Option<&'r CheckResult> {
    results.iter().find(|c| c.name.strip_prefix("check:") == Some(name))
}

/// Every proving check of every advisory, with its result in `results`.
pub fn proofs<'a>(advisories: &'a [Advisory], results: &[CheckResult]) -> Vec<Proof<'a>> {
    advisories
        .iter()
        .flat_map(|a| a.resolved_by.iter().map(move |check| (a, check.as_str())))
        .map(|(advisory, check)| Proof {
            advisory,
            check,
            state: match check_result(results, check) {
                Some(r) if r.passed => ProofState::Passed,
                Some(r) => {
                    ProofState::Failed(r.observed.clone().or_else(|| r.output.clone()).filter(|s| !s.is_empty()))
                }
                None => ProofState::NotRun,
            },
        })
        .collect()
}

/// Why the advisories cannot be proven by `contract`: the `resolvedBy` names that are
/// not checks of it, with the advisories naming them; `None` when every name is a check.
pub fn unknown_checks(advisories: &[Advisory], contract: &Contract, core_build: &str) -> Option<String> {
    let known: Vec<&str> = contract.checks.iter().map(|c| c.name.as_str()).collect();
    let unknown: Vec<String> = advisories
        .iter()
        .flat_map(|a| a.resolved_by.iter().map(move |c| (a, c)))
        .filter(|(_, c)| !known.contains(&c.as_str()))
        .map(|(a, c)| format!("advisory {} names check {c}", a.id))
        .collect();
    if unknown.is_empty() {
        return None;
    }
    let checks = if known.is_empty() { "it has none".to_string() } else { format!("its checks: {}", known.join(", ")) };
    Some(format!(
        "{}, which {} not a check of CoreBuild {core_build}'s contract ({checks}); name a check of the contract in resolvedBy, or add the check to the contract and retry",
        unknown.join("; "),
        if unknown.len() == 1 { "is" } else { "are" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::Check;

    fn advisory(id: &str, t: AdvisoryType, checks: &[&str]) -> Advisory {
        Advisory {
            id: id.into(),
            type_: t,
            summary: "s".into(),
            resolved_by: checks.iter().map(|c| c.to_string()).collect(),
            ..Default::default()
        }
    }

    fn result(name: &str, passed: bool, observed: Option<&str>) -> CheckResult {
        CheckResult { name: name.into(), passed, observed: observed.map(String::from), output: None }
    }

    #[test]
    fn a_proof_blocks_until_its_check_passed_unless_the_advisory_is_an_enhancement() {
        let advisories = vec![
            advisory("CFBA-1", AdvisoryType::Bugfix, &["tls"]),
            advisory("CFSA-2", AdvisoryType::Security, &["shell"]),
            advisory("CFEA-3", AdvisoryType::Enhancement, &["tls"]),
            advisory("CFWA-4", AdvisoryType::Workaround, &["later"]),
        ];
        let results = vec![
            result("check:tls", false, Some("exit 1: no trust store")),
            result("check:shell", true, None),
            result("package:bash", true, Some("5.2")),
        ];
        let proofs = proofs(&advisories, &results);
        let states: Vec<(&str, &str, bool)> =
            proofs.iter().map(|p| (p.advisory.id.as_str(), p.state.as_str(), p.blocks())).collect();
        assert_eq!(
            states,
            [
                ("CFBA-1", "failed", true),
                ("CFSA-2", "passed", false),
                ("CFEA-3", "failed", false),
                ("CFWA-4", "not run", true)
            ]
        );
        assert_eq!(
            proofs[0].describe(),
            "advisory CFBA-1 (Bugfix) is not proven: its check tls failed (exit 1: no trust store)"
        );
        assert_eq!(proofs[3].describe(), "advisory CFWA-4 (Workaround) is not proven: its check later did not run");
    }

    #[test]
    fn names_that_are_not_checks_of_the_contract_are_named_with_their_advisories() {
        let contract = Contract {
            checks: vec![Check { name: "tls".into(), run: "true".into(), description: None }],
            ..Default::default()
        };
        let ok = vec![advisory("CFBA-1", AdvisoryType::Bugfix, &["tls"])];
        assert_eq!(unknown_checks(&ok, &contract, "debian"), None);
        let bad = vec![advisory("CFBA-1", AdvisoryType::Bugfix, &["tls", "nope"])];
        assert_eq!(
            unknown_checks(&bad, &contract, "debian").as_deref(),
            Some(
                "advisory CFBA-1 names check nope, which is not a check of CoreBuild debian's contract (its checks: tls); name a check of the contract in resolvedBy, or add the check to the contract and retry"
            )
        );
        let none = Contract::default();
        assert!(unknown_checks(&bad, &none, "debian").unwrap().contains("(it has none)"));
    }
}
