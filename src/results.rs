//! What build and test Jobs report back: JSON in their container's termination message
//! (at most 4 KiB, the kubelet's limit). Parsing never panics; every malformed result
//! becomes an error a person can act on.

use std::collections::BTreeMap;

use serde::Deserialize;
use thiserror::Error;

/// Kubernetes truncates termination messages to this many bytes.
pub const TERMINATION_MESSAGE_LIMIT: usize = 4096;

/// Why a reported result could not be used.
#[derive(Debug, Error, PartialEq)]
pub enum ResultError {
    /// Nothing was reported.
    #[error("the container wrote no termination message (expected JSON in /dev/termination-log)")]
    Empty,
    /// Not the JSON we expect.
    #[error("the termination message is not valid result JSON ({0}); it starts with: {1}")]
    Malformed(String, String),
    /// The digest is not `sha256:<64 hex>`.
    #[error("the reported digest {0:?} is not of the form sha256:<64 hex characters>")]
    BadDigest(String),
    /// Hit the kubelet's size limit, so it was cut.
    #[error(
        "the termination message reached the 4 KiB limit and was cut; report less (shorter check output, fewer items)"
    )]
    Truncated,
}

/// What a build reports: `{"digest":"sha256:…"}`. (The image config is read from the
/// registry, not taken from the builder.)
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BuildResult {
    /// Digest of the pushed manifest.
    pub digest: String,
}

fn preview(text: &str) -> String {
    text.chars().take(80).collect()
}

fn parse_json<T: for<'de> Deserialize<'de>>(text: &str) -> Result<T, ResultError> {
    let text = text.trim();
    if text.is_empty() {
        return Err(ResultError::Empty);
    }
    serde_json::from_str(text).map_err(|e| {
        if text.len() >= TERMINATION_MESSAGE_LIMIT {
            ResultError::Truncated
        } else {
            ResultError::Malformed(e.to_string(), preview(text))
        }
    })
}

/// Whether `digest` is `sha256:<64 lowercase hex>`.
pub fn is_digest(digest: &str) -> bool {
    digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
}

/// Parses a build Job's termination message.
pub fn parse_build(text: &str) -> Result<BuildResult, ResultError> {
    let result: BuildResult = parse_json(text)?;
    if !is_digest(&result.digest) {
        return Err(ResultError::BadDigest(result.digest));
    }
    Ok(result)
}

/// What a test run observed inside the image.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TestReport {
    /// Package database found in the image (`dpkg`, `rpm`, `apk`), if any.
    #[serde(default)]
    pub package_manager: Option<String>,
    /// Installed version of each contract package (`null`: not installed).
    #[serde(default)]
    pub packages: BTreeMap<String, Option<String>>,
    /// Kind of each contract path (`file`, `executable`, `directory`, `other`; `null`: missing).
    #[serde(default)]
    pub files: BTreeMap<String, Option<String>>,
    /// `id -un` inside the image.
    #[serde(default)]
    pub user: Option<String>,
    /// `id -u` inside the image.
    #[serde(default)]
    pub uid: Option<String>,
    /// Value of each contract variable (`null`: unset).
    #[serde(default)]
    pub env: BTreeMap<String, Option<String>>,
    /// Named checks, in contract order.
    #[serde(default)]
    pub checks: Vec<CheckRun>,
}

/// One named check run.
#[derive(Debug, Clone, PartialEq, Default, Deserialize)]
pub struct CheckRun {
    /// Check name.
    pub name: String,
    /// Exit code.
    pub exit: i32,
    /// Output (stdout and stderr), truncated.
    #[serde(default)]
    pub output: Option<String>,
}

/// Parses a test Job's termination message.
pub fn parse_test(text: &str) -> Result<TestReport, ResultError> {
    parse_json(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    const D: &str = "sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn build_result() {
        let r = parse_build(&format!(" {{\"digest\":\"{D}\"}}\n")).unwrap();
        assert_eq!(r, BuildResult { digest: D.into() });
        // Extra fields a builder adds are ignored.
        let r = parse_build(&format!(r#"{{"digest":"{D}","config":{{"User":"1"}}}}"#)).unwrap();
        assert_eq!(r.digest, D);
    }

    #[test]
    fn bad_build_results_are_errors_not_panics() {
        assert_eq!(parse_build(""), Err(ResultError::Empty));
        assert_eq!(parse_build("  \n"), Err(ResultError::Empty));
        assert!(matches!(parse_build("digest: sha256:x"), Err(ResultError::Malformed(..))));
        assert!(matches!(parse_build(r#"{"digest":"sha256:abc"}"#), Err(ResultError::BadDigest(_))));
        assert!(matches!(parse_build(r#"{"digest":"SHA256:0123"}"#), Err(ResultError::BadDigest(_))));
        assert!(matches!(parse_build(r#"{"dgst":"x"}"#), Err(ResultError::Malformed(..))));
        let long = format!(r#"{{"digest":"{D}","pad":"{}"#, "x".repeat(5000));
        assert_eq!(parse_build(&long[..4096]), Err(ResultError::Truncated));
    }

    #[test]
    fn test_report_parses() {
        let r = parse_test(
            r#"{"packages":{"bash":"5.2.15-2","gone":null},"files":{"/etc/os-release":"file"},"user":"root","uid":"0","env":{"LANG":"C.UTF-8"},"checks":[{"name":"shell","exit":0,"output":"ok"}]}"#,
        )
        .unwrap();
        assert_eq!(r.packages["gone"], None);
        assert_eq!(r.checks[0].exit, 0);
        assert!(matches!(parse_test("[1,2]"), Err(ResultError::Malformed(..))));
    }
}
