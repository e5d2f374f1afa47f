//! The coreforge run: the release build of the controller, the workload's CoreBuilds, then
//! its N ImageReleases applied as a user would, until every one is Published; then the
//! idle window. What it measured comes from the API server (metrics, audit log), the
//! controller's own /metrics, and its process.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use anyhow::{Context, anyhow, bail};
use coreforge::api::{CoreBuild, ImageRelease, Phase, READY};
use coreforge::names;
use futures::StreamExt;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{ListParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::runtime::watcher::{self, Event, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::time::Instant;

use crate::measure::{self, AuditEntry, Counts, ProcessUsage};
use crate::{Settings, Workload, fixtures, support};

/// What the coreforge run measured.
#[derive(Serialize)]
pub struct Run {
    /// Start of the apply → last release seen Published.
    pub wall_seconds: f64,
    /// How long `kubectl apply` took.
    pub apply_seconds: f64,
    /// Last release seen Published → every CoreBuild counting all its releases as
    /// Published (its status and channels are written at most every few seconds) and
    /// every release listing the channels that point at it.
    pub settle_seconds: f64,
    /// Per release: its creation → its build Job's creation (audit log, µs).
    pub to_build_job_seconds: Vec<f64>,
    /// Per release: `creationTimestamp` → `status.publishedAt` (both whole seconds).
    pub to_published_seconds: Vec<f64>,
    /// Requests of every client over the run, by `VERB resource` (`apiserver_request_total`).
    pub apiserver_requests: Counts,
    /// The controller's own count of its requests over the run, by `verb resource`
    /// (`coreforge_kube_requests_total`); `None` when it has no such metric.
    pub controller_requests: Option<Counts>,
    /// The controller's writes over the run, by `resource[/subresource] verb` (audit log).
    pub controller_writes: Counts,
    /// The controller's writes before the apply (CoreBuilds, start-up).
    pub controller_setup_writes: f64,
    /// The controller process at the end of the run.
    pub usage: ProcessUsage,
    /// The idle window after it.
    pub idle: Idle,
    /// Whether the controller was still running at the end.
    pub alive_at_end: bool,
    /// The controller's log.
    pub log: PathBuf,
}

/// The idle window: every release Published and counted so, nothing left to do.
#[derive(Serialize)]
pub struct Idle {
    pub seconds: f64,
    /// The controller's writes, by `resource[/subresource] verb` (audit log).
    pub controller_writes: Counts,
    /// When its last write came, in seconds from the start of the window.
    pub last_write_seconds: Option<f64>,
    /// The controller's requests by `verb resource` (its own metric), if it has one.
    pub controller_requests: Option<Counts>,
    /// CPU the controller used.
    pub cpu_seconds: f64,
}

/// The release build of the controller, run as a process with the admin kubeconfig,
/// watching one namespace. Killed when dropped.
pub struct Controller {
    child: tokio::process::Child,
    pid: u32,
    addr: String,
    log: PathBuf,
}

impl Controller {
    /// Starts it for `namespace`, logging into `log`.
    pub async fn start(namespace: &str, log: PathBuf) -> anyhow::Result<Self> {
        let addr = format!("127.0.0.1:{}", fixtures::free_port()?);
        let file = std::fs::File::create(&log).with_context(|| format!("creating {}", log.display()))?;
        let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_coreforge"))
            .args(["controller", "--namespace", namespace, "--http-addr", &addr])
            .env("KUBECONFIG", support::kubeconfig_path())
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(file.try_clone()?)
            .stderr(file)
            .kill_on_drop(true)
            .spawn()
            .context("starting the coreforge controller")?;
        let pid = child.id().ok_or_else(|| anyhow!("the controller exited at once; see {}", log.display()))?;
        Ok(Controller { child, pid, addr, log })
    }

    /// Waits until `/readyz` answers ok (its caches are synced).
    pub async fn ready(&mut self, timeout: Duration) -> anyhow::Result<()> {
        let url = format!("http://{}/readyz", self.addr);
        let ready = support::eventually("the controller's /readyz", timeout, Duration::from_millis(200), || async {
            Ok(matches!(fixtures::http_get(&url).await?, (200, _)).then_some(()))
        });
        tokio::select! {
            r = ready => r,
            e = self.exited() => Err(e),
        }
    }

    /// The controller's requests by `verb resource`, from its own metric, or `None` when
    /// it has no such metric.
    pub async fn requests(&self) -> anyhow::Result<Option<Counts>> {
        let (code, text) = fixtures::http_get(&format!("http://{}/metrics", self.addr)).await?;
        if code != 200 {
            bail!("the controller's /metrics answered {code}");
        }
        let family = "coreforge_kube_requests_total";
        let declared = text.lines().any(|l| l.starts_with(&format!("# TYPE {family} ")));
        let counts = measure::sum_by(&text, family, &["verb", "resource"]);
        Ok((declared || !counts.is_empty()).then_some(counts))
    }

    pub fn usage(&self) -> anyhow::Result<ProcessUsage> {
        measure::process_usage(self.pid)
    }

    pub fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Resolves when the process exits, with an error that shows the end of its log.
    pub async fn exited(&mut self) -> anyhow::Error {
        let status = self.child.wait().await;
        const TAIL: usize = 40;
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        anyhow!(
            "the controller exited ({}); last {TAIL} lines of {}:\n{}",
            status.map(|s| s.to_string()).unwrap_or_else(|e| e.to_string()),
            self.log.display(),
            lines[lines.len().saturating_sub(TAIL)..].join("\n")
        )
    }

    /// SIGTERM, and SIGKILL if it has not exited 30 s later.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if !self.alive() {
            return Ok(());
        }
        std::process::Command::new("kill").args(["-TERM", &self.pid.to_string()]).status()?;
        if tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await.is_err() {
            eprintln!("warning: the controller did not stop within 30 s of SIGTERM; killing it");
            self.child.kill().await?;
        }
        Ok(())
    }
}

