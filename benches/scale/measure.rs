//! Where the numbers come from: the API server's metrics and audit log, a process's
//! `/proc` entries, and Prometheus text.

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::{Context, anyhow};
use jiff::Timestamp;
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::Value;

use crate::support;

/// Requests (or writes) by key: a verb, or `resource verb`.
pub type Counts = BTreeMap<String, f64>;

/// A cluster-admin client of the local environment whose requests the audit log names
/// as the bench's (`coreforge-bench`).
pub async fn client() -> anyhow::Result<Client> {
    let path = support::kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path)
        .with_context(|| format!("reading {} (is the local environment up? make cluster-up)", path.display()))?;
    let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
    config.headers.push((http::header::USER_AGENT, http::HeaderValue::from_static("coreforge-bench")));
    Ok(Client::try_from(config)?)
}

/// The samples of `metric` in Prometheus text: labels and value.
pub fn samples(text: &str, metric: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some(rest) = line.strip_prefix(metric) else { continue };
        let (labels, value) = match rest.strip_prefix('{') {
            Some(inner) => match inner.rsplit_once('}') {
                Some((labels, value)) => (parse_labels(labels), value),
                None => continue,
            },
            // Another metric whose name starts with this one's.
            None if !rest.starts_with(' ') => continue,
            None => (BTreeMap::new(), rest),
        };
        // `value [timestamp]`
        if let Some(Ok(v)) = value.split_whitespace().next().map(str::parse::<f64>) {
            out.push((labels, v));
        }
    }
    out
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut rest = text;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, other)) => value.push(other),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        labels.insert(key.trim_start_matches(',').trim().to_string(), value);
        rest = &after[end..];
    }
    labels
}

/// Sums the samples of `metric` by the values of `labels` (joined with a space).
pub fn sum_by(text: &str, metric: &str, labels: &[&str]) -> Counts {
    let mut counts = Counts::new();
    for (l, v) in samples(text, metric) {
        let key: Vec<&str> = labels.iter().map(|k| l.get(*k).map(String::as_str).unwrap_or("")).collect();
        *counts.entry(key.join(" ")).or_default() += v;
    }
    counts
}

/// Every client's requests the API server has answered since it started, by
/// `VERB resource[/subresource]` (`apiserver_request_total`).
pub async fn apiserver_requests(client: &Client) -> anyhow::Result<Counts> {
    let request = http::Request::get("/metrics").body(Vec::new())?;
    let text = client.request_text(request).await.context("reading the API server's /metrics")?;
    let mut counts = Counts::new();
    for (labels, v) in samples(&text, "apiserver_request_total") {
        let label = |k: &str| labels.get(k).map(String::as_str).unwrap_or_default();
        let key = match label("subresource") {
            "" => format!("{} {}", label("verb"), label("resource")),
            sub => format!("{} {}/{sub}", label("verb"), label("resource")),
        };
        *counts.entry(key).or_default() += v;
    }
    if counts.is_empty() {
        return Err(anyhow!("the API server's /metrics has no apiserver_request_total"));
    }
    Ok(counts)
}

/// `after - before`, key by key (a key missing before counts from 0).
pub fn delta(before: &Counts, after: &Counts) -> Counts {
    after
        .iter()
        .map(|(k, v)| (k.clone(), v - before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v != 0.0)
        .collect()
}

/// Counts summed by the first word of their key (`get configmaps` → `get`).
pub fn by_first_word(counts: &Counts) -> Counts {
    let mut out = Counts::new();
    for (k, v) in counts {
        *out.entry(k.split(' ').next().unwrap_or_default().to_string()).or_default() += v;
    }
    out
}

/// Peak resident memory and CPU time of a running process.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct ProcessUsage {
    /// `VmHWM`, in KiB.
    pub peak_rss_kib: u64,
    /// User and system CPU time, in seconds.
    pub cpu_seconds: f64,
}

