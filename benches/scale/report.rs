//! The table: one column per N, one row per measure, under a header that says where and
//! how it was measured; saved with the raw numbers in `target/bench/`.

use std::path::PathBuf;

use anyhow::Context;
use jiff::Timestamp;
use kube::Client;

use crate::measure::{self, Counts};
use crate::{Outcome, Settings, support};

/// Where and how the numbers were made.
pub struct Header {
    started: Timestamp,
    machine: String,
    build: String,
    cluster: String,
    command: String,
    /// Where the report is saved: `target/bench/<date>-<Ns>.md`.
    pub file: PathBuf,
}

impl Header {
    pub async fn gather(client: &Client, settings: &Settings) -> anyhow::Result<Self> {
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
        let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
        let mem_kib: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0.0);
        let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let model =
            cpuinfo.lines().find_map(|l| l.strip_prefix("model name")).map(|m| m.trim_start_matches([' ', '\t', ':']));
        let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
        let machine = format!(
            "{cpus} CPUs{}, {:.1} GiB memory, Linux {}",
            model.map(|m| format!(" ({m})")).unwrap_or_default(),
            mem_kib / 1024.0 / 1024.0,
            kernel.trim()
        );
        let git = |args: &[&str]| {
            std::process::Command::new("git")
                .arg("-C")
                .arg(support::repo_root())
                .args(args)
                .output()
                .ok()
                .filter(|o| o.status.success())
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        };
        let revision = git(&["rev-parse", "--short", "HEAD"]).unwrap_or_else(|| "unknown".into());
        let dirty = git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
        let binary = env!("CARGO_BIN_EXE_coreforge");
        // The controller binary is built in the bench's own profile.
        let profile = if cfg!(debug_assertions) { "debug build: not representative" } else { "release build" };
        let build = format!(
            "`{binary}` (coreforge {}, commit {revision}{}), {profile}",
            env!("CARGO_PKG_VERSION"),
            if dirty { " with uncommitted changes" } else { "" },
        );
        let version = client.apiserver_version().await.context("asking the API server its version")?;
        let cluster = format!(
            "local environment: Kubernetes {} (kube-apiserver, kube-controller-manager, kube-scheduler on loopback), \
             pods simulated by kwok, registry {}",
            version.git_version,
            crate::fixtures::REGISTRY
        );
        let started = Timestamp::now();
        let sizes: Vec<String> = settings.sizes.iter().map(ToString::to_string).collect();
        let file = support::repo_root().join("target/bench").join(format!(
            "{}-{}.md",
            started.strftime("%Y%m%d-%H%M%S"),
            sizes.join("-")
        ));
        Ok(Header { started, machine, build, cluster, command: settings.command(), file })
    }
}

fn seconds(s: f64) -> String {
    if s < 10.0 { format!("{s:.2} s") } else { format!("{s:.1} s") }
}

/// `p50 / p99` of `values`.
fn p50_p99(values: &[f64]) -> String {
    match (measure::quantile(values, 0.5), measure::quantile(values, 0.99)) {
        (Some(p50), Some(p99)) => format!("{} / {}", seconds(p50), seconds(p99)),
        _ => "n/a".into(),
    }
}

/// `total (key value, …)`, biggest first, each divided by `per`.
fn breakdown(counts: &Counts, per: f64) -> String {
    let total: f64 = counts.values().sum();
    if total == 0.0 {
        return "0".into();
    }
    let mut items: Vec<(&String, &f64)> = counts.iter().filter(|(_, v)| **v != 0.0).collect();
    items.sort_by(|a, b| b.1.total_cmp(a.1).then(a.0.cmp(b.0)));
    let number = |v: f64| if per == 1.0 { format!("{v}") } else { format!("{:.2}", v / per) };
    let items: Vec<String> = items.into_iter().map(|(k, v)| format!("{k} {}", number(*v))).collect();
    format!("**{}** ({})", number(total), items.join(", "))
}

