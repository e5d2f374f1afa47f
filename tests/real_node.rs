//! The product's central act for real, on the local environment's real node (kubelet,
//! containerd, runc; see tests/cluster/README.md, "The real node"): a build pod runs the
//! default builder (Debian's buildah, in the image `tests/cluster/images.sh` makes) on a
//! Debian 12 base made from Debian's packages, with `RUN` steps; the test pod runs the
//! contract inside the exact digest it built; the release is published into the local
//! registry and pulled back by the node's containerd. Then what goes wrong for real: a
//! `RUN` step that fails, a contract the image breaks, a builder image that does not
//! exist. A refresh release built on an upstream base that moved. Last, the controller
//! itself as a pod on that node, installed by the chart.

mod fixtures;
mod support;

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, ensure};
use coreforge::api::{CoreBuild, ImageRelease, Phase};
use fixtures::ControllerProcess;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ListParams, PostParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use support::secs;

/// Long enough for a cold node: pulling the builder and base images, a vfs build.
const BUILD_AND_TEST: Duration = Duration::from_secs(600);

/// `KEY=VALUE` lines of a file the environment's `up.sh` writes into its state dir.
fn env_file(name: &str) -> anyhow::Result<HashMap<String, String>> {
    let path = support::cluster_dir().join(name);
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(text.lines().filter_map(|l| l.split_once('=')).map(|(k, v)| (k.to_string(), v.to_string())).collect())
}

/// What a test needs of the environment: the node (selector, taint, the registry as
/// pods reach it) and the images (the Debian base and the builder, by digest).
struct RealNode {
    node: HashMap<String, String>,
    images: HashMap<String, String>,
}

impl RealNode {
    async fn get() -> anyhow::Result<Self> {
        fixtures::install_crds().await?;
        Ok(Self { node: env_file("node.env")?, images: env_file("images.env")? })
    }

    /// The registry, as pods and the host both reach it.
    fn registry(&self) -> &str {
        &self.node["POD_REGISTRY"]
    }

    /// Pod settings that put a build or test pod on the real node.
    fn placement(&self) -> Value {
        let (key, value) = self.node["NODE_SELECTOR"].split_once('=').expect("NODE_SELECTOR is key=value");
        let taint = self.node["NODE_TAINT"].split_once('=').expect("NODE_TAINT is key=value:effect").0;
        json!({"nodeSelector": {key: value}, "tolerations": [{"key": taint, "operator": "Exists"}]})
    }

    /// A controller for `ns` whose default builder is the environment's builder image,
    /// and which lets CoreBuilds name any builder image of the namespace's repositories in
    /// the local registry.
    async fn controller(&self, ns: &str) -> anyhow::Result<ControllerProcess> {
        let own_builders = format!("{}/{ns}/", self.registry());
        ControllerProcess::start_with(
            ns,
            &[
                "--http-addr",
                "127.0.0.1:0",
                "--builder-image",
                &self.images["BUILDER_IMAGE"],
                "--allow-builder-image",
                &own_builders,
            ],
        )
        .await
    }

    /// A CoreBuild on the Debian 12 base, built and tested on the real node, published
    /// into the local registry under `<ns>/<name>`.
    fn core_build(&self, name: &str, ns: &str, containerfile: &str, contract: Value) -> Value {
        let registry = self.registry();
        json!({
            "apiVersion": "coreforge.dev/v1alpha1",
            "kind": "CoreBuild",
            "metadata": {"name": name},
            "spec": {
                "base": self.images["DEBIAN_IMAGE"],
                "blueprint": {"containerfile": containerfile},
                "builder": self.placement(),
                "tester": self.placement(),
                "contract": contract,
                "catalog": {
                    "repository": format!("{registry}/{ns}/{name}"),
                    "stagingRepository": format!("{registry}/{ns}/staging/{name}"),
                    "channels": ["12", "latest"],
                    "tls": {"insecure": true},
                },
            }
        })
    }
}

/// The blueprint of the tests: a user, a file and a variable added by `RUN` steps.
const CONTAINERFILE: &str = "FROM debian\n\
RUN useradd --uid 1001 --create-home app \\\n && mkdir -p /srv/app \\\n && echo 'hello from coreforge' > /srv/app/motd\n\
ENV APP_HOME=/srv/app\n\
USER 1001\n";

