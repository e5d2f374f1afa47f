//! Deterministic names and labels of the objects the controller creates for a release.
//! The same release and attempt always give the same names, so a restarted controller
//! finds what it created before instead of creating it twice.

use std::collections::BTreeMap;

use kube::ResourceExt;
use sha2::{Digest, Sha256};

use crate::api::{ImageRelease, LABEL_ATTEMPT, LABEL_CORE_BUILD, LABEL_RELEASE, LABEL_STEP};

/// A step of a release attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The build Job.
    Build,
    /// The test Job.
    Test,
}

impl Step {
    /// Label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Step::Build => "build",
            Step::Test => "test",
        }
    }
}

/// Labels of every object the controller creates for `release`.
pub fn labels(release: &ImageRelease, step: Option<Step>, attempt: i32) -> BTreeMap<String, String> {
    let mut l = BTreeMap::from([
        ("app.kubernetes.io/managed-by".to_string(), "coreforge".to_string()),
        (LABEL_RELEASE.to_string(), release.name_any()),
        (LABEL_CORE_BUILD.to_string(), release.spec.core_build.clone()),
        (LABEL_ATTEMPT.to_string(), attempt.to_string()),
    ]);
    if let Some(step) = step {
        l.insert(LABEL_STEP.to_string(), step.as_str().to_string());
    }
    l
}

/// Longest name whose value can also be a label value (Jobs put their name in a label).
const MAX: usize = 63;

/// `<release>-<suffix>`, shortened with a hash of the release name when too long.
pub fn child(release: &str, suffix: &str) -> String {
    let full = format!("{release}-{suffix}");
    if full.len() <= MAX {
        return full;
    }
    let hash = &hex::encode(Sha256::digest(release.as_bytes()))[..8];
    let keep = MAX.saturating_sub(suffix.len() + hash.len() + 2);
    let prefix = release[..keep.min(release.len())].trim_end_matches(['-', '.']);
    format!("{prefix}-{hash}-{suffix}")
}

/// The snapshot ConfigMap of an attempt.
pub fn snapshot(release: &str, attempt: i32) -> String {
    child(release, &format!("a{attempt}-snapshot"))
}

/// The build Job of an attempt.
pub fn build_job(release: &str, attempt: i32) -> String {
    child(release, &format!("a{attempt}-build"))
}

/// The test Job of an attempt.
pub fn test_job(release: &str, attempt: i32) -> String {
    child(release, &format!("a{attempt}-test"))
}

/// `sha256:<hex>` of some bytes.
pub fn sha256(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_deterministic_and_bounded() {
        assert_eq!(build_job("debian-12-7-0", 1), "debian-12-7-0-a1-build");
        let long = "r".repeat(200);
        let a = test_job(&long, 12);
        assert_eq!(a, test_job(&long, 12));
        assert!(a.len() <= 63, "{a}");
        assert!(a.ends_with("-a12-test"));
        assert_ne!(test_job(&format!("{long}x"), 12), a);
        // A cut never leaves a dangling separator before the hash.
        let dashed = format!("{}-{}", "a".repeat(46), "b".repeat(20));
        assert!(!child(&dashed, "a1-build").contains("--"));
    }
}