/// The Markdown report: the header, the table, what the rows mean.
pub fn render(header: &Header, outcomes: &[Outcome]) -> String {
    let mut rows: Vec<(&str, Vec<String>)> = Vec::new();
    let mut row = |name: &'static str, cell: &dyn Fn(&Outcome) -> String| {
        rows.push((name, outcomes.iter().map(cell).collect()));
    };
    row("CoreBuilds", &|o| o.core_builds.to_string());
    row("wall time, coreforge (apply → last Published)", &|o| seconds(o.coreforge.wall_seconds));
    row("… of which kubectl apply", &|o| seconds(o.coreforge.apply_seconds));
    row("last Published → settled: counts and channels written (not in the wall time)", &|o| {
        seconds(o.coreforge.settle_seconds)
    });
    row("wall time, floor (bare Jobs)", &|o| seconds(o.floor.wall_seconds));
    row("ratio coreforge / floor", &|o| format!("{:.2}", o.coreforge.wall_seconds / o.floor.wall_seconds));
    row("release → build Job created, p50 / p99", &|o| p50_p99(&o.coreforge.to_build_job_seconds));
    row("release → publishedAt, p50 / p99", &|o| p50_p99(&o.coreforge.to_published_seconds));
    row("API requests / release, all clients, coreforge run", &|o| {
        breakdown(&measure::by_first_word(&o.coreforge.apiserver_requests), o.releases as f64)
    });
    row("API requests / release, all clients, floor", &|o| {
        breakdown(&measure::by_first_word(&o.floor.apiserver_requests), o.releases as f64)
    });
    row("API requests / release, controller", &|o| match &o.coreforge.controller_requests {
        Some(c) => breakdown(c, o.releases as f64),
        None => "n/a".into(),
    });
    row("controller writes / release (audit log)", &|o| breakdown(&o.coreforge.controller_writes, o.releases as f64));
    row("controller peak RSS", &|o| format!("{:.1} MiB", o.coreforge.usage.peak_rss_kib as f64 / 1024.0));
    row("controller CPU (start → last Published)", &|o| seconds(o.coreforge.usage.cpu_seconds));
    row("idle window", &|o| seconds(o.coreforge.idle.seconds));
    row("idle: controller writes (audit log)", &|o| {
        let idle = &o.coreforge.idle;
        let last = idle.last_write_seconds.map(|s| format!("; the last {} into the window", seconds(s)));
        breakdown(&idle.controller_writes, 1.0) + &last.unwrap_or_default()
    });
    row("idle: controller API requests", &|o| match &o.coreforge.idle.controller_requests {
        Some(c) => breakdown(c, 1.0),
        None => "n/a".into(),
    });
    row("idle: controller CPU", &|o| seconds(o.coreforge.idle.cpu_seconds));
    row("controller alive at the end", &|o| if o.coreforge.alive_at_end { "yes".into() } else { "**no**".into() });

    let mut out = String::new();
    out.push_str("## coreforge scale benchmark\n\n");
    out.push_str(&format!("- date: {}\n", header.started.strftime("%Y-%m-%d %H:%M:%S UTC")));
    out.push_str(&format!("- machine: {}\n", header.machine));
    out.push_str(&format!("- build: {}\n", header.build));
    out.push_str(&format!("- cluster: {}\n", header.cluster));
    out.push_str(&format!("- command: `{}`\n\n", header.command));
    let sizes: Vec<String> = outcomes.iter().map(|o| format!("N={}", o.releases)).collect();
    out.push_str(&format!("| | {} |\n", sizes.join(" | ")));
    out.push_str(&format!("|---|{}\n", "---|".repeat(outcomes.len())));
    for (name, cells) in rows {
        out.push_str(&format!("| {name} | {} |\n", cells.join(" | ")));
    }
    out.push_str(
        "\nThe floor runs the same build and test Jobs with a bare client (each test Job as soon as its build \
         completed). Release → build Job is timed from the audit log (µs); release → publishedAt from the objects' \
         timestamps (whole seconds). API requests of all clients (apiserver_request_total) include the Job \
         controller, the scheduler, kwok and anyone else using the environment at the time; the controller's own \
         come from its coreforge_kube_requests_total. Writes are the controller's (user agent coreforge/) in the \
         run's namespace.\n",
    );
    out
}

/// Writes the report of what was measured so far, with the raw numbers, to the
/// header's file.
pub fn save<'a>(header: &'a Header, outcomes: &[Outcome]) -> anyhow::Result<&'a std::path::Path> {
    let path = header.file.as_path();
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let raw = serde_json::to_string_pretty(outcomes)?;
    std::fs::write(path, format!("{}\n### Raw numbers\n\n```json\n{raw}\n```\n", render(header, outcomes)))
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(path)
}
