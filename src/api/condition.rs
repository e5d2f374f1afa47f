//! Conditions in the `metav1.Condition` shape, and the helpers that keep them honest:
//! `lastTransitionTime` moves only when the status flips, every condition carries the
//! generation it was computed for.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// kstatus: the object reached the state its spec asks for.
pub const READY: &str = "Ready";
/// kstatus: the controller is working towards the spec.
pub const RECONCILING: &str = "Reconciling";
/// kstatus: the controller cannot make progress without a change from a person.
pub const STALLED: &str = "Stalled";
/// The release's image was built and pushed to staging.
pub const BUILT: &str = "Built";
/// The release's image kept its service contract in the test Job.
pub const TESTED: &str = "Tested";
/// The release is in the catalog under its version tag.
pub const PUBLISHED: &str = "Published";
/// The release keeps the contract of the releases before it in its major version.
pub const CONTRACT_KEPT: &str = "ContractKept";
/// Every Security, Bugfix and Workaround advisory of the release is proven by the contract
/// checks it names (`resolvedBy`).
pub const ADVISORIES_PROVEN: &str = "AdvisoriesProven";
/// A CoreBuild's pinned base is the digest its tracked upstream tag resolves to.
pub const BASE_CURRENT: &str = "BaseCurrent";

/// `True`, `False` or `Unknown`, as the API spells them.
pub fn status_str(value: Option<bool>) -> &'static str {
    match value {
        Some(true) => "True",
        Some(false) => "False",
        None => "Unknown",
    }
}

/// Sets condition `type_` in `conditions`, keeping `lastTransitionTime` of an existing
/// condition whose status did not change.
pub fn set_condition(
    conditions: &mut Vec<Condition>,
    type_: &str,
    value: Option<bool>,
    reason: &str,
    message: impl Into<String>,
    generation: Option<i64>,
    now: &Time,
) {
    let status = status_str(value).to_string();
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = now.clone();
            }
            existing.status = status;
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status,
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// The condition `type_`, if present.
pub fn find_condition<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

#[cfg(test)]
mod tests {
    use super::*;
    use jiff::Timestamp;

    fn at(secs: i64) -> Time {
        Time(Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn transition_time_moves_only_when_status_flips() {
        let mut c = Vec::new();
        set_condition(&mut c, READY, Some(false), "Building", "a", Some(1), &at(10));
        set_condition(&mut c, READY, Some(false), "Testing", "b", Some(2), &at(20));
        assert_eq!(c[0].last_transition_time, at(10));
        assert_eq!(c[0].reason, "Testing");
        assert_eq!(c[0].observed_generation, Some(2));
        set_condition(&mut c, READY, Some(true), "Verified", "c", Some(2), &at(30));
        assert_eq!(c[0].last_transition_time, at(30));
        assert_eq!(c[0].status, "True");
        assert_eq!(find_condition(&c, READY).map(|c| c.reason.as_str()), Some("Verified"));
    }
}