/// Reads [`ProcessUsage`] of `pid` from `/proc`.
pub fn process_usage(pid: u32) -> anyhow::Result<ProcessUsage> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let peak_rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow!("/proc/{pid}/status has no VmHWM"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3, `state`;
    // utime and stime are fields 14 and 15.
    let fields: Vec<&str> = stat.rsplit_once(')').map(|(_, f)| f.split_whitespace().collect()).unwrap_or_default();
    let ticks = |field: usize| -> anyhow::Result<f64> {
        Ok(fields.get(field - 3).ok_or_else(|| anyhow!("/proc/{pid}/stat is too short"))?.parse::<f64>()?)
    };
    let cpu_seconds = (ticks(14)? + ticks(15)?) / clock_ticks_per_second();
    Ok(ProcessUsage { peak_rss_kib, cpu_seconds })
}

fn clock_ticks_per_second() -> f64 {
    std::process::Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8_lossy(&o.stdout).trim().parse().ok())
        .unwrap_or(100.0)
}

/// One request in the API server's audit log (which records writes only).
#[derive(Clone, Debug)]
pub struct AuditEntry {
    pub at: Timestamp,
    pub user_agent: String,
    pub verb: String,
    pub resource: String,
    pub subresource: Option<String>,
    pub name: String,
}

impl AuditEntry {
    /// `resource[/subresource] verb`, e.g. `imagereleases/status patch`.
    pub fn kind(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub} {}", self.resource, self.verb),
            None => format!("{} {}", self.resource, self.verb),
        }
    }

    /// Whether the coreforge controller made it (every request of it carries this agent).
    pub fn by_controller(&self) -> bool {
        self.user_agent.starts_with("coreforge/")
    }
}

/// Every audited request on objects in `namespace`, oldest first, from the audit log and
/// any rotated parts of it.
pub fn audit(namespace: &str) -> anyhow::Result<Vec<AuditEntry>> {
    let dir = support::cluster_dir().join("logs");
    let mut entries = Vec::new();
    let needle = format!("\"namespace\":\"{namespace}\"");
    for file in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
        let path = file?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or_default();
        if name.starts_with("audit") && name.ends_with(".log") {
            read_audit(&path, namespace, &needle, &mut entries)?;
        }
    }
    entries.sort_by_key(|e| e.at);
    Ok(entries)
}

fn read_audit(path: &Path, namespace: &str, needle: &str, out: &mut Vec<AuditEntry>) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    for line in text.lines().filter(|l| l.contains(needle)) {
        let Ok(e) = serde_json::from_str::<Value>(line) else { continue };
        let object = &e["objectRef"];
        if object["namespace"].as_str() != Some(namespace) {
            continue;
        }
        let Some(at) = e["requestReceivedTimestamp"].as_str().and_then(|t| t.parse().ok()) else { continue };
        let text = |v: &Value| v.as_str().unwrap_or_default().to_string();
        out.push(AuditEntry {
            at,
            user_agent: text(&e["userAgent"]),
            verb: text(&e["verb"]),
            resource: text(&object["resource"]),
            subresource: object["subresource"].as_str().map(str::to_string),
            name: text(&object["name"]),
        });
    }
    Ok(())
}

/// The value at quantile `q` (nearest rank) of `values`, or `None` when there are none.
pub fn quantile(values: &[f64], q: f64) -> Option<f64> {
    let mut sorted: Vec<f64> = values.iter().copied().filter(|v| v.is_finite()).collect();
    sorted.sort_by(f64::total_cmp);
    if sorted.is_empty() {
        return None;
    }
    let rank = (q * sorted.len() as f64).ceil().max(1.0) as usize;
    Some(sorted[rank.min(sorted.len()) - 1])
}

/// Seconds from `a` to `b`.
pub fn seconds_between(a: Timestamp, b: Timestamp) -> f64 {
    b.duration_since(a).as_secs_f64()
}
