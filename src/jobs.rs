//! Rendering of the build and test Jobs (pure). The scripts they run live in
//! `src/scripts/` and are the same text a person can run by hand (see the README,
//! "Builder contract").

use k8s_openapi::api::batch::v1::{
    Job, JobSpec, PodFailurePolicy, PodFailurePolicyOnPodConditionsPattern, PodFailurePolicyRule,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, EmptyDirVolumeSource, EnvVar, KeyToPath, LocalObjectReference,
    PodSecurityContext, PodSpec, PodTemplateSpec, SeccompProfile, SecretVolumeSource, SecurityContext, Volume,
    VolumeMount,
};
use kube::api::ObjectMeta;
use kube::{Resource, ResourceExt};

use crate::api::{CoreBuildSpec, ImageRelease, PodSettings};
use crate::names::{self, Step, labels};
use crate::results::TERMINATION_MESSAGE_LIMIT;
use crate::snapshot::{KEY_CONTAINERFILE, Snapshot};

/// The default build script (buildah).
pub const BUILD_SCRIPT: &str = include_str!("scripts/build.sh");
/// The contract test script, run inside the built image.
pub const TEST_SCRIPT: &str = include_str!("scripts/test.sh");

const WORKDIR: &str = "/workspace";
const BLUEPRINT_DIR: &str = "/workspace/blueprint";
const AUTH_DIR: &str = "/workspace/auth";
const DEFAULT_BUILD_DEADLINE: i64 = 3600;
const DEFAULT_TEST_DEADLINE: i64 = 900;

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

/// The restricted Pod Security profile for a container.
fn restricted_container(non_root: bool) -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities { drop: Some(vec!["ALL".into()]), ..Default::default() }),
        run_as_non_root: non_root.then_some(true),
        seccomp_profile: Some(SeccompProfile { type_: "RuntimeDefault".into(), ..Default::default() }),
        ..Default::default()
    }
}

/// The capabilities the default build pod keeps (everything else is dropped). buildah
/// builds in a user namespace of its own (`--isolation chroot`, vfs storage): as root it
/// maps the whole uid and gid range into it, which needs SETUID and SETGID, and mapping
/// uid 0 needs SETFCAP (Linux 5.12 and later). Inside that namespace it has every
/// capability over its own files and mounts, and none outside.
pub const BUILDER_CAPABILITIES: &[&str] = &["SETUID", "SETGID", "SETFCAP"];

/// The capabilities of a build pod in a user namespace of its own (`hostUsers: false`):
/// buildah's default set for `RUN` steps, and SYS_ADMIN, so that it builds as root of the
/// pod's user namespace under the runtime's default seccomp profile. Every one of them is
/// a power over that namespace only: the pod's root is an unprivileged uid on the node.
pub const USER_NAMESPACED_BUILDER_CAPABILITIES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "FOWNER",
    "FSETID",
    "KILL",
    "NET_BIND_SERVICE",
    "SETFCAP",
    "SETGID",
    "SETPCAP",
    "SETUID",
    "SYS_CHROOT",
    "SYS_ADMIN",
];

/// The capabilities of the default build pod: [`BUILDER_CAPABILITIES`], or
/// [`USER_NAMESPACED_BUILDER_CAPABILITIES`] when it has a user namespace of its own.
pub fn builder_capabilities(user_namespace: bool) -> &'static [&'static str] {
    if user_namespace { USER_NAMESPACED_BUILDER_CAPABILITIES } else { BUILDER_CAPABILITIES }
}

/// The least privilege under which buildah builds a Containerfile with `RUN` steps in a
/// pod (measured on containerd 1.6 and 2.4, runc 1.1 and 1.5; see the README, "Builder
/// privileges"): uid 0 with only [`BUILDER_CAPABILITIES`], and seccomp `Unconfined`,
/// because the runtime's default profile refuses `unshare(CLONE_NEWUSER)` to a process
/// without CAP_SYS_ADMIN; the alternative that keeps `RuntimeDefault` needs CAP_SYS_ADMIN
/// in the node's user namespace, which is the larger power. In a user namespace of its
/// own (`user_namespace`), CAP_SYS_ADMIN is the pod's only, so that variant keeps
/// `RuntimeDefault`. Each exceeds the baseline Pod Security level, so the build namespace
/// must allow `privileged`.
pub fn builder_security_context(user_namespace: bool) -> SecurityContext {
    let seccomp = if user_namespace { "RuntimeDefault" } else { "Unconfined" };
    SecurityContext {
        run_as_user: Some(0),
        run_as_non_root: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            add: Some(builder_capabilities(user_namespace).iter().map(|c| c.to_string()).collect()),
        }),
        seccomp_profile: Some(SeccompProfile { type_: seccomp.into(), ..Default::default() }),
        ..Default::default()
    }
}

