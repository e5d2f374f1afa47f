//! Prometheus metrics. Every label set is bounded: controllers, phases, steps, outcomes,
//! error kinds, and CoreBuild names (a handful per cluster). Release identity appears only
//! where it is worth it and bounded by the number of supported or in-flight releases.
//!
//! The README's "Observability" section lists every series with its meaning.

use std::sync::LazyLock;
use std::time::Instant;

use prometheus::{
    Encoder, GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};

/// Buckets for builds and tests: seconds to an hour.
const STEP_BUCKETS: &[f64] = &[5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0];
/// Buckets for creation → Published: seconds to days.
const PUBLISH_BUCKETS: &[f64] = &[30.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0, 259200.0];

/// All coreforge metrics, in their own registry.
pub struct Metrics {
    registry: Registry,
    /// Reconciles by controller.
    pub reconciles: IntCounterVec,
    /// Failed reconciles by controller and error kind.
    pub reconcile_errors: IntCounterVec,
    /// Reconcile duration by controller.
    pub reconcile_duration: HistogramVec,
    /// Releases by namespace, CoreBuild and phase.
    pub releases: IntGaugeVec,
    /// Phase transitions by from/to.
    pub transitions: IntCounterVec,
    /// Build durations by CoreBuild.
    pub build_duration: HistogramVec,
    /// Test durations by CoreBuild.
    pub test_duration: HistogramVec,
    /// Build and test outcomes by CoreBuild, step and outcome.
    pub step_outcomes: IntCounterVec,
    /// Creation → Published by CoreBuild.
    pub time_to_publish: HistogramVec,
    /// Seconds until support ends, per Published release.
    pub support_remaining: GaugeVec,
    /// When an in-flight release entered its phase (unix seconds).
    pub phase_since: GaugeVec,
    /// Registry requests by operation and outcome.
    pub registry_requests: IntCounterVec,
    /// Signings of published digests by outcome.
    pub signatures: IntCounterVec,
    /// Kubernetes API requests by verb and resource.
    pub kube_requests: IntCounterVec,
    /// When a tracked base fell behind its tag (unix seconds), per CoreBuild.
    pub base_behind_since: GaugeVec,
    /// Tracked bases by CoreBuild and state.
    pub base_state: IntGaugeVec,
    /// Refresh releases that failed, per release.
    pub refresh_failed: IntGaugeVec,
    /// Build information.
    pub info: IntGaugeVec,
    /// 1 when this replica leads (or election is off).
    pub leader: IntGauge,
    /// Objects the controller cannot decode (and skips), by kind.
    pub undecodable_objects: IntGaugeVec,
}

fn must<T>(r: prometheus::Result<T>) -> T {
    // Metric definitions are static; a failure is a programming error caught by the tests.
    r.unwrap_or_else(|e| panic!("invalid metric definition: {e}"))
}