/// Watches every object of `api` until `done` holds for the newest version of each (by
/// name). Fails early when `failed` says an object cannot get there or the controller
/// exits, and at `deadline` with `stuck` saying what was last seen.
async fn watch_until<K>(
    api: &Api<K>,
    controller: &mut Controller,
    deadline: Instant,
    done: impl Fn(&BTreeMap<String, K>) -> bool,
    failed: impl Fn(&K) -> Option<String>,
    stuck: impl Fn(&BTreeMap<String, K>) -> String,
) -> anyhow::Result<BTreeMap<String, K>>
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + 'static,
{
    let mut events = watcher(api.clone(), watcher::Config::default()).default_backoff().boxed();
    let mut seen = BTreeMap::new();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(Event::Apply(o) | Event::InitApply(o))) => {
                    if let Some(why) = failed(&o) {
                        bail!(why);
                    }
                    seen.insert(o.name_any(), o);
                }
                Some(Ok(Event::Delete(o))) => {
                    seen.remove(&o.name_any());
                }
                Some(Ok(Event::Init | Event::InitDone)) => {}
                Some(Err(e)) => eprintln!("watching {} (retried): {e}", api.resource_url()),
                None => bail!("the watch of {} ended", api.resource_url()),
            },
            e = controller.exited() => return Err(e),
            _ = tokio::time::sleep_until(deadline) => bail!("{}", stuck(&seen)),
        }
        if done(&seen) {
            return Ok(seen);
        }
    }
}

/// Watches `api` until it holds `count` objects and every one is `ok`, for at most
/// two minutes; a timeout says how many are not: "{behind} of {count} {not_ok}".
async fn watch_until_all<K>(
    api: &Api<K>,
    controller: &mut Controller,
    count: usize,
    ok: impl Fn(&K) -> bool,
    not_ok: &str,
) -> anyhow::Result<BTreeMap<String, K>>
where
    K: Resource + Clone + std::fmt::Debug + DeserializeOwned + Send + 'static,
{
    watch_until(
        api,
        controller,
        Instant::now() + Duration::from_secs(120),
        |seen| seen.len() == count && seen.values().all(&ok),
        |_| None,
        |seen| {
            let behind = count.saturating_sub(seen.values().filter(|o| ok(o)).count());
            format!("{behind} of {count} {not_ok}")
        },
    )
    .await
}

fn phase(r: &ImageRelease) -> Option<Phase> {
    r.status.as_ref().and_then(|s| s.phase)
}

/// Where the releases that are not Published are: `phase/Ready reason count, ...`.
fn not_published(n: usize, seen: &BTreeMap<String, ImageRelease>) -> String {
    let mut by_state: BTreeMap<String, usize> = BTreeMap::new();
    for r in seen.values().filter(|r| phase(r) != Some(Phase::Published)) {
        let reason = r
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == READY))
            .map(|c| c.reason.as_str())
            .unwrap_or("no Ready condition");
        let state = phase(r).map(|p| p.to_string()).unwrap_or_else(|| "no phase".into());
        *by_state.entry(format!("{state} ({reason})")).or_default() += 1;
    }
    let missing = n.saturating_sub(seen.len());
    if missing > 0 {
        by_state.insert("not seen at all".into(), missing);
    }
    let stuck: usize = by_state.values().sum();
    let list: Vec<String> = by_state.iter().map(|(k, v)| format!("{v} {k}")).collect();
    format!("{stuck} of {n} releases are not Published: {}", list.join(", "))
}