/// Whether an image config's user is a non-root uid (`1001`, `1001:1001`): the kubelet
/// can then verify `runAsNonRoot`. A user name cannot be verified before the container
/// runs, so it gets no such promise (the contract's `user` still tests it).
pub fn numeric_non_root(user: Option<&str>) -> bool {
    let uid = user.unwrap_or_default().split(':').next().unwrap_or_default();
    uid.parse::<u32>().is_ok_and(|uid| uid != 0)
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
    /// The container's security context unless the CoreBuild sets one.
    security_context: SecurityContext,
    /// Secrets to pull the image with.
    pull_secret: Option<String>,
    /// The pod's `hostUsers` (`Some(false)`: a user namespace of its own).
    host_users: Option<bool>,
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
            // A pod evicted or deleted by a disruption (a node drain, preemption) says
            // nothing about the build: the Job starts another instead of failing.
            pod_failure_policy: Some(PodFailurePolicy {
                rules: vec![PodFailurePolicyRule {
                    action: "Ignore".into(),
                    on_pod_conditions: Some(vec![PodFailurePolicyOnPodConditionsPattern {
                        type_: "DisruptionTarget".into(),
                        status: "True".into(),
                    }]),
                    on_exit_codes: None,
                }],
            }),
            active_deadline_seconds: Some(p.settings.active_deadline_seconds.unwrap_or(p.deadline)),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(pod_labels), annotations, ..Default::default() }),
                spec: Some(PodSpec {
                    restart_policy: Some("Never".into()),
                    service_account_name: p.settings.service_account_name.clone(),
                    automount_service_account_token: Some(false),
                    node_selector: (!p.settings.node_selector.is_empty()).then(|| p.settings.node_selector.clone()),
                    tolerations: (!p.settings.tolerations.is_empty()).then(|| p.settings.tolerations.clone()),
                    image_pull_secrets: p.pull_secret.map(|name| vec![LocalObjectReference { name }]),
                    host_users: p.host_users,
                    security_context: Some(PodSecurityContext {
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
                        security_context: Some(p.settings.security_context.clone().unwrap_or(p.security_context)),
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
            image: snap.builder_image.clone(),
            command,
            args,
            env: build_env(release, snap),
            volumes,
            mounts,
            settings: builder.pod,
            deadline: DEFAULT_BUILD_DEADLINE,
            security_context: builder_security_context(snap.user_namespace),
            // The builder image is the administrator's choice, not the catalog's.
            pull_secret: None,
            host_users: snap.user_namespace.then_some(false),
        },
    )
}

/// The test Job of the attempt `snap` belongs to: the contract checks inside `image`
/// (the built image, by digest), whose config names `user`. The pod pulls it with the
/// catalog's credentials, and promises `runAsNonRoot` when the image runs as a non-root
/// uid, so that it is admitted in namespaces with the restricted Pod Security level.
pub fn test_job(release: &ImageRelease, snap: &Snapshot, image: &str, user: Option<&str>) -> Job {
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
            security_context: restricted_container(numeric_non_root(user)),
            pull_secret: snap.spec.catalog.credentials_secret.as_ref().map(|s| s.name.clone()),
            host_users: None,
        },
    )
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn snapshot(extra: serde_json::Value) -> (ImageRelease, Snapshot) {
        let mut spec = json!({
            "base": format!("example.org/base@sha256:{}", "a".repeat(64)),
            "blueprint": {"containerfile": "FROM scratch\n"},
            "contract": {"user": "1001"},
            "catalog": {"repository": "example.org/core", "stagingRepository": "example.org/staging"},
        });
        spec.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        let mut release = ImageRelease::new("r", Default::default());
        release.metadata.namespace = Some("ns".into());
        let snap = Snapshot {
            name: "r-a1-snapshot".into(),
            attempt: 1,
            core_build_generation: 1,
            spec: serde_json::from_value(spec).unwrap(),
            containerfile: "FROM scratch\n".into(),
            builder_image: "registry.local/builder@sha256:1".into(),
            user_namespace: false,
        };
        (release, snap)
    }

    fn pod(job: &Job) -> &PodSpec {
        job.spec.as_ref().unwrap().template.spec.as_ref().unwrap()
    }

    #[test]
    fn the_build_pod_runs_the_snapshots_builder_with_the_least_privilege_that_builds() {
        let (release, snap) = snapshot(json!({}));
        let job = build_job(&release, &snap);
        let c = &pod(&job).containers[0];
        assert_eq!(c.image.as_deref(), Some("registry.local/builder@sha256:1"));
        let sc = c.security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_user, Some(0));
        assert_eq!(sc.privileged, None);
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        let added: Vec<&str> = caps.add.iter().flatten().map(String::as_str).collect();
        assert_eq!(added, ["SETUID", "SETGID", "SETFCAP"]);
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "Unconfined");
        assert_eq!(pod(&job).image_pull_secrets, None, "the builder image is the administrator's");
        assert_eq!(pod(&job).host_users, None);
    }

    #[test]
    fn a_user_namespaced_build_pod_keeps_the_default_seccomp_profile() {
        let (release, mut snap) = snapshot(json!({}));
        snap.user_namespace = true;
        let job = build_job(&release, &snap);
        assert_eq!(pod(&job).host_users, Some(false));
        let sc = pod(&job).containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_user, Some(0));
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        let caps = sc.capabilities.as_ref().unwrap();
        assert_eq!(caps.drop.as_deref(), Some(&["ALL".to_string()][..]));
        let added: Vec<&str> = caps.add.iter().flatten().map(String::as_str).collect();
        assert_eq!(added, USER_NAMESPACED_BUILDER_CAPABILITIES);
        // The test pod is not the builder: it shares the node's users either way.
        let test = test_job(&release, &snap, "img", None);
        assert_eq!(pod(&test).host_users, None);
    }

    #[test]
    fn a_corebuilds_security_context_replaces_the_default() {
        let (release, snap) = snapshot(json!({"builder": {"securityContext": {"runAsUser": 1000}}}));
        let job = build_job(&release, &snap);
        let sc = pod(&job).containers[0].security_context.as_ref().unwrap();
        assert_eq!((sc.run_as_user, sc.capabilities.as_ref()), (Some(1000), None));
    }

    #[test]
    fn a_disrupted_pod_is_replaced_rather_than_failing_the_step() {
        let (release, snap) = snapshot(json!({}));
        for job in [build_job(&release, &snap), test_job(&release, &snap, "img", None)] {
            let spec = job.spec.as_ref().unwrap();
            assert_eq!(spec.backoff_limit, Some(0));
            let rule = &spec.pod_failure_policy.as_ref().unwrap().rules[0];
            assert_eq!(rule.action, "Ignore");
            assert_eq!(rule.on_pod_conditions.as_ref().unwrap()[0].type_, "DisruptionTarget");
        }
    }

    #[test]
    fn the_test_pod_is_restricted_pulls_with_the_catalogs_credentials_and_promises_a_non_root_uid() {
        let (release, snap) = snapshot(json!({"catalog": {
            "repository": "example.org/core", "stagingRepository": "example.org/staging",
            "credentialsSecret": {"name": "pull"},
        }}));
        let job = test_job(&release, &snap, "example.org/staging@sha256:1", Some("1001:1001"));
        let p = pod(&job);
        assert_eq!(p.image_pull_secrets.as_ref().unwrap()[0].name, "pull");
        let sc = p.containers[0].security_context.as_ref().unwrap();
        assert_eq!(sc.run_as_non_root, Some(true));
        assert_eq!(sc.allow_privilege_escalation, Some(false));
        assert_eq!(sc.seccomp_profile.as_ref().unwrap().type_, "RuntimeDefault");
        for user in [None, Some("0"), Some("root"), Some("app"), Some("0:1001")] {
            let job = test_job(&release, &snap, "img", user);
            let sc = pod(&job).containers[0].security_context.clone().unwrap();
            assert_eq!(sc.run_as_non_root, None, "{user:?} cannot be promised non-root");
        }
    }
}