impl Metrics {
    fn new() -> Self {
        let registry = Registry::new_custom(Some("coreforge".into()), None).unwrap_or_default();
        let counter = |name: &str, help: &str, labels: &[&str]| {
            let c = must(IntCounterVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(c.clone())));
            c
        };
        let histogram = |name: &str, help: &str, labels: &[&str], buckets: Vec<f64>| {
            let h = must(HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets), labels));
            must(registry.register(Box::new(h.clone())));
            h
        };
        let gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = must(GaugeVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let int_gauge = |name: &str, help: &str, labels: &[&str]| {
            let g = must(IntGaugeVec::new(Opts::new(name, help), labels));
            must(registry.register(Box::new(g.clone())));
            g
        };
        let leader = must(IntGauge::new("leader", "1 when this replica reconciles (it leads, or election is off)"));
        must(registry.register(Box::new(leader.clone())));
        let m = Metrics {
            reconciles: counter("reconcile_total", "Reconciles run, by controller", &["controller"]),
            reconcile_errors: counter(
                "reconcile_errors_total",
                "Reconciles that failed, by controller and error kind",
                &["controller", "error"],
            ),
            reconcile_duration: histogram(
                "reconcile_duration_seconds",
                "Duration of reconciles, by controller",
                &["controller"],
                vec![0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0],
            ),
            releases: int_gauge(
                "releases",
                "Releases by namespace, CoreBuild and phase",
                &["namespace", "corebuild", "phase"],
            ),
            transitions: counter(
                "phase_transitions_total",
                "Release phase transitions, by from and to",
                &["from", "to"],
            ),
            build_duration: histogram(
                "build_duration_seconds",
                "Duration of build Jobs, by CoreBuild",
                &["corebuild"],
                STEP_BUCKETS.to_vec(),
            ),
            test_duration: histogram(
                "test_duration_seconds",
                "Duration of contract test Jobs, by CoreBuild",
                &["corebuild"],
                STEP_BUCKETS.to_vec(),
            ),
            step_outcomes: counter(
                "step_outcomes_total",
                "Finished builds and tests, by CoreBuild, step (build, test) and outcome (succeeded, failed)",
                &["corebuild", "step", "outcome"],
            ),
            time_to_publish: histogram(
                "release_time_to_publish_seconds",
                "Time from a release's creation to Published, by CoreBuild",
                &["corebuild"],
                PUBLISH_BUCKETS.to_vec(),
            ),
            support_remaining: gauge(
                "release_support_remaining_seconds",
                "Seconds until support ends, per Published release; newest=true for the newest of its CoreBuild",
                &["namespace", "corebuild", "release", "version", "newest"],
            ),
            phase_since: gauge(
                "release_phase_since_timestamp_seconds",
                "Unix time an in-flight release (Pending, Building, Testing, Verified) entered its phase",
                &["namespace", "corebuild", "release", "phase"],
            ),
            kube_requests: counter(
                "kube_requests_total",
                "Kubernetes API requests sent, by verb (get, list, watch, create, patch, update, delete) and resource",
                &["verb", "resource"],
            ),
            registry_requests: counter(
                "registry_requests_total",
                "Registry requests, by operation and outcome (ok or an error kind)",
                &["operation", "outcome"],
            ),
            signatures: counter(
                "signatures_total",
                "Signings of a digest being published (signature and attestations pushed), by outcome: signed, or why not (SigningKeyNotFound, SigningKeyInvalid, an error kind of the registry)",
                &["outcome"],
            ),
            undecodable_objects: int_gauge(
                "undecodable_objects",
                "Objects the controller cannot read and skips until they are fixed (each has a Warning event Undecodable), by kind",
                &["kind"],
            ),
            base_behind_since: gauge(
                "base_behind_since_timestamp_seconds",
                "Unix time the pinned base of a CoreBuild fell behind the upstream tag it tracks (spec.baseTracking); no series while it is current",
                &["namespace", "corebuild", "tag"],
            ),
            base_state: int_gauge(
                "base_tracking",
                "1 per CoreBuild that tracks its base tag, by state: Current, Behind, Unknown",
                &["namespace", "corebuild", "state"],
            ),
            refresh_failed: int_gauge(
                "base_refresh_failed",
                "1 per release created because the tracked base moved (baseTracking.refresh: Automatic) that is Failed",
                &["namespace", "corebuild", "release", "version"],
            ),
            info: int_gauge("info", "Build information of the running controller", &["version", "build"]),
            leader,
            registry,
        };
        m.info.with_label_values(&[env!("CARGO_PKG_VERSION"), option_env!("COREFORGE_BUILD").unwrap_or("dev")]).set(1);
        m
    }

    /// The metrics in the Prometheus text format.
    pub fn render(&self) -> String {
        let mut buf = Vec::new();
        let families = self.registry.gather();
        if TextEncoder::new().encode(&families, &mut buf).is_err() {
            return String::new();
        }
        String::from_utf8(buf).unwrap_or_default()
    }
}

/// The process-wide metrics.
pub static METRICS: LazyLock<Metrics> = LazyLock::new(Metrics::new);

/// Counts one registry request.
pub fn registry_request(operation: &str, error_kind: Option<&str>) {
    METRICS.registry_requests.with_label_values(&[operation, error_kind.unwrap_or("ok")]).inc();
}

/// Counts a signing by its outcome (`signed`, or why not).
pub fn signature(outcome: &str) {
    METRICS.signatures.with_label_values(&[outcome]).inc();
}

/// Measures one reconcile: counts it and its duration when dropped, whatever path it took.
pub struct ReconcileTimer {
    controller: &'static str,
    start: Instant,
}

impl ReconcileTimer {
    /// Starts timing a reconcile of `controller`.
    pub fn start(controller: &'static str) -> Self {
        METRICS.reconciles.with_label_values(&[controller]).inc();
        ReconcileTimer { controller, start: Instant::now() }
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        METRICS.reconcile_duration.with_label_values(&[self.controller]).observe(self.start.elapsed().as_secs_f64());
    }
}

/// Counts a failed reconcile by error kind.
pub fn reconcile_error(controller: &str, kind: &str) {
    METRICS.reconcile_errors.with_label_values(&[controller, kind]).inc();
}

