//! Rendering of the build and test Jobs (pure). The scripts they run live in
//! `src/scripts/` and are the same text a person can run by hand (see the README,
//! "Builder contract").

use std::collections::BTreeMap;

use k8s_openapi::api::batch::v1::{Job, JobSpec};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, KeyToPath, PodSecurityContext,
    PodSpec, PodTemplateSpec, SeccompProfile, SecretVolumeSource, SecurityContext, Volume, VolumeMount,
};
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::api::{
    CoreBuildSpec, ImageRelease, LABEL_ATTEMPT, LABEL_CORE_BUILD, LABEL_RELEASE, LABEL_STEP, PodSettings,
};
use crate::names;
use crate::results::TERMINATION_MESSAGE_LIMIT;
use crate::snapshot::{KEY_CONTAINERFILE, Snapshot};

/// Builder image used when a CoreBuild names none.
pub const DEFAULT_BUILDER_IMAGE: &str = "quay.io/buildah/stable:v1.39";
/// The default build script (buildah).
pub const BUILD_SCRIPT: &str = include_str!("scripts/build.sh");
/// The contract test script, run inside the built image.
pub const TEST_SCRIPT: &str = include_str!("scripts/test.sh");

const WORKDIR: &str = "/workspace";
const BLUEPRINT_DIR: &str = "/workspace/blueprint";
const AUTH_DIR: &str = "/workspace/auth";
const DEFAULT_BUILD_DEADLINE: i64 = 3600;
const DEFAULT_TEST_DEADLINE: i64 = 900;

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

