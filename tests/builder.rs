//! The default builder proven for real, outside Kubernetes: the exact build script and
//! environment the controller renders into the build Job run buildah (chroot isolation,
//! vfs storage) against the local registry, on a real base image assembled from Debian's
//! busybox-static; then the exact contract test script and environment of the test Job
//! run inside the image that was built. Their outputs, fed to the decision core, make the
//! release Verified with the digest the registry serves.

mod fixtures;
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, bail, ensure};
use coreforge::api::{CoreBuildSpec, ImageRelease, ImageReleaseSpec, Phase, Target};
use coreforge::controller::decide::{JobObservation, JobState, Observed, decide};
use coreforge::snapshot::Snapshot;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;
use serde_json::json;

/// Runs buildah with a storage of its own under `dir`.
fn buildah(dir: &Path, args: &[&str]) -> anyhow::Result<String> {
    let out = std::process::Command::new("buildah")
        .args(["--storage-driver", "vfs", "--root"])
        .arg(dir.join("root"))
        .arg("--runroot")
        .arg(dir.join("run"))
        .args(args)
        .output()
        .context("running buildah (tests/deps.sh installs it)")?;
    if !out.status.success() {
        bail!(
            "buildah {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A real base image: busybox-static under /bin, pushed to `repo`; returns its digest.
fn base_image(dir: &Path, repo: &str) -> anyhow::Result<String> {
    let ctr = buildah(dir, &["from", "scratch"])?;
    buildah(dir, &["copy", &ctr, "/bin/busybox", "/bin/busybox"])?;
    buildah(dir, &["run", "--isolation", "chroot", &ctr, "--", "/bin/busybox", "--install", "-s", "/bin"])?;
    buildah(dir, &["config", "--entrypoint", r#"["/bin/sh"]"#, &ctr])?;
    buildah(dir, &["commit", &ctr, "coreforge-test-base"])?;
    let digest_file = dir.join("base.digest");
    let target = format!("docker://{repo}:1");
    buildah(
        dir,
        &["push", "--tls-verify=false", "--digestfile", &digest_file.to_string_lossy(), "coreforge-test-base", &target],
    )?;
    Ok(std::fs::read_to_string(digest_file)?.trim().to_string())
}

/// The command and environment of a Job's only container.
fn container(job: &Job) -> (Vec<String>, BTreeMap<String, String>) {
    let c = &job.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
    let env = c.env.clone().unwrap_or_default().into_iter().map(|e| (e.name, e.value.unwrap_or_default())).collect();
    (c.command.clone().unwrap_or_default(), env)
}

#[tokio::test]
async fn the_rendered_build_and_test_scripts_work_for_real() -> anyhow::Result<()> {
    support::ensure_cluster().await?; // the local registry
    let ns = support::unique_namespace_name("real-build");
    let dir = support::repo_root().join("target/real-build").join(&ns);
    std::fs::create_dir_all(&dir)?;
    let base_repo = format!("{}/{ns}/base", fixtures::REGISTRY);
    let base_digest = base_image(&dir, &base_repo)?;

    let spec: CoreBuildSpec = serde_json::from_value(json!({
        "base": format!("{base_repo}@{base_digest}"),
        "blueprint": {"containerfile": concat!(
            "FROM scratch\n",
            "RUN mkdir -p /etc/coreforge && echo 12.7.0 > /etc/coreforge/version\n",
            "RUN printf 'root:x:0:0::/root:/bin/sh\\napp:x:1001:1001::/tmp:/bin/sh\\n' > /etc/passwd\n",
            "ENV LANG=C.UTF-8\n",
            "EXPOSE 8080\n",
            "USER 1001\n",
            "ENTRYPOINT [\"/bin/sh\"]\n",
        )},
        "contract": {
            "files": [{"path": "/etc/coreforge/version", "kind": "File"}, {"path": "/bin/sh", "kind": "Executable"}],
            "user": "1001",
            "entrypoint": ["/bin/sh"],
            "ports": [{"port": 8080}],
            "env": [{"name": "LANG", "value": "C.UTF-8"}],
            "checks": [
                {"name": "version-file", "run": "grep -qx 12.7.0 /etc/coreforge/version"},
                {"name": "says-hello", "run": "echo \"hello from $(id -un)\"; printf 'tab\\tand \"quotes\"'"},
            ],
        },
        "catalog": {
            "repository": format!("{}/{ns}/core", fixtures::REGISTRY),
            "stagingRepository": fixtures::staging(&ns),
            "tls": {"insecure": true},
        },
    }))?;
    let mut release = ImageRelease::new(
        "r",
        ImageReleaseSpec {
            core_build: "debian".into(),
            version: "12.7.0".into(),
            target: Target::Verified,
            ..Default::default()
        },
    );
    release.metadata = ObjectMeta {
        name: Some("r".into()),
        namespace: Some(ns.clone()),
        uid: Some("6f1c2d3e-aaaa-bbbb-cccc-000000000000".into()),
        generation: Some(1),
        ..Default::default()
    };
    let snap = Snapshot {
        name: coreforge::names::snapshot("r", 1),
        attempt: 1,
        core_build_generation: 1,
        containerfile: spec.blueprint.containerfile.clone().unwrap(),
        builder_image: coreforge::snapshot::DEFAULT_BUILDER_IMAGE.into(),
        user_namespace: false,
        spec,
    };

    // The build Job's container, run here: the blueprint is where the Job mounts it from
    // the snapshot ConfigMap; scratch space and the result file move into `dir`.
    let (command, mut env) = container(&coreforge::jobs::build_job(&release, &snap));
    let cm = snap.to_config_map(&release);
    let blueprint_dir = dir.join("blueprint");
    std::fs::create_dir_all(&blueprint_dir)?;
    std::fs::write(blueprint_dir.join("Containerfile"), &cm.data.as_ref().unwrap()["Containerfile"])?;
    let result_file = dir.join("build-result");
    env.insert("COREFORGE_BLUEPRINT".into(), blueprint_dir.join("Containerfile").to_string_lossy().into());
    env.insert("COREFORGE_CONTEXT_DIR".into(), blueprint_dir.to_string_lossy().into());
    env.insert("COREFORGE_WORKDIR".into(), dir.join("workspace").to_string_lossy().into());
    env.insert("COREFORGE_RESULT_FILE".into(), result_file.to_string_lossy().into());
    ensure!(command[..2] == ["/bin/sh", "-c"] && command[2] == coreforge::jobs::BUILD_SCRIPT);
    let out = std::process::Command::new(&command[0]).args(&command[1..]).envs(&env).output()?;
    ensure!(out.status.success(), "the build script failed:\n{}", String::from_utf8_lossy(&out.stderr));
    let build_message = std::fs::read_to_string(&result_file)?;
    let built = coreforge::results::parse_build(&build_message)?;
    let served = fixtures::registry_digest(fixtures::REGISTRY, &format!("{ns}/staging"), &built.digest, None).await?;
    ensure!(served.as_deref() == Some(built.digest.as_str()), "staging serves the reported digest");
    // The controller reads the config of the image from staging, as it does in the cluster.
    let registry = coreforge::registry::Registry::new(snap.spec.catalog.tls.as_ref(), Default::default());
    let staged = format!("{}@{}", fixtures::staging(&ns), built.digest);
    let config = registry.image_config(&staged).await?.context("the built image is in staging")?;
    ensure!(config.entrypoint == Some(vec!["/bin/sh".into()]) && config.ports == ["8080/tcp"], "{config:?}");
    ensure!(config.user.as_deref() == Some("1001"), "{config:?}");

    // The test Job's container, run inside the image that was built (pulled by digest).
    let image = format!("{}@{}", fixtures::staging(&ns), built.digest);
    let test_job = coreforge::jobs::test_job(&release, &snap, &image, config.user.as_deref());
    let (command, env) = container(&test_job);
    ensure!(command[2] == coreforge::jobs::TEST_SCRIPT);
    let ctr = buildah(&dir, &["from", "--tls-verify=false", &image])?;
    let mut args: Vec<String> = vec!["run".into(), "--isolation".into(), "chroot".into()];
    // The Job's scratch volumes (an emptyDir, mounted at /tmp), as host directories.
    let pod = test_job.spec.as_ref().unwrap().template.spec.clone().unwrap();
    for m in pod.containers[0].volume_mounts.iter().flatten() {
        let volume = pod.volumes.iter().flatten().find(|v| v.name == m.name).unwrap();
        ensure!(volume.empty_dir.is_some(), "the test Job mounts only scratch space");
        let host = dir.join("volumes").join(&m.name).join(m.sub_path.as_deref().unwrap_or(""));
        std::fs::create_dir_all(&host)?;
        std::fs::set_permissions(&host, std::os::unix::fs::PermissionsExt::from_mode(0o1777))?;
        args.extend(["--volume".into(), format!("{}:{}", host.display(), m.mount_path)]);
    }
    for (k, v) in env.iter().filter(|(k, _)| *k != "COREFORGE_RESULT_FILE") {
        args.push("--env".into());
        args.push(format!("{k}={v}"));
    }
    // The kubelet reads /dev/termination-log; here the result goes to the scratch volume.
    args.extend(["--env".into(), "COREFORGE_RESULT_FILE=/tmp/coreforge-result".into(), ctr.clone(), "--".into()]);
    args.extend(command);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    buildah(&dir, &args)?;
    let test_message = std::fs::read_to_string(dir.join("volumes/workspace/tmp/coreforge-result"))?;
    let report = coreforge::results::parse_test(&test_message)?;
    ensure!(report.user.as_deref() == Some("app") && report.uid.as_deref() == Some("1001"), "{report:?}");

    // What the controller records when fed these results.
    let now = Time(jiff::Timestamp::now());
    let job = |name: &str, message: &str| JobObservation {
        name: name.into(),
        state: JobState::Succeeded,
        started_at: None,
        finished_at: None,
        reason: Some("Completed".into()),
        message: Some(message.into()),
        exit_code: Some(0),
        has_pod: true,
        blocked: None,
    };
    let mut observed = Observed {
        snapshot: Some(Ok(snap.clone())),
        snapshot_stored: true,
        build_job: Some(job("r-a1-build", &build_message)),
        staging_check: Some(Ok(Some(config))),
        ..Default::default()
    };
    let d = decide(&release, &observed, &now);
    release.status = Some(d.status);
    observed.test_job = Some(job("r-a1-test", &test_message));
    let d = decide(&release, &observed, &now);
    let failed: Vec<_> = d.status.checks.iter().filter(|c| !c.passed).collect();
    ensure!(failed.is_empty(), "failed checks: {failed:#?}");
    ensure!(d.status.phase == Some(Phase::Verified), "{:?}", d.status.conditions);
    ensure!(d.status.digest.as_deref() == Some(built.digest.as_str()));
    ensure!(d.status.checks.len() == 8, "{:#?}", d.status.checks);
    let hello = d.status.checks.iter().find(|c| c.name == "check:says-hello").unwrap();
    ensure!(hello.output.as_deref() == Some("hello from app\ntab\tand \"quotes\""), "{hello:?}");

    buildah(&dir, &["rm", "--all"])?;
    std::fs::remove_dir_all(&dir).ok();
    Ok(())
}
