//! `make bench`: coreforge at scale on the local environment, measured against a floor.
//!
//! For each N of `BENCH_N` (default `100 1000`) releases, spread round-robin over
//! `BENCH_COREBUILDS` (default 10) CoreBuilds:
//!
//! 1. **floor** ([`floor`]): a bare client runs, in a namespace of its own, the very build
//!    and test Jobs coreforge renders for those releases, each test Job created as soon as
//!    its build Job completed: what the Job controller, the scheduler and the simulated
//!    nodes cost with no controller in the way;
//! 2. **coreforge** ([`run`]): the release build of the controller, the N ImageReleases
//!    applied as a user would (one `kubectl apply --server-side` of one file), until every
//!    one is Published; then an idle window (`BENCH_IDLE_SECONDS`, default 60) in which a
//!    settled controller should write nothing.
//!
//! Every wait watches (no sleeps but the idle window) and is bounded
//! (`BENCH_TIMEOUT_SECONDS`, default 300 + 3 per release). The table ([`report`]) is
//! printed and written, with the raw numbers, to `target/bench/`.

#[path = "../../tests/fixtures/mod.rs"]
mod fixtures;
#[path = "../../tests/support/mod.rs"]
mod support;

mod floor;
mod measure;
mod report;
mod run;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::{Api, Client};
use serde::Serialize;
use serde_json::{Value, json};

/// Label on every namespace the bench creates: `kubectl delete ns -l coreforge.dev/bench=true`
/// removes what an interrupted run left.
const NAMESPACE_LABEL: &str = "coreforge.dev/bench";

/// What the environment asks for.
pub struct Settings {
    /// Numbers of releases, one measurement each, in order.
    pub sizes: Vec<usize>,
    /// CoreBuilds the releases are spread over.
    pub core_builds: usize,
    /// The idle window after the last release is Published.
    pub idle: Duration,
    /// Bound of every wait on N objects (`None`: 300 s + 3 s per release).
    timeout: Option<Duration>,
}

impl Settings {
    fn from_env() -> anyhow::Result<Self> {
        fn var(name: &str) -> Option<String> {
            std::env::var(name).ok().filter(|v| !v.trim().is_empty())
        }
        fn number(name: &str, text: &str) -> anyhow::Result<u64> {
            text.trim().parse().with_context(|| format!("{name}: {text:?} is not a whole number"))
        }
        let sizes = match var("BENCH_N") {
            Some(text) => text
                .split([' ', ','])
                .filter(|s| !s.is_empty())
                .map(|s| number("BENCH_N", s).map(|n| n as usize))
                .collect::<anyhow::Result<Vec<_>>>()?,
            None => vec![100, 1000],
        };
        let core_builds = var("BENCH_COREBUILDS").map(|v| number("BENCH_COREBUILDS", &v)).transpose()?.unwrap_or(10);
        let idle = var("BENCH_IDLE_SECONDS").map(|v| number("BENCH_IDLE_SECONDS", &v)).transpose()?.unwrap_or(60);
        let timeout = var("BENCH_TIMEOUT_SECONDS").map(|v| number("BENCH_TIMEOUT_SECONDS", &v)).transpose()?;
        if sizes.is_empty() || sizes.contains(&0) || core_builds == 0 {
            bail!(
                "BENCH_N must list at least one number of releases, none of them 0, and BENCH_COREBUILDS be at least 1"
            );
        }
        Ok(Settings {
            sizes,
            core_builds: core_builds as usize,
            idle: Duration::from_secs(idle),
            timeout: timeout.map(Duration::from_secs),
        })
    }

    /// How long a wait on `n` releases (or their Jobs) may take.
    pub fn timeout(&self, n: usize) -> Duration {
        self.timeout.unwrap_or(Duration::from_secs(300 + 3 * n as u64))
    }

