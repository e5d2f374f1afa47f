//! The coreforge API: `CoreBuild` (a product) and `ImageRelease` (one version of it),
//! group `coreforge.dev`, version `v1alpha1`.
//!
//! Everything the API server can refuse is declared here, next to the field it guards:
//! formats as schema patterns, ranges, enums, and CEL rules (`x-kubernetes-validations`)
//! for what a pattern cannot say (immutability, forward-only moves, uniqueness).

mod condition;
mod corebuild;
mod release;

pub use condition::*;
pub use corebuild::*;
pub use release::*;

/// The API group of every coreforge kind.
pub const GROUP: &str = "coreforge.dev";
/// The single served and stored version.
pub const VERSION: &str = "v1alpha1";
/// Field manager for everything the controller writes with server-side apply.
pub const FIELD_MANAGER: &str = "coreforge";
/// Field manager of the one spec field the controller writes: `spec.base` of a CoreBuild
/// whose tracked base moved (`baseTracking.refresh: Automatic`). GitOps tools can leave
/// the fields of this manager alone (Argo CD's `managedFieldsManagers`).
pub const FIELD_MANAGER_BASE_REFRESH: &str = "coreforge-base-refresh";

/// Label put on every object the controller creates for a release: the release's name.
pub const LABEL_RELEASE: &str = "coreforge.dev/release";
/// Label put on every object the controller creates: the CoreBuild's name.
pub const LABEL_CORE_BUILD: &str = "coreforge.dev/corebuild";
/// Label saying which step a Job runs: `build` or `test`.
pub const LABEL_STEP: &str = "coreforge.dev/step";
/// Label with the attempt number of the Job.
pub const LABEL_ATTEMPT: &str = "coreforge.dev/attempt";
/// Label on the ImageReleases the controller creates because a tracked base moved
/// (`baseTracking.refresh: Automatic`), with the value `base`.
pub const LABEL_REFRESH: &str = "coreforge.dev/refresh";
/// Annotation on a refresh release: the base digest it replaces.
pub const ANNOTATION_REFRESH_FROM: &str = "coreforge.dev/refresh-from";
/// Annotation on an ImageRelease: set it to a new value to retry a Failed release.
pub const ANNOTATION_RETRY: &str = "coreforge.dev/retry";

/// Parses a duration as the schema accepts them (`720h`, `1h30m`, `90s`, `250ms`).
pub fn parse_duration(text: &str) -> Option<std::time::Duration> {
    let mut total = 0f64;
    let mut rest = text.trim();
    if rest.is_empty() {
        return None;
    }
    while !rest.is_empty() {
        let digits = rest.find(|c: char| !c.is_ascii_digit() && c != '.').unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let number: f64 = number.parse().ok()?;
        let (factor, unit_len) = if tail.starts_with("ms") {
            (0.001, 2)
        } else if tail.starts_with('s') {
            (1.0, 1)
        } else if tail.starts_with('m') {
            (60.0, 1)
        } else if tail.starts_with('h') {
            (3600.0, 1)
        } else {
            return None;
        };
        total += number * factor;
        rest = &tail[unit_len..];
    }
    std::time::Duration::try_from_secs_f64(total).ok()
}

#[cfg(test)]
mod tests {
    use super::parse_duration;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("720h"), Some(Duration::from_secs(720 * 3600)));
        assert_eq!(parse_duration("1h30m"), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        for bad in ["", "10", "10d", "h", "1h x"] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }
}

/// The CEL rule every duration field carries: beyond a century a duration means nothing
/// for a release's support, and past ~292 years it no longer fits the API server's type.
pub(crate) const MAX_DURATION_RULE: &str = "duration(self) <= duration('876000h')";
/// The message of [`MAX_DURATION_RULE`].
pub(crate) const MAX_DURATION_MESSAGE: &str = "must be at most 876000h (100 years)";

/// Schema patterns shared by both kinds, with the human words for each.
pub(crate) mod pattern {
    /// Semantic version 2.0.0 (no leading `v`), with major, minor and patch numbers of at
    /// most 18 digits (they are compared as 64-bit numbers).
    pub const SEMVER: &str = r"^(0|[1-9][0-9]{0,17})\.(0|[1-9][0-9]{0,17})\.(0|[1-9][0-9]{0,17})(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?(\+[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$";
    /// An image reference pinned by digest.
    pub const PINNED_IMAGE: &str = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)*(:[\w][\w.-]{0,127})?@sha256:[a-f0-9]{64}$";
    /// An image reference with a tag and no digest (`registry[:port]/path:tag`).
    pub const TAGGED_IMAGE: &str =
        r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+:[\w][\w.-]{0,127}$";
    /// An image repository without tag or digest (`registry[:port]/path`).
    pub const REPOSITORY: &str = r"^[a-z0-9]+([._-][a-z0-9]+)*(:[0-9]+)?(/[a-z0-9]+([._-][a-z0-9]+)*)+$";
    /// A DNS-1123 subdomain (object names).
    pub const DNS1123_SUBDOMAIN: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";
    /// A DNS-1123 label (check names, which become parts of other names).
    pub const DNS1123_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
    /// A Go-style duration as Kubernetes uses them (`720h`, `90m`, `1h30m`, `45s`).
    pub const DURATION: &str = r"^([0-9]+(\.[0-9]+)?(ms|s|m|h))+$";
    /// A channel: `latest`, a major (`9`) or a major.minor (`9.4`).
    pub const CHANNEL: &str = r"^(latest|(0|[1-9][0-9]{0,17})(\.(0|[1-9][0-9]{0,17}))?)$";
    /// An advisory or known issue id (`RHSA-2024:1234`, `CFKI-2026-003`).
    pub const ISSUE_ID: &str = r"^[A-Za-z0-9][A-Za-z0-9:._-]*$";
    /// A CVE id.
    pub const CVE: &str = r"^CVE-[0-9]{4}-[0-9]{4,}$";
    /// An absolute path.
    pub const ABSOLUTE_PATH: &str = r"^/.*$";
    /// An environment variable name.
    pub const ENV_NAME: &str = r"^[A-Za-z_][A-Za-z0-9_]*$";
}