/// The builder image of a CoreBuild spec.
pub fn builder_image(spec: &CoreBuildSpec) -> &str {
    spec.builder.as_ref().and_then(|b| b.image.as_deref()).unwrap_or(DEFAULT_BUILDER_IMAGE)
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

/// The staging tag of an attempt: version (with `+` made tag-safe), release uid, attempt.
pub fn staging_tag(release: &ImageRelease, attempt: i32) -> String {
    let uid = release.uid().unwrap_or_default();
    let short: String = uid.chars().filter(|c| c.is_ascii_alphanumeric()).take(8).collect();
    format!("{}-{short}-a{attempt}", release.spec.version.replace('+', "_"))
}

fn env(pairs: Vec<(String, String)>) -> Vec<EnvVar> {
    pairs.into_iter().map(|(name, value)| EnvVar { name, value: Some(value), ..Default::default() }).collect()
}

fn tls_verify(spec: &CoreBuildSpec) -> bool {
    !spec.catalog.tls.as_ref().is_some_and(|t| t.insecure || t.skip_verify)
}

/// The builder contract: the environment a build receives.
pub fn build_env(release: &ImageRelease, snap: &Snapshot) -> Vec<(String, String)> {
    let spec = &snap.spec;
    let mut e = vec![
        ("COREFORGE_RELEASE".into(), release.name_any()),
        ("COREFORGE_CORE_BUILD".into(), release.spec.core_build.clone()),
        ("COREFORGE_VERSION".into(), release.spec.version.clone()),
        ("COREFORGE_ATTEMPT".into(), snap.attempt.to_string()),
        ("COREFORGE_BASE_IMAGE".into(), spec.base.clone()),
        ("COREFORGE_BLUEPRINT".into(), format!("{BLUEPRINT_DIR}/{KEY_CONTAINERFILE}")),
        ("COREFORGE_CONTEXT_DIR".into(), BLUEPRINT_DIR.into()),
        (
            "COREFORGE_DESTINATION".into(),
            format!("{}:{}", spec.catalog.staging_repository, staging_tag(release, snap.attempt)),
        ),
        ("COREFORGE_TLS_VERIFY".into(), tls_verify(spec).to_string()),
        ("COREFORGE_WORKDIR".into(), WORKDIR.into()),
        ("COREFORGE_RESULT_FILE".into(), "/dev/termination-log".into()),
    ];
    if spec.catalog.credentials_secret.is_some() {
        e.push(("REGISTRY_AUTH_FILE".into(), format!("{AUTH_DIR}/config.json")));
    }
    e
}

/// The contract test environment: what the test script observes.
pub fn test_env(spec: &CoreBuildSpec) -> Vec<(String, String)> {
    let c = &spec.contract;
    let names = |v: Vec<&str>| v.join(" ");
    let mut e = vec![
        ("COREFORGE_PACKAGES".into(), names(c.packages.iter().map(|p| p.name.as_str()).collect())),
        ("COREFORGE_FILES".into(), c.files.iter().map(|f| f.path.as_str()).collect::<Vec<_>>().join("\n")),
        ("COREFORGE_ENV_NAMES".into(), names(c.env.iter().map(|v| v.name.as_str()).collect())),
        ("COREFORGE_CHECK_COUNT".into(), c.checks.len().to_string()),
        ("COREFORGE_OUTPUT_BUDGET".into(), output_budget(c.checks.len()).to_string()),
        ("COREFORGE_RESULT_FILE".into(), "/dev/termination-log".into()),
    ];
    for (i, check) in c.checks.iter().enumerate() {
        e.push((format!("COREFORGE_CHECK_{}_NAME", i + 1), check.name.clone()));
        e.push((format!("COREFORGE_CHECK_{}_RUN", i + 1), check.run.clone()));
    }
    e
}

/// Bytes of output each named check may report: the checks share half the 4 KiB message.
pub fn output_budget(checks: usize) -> usize {
    (TERMINATION_MESSAGE_LIMIT / 2 / checks.max(1)).clamp(16, 512)
}

/// The restricted Pod Security profile for a container. The test pod does not force a
/// non-root user: the user the image runs as is part of its contract, and is tested.
fn restricted_container(non_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        run_as_non_root: non_root.then_some(true),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

struct JobParts {
    step: Step,
    name: String,
    image: String,
    command: Vec<String>,
    args: Option<Vec<String>>,
    env: Vec<(String, String)>,
    volumes: Vec<Volume>,
    mounts: Vec<VolumeMount>,
    settings: PodSettings,
    deadline: i64,
    /// Build pods run as this non-root user; test pods as the image's own user.
    run_as_user: Option<i64>,
}

fn job(release: &ImageRelease, attempt: i32, p: JobParts) -> Job {
    let labels = labels(release, Some(p.step), attempt);
    let mut pod_labels = p.settings.pod_labels.clone();
    pod_labels.extend(labels.clone());
    let annotations = (!p.settings.pod_annotations.is_empty()).then(|| p.settings.pod_annotations.clone());
    Job {
        metadata: ObjectMeta {
            name: Some(p.name),
            namespace: release.namespace(),
            labels: Some(labels),
            owner_references: release.controller_owner_ref(&()).map(|o| vec![o]),
            ..Default::default()
        },
        spec: Some(JobSpec {
            // A failed step fails the attempt; retries are explicit (see the README).
            backoff_limit: Some(0),
            active_deadline_seconds: Some(p.settings.active_deadline_seconds.unwrap_or(p.deadline)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), annotations, ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: p.settings.service_account_name.clone(),
                    automount_service_account_token: Some(false),
                    node_selector: (!p.settings.node_selector.is_empty()).then(|| p.settings.node_selector.clone()),
                    tolerations: (!p.settings.tolerations.is_empty()).then(|| p.settings.tolerations.clone()),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: p.run_as_user.map(|_| true),
                        run_as_user: p.run_as_user,
                        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
                        ..Default::default()
                    }),
                    volumes: Some(p.volumes),
                    containers: vec![Container {
                        name: p.step.as_str().into(),
                        image: Some(p.image),
                        command: Some(p.command),
                        args: p.args,
                        env: Some(env(p.env)),
                        resources: p.settings.resources.clone(),
                        security_context: Some(
                            p.settings
                                .security_context
                                .clone()
                                .unwrap_or_else(|| restricted_container(p.run_as_user.is_some())),
                        ),
                        volume_mounts: Some(p.mounts),
                        termination_message_policy: Some("FallbackToLogsOnError".into()),
                        ..Default::default()
                    }],
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn scratch() -> (Volume, VolumeMount) {
    (
        Volume { name: "workspace".into(), empty_dir: Some(EmptyDirVolumeSource::default()), ..Default::default() },
        VolumeMount { name: "workspace".into(), mount_path: WORKDIR.into(), ..Default::default() },
    )
}

/// The build Job of the attempt `snap` belongs to.
pub fn build_job(release: &ImageRelease, snap: &Snapshot) -> Job {
    let spec = &snap.spec;
    let builder = spec.builder.clone().unwrap_or_default();
    let (ws, ws_mount) = scratch();
    let mut volumes = vec![
        ws,
        Volume {
            name: "blueprint".into(),
            config_map: Some(ConfigMapVolumeSource {
                name: snap.name.clone(),
                items: Some(vec![KeyToPath {
                    key: KEY_CONTAINERFILE.into(),
                    path: KEY_CONTAINERFILE.into(),
                    mode: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        },
    ];
    let mut mounts = vec![
        ws_mount,
        VolumeMount {
            name: "blueprint".into(),
            mount_path: BLUEPRINT_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        },
    ];
    if let Some(secret) = &spec.catalog.credentials_secret {
        volumes.push(Volume {
            name: "registry-auth".into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.name.clone()),
                items: Some(vec![KeyToPath {
                    key: ".dockerconfigjson".into(),
                    path: "config.json".into(),
                    mode: None,
                }]),
                ..Default::default()
            }),
            ..Default::default()
        });
        mounts.push(VolumeMount {
            name: "registry-auth".into(),
            mount_path: AUTH_DIR.into(),
            read_only: Some(true),
            ..Default::default()
        });
    }
    let (command, args) = match &builder.command {
        Some(cmd) => (cmd.clone(), builder.args.clone()),
        None => (vec!["/bin/sh".into(), "-c".into(), BUILD_SCRIPT.into()], None),
    };
    job(
        release,
        snap.attempt,
        JobParts {
            step: Step::Build,
            name: names::build_job(&release.name_any(), snap.attempt),
            image: builder_image(spec).to_string(),
            command,
            args,
            env: build_env(release, snap),
            volumes,
            mounts,
            settings: builder.pod,
            deadline: DEFAULT_BUILD_DEADLINE,
            // The buildah image's unprivileged `build` user.
            run_as_user: Some(1000),
        },
    )
}

/// The test Job of the attempt `snap` belongs to: the contract checks inside `image`
/// (the built image, by digest).
pub fn test_job(release: &ImageRelease, snap: &Snapshot, image: &str) -> Job {
    let (ws, ws_mount) = scratch();
    let mut mounts = vec![ws_mount];
    // The test script needs a writable /tmp even on a read-only image.
    mounts.push(VolumeMount {
        name: "workspace".into(),
        mount_path: "/tmp".into(),
        sub_path: Some("tmp".into()),
        ..Default::default()
    });
    job(
        release,
        snap.attempt,
        JobParts {
            step: Step::Test,
            name: names::test_job(&release.name_any(), snap.attempt),
            image: image.to_string(),
            command: vec!["/bin/sh".into(), "-c".into(), TEST_SCRIPT.into()],
            args: None,
            env: test_env(&snap.spec),
            volumes: vec![ws],
            mounts,
            settings: snap.spec.tester.clone().unwrap_or_default(),
            deadline: DEFAULT_TEST_DEADLINE,
            run_as_user: None,
        },
    )
}
