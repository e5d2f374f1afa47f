//! The attestations of a release, made from its status alone (pure and deterministic:
//! deciding again after a crash gives the same bytes).
//!
//! - SLSA provenance v1 (<https://slsa.dev/provenance/v1>): the builder (coreforge and its
//!   version, the builder image), the CoreBuild (generation, spec hash), the base image and
//!   its digest, the blueprint's hash, the attempt and its snapshot, the build and test
//!   Jobs and their times.
//! - The contract predicate ([`super::CONTRACT_PREDICATE_V1`], documented in
//!   `deploy/signing/README.md`): every contract result of `status.checks`, whether all passed, the
//!   contract the release was held to, the baseline and the changes since it, and the
//!   release's advisories.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;
use serde_json::{Value, json};

use super::{CONTRACT_PREDICATE_V1, SLSA_PROVENANCE_V1, Statement, statement};
use crate::api::{Contract, ImageRelease, ImageReleaseStatus, StepStatus};

/// The build type of coreforge's provenance: a Containerfile built on a pinned base by a
/// builder Job, then tested against the contract by a test Job.
pub const BUILD_TYPE: &str = "https://coreforge.dev/buildtypes/containerfile/v1";
/// The builder id of coreforge's provenance.
pub const BUILDER_ID: &str = "https://coreforge.dev/controller";

fn time(t: &Option<Time>) -> Value {
    t.as_ref().map(|t| json!(t.0.to_string())).unwrap_or(Value::Null)
}

fn hex(digest: &str) -> &str {
    digest.strip_prefix("sha256:").unwrap_or(digest)
}

fn job(ns: &str, role: &str, step: &Option<StepStatus>) -> Option<Value> {
    let s = step.as_ref()?;
    Some(json!({
        "name": format!("{role}-job"),
        "uri": format!("k8s://{ns}/jobs/{}", s.job_name),
        "annotations": {"startedOn": time(&s.started_at), "finishedOn": time(&s.finished_at), "outcome": s.outcome},
    }))
}

/// SLSA provenance v1 of the release's image.
pub fn provenance(release: &ImageRelease, st: &ImageReleaseStatus) -> Value {
    let ns = release.namespace().unwrap_or_default();
    let p = st.provenance.clone().unwrap_or_default();
    let base_name = p.base.split('@').next().unwrap_or_default();
    let byproducts: Vec<Value> =
        [job(&ns, "build", &st.build), job(&ns, "test", &st.test)].into_iter().flatten().collect();
    json!({
        "buildDefinition": {
            "buildType": BUILD_TYPE,
            "externalParameters": {
                "coreBuild": {
                    "namespace": ns,
                    "name": release.spec.core_build,
                    "generation": p.core_build_generation,
                    "specHash": p.core_build_spec_hash,
                },
                "release": {"name": release.name_any(), "version": release.spec.version},
                "base": p.base,
            },
            "internalParameters": {"attempt": st.attempt, "snapshot": p.snapshot},
            "resolvedDependencies": [
                {"name": "base", "uri": format!("oci://{base_name}"), "digest": {"sha256": hex(&p.base_digest)}},
                {"name": "blueprint", "digest": {"sha256": hex(&p.blueprint_hash)}},
            ],
        },
        "runDetails": {
            "builder": {
                "id": BUILDER_ID,
                "version": {"coreforge": env!("CARGO_PKG_VERSION")},
                "builderDependencies": [{"name": "builder-image", "uri": format!("oci://{}", p.builder_image)}],
            },
            "metadata": {
                "invocationId": format!("{}/attempt-{}", release.uid().unwrap_or_default(), st.attempt.unwrap_or(1)),
                "startedOn": time(&st.build.as_ref().and_then(|b| b.started_at.clone())),
                "finishedOn": time(&st.test.as_ref().and_then(|t| t.finished_at.clone())),
            },
            "byproducts": byproducts,
        },
    })
}

/// The contract predicate of the release: what it was tested against and how it did.
pub fn contract(release: &ImageRelease, st: &ImageReleaseStatus, declared: &Contract) -> Value {
    json!({
        "release": {
            "namespace": release.namespace(),
            "name": release.name_any(),
            "coreBuild": release.spec.core_build,
            "version": release.spec.version,
        },
        "passed": !st.checks.is_empty() && st.checks.iter().all(|c| c.passed),
        "checks": st.checks,
        "contract": declared,
        "baseline": st.contract_baseline,
        "changes": st.contract_changes,
        "advisories": release.spec.advisories,
        "testJob": st.test.as_ref().map(|t| t.job_name.clone()),
        "testedOn": time(&st.test.as_ref().and_then(|t| t.finished_at.clone())),
    })
}

/// The statements to attest for the release's published image `repository@digest`.
pub fn statements(
    release: &ImageRelease,
    st: &ImageReleaseStatus,
    declared: &Contract,
    repository: &str,
    digest: &str,
) -> Vec<Statement> {
    vec![
        statement(repository, digest, SLSA_PROVENANCE_V1, provenance(release, st)),
        statement(repository, digest, CONTRACT_PREDICATE_V1, contract(release, st, declared)),
    ]
}