/// The apply a user makes: one `kubectl apply --server-side` of one multi-document file.
async fn apply(ns: &str, file: &std::path::Path) -> anyhow::Result<Duration> {
    let start = Instant::now();
    let path = file.to_str().ok_or_else(|| anyhow!("{} is not UTF-8", file.display()))?;
    support::run(support::kubectl().args(["apply", "--server-side", "-n", ns, "-f", path])).await?;
    Ok(start.elapsed())
}

/// Runs coreforge on `workload` (its namespace exists and is empty).
pub async fn run(client: &Client, settings: &Settings, workload: &Workload, timeout: Duration) -> anyhow::Result<Run> {
    let ns = workload.namespace.as_str();
    let n = workload.releases.len();
    let dir = support::repo_root().join("target/bench");
    std::fs::create_dir_all(&dir)?;

    let mut controller = Controller::start(ns, dir.join(format!("{ns}-controller.log"))).await?;
    controller.ready(Duration::from_secs(60)).await?;

    // The CoreBuilds first, settled (each has a status for its generation), so that the
    // run starts from a controller with nothing to do.
    let cbs: Api<CoreBuild> = Api::namespaced(client.clone(), ns);
    for cb in &workload.core_builds {
        cbs.create(&PostParams::default(), &serde_json::from_value(cb.clone())?)
            .await
            .context("creating a CoreBuild")?;
    }
    let c = workload.core_builds.len();
    let settled = |cb: &CoreBuild| {
        cb.status.as_ref().and_then(|s| s.observed_generation).is_some_and(|g| Some(g) == cb.metadata.generation)
    };
    watch_until(
        &cbs,
        &mut controller,
        Instant::now() + Duration::from_secs(120),
        |seen| seen.len() == c && seen.values().all(settled),
        |_| None,
        |seen| {
            format!(
                "{} of {c} CoreBuilds have no status for their generation",
                c - seen.values().filter(|cb| settled(cb)).count()
            )
        },
    )
    .await?;

    let file = dir.join(format!("{ns}-releases.yaml"));
    let mut text = String::new();
    for r in &workload.releases {
        text.push_str("---\n");
        text.push_str(&serde_yaml::to_string(r)?);
    }
    std::fs::write(&file, text)?;

    let irs: Api<ImageRelease> = Api::namespaced(client.clone(), ns);
    let requests_before = measure::apiserver_requests(client).await?;
    let controller_before = controller.requests().await?;
    eprintln!("   applying {n} ImageReleases ({})", file.display());
    let applied_at = Timestamp::now();
    let start = Instant::now();
    let published = |r: &ImageRelease| phase(r) == Some(Phase::Published);
    let failed = |r: &ImageRelease| {
        (phase(r) == Some(Phase::Failed)).then(|| {
            let ready = r.status.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == READY));
            let why = ready.map(|c| format!("{}: {}", c.reason, c.message)).unwrap_or_default();
            format!("release {} Failed: {why}", r.name_any())
        })
    };
    let (apply_time, releases) = tokio::try_join!(
        apply(ns, &file),
        watch_until(
            &irs,
            &mut controller,
            start + timeout,
            |seen| seen.len() == n && seen.values().all(published),
            failed,
            |seen| format!("timed out after {timeout:?}: {}", not_published(n, seen)),
        )
    )?;
    let wall = start.elapsed();
    // Settled: every CoreBuild counts its releases Published, and every release lists
    // the channels that point at it.
    let mut expected = std::collections::HashMap::<String, i32>::new();
    for r in &workload.releases {
        *expected.entry(r["spec"]["coreBuild"].as_str().unwrap_or_default().to_string()).or_default() += 1;
    }
    let counted = |cb: &CoreBuild| {
        let published = cb.status.as_ref().and_then(|s| s.releases.as_ref()).map(|r| r.published);
        published.is_some_and(|p| expected.get(&cb.name_any()) == Some(&p))
    };
    let settled_core_builds =
        watch_until_all(&cbs, &mut controller, c, counted, "CoreBuilds do not count all their releases Published")
            .await?;
    let channels_at = |r: &ImageRelease| {
        settled_core_builds
            .get(&r.spec.core_build)
            .and_then(|cb| cb.status.as_ref())
            .map_or(0, |s| s.channels.iter().filter(|ch| ch.version == r.spec.version).count())
    };
    // `status.published`: the version tag, then one reference per channel.
    let lists_its_channels =
        |r: &ImageRelease| r.status.as_ref().is_some_and(|s| s.published.len() == 1 + channels_at(r));
    watch_until_all(
        &irs,
        &mut controller,
        n,
        lists_its_channels,
        "releases do not list the channels that point at them",
    )
    .await?;
    let settle = start.elapsed() - wall;
    let idle_from = Timestamp::now();
    let requests_after = measure::apiserver_requests(client).await?;
    let controller_after = controller.requests().await?;
    let usage = controller.usage()?;
    eprintln!(
        "   all {n} Published in {:.1} s, counted so {:.1} s later; idle for {} s",
        wall.as_secs_f64(),
        settle.as_secs_f64(),
        settings.idle.as_secs()
    );

    tokio::select! {
        _ = tokio::time::sleep(settings.idle) => {}
        e = controller.exited() => return Err(e.context("during the idle window")),
    }
    let idle_until = Timestamp::now();
    let controller_idle = controller.requests().await?;
    let idle_usage = controller.usage()?;
    let alive_at_end = controller.alive();

    let jobs: Api<Job> = Api::namespaced(client.clone(), ns);
    let job_list = jobs.list(&ListParams::default()).await?;
    let audit = measure::audit(ns)?;
    let log = controller.log.clone();
    controller.stop().await?;

    let writes_between = |from: Timestamp, until: Timestamp| {
        let mut counts = Counts::new();
        for e in audit.iter().filter(|e| e.by_controller() && e.at >= from && e.at < until) {
            *counts.entry(e.kind()).or_default() += 1.0;
        }
        counts
    };
    let setup_writes = audit.iter().filter(|e| e.by_controller() && e.at < applied_at).count() as f64;
    Ok(Run {
        wall_seconds: wall.as_secs_f64(),
        apply_seconds: apply_time.as_secs_f64(),
        settle_seconds: settle.as_secs_f64(),
        to_build_job_seconds: to_build_job(&releases, &job_list.items, &audit),
        to_published_seconds: releases
            .values()
            .filter_map(|r| {
                let created = r.metadata.creation_timestamp.as_ref()?.0;
                let published = r.status.as_ref()?.published_at.as_ref()?.0;
                Some(measure::seconds_between(created, published))
            })
            .collect(),
        apiserver_requests: measure::delta(&requests_before, &requests_after),
        controller_requests: controller_after
            .as_ref()
            .map(|a| measure::delta(&controller_before.clone().unwrap_or_default(), a)),
        controller_writes: writes_between(applied_at, idle_from),
        controller_setup_writes: setup_writes,
        usage,
        idle: Idle {
            seconds: measure::seconds_between(idle_from, idle_until),
            controller_writes: writes_between(idle_from, idle_until),
            last_write_seconds: audit
                .iter()
                .filter(|e| e.by_controller() && e.at >= idle_from && e.at < idle_until)
                .map(|e| measure::seconds_between(idle_from, e.at))
                .reduce(f64::max),
            controller_requests: controller_idle
                .as_ref()
                .map(|i| measure::delta(&controller_after.clone().unwrap_or_default(), i)),
            cpu_seconds: idle_usage.cpu_seconds - usage.cpu_seconds,
        },
        alive_at_end,
        log,
    })
}

/// Per release, seconds from its creation to its build Job's creation. Both from the
/// audit log (microseconds) where it has them: the first write of the release (kubectl's
/// apply) and the create of the Job; else from the objects' creationTimestamps (seconds).
fn to_build_job(releases: &BTreeMap<String, ImageRelease>, jobs: &[Job], audit: &[AuditEntry]) -> Vec<f64> {
    let first = |resource: &str, name: &str| {
        audit.iter().find(|e| e.resource == resource && e.subresource.is_none() && e.name == name).map(|e| e.at)
    };
    let job_created: BTreeMap<String, Timestamp> =
        jobs.iter().filter_map(|j| Some((j.name_any(), j.metadata.creation_timestamp.as_ref()?.0))).collect();
    releases
        .values()
        .filter_map(|r| {
            let name = r.name_any();
            let job = names::build_job(&name, 1);
            let created = first("imagereleases", &name).or(r.metadata.creation_timestamp.as_ref().map(|t| t.0))?;
            let job_at = first("jobs", &job).or(job_created.get(&job).copied())?;
            Some(measure::seconds_between(created, job_at))
        })
        .collect()
}