    /// The command that repeats this run.
    pub fn command(&self) -> String {
        let sizes: Vec<String> = self.sizes.iter().map(ToString::to_string).collect();
        let mut command = format!(
            "BENCH_N=\"{}\" BENCH_COREBUILDS={} BENCH_IDLE_SECONDS={}",
            sizes.join(" "),
            self.core_builds,
            self.idle.as_secs()
        );
        if let Some(t) = self.timeout {
            command.push_str(&format!(" BENCH_TIMEOUT_SECONDS={}", t.as_secs()));
        }
        // The controller takes its settings from the environment too (`COREFORGE_KUBE_API_QPS`…).
        let mut controller: Vec<String> = std::env::vars()
            .filter(|(k, _)| k.starts_with("COREFORGE_") && k != "COREFORGE_CLUSTER_DIR")
            .map(|(k, v)| format!(" {k}={v}"))
            .collect();
        controller.sort();
        command + &controller.concat() + " make bench"
    }
}

/// One measurement: N releases, the floor and coreforge.
#[derive(Serialize)]
pub struct Outcome {
    pub releases: usize,
    pub core_builds: usize,
    pub floor: floor::Floor,
    pub coreforge: run::Run,
}

/// The objects of one measurement, rendered once for both runs: the floor renders its
/// Jobs from the same CoreBuild specs coreforge is given.
pub struct Workload {
    /// Where coreforge runs (the CoreBuilds' catalogs are named after it).
    pub namespace: String,
    /// CoreBuild manifests, `cb-<i>`.
    pub core_builds: Vec<Value>,
    /// What each CoreBuild's simulated build reports: the image seeded in its staging.
    pub digests: Vec<String>,
    /// ImageRelease manifests `r-1-0-<i>`, version `1.0.<i>`, of CoreBuild `cb-<i mod C>`.
    pub releases: Vec<Value>,
}

impl Workload {
    /// Seeds one image per CoreBuild into its staging repository (what a real build would
    /// have pushed) and renders the manifests.
    async fn new(namespace: &str, releases: usize, core_builds: usize) -> anyhow::Result<Self> {
        let mut cbs = Vec::new();
        let mut digests = Vec::new();
        for i in 0..core_builds {
            let name = format!("cb-{i}");
            let repo = |kind: &str| format!("{}/{namespace}/{name}/{kind}", fixtures::REGISTRY);
            let digest = fixtures::seed_image(&repo("staging"))
                .await
                .with_context(|| format!("seeding {} (is the local registry up?)", repo("staging")))?;
            let mut cb = fixtures::local_core_build(&name, namespace, &digest);
            let spec = &mut cb["spec"];
            spec["catalog"]["repository"] = json!(repo("core"));
            spec["catalog"]["stagingRepository"] = json!(repo("staging"));
            spec["catalog"]["channels"] = json!(["1", "latest"]);
            // No lifecycle policy: every release stays Published, so the idle window
            // watches a controller with nothing left to do.
            if let Some(spec) = spec.as_object_mut() {
                spec.remove("lifecycle");
            }
            cbs.push(cb);
            digests.push(digest);
        }
        let releases = (0..releases)
            .map(|i| {
                let mut r =
                    fixtures::release(&format!("r-1-0-{i}"), &format!("cb-{}", i % core_builds), &format!("1.0.{i}"));
                r["spec"]["target"] = json!("Published");
                r
            })
            .collect();
        Ok(Workload { namespace: namespace.to_string(), core_builds: cbs, digests, releases })
    }

    /// Index of the CoreBuild release `i` belongs to.
    pub fn core_build_of(&self, i: usize) -> usize {
        i % self.core_builds.len()
    }
}

/// The namespaces the bench created and has not deleted yet; whatever a failure or an
/// interrupt leaves here is deleted on the way out.
#[derive(Clone, Default)]
pub struct Namespaces(Arc<Mutex<Vec<String>>>);