/// Refreshes the per-release gauges from the releases the controller watches: releases by
/// phase, support remaining of Published releases, and when in-flight releases entered
/// their phase. Computed at scrape time from the watch cache, so deleted releases and
/// CoreBuilds leave no stale series behind.
pub fn observe_releases(releases: &[std::sync::Arc<crate::api::ImageRelease>], now: jiff::Timestamp) {
    use crate::api::{Phase, Target};
    use kube::ResourceExt;
    use std::collections::BTreeMap;

    let m = &*METRICS;
    m.releases.reset();
    m.support_remaining.reset();
    m.phase_since.reset();
    m.refresh_failed.reset();
    let mut counts: BTreeMap<(String, String, &'static str), i64> = BTreeMap::new();
    // Newest Published version per CoreBuild, for the `newest` label.
    let mut newest: BTreeMap<(String, String), semver::Version> = BTreeMap::new();
    for r in releases {
        let ns = r.namespace().unwrap_or_default();
        let phase = r.status.as_ref().and_then(|s| s.phase).unwrap_or_default();
        *counts.entry((ns.clone(), r.spec.core_build.clone(), phase.as_str())).or_default() += 1;
        if phase == Phase::Published
            && let Ok(v) = semver::Version::parse(&r.spec.version)
        {
            let e = newest.entry((ns, r.spec.core_build.clone())).or_insert_with(|| v.clone());
            if v > *e {
                *e = v;
            }
        }
    }
    for ((ns, cb, phase), n) in counts {
        m.releases.with_label_values(&[ns.as_str(), cb.as_str(), phase]).set(n);
    }
    for r in releases {
        let Some(st) = r.status.as_ref() else { continue };
        let ns = r.namespace().unwrap_or_default();
        let name = r.name_any();
        let cb = &r.spec.core_build;
        let phase = st.phase.unwrap_or_default();
        if phase == Phase::Published
            && let Some(ends) = &st.support_ends_at
        {
            let is_newest = newest.get(&(ns.clone(), cb.clone())).is_some_and(|v| v.to_string() == r.spec.version);
            let left = ends.0.duration_since(now).as_secs_f64();
            m.support_remaining
                .with_label_values(&[ns.as_str(), cb, &name, &r.spec.version, if is_newest { "true" } else { "false" }])
                .set(left);
        }
        if phase == Phase::Failed && r.labels().contains_key(crate::api::LABEL_REFRESH) {
            m.refresh_failed.with_label_values(&[ns.as_str(), cb, &name, &r.spec.version]).set(1);
        }
        // A release held at Verified on purpose is not in flight.
        let in_flight = matches!(phase, Phase::Pending | Phase::Building | Phase::Testing)
            || (phase == Phase::Verified && r.spec.target > Target::Verified);
        if in_flight && let Some(entered) = st.history.iter().rev().find(|t| t.phase == phase) {
            m.phase_since
                .with_label_values(&[ns.as_str(), cb, &name, phase.as_str()])
                .set(entered.at.0.as_second() as f64);
        }
    }
}

/// Refreshes the base tracking gauges from the CoreBuilds the controller watches, at
/// scrape time like [`observe_releases`].
pub fn observe_core_builds(core_builds: &[std::sync::Arc<crate::api::CoreBuild>]) {
    use crate::api::BaseState;
    use kube::ResourceExt;

    let m = &*METRICS;
    m.base_behind_since.reset();
    m.base_state.reset();
    for cb in core_builds {
        let Some(base) = cb.status.as_ref().and_then(|s| s.base.as_ref()) else { continue };
        if cb.spec.base_tracking.is_none() {
            continue;
        }
        let ns = cb.namespace().unwrap_or_default();
        let name = cb.name_any();
        let state = match base.state {
            BaseState::Current => "Current",
            BaseState::Behind => "Behind",
            BaseState::Unknown => "Unknown",
        };
        m.base_state.with_label_values(&[ns.as_str(), &name, state]).set(1);
        if let Some(since) = base.behind_since.as_ref().filter(|_| base.state == BaseState::Behind) {
            m.base_behind_since.with_label_values(&[ns.as_str(), &name, &base.tag]).set(since.0.as_second() as f64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_metric_renders_with_the_coreforge_prefix() {
        registry_request("head_manifest", None);
        drop(ReconcileTimer::start("imagerelease"));
        METRICS.leader.set(1);
        let text = METRICS.render();
        for name in [
            "coreforge_registry_requests_total{operation=\"head_manifest\",outcome=\"ok\"}",
            "coreforge_reconcile_total{controller=\"imagerelease\"}",
            "coreforge_reconcile_duration_seconds_bucket",
            "coreforge_info{build=",
            "coreforge_leader 1",
        ] {
            assert!(text.contains(name), "{name} missing from:\n{text}");
        }
    }
}
