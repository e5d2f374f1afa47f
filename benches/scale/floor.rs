//! The floor: the Jobs coreforge would run for N releases, run by a bare client that does
//! nothing else. Each build Job is created at once, each test Job as soon as its build Job
//! completed; done when every test Job completed. What it costs is what the Job
//! controller, the scheduler and the (simulated) nodes cost; no controller can beat it.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use coreforge::api::{CoreBuildSpec, ImageRelease, LABEL_STEP};
use coreforge::jobs;
use coreforge::names::{self, Step};
use coreforge::snapshot::{self, Snapshot};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::Job;
use kube::api::PostParams;
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, watcher};
use kube::{Api, Client, ResourceExt};
use serde::Serialize;
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Workload;
use crate::measure::{self, Counts};

/// Creates at most this many Jobs at a time (as many connections to the API server).
const CREATE_CONCURRENCY: usize = 16;

/// What the floor measured.
#[derive(Serialize)]
pub struct Floor {
    /// First create → last test Job seen complete.
    pub wall_seconds: f64,
    /// First create → every build Job created.
    pub build_jobs_created_seconds: f64,
    /// Requests of every client over the run, by `VERB resource` (`apiserver_request_total`).
    pub apiserver_requests: Counts,
}

/// The Jobs of release `i` of `workload`, in namespace `ns`: rendered by coreforge's own
/// functions from a release and a snapshot made of the same CoreBuild spec coreforge is
/// given, without the owner reference (there is no release to own them).
fn jobs_of(workload: &Workload, ns: &str, i: usize) -> anyhow::Result<(Job, Job)> {
    let mut release: ImageRelease = serde_json::from_value(workload.releases[i].clone())?;
    release.metadata.namespace = Some(ns.to_string());
    // The staging tag carries (part of) the release's uid.
    release.metadata.uid = Some(format!("{i:08x}-0000-4000-8000-000000000000"));
    let cb = &workload.core_builds[workload.core_build_of(i)];
    let spec: CoreBuildSpec = serde_json::from_value(cb["spec"].clone()).context("the CoreBuild spec")?;
    let snapshot = Snapshot {
        name: names::snapshot(&release.name_any(), 1),
        attempt: 1,
        core_build_generation: 1,
        containerfile: cb["spec"]["blueprint"]["containerfile"].as_str().unwrap_or_default().to_string(),
        builder_image: snapshot::builder_image(&spec, snapshot::DEFAULT_BUILDER_IMAGE).to_string(),
        user_namespace: false,
        spec,
    };
    let staged =
        format!("{}@{}", snapshot.spec.catalog.staging_repository, workload.digests[workload.core_build_of(i)]);
    let mut build = jobs::build_job(&release, &snapshot);
    // The seeded image's config names no user, as coreforge reads it from staging.
    let mut test = jobs::test_job(&release, &snapshot, &staged, None);
    build.metadata.owner_references = None;
    test.metadata.owner_references = None;
    Ok((build, test))
}

/// Whether a Job finished: `Some(Ok)` complete, `Some(Err(why))` failed.
fn finished(job: &Job) -> Option<Result<(), String>> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let holds = |t: &str| conditions.iter().find(|c| c.type_ == t && c.status == "True");
    if holds("Complete").is_some() {
        return Some(Ok(()));
    }
    holds("Failed")
        .map(|c| Err(format!("{}: {}", c.reason.clone().unwrap_or_default(), c.message.clone().unwrap_or_default())))
}

/// Runs the floor for every release of `workload` in namespace `ns`.
pub async fn run(client: &Client, ns: &str, workload: &Workload, timeout: Duration) -> anyhow::Result<Floor> {
    let n = workload.releases.len();
    let mut builds = Vec::with_capacity(n);
    let mut tests = HashMap::with_capacity(n);
    for i in 0..n {
        let (build, test) = jobs_of(workload, ns, i)?;
        tests.insert(build.name_any(), test);
        builds.push(build);
    }
    let api: Api<Job> = Api::namespaced(client.clone(), ns);
    let mut events = watcher(api.clone(), watcher::Config::default()).default_backoff().applied_objects().boxed();

    let before = measure::apiserver_requests(client).await?;
    let start = Instant::now();
    let deadline = start + timeout;
    // Every create runs as a task: the build Jobs in one (at most CREATE_CONCURRENCY at a
    // time), each test Job in its own as soon as its build completed. The build task
    // reports when it is done.
    let mut creates: JoinSet<anyhow::Result<Option<Duration>>> = JoinSet::new();
    {
        let api = api.clone();
        creates.spawn(async move {
            futures::stream::iter(builds)
                .map(|job| {
                    let api = api.clone();
                    async move {
                        api.create(&PostParams::default(), &job)
                            .await
                            .with_context(|| format!("creating Job {}", job.name_any()))
                    }
                })
                .buffer_unordered(CREATE_CONCURRENCY)
                .try_for_each(|_| async { Ok(()) })
                .await?;
            Ok(Some(start.elapsed()))
        });
    }
    let mut builds_created = None;
    let mut built = HashSet::new();
    let mut tested = HashSet::new();
    while tested.len() < n {
        tokio::select! {
            event = events.next() => {
                let job = match event {
                    Some(Ok(job)) => job,
                    Some(Err(e)) => {
                        eprintln!("watching Jobs in {ns} (retried): {e}");
                        continue;
                    }
                    None => bail!("the watch of Jobs in {ns} ended"),
                };
                let name = job.name_any();
                match finished(&job) {
                    None => {}
                    Some(Err(why)) => bail!("Job {name} failed: {why}"),
                    Some(Ok(())) => {
                        let step = job.labels().get(LABEL_STEP).map(String::as_str);
                        if step == Some(Step::Build.as_str()) && built.insert(name.clone()) {
                            let test = tests.remove(&name).ok_or_else(|| anyhow!("no test Job for {name}"))?;
                            let api = api.clone();
                            creates.spawn(async move {
                                api.create(&PostParams::default(), &test).await.with_context(|| format!("creating Job {}", test.name_any()))?;
                                Ok(None)
                            });
                        } else if step == Some(Step::Test.as_str()) {
                            tested.insert(name);
                        }
                    }
                }
            }
            Some(created) = creates.join_next() => {
                if let Some(elapsed) = created.context("a task creating Jobs")?? {
                    builds_created = Some(elapsed);
                }
            }
            _ = tokio::time::sleep_until(deadline) => bail!(
                "the floor timed out after {timeout:?}: of {n} releases, {} build Jobs and {} test Jobs have not completed \
                 (all build Jobs created: {}; {} test Jobs created)",
                n - built.len(),
                n - tested.len(),
                if builds_created.is_some() { "yes" } else { "no" },
                built.len(),
            ),
        }
    }
    let wall = start.elapsed();
    let after = measure::apiserver_requests(client).await?;
    // Every test Job completed, so every create returned.
    while let Some(created) = creates.join_next().await {
        if let Some(elapsed) = created.context("a task creating Jobs")?? {
            builds_created = Some(elapsed);
        }
    }
    Ok(Floor {
        wall_seconds: wall.as_secs_f64(),
        build_jobs_created_seconds: builds_created.unwrap_or_default().as_secs_f64(),
        apiserver_requests: measure::delta(&before, &after),
    })
}