impl Namespaces {
    /// Creates `name`, labelled, and waits until pods can be created in it (its `default`
    /// ServiceAccount exists).
    pub async fn create(&self, client: &Client, name: &str) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(client.clone());
        let ns: Namespace = serde_json::from_value(json!({
            "metadata": {"name": name, "labels": {NAMESPACE_LABEL: "true"}},
        }))?;
        api.create(&PostParams::default(), &ns).await.with_context(|| format!("creating namespace {name}"))?;
        self.lock().push(name.to_string());
        let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), name);
        let what = format!("the default ServiceAccount of namespace {name}");
        support::wait_for(&accounts, "default", &what, Duration::from_secs(60), |_| true).await?;
        Ok(())
    }

    /// Deletes `name` and waits until it is gone, with everything in it.
    pub async fn delete(&self, client: &Client, name: &str, timeout: Duration) -> anyhow::Result<()> {
        let api: Api<Namespace> = Api::all(client.clone());
        match api.delete(name, &DeleteParams::background()).await {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            Err(e) => return Err(e).with_context(|| format!("deleting namespace {name}")),
        }
        support::wait_deleted(&api, name, &format!("namespace {name} to be deleted"), timeout).await?;
        self.lock().retain(|n| n != name);
        Ok(())
    }

    async fn delete_all(&self, client: &Client) {
        let left = self.lock().clone();
        for name in left {
            eprintln!("== deleting namespace {name}");
            if let Err(e) = self.delete(client, &name, Duration::from_secs(900)).await {
                eprintln!("warning: {e:#}");
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<String>> {
        self.0.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// A short tag that makes this run's namespace names unique.
fn run_tag() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    format!("{:06x}", secs & 0xff_ffff)
}

/// One measurement of `n` releases: the floor, then coreforge, each in a fresh namespace
/// that is deleted (and gone) before the next one starts, so that neither pays for the
/// other's garbage.
async fn measure_size(
    settings: &Settings,
    client: &Client,
    namespaces: &Namespaces,
    n: usize,
) -> anyhow::Result<Outcome> {
    let tag = run_tag();
    let floor_ns = format!("bench-{n}-{tag}-floor");
    let coreforge_ns = format!("bench-{n}-{tag}-coreforge");
    let timeout = settings.timeout(n);
    eprintln!("== N={n}: seeding {} staging images", settings.core_builds);
    let workload = Workload::new(&coreforge_ns, n, settings.core_builds).await?;

    eprintln!("== N={n}: floor in namespace {floor_ns}");
    namespaces.create(client, &floor_ns).await?;
    let floor = floor::run(client, &floor_ns, &workload, timeout).await?;
    eprintln!("== N={n}: floor done in {:.1} s; deleting namespace {floor_ns}", floor.wall_seconds);
    namespaces.delete(client, &floor_ns, timeout).await?;

    eprintln!("== N={n}: coreforge in namespace {coreforge_ns}");
    namespaces.create(client, &coreforge_ns).await?;
    let coreforge = run::run(client, settings, &workload, timeout).await?;
    eprintln!("== N={n}: deleting namespace {coreforge_ns}");
    namespaces.delete(client, &coreforge_ns, timeout).await?;
    Ok(Outcome { releases: n, core_builds: settings.core_builds, floor, coreforge })
}

async fn measure_all(
    settings: &Settings,
    client: &Client,
    namespaces: &Namespaces,
    header: &report::Header,
    done: &mut Vec<Outcome>,
) -> anyhow::Result<()> {
    for &n in &settings.sizes {
        let outcome = measure_size(settings, client, namespaces, n).await.with_context(|| format!("N={n}"))?;
        done.push(outcome);
        // Written after every N, so that a later failure keeps what was measured.
        let path = report::save(header, done)?;
        eprintln!("== N={n} done; results so far in {}", path.display());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    // `cargo bench` passes `--bench`; the settings come from the environment.
    let settings = Settings::from_env()?;
    let client = measure::client().await?;
    let header = report::Header::gather(&client, &settings).await?;
    let namespaces = Namespaces::default();
    let mut done = Vec::new();
    let outcome = tokio::select! {
        r = measure_all(&settings, &client, &namespaces, &header, &mut done) => r,
        _ = tokio::signal::ctrl_c() => Err(anyhow!("interrupted")),
    };
    // What a failure or an interrupt left behind (the controller was killed with its task).
    namespaces.delete_all(&client).await;
    if !done.is_empty() {
        println!("{}", report::render(&header, &done));
    }
    outcome
}