fn contract() -> Value {
    json!({
        "packages": [
            {"name": "bash", "version": ">= 5.2"},
            {"name": "base-files", "version": ">= 12"},
            {"name": "passwd"},
        ],
        "files": [{"path": "/srv/app/motd", "kind": "File"}, {"path": "/bin/sh", "kind": "Executable"}],
        "user": "1001",
        "env": [{"name": "APP_HOME", "value": "/srv/app"}],
        "checks": [
            {"name": "motd", "run": "grep -qx 'hello from coreforge' /srv/app/motd"},
            {"name": "whoami", "run": "id -un"},
        ],
    })
}

async fn create(client: &Client, ns: &str, core_build: Value, release: Value) -> anyhow::Result<()> {
    let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), ns);
    cbs.create(&PostParams::default(), &serde_json::from_value(core_build)?).await?;
    let irs: Api<ImageRelease> = Api::namespaced(client.clone(), ns);
    irs.create(&PostParams::default(), &serde_json::from_value(release)?).await?;
    Ok(())
}

fn release(name: &str, core_build: &str, target: &str) -> Value {
    let mut r = fixtures::release(name, core_build, "12.7.0");
    r["spec"]["target"] = json!(target);
    r
}

/// Waits until release `name` is in `phase`, or fails at once when it is Failed instead.
async fn wait_phase(client: &Client, ns: &str, name: &str, phase: Phase) -> anyhow::Result<ImageRelease> {
    let irs: Api<ImageRelease> = Api::namespaced(client.clone(), ns);
    let r = support::wait_for(&irs, name, &format!("release {name} to be {phase}"), BUILD_AND_TEST, |r| {
        let now = r.status.as_ref().and_then(|s| s.phase);
        now == Some(phase) || now == Some(Phase::Failed)
    })
    .await?;
    let st = r.status.as_ref().context("no status")?;
    ensure!(st.phase == Some(phase), "{name} is {:?}: {:?}", st.phase, condition(&r, "Ready"));
    Ok(r)
}

fn condition<'a>(r: &'a ImageRelease, t: &str) -> &'a k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
    let st = r.status.as_ref().expect("status");
    coreforge::api::find_condition(&st.conditions, t).unwrap_or_else(|| panic!("no {t} condition in {st:?}"))
}

