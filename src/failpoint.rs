//! Named points in a release's life where the controller can be made to crash or hang, so
//! that tests can prove it recovers from a failure at each: after every write to the API
//! server and to a registry.
//!
//! Set `COREFORGE_FAILPOINTS` to a comma-separated list of `point=action`, where action
//! is `exit` (the process ends at once with exit code [`EXIT_CODE`], as if killed: nothing
//! is flushed, no Lease released) or `hang` (the reconcile at that point never finishes,
//! as if a request hung without timeout). Unset, a point costs one lookup in an empty
//! map. The points are listed in [`POINTS`] and in the README ("Failure points").

use std::collections::HashMap;
use std::sync::LazyLock;

/// The environment variable that arms failure points.
pub const ENV: &str = "COREFORGE_FAILPOINTS";

/// The exit code of an `exit` failure point.
pub const EXIT_CODE: i32 = 86;

/// Every failure point, in the order a release meets them. `status-written:<Phase>` is
/// hit after a release's status naming that phase (newly) was written.
pub const POINTS: &[&str] = &[
    "snapshot-created",
    "build-job-created",
    "status-written:Building",
    "test-job-created",
    "status-written:Testing",
    "status-written:Verified",
    "signed",
    "attested",
    "published",
    "status-written:Published",
    "event-recorded",
    "channel-moved",
    "corebuild-status-written",
    "status-written:Deprecated",
    "status-written:Retired",
    "tag-deleted",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Exit,
    Hang,
}

static ARMED: LazyLock<HashMap<String, Action>> = LazyLock::new(|| parse(&std::env::var(ENV).unwrap_or_default()));

fn parse(text: &str) -> HashMap<String, Action> {
    text.split(',')
        .filter_map(|item| item.trim().split_once('='))
        .filter_map(|(point, action)| {
            let action = match action.trim() {
                "exit" => Action::Exit,
                "hang" => Action::Hang,
                other => {
                    tracing::warn!(point, action = other, "unknown failure point action (exit or hang); ignored");
                    return None;
                }
            };
            Some((point.trim().to_string(), action))
        })
        .collect()
}

/// Hits failure point `point`: nothing unless it is armed.
pub async fn hit(point: &str) {
    match ARMED.get(point) {
        None => {}
        Some(Action::Exit) => {
            eprintln!("failure point {point}: exiting");
            std::process::exit(EXIT_CODE);
        }
        Some(Action::Hang) => {
            tracing::warn!(point, "failure point: hanging");
            std::future::pending::<()>().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn points_are_armed_by_name() {
        let armed = parse("published=exit, status-written:Building = hang,bogus=explode,noequals");
        assert_eq!(armed.get("published"), Some(&Action::Exit));
        assert_eq!(armed.get("status-written:Building"), Some(&Action::Hang));
        assert_eq!(armed.len(), 2);
        assert!(parse("").is_empty());
    }
}