/// Runs `command` in `image` in a pod on the real node (pulled by its containerd) and
/// returns the pod's log and the image ID the runtime resolved.
async fn run_on_node(
    client: &Client,
    ns: &str,
    node: &RealNode,
    name: &str,
    image: &str,
    command: &[&str],
) -> anyhow::Result<(String, String)> {
    let mut spec = node.placement();
    spec["restartPolicy"] = json!("Never");
    spec["containers"] = json!([{"name": "main", "image": image, "command": command}]);
    let pod: Pod =
        serde_json::from_value(json!({"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}))?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &pod).await?;
    let done = support::wait_for(&pods, name, &format!("pod {name} to finish"), secs(180), |p| {
        matches!(p.status.as_ref().and_then(|s| s.phase.as_deref()), Some("Succeeded" | "Failed"))
    })
    .await?;
    let status = done.status.context("no status")?;
    let log = support::run(support::kubectl().args(["-n", ns, "logs", name])).await?;
    ensure!(status.phase.as_deref() == Some("Succeeded"), "pod {name} failed: {log}");
    let image_id =
        status.container_statuses.unwrap_or_default().first().map(|c| c.image_id.clone()).unwrap_or_default();
    Ok((log, image_id))
}

#[tokio::test]
async fn a_release_is_built_tested_and_published_for_real() -> anyhow::Result<()> {
    let node = RealNode::get().await?;
    support::with_namespace("real-release", |client, ns| async move {
        let _controller = node.controller(&ns).await?;
        create(
            &client,
            &ns,
            node.core_build("debian", &ns, CONTAINERFILE, contract()),
            release("r", "debian", "Published"),
        )
        .await?;
        let r = wait_phase(&client, &ns, "r", Phase::Published).await?;
        let st = r.status.clone().context("no status")?;
        let digest = st.digest.clone().context("no digest")?;
        let provenance = st.provenance.as_ref().context("no provenance")?;
        ensure!(provenance.builder_image == node.images["BUILDER_IMAGE"], "{provenance:?}");
        let base_digest = node.images["DEBIAN_IMAGE"].rsplit_once('@').unwrap().1;
        ensure!(provenance.base_digest == base_digest, "{provenance:?}");

        // Every guarantee held, observed inside the built image by the real test pod.
        let failed: Vec<_> = st.checks.iter().filter(|c| !c.passed).collect();
        ensure!(failed.is_empty(), "failed checks: {failed:?}");
        let observed = |name: &str| st.checks.iter().find(|c| c.name == name).and_then(|c| c.observed.clone());
        let whoami = st.checks.iter().find(|c| c.name == "check:whoami").and_then(|c| c.output.clone());
        ensure!(whoami.as_deref().map(str::trim) == Some("app"), "id -un in the image: {whoami:?}");
        let config = st.image_config.as_ref().context("no image config")?;
        ensure!(config.user.as_deref() == Some("1001"), "{config:?}");

        // The catalog serves the tested digest under the version and both channels.
        let repository = format!("{}/{ns}/debian", node.registry());
        // (The channels move right after publishing, by the CoreBuild's reconcile.)
        for tag in ["12.7.0", "12", "latest"] {
            let what = format!("{repository}:{tag} to serve {digest}");
            support::eventually(&what, secs(60), Duration::from_millis(500), || async {
                let served = fixtures::registry_digest(node.registry(), &format!("{ns}/debian"), tag, None).await?;
                Ok((served.as_deref() == Some(digest.as_str())).then_some(()))
            })
            .await?;
        }

        // The node's containerd pulls the published release by digest, and dpkg inside it
        // reports the very versions the contract test recorded.
        let published = format!("{repository}@{digest}");
        let (log, image_id) = run_on_node(
            &client,
            &ns,
            &node,
            "dpkg",
            &published,
            &["dpkg-query", "-W", "-f", "${Package}=${Version}\\n", "bash", "base-files", "passwd"],
        )
        .await?;
        ensure!(image_id.ends_with(&digest), "containerd resolved {image_id}, not {digest}");
        for package in ["bash", "base-files", "passwd"] {
            let from_dpkg = log.lines().find_map(|l| l.strip_prefix(&format!("{package}="))).map(str::trim);
            let recorded = observed(&format!("package:{package}"));
            ensure!(
                from_dpkg.is_some() && from_dpkg == recorded.as_deref(),
                "{package}: dpkg in the published image says {from_dpkg:?}, the contract test recorded {recorded:?}"
            );
        }
        Ok(())
    })
    .await
}

/// With `--user-namespaced-builders` the build pod has a user namespace of its own
/// (`hostUsers: false`, which this node's containerd 2 and runc support) and still builds
/// `RUN` steps, under the runtime's default seccomp profile. The proof is in the image: a
/// `RUN` step records its `/proc/self/uid_map`, which names the node's uids its root maps
/// to; the contract test reads it back.
#[tokio::test]
async fn a_user_namespaced_build_pod_builds_as_an_unprivileged_user_of_the_node() -> anyhow::Result<()> {
    let node = RealNode::get().await?;
    support::with_namespace("real-userns", |client, ns| async move {
        let builder = node.images["BUILDER_IMAGE"].clone();
        let args = ["--http-addr", "127.0.0.1:0", "--builder-image", &builder, "--user-namespaced-builders"];
        let _controller = ControllerProcess::start_with(&ns, &args).await?;
        let containerfile = "FROM debian\nRUN cat /proc/self/uid_map > /etc/build-uid-map\n";
        let contract = json!({
            "user": "root",
            "files": [{"path": "/etc/build-uid-map", "kind": "File"}],
            "checks": [{"name": "uid-map", "run": "cat /etc/build-uid-map"}],
        });
        create(
            &client,
            &ns,
            node.core_build("debian", &ns, containerfile, contract),
            release("r", "debian", "Verified"),
        )
        .await?;
        let r = wait_phase(&client, &ns, "r", Phase::Verified).await?;

        let jobs: Api<k8s_openapi::api::batch::v1::Job> = Api::namespaced(client.clone(), &ns);
        let job = jobs.get("r-a1-build").await?;
        let pod = job.spec.and_then(|s| s.template.spec).context("no pod template")?;
        ensure!(pod.host_users == Some(false), "the build pod shares the node's users: {:?}", pod.host_users);
        let seccomp = pod.containers[0].security_context.as_ref().and_then(|c| c.seccomp_profile.as_ref());
        ensure!(seccomp.map(|s| s.type_.as_str()) == Some("RuntimeDefault"), "seccomp: {seccomp:?}");

        // "0 <first uid on the node> <count>": root of the build was not the node's root.
        let st = r.status.as_ref().context("no status")?;
        let map = st.checks.iter().find(|c| c.name == "check:uid-map").and_then(|c| c.output.clone());
        let fields: Vec<u64> = map
            .as_deref()
            .and_then(|m| m.lines().next())
            .map(|l| l.split_whitespace().filter_map(|f| f.parse().ok()).collect())
            .unwrap_or_default();
        ensure!(
            fields.len() == 3 && fields[0] == 0 && fields[1] != 0 && fields[2] <= 65536,
            "the RUN step's uid map {map:?} does not map root to an unprivileged range of the node's uids"
        );
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_failing_run_step_a_broken_contract_and_a_missing_builder_are_reported_as_such() -> anyhow::Result<()> {
    let node = RealNode::get().await?;
    support::with_namespace("real-failures", |client, ns| async move {
        let _controller = node.controller(&ns).await?;
        // A RUN step that exits 3.
        let broken = "FROM debian\nRUN echo 'coreforge: breaking on purpose' >&2 && exit 3\n";
        create(&client, &ns, node.core_build("broken", &ns, broken, contract()), release("b", "broken", "Verified"))
            .await?;
        // An image that lacks a guaranteed package.
        let mut needs_nginx = contract();
        needs_nginx["packages"].as_array_mut().unwrap().push(json!({"name": "nginx"}));
        create(
            &client,
            &ns,
            node.core_build("strict", &ns, CONTAINERFILE, needs_nginx),
            release("c", "strict", "Verified"),
        )
        .await?;
        // A builder image that does not exist.
        let mut missing = node.core_build("missing", &ns, CONTAINERFILE, contract());
        missing["spec"]["builder"]["image"] = json!(format!("{}/{ns}/no-such-builder:1", node.registry()));
        create(&client, &ns, missing, release("m", "missing", "Verified")).await?;

        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        let m = support::wait_for(&irs, "m", "m to name the image pull failure", secs(30), |r| {
            r.status.as_ref().is_some_and(|s| {
                coreforge::api::find_condition(&s.conditions, "Built")
                    .is_some_and(|c| matches!(c.reason.as_str(), "ErrImagePull" | "ImagePullBackOff"))
            })
        })
        .await?;
        let built = condition(&m, "Built");
        ensure!(built.message.contains("no-such-builder"), "{built:?}");
        ensure!(condition(&m, "Stalled").status == "True", "{:?}", condition(&m, "Stalled"));

        let b = wait_phase(&client, &ns, "b", Phase::Failed).await?;
        let built = condition(&b, "Built");
        ensure!(built.reason == "BuildFailed", "{built:?}");
        for needle in ["(exit code 3)", "breaking on purpose"] {
            ensure!(built.message.contains(needle), "{needle:?} missing from {:?}", built.message);
        }

        let c = wait_phase(&client, &ns, "c", Phase::Failed).await?;
        let tested = condition(&c, "Tested");
        ensure!(tested.reason == "ContractBroken" && tested.message.contains("package:nginx"), "{tested:?}");
        let st = c.status.as_ref().unwrap();
        let bash = st.checks.iter().find(|k| k.name == "package:bash").context("no package:bash")?;
        ensure!(bash.passed && bash.observed.as_deref().is_some_and(|v| v.starts_with("5.2")), "{bash:?}");
        Ok(())
    })
    .await
}

/// The pods of the chart's Deployment, installed as release `cf`.
const CHART_PODS: &str = "app.kubernetes.io/instance=cf,app.kubernetes.io/name=coreforge";

/// Pods of the chart's Deployment `cf-coreforge` in `ns`.
async fn controller_pods(client: &Client, ns: &str) -> anyhow::Result<Vec<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = ListParams::default().labels(CHART_PODS);
    Ok(pods.list(&selector).await?.items)
}

/// Who holds the Lease `cf-coreforge` in `ns`, and how often it changed hands.
async fn lease_holder(client: &Client, ns: &str) -> anyhow::Result<(Option<String>, i32)> {
    let leases: Api<Lease> = Api::namespaced(client.clone(), ns);
    let spec = leases.get_opt("cf-coreforge").await?.and_then(|l| l.spec).unwrap_or_default();
    Ok((spec.holder_identity.filter(|h| !h.is_empty()), spec.lease_transitions.unwrap_or(0)))
}

/// The replicas that reported `reason` for release `name` (the Events'
/// `reportingInstance`, which the controller sets to its pod's name).
async fn reported_by(client: &Client, ns: &str, name: &str, reason: &str) -> anyhow::Result<Vec<String>> {
    let events: Api<k8s_openapi::api::core::v1::Event> = Api::namespaced(client.clone(), ns);
    let fields = format!("involvedObject.name={name},reason={reason}");
    let list = events.list(&ListParams::default().fields(&fields)).await?;
    Ok(list.items.into_iter().filter_map(|e| e.reporting_instance).collect())
}

/// The controller as its users run it: the Helm chart installs it, from the image
/// `tests/image.sh` builds, as two pods on the real node (in-cluster config, the
/// `kubernetes` Service, probes served to the kubelet, leader election on a Lease). It
/// builds, tests and publishes into a registry that requires credentials (the build pod
/// pushes and the test pod pulls with the catalog's Secret). Deleting the leader pod
/// hands the Lease to the other replica, which publishes the next release.
#[tokio::test]
async fn the_controller_installed_from_the_chart_publishes_and_hands_over_when_its_leader_goes() -> anyhow::Result<()> {
    let node = RealNode::get().await?;
    let pushed = fixtures::image_sh(&["--push", node.registry()]).await?;
    let pushed = pushed.lines().nth(1).context("tests/image.sh printed no pushed reference")?.to_string();
    let (reference, digest) = pushed.rsplit_once('@').context("no digest in the pushed reference")?;
    let repository = reference.rsplit_once(':').context("no tag in the pushed reference")?.0.to_string();
    let digest = digest.to_string();
    support::with_namespace("in-cluster", |client, ns| async move {
        let auth_registry = node.node["POD_REGISTRY_AUTH"].clone();
        let (user, password) = fixtures::registry_credentials()?;
        let secrets: Api<k8s_openapi::api::core::v1::Secret> = Api::namespaced(client.clone(), &ns);
        let secret = fixtures::docker_config_secret("catalog", &auth_registry, &user, &password);
        secrets.create(&PostParams::default(), &serde_json::from_value(secret)?).await?;

        let placement = node.placement();
        let values = json!({
            "image": {"repository": repository, "digest": digest},
            "replicas": 2,
            "leaderElection": {"leaseDuration": "6s"},
            "watchNamespaces": [ns],
            "crds": {"install": false},
            "builder": {"image": node.images["BUILDER_IMAGE"]},
            "nodeSelector": placement["nodeSelector"],
            "tolerations": placement["tolerations"],
        });
        let values_file = fixtures::scratch("in-cluster")?.join(format!("{ns}.yaml"));
        std::fs::write(&values_file, serde_json::to_string_pretty(&values)?)?;
        let values_file = values_file.to_string_lossy().to_string();
        // --wait: both pods Ready, i.e. the kubelet's readiness probes got 200s from them.
        fixtures::helm(&[
            "install",
            "cf",
            "charts/coreforge",
            "-n",
            &ns,
            "-f",
            &values_file,
            "--wait",
            "--timeout",
            "5m",
        ])
        .await?;

        let pods = controller_pods(&client, &ns).await?;
        let names: Vec<String> = pods.iter().filter_map(|p| p.metadata.name.clone()).collect();
        ensure!(names.len() == 2, "two controller pods: {names:?}");
        for pod in &pods {
            let on = pod.spec.as_ref().and_then(|s| s.node_name.clone());
            ensure!(on.as_deref() == Some(node.node["NODE_NAME"].as_str()), "{:?} runs on {on:?}", pod.metadata.name);
        }
        let (leader, transitions) =
            support::eventually("a replica to lead", secs(60), Duration::from_millis(500), || {
                let (client, ns, names) = (client.clone(), ns.clone(), names.clone());
                async move {
                    let (holder, transitions) = lease_holder(&client, &ns).await?;
                    Ok(holder.filter(|h| names.contains(h)).map(|h| (h, transitions)))
                }
            })
            .await?;

        // The first release, published by the leader pod through the auth registry.
        let mut cb = node.core_build("debian", &ns, CONTAINERFILE, contract());
        cb["spec"]["catalog"]["repository"] = json!(format!("{auth_registry}/{ns}/debian"));
        cb["spec"]["catalog"]["stagingRepository"] = json!(format!("{auth_registry}/{ns}/staging/debian"));
        cb["spec"]["catalog"]["credentialsSecret"] = json!({"name": "catalog"});
        create(&client, &ns, cb, release("r1", "debian", "Published")).await?;
        let r1 = wait_phase(&client, &ns, "r1", Phase::Published).await?;
        let digest1 = r1.status.as_ref().and_then(|s| s.digest.clone()).context("no digest")?;
        let served =
            fixtures::registry_digest(&auth_registry, &format!("{ns}/debian"), "12.7.0", Some((&user, &password)))
                .await?;
        ensure!(served.as_deref() == Some(digest1.as_str()), "the catalog serves {served:?} for 12.7.0, not {digest1}");
        let by = reported_by(&client, &ns, "r1", "Published").await?;
        ensure!(by == [leader.clone()], "r1's Published event was reported by {by:?}, not the leader {leader}");

        // The leader goes (what a rollout or a drain does): it gives the Lease up, and
        // another replica takes it (the standby, or the Deployment's replacement pod if
        // that looks first).
        let pods_api: Api<Pod> = Api::namespaced(client.clone(), &ns);
        let deleted_at = std::time::Instant::now();
        pods_api.delete(&leader, &Default::default()).await?;
        let handover =
            support::eventually("another replica to take the lease", secs(60), Duration::from_millis(250), || {
                let (client, ns, leader) = (client.clone(), ns.clone(), leader.clone());
                async move {
                    let (holder, now) = lease_holder(&client, &ns).await?;
                    Ok(holder.filter(|h| *h != leader && now > transitions))
                }
            })
            .await;
        let new_leader = match handover {
            Ok(new_leader) => new_leader,
            Err(e) => {
                let lease =
                    support::run(support::kubectl().args(["-n", &ns, "get", "lease", "cf-coreforge", "-o", "yaml"]))
                        .await;
                let logs = support::run(
                    support::kubectl().args(["-n", &ns, "logs", "-l", CHART_PODS, "--prefix", "--tail", "40"]),
                )
                .await;
                anyhow::bail!("{e:#}\nlease: {lease:?}\nlogs: {logs:?}");
            }
        };
        println!("the lease passed from {leader} to {new_leader} {:?} after the delete", deleted_at.elapsed());

        let mut r2 = release("r2", "debian", "Published");
        r2["spec"]["version"] = json!("12.7.1");
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        irs.create(&PostParams::default(), &serde_json::from_value(r2)?).await?;
        wait_phase(&client, &ns, "r2", Phase::Published).await?;
        let by = reported_by(&client, &ns, "r2", "Published").await?;
        ensure!(
            by == [new_leader.clone()],
            "r2's Published event was reported by {by:?}, not the new leader {new_leader}"
        );

        fixtures::helm(&["uninstall", "cf", "-n", &ns, "--wait", "--timeout", "2m"]).await?;
        Ok(())
    })
    .await
}

/// Upstream moves, for real: the tag the CoreBuild's Debian base follows gets a new image
/// (the same Debian with one more layer). The refresh release the controller creates is
/// built by buildah FROM that digest on the node, its contract test runs inside it, it is
/// published and the channels and `spec.base` follow; the node's containerd pulls the
/// published image and finds the new base's layer in it.
#[tokio::test]
async fn a_refresh_release_is_built_for_real_on_the_moved_base() -> anyhow::Result<()> {
    let node = RealNode::get().await?;
    support::with_namespace("real-refresh", |client, ns| async move {
        let _controller = node.controller(&ns).await?;
        let registry = node.registry().to_string();
        let upstream = format!("{ns}/upstream");
        let debian = &node.images["DEBIAN_IMAGE"];
        let (debian_repo, u0) = debian.rsplit_once('@').context("DEBIAN_IMAGE is pinned")?;
        // Upstream today: the environment's Debian image, under the tag the CoreBuild tracks.
        let tls = coreforge::api::RegistryTls { insecure: true, skip_verify: false };
        let client_registry = coreforge::registry::Registry::new(Some(&tls), Default::default());
        client_registry.copy(debian_repo, u0, &format!("{registry}/{upstream}"), "12").await?;

        let mut contract = contract();
        contract["checks"].as_array_mut().context("checks")?.push(json!({
            "name": "upstream", "run": "cat /etc/coreforge-upstream 2>/dev/null || echo none",
        }));
        let mut cb = node.core_build("debian", &ns, CONTAINERFILE, contract);
        cb["spec"]["base"] = json!(format!("{registry}/{upstream}@{u0}"));
        cb["spec"]["baseTracking"] =
            json!({"tag": format!("{registry}/{upstream}:12"), "interval": "10s", "refresh": "Automatic", "tls": {"insecure": true}});
        create(&client, &ns, cb, release("r", "debian", "Published")).await?;
        let first = wait_phase(&client, &ns, "r", Phase::Published).await?;
        let output = |r: &ImageRelease| {
            r.status.as_ref().and_then(|s| s.checks.iter().find(|c| c.name == "check:upstream")).and_then(|c| c.output.clone())
        };
        ensure!(output(&first).as_deref().map(str::trim) == Some("none"), "{:?}", output(&first));
        let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), &ns);
        support::wait_for(&cbs, "debian", "the base to be current", secs(60), |cb| {
            cb.status.as_ref().and_then(|s| s.base.as_ref()).is_some_and(|b| b.state == coreforge::api::BaseState::Current)
        })
        .await?;

        // Upstream moves.
        let u1 = fixtures::push_layer_on(&registry, &upstream, u0, "12", "etc/coreforge-upstream", "u1\n").await?;
        let name = format!("debian-base-{}", &u1[7..19]);
        let irs: Api<ImageRelease> = Api::namespaced(client.clone(), &ns);
        support::wait_for(&irs, &name, "the refresh release to appear", secs(60), |_| true).await?;
        let refreshed = wait_phase(&client, &ns, &name, Phase::Published).await?;
        let st = refreshed.status.clone().context("no status")?;
        ensure!(refreshed.spec.version == "12.7.1", "version {}", refreshed.spec.version);
        ensure!(st.provenance.as_ref().is_some_and(|p| p.base_digest == u1), "{:?}", st.provenance);
        ensure!(output(&refreshed).as_deref().map(str::trim) == Some("u1"), "{:?}", output(&refreshed));
        let digest = st.digest.clone().context("no digest")?;
        // spec.base moves once the refresh is published; the next question of the tag
        // finds it current.
        support::wait_for(&cbs, "debian", "spec.base, latest and a current base on the refresh", secs(60), |cb| {
            let st = cb.status.as_ref();
            cb.spec.base.ends_with(&u1)
                && st.iter().flat_map(|s| &s.channels).any(|c| c.name == "latest" && c.digest == digest)
                && st.and_then(|s| s.base.as_ref()).is_some_and(|b| b.state == coreforge::api::BaseState::Current)
        })
        .await?;

        // The node's containerd pulls the published refresh: the new base's layer is in it.
        let published = format!("{registry}/{ns}/debian@{digest}");
        let (log, image_id) =
            run_on_node(&client, &ns, &node, "upstream", &published, &["cat", "/etc/coreforge-upstream", "/srv/app/motd"]).await?;
        ensure!(image_id.ends_with(&digest), "containerd resolved {image_id}, not {digest}");
        ensure!(log == "u1\nhello from coreforge\n", "{log:?}");
        Ok(())
    })
    .await
}
