//! Shared helpers for the integration tests that run against the local control
//! plane (`tests/cluster/`, see its README).
//!
//! Every integration test file includes this with `mod support;`. A typical test:
//!
//! ```ignore
//! #[tokio::test]
//! async fn job_completes() -> anyhow::Result<()> {
//!     support::with_namespace("job_completes", |client, ns| async move {
//!         let jobs: Api<Job> = Api::namespaced(client, &ns);
//!         jobs.create(&PostParams::default(), &job).await?;
//!         support::wait_for(&jobs, "demo", "job to complete", secs(60), |j| ...).await?;
//!         Ok(())
//!     })
//!     .await
//! }
//! ```
//!
//! Nothing here sleeps and hopes: waiting is done by watching
//! ([`wait_for`], [`wait_deleted`]) or, for what cannot be watched, by polling
//! with a deadline ([`eventually`]). Every timeout error says what was awaited
//! and what was last seen.

// Each test file uses a different subset of these helpers.
#![allow(dead_code)]

use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, anyhow, bail};
use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{DeleteParams, PostParams};
use kube::config::{AuthInfo, KubeConfigOptions, Kubeconfig};
use kube::runtime::wait::{await_condition, conditions};
use kube::{Api, Client, Config, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Label put on every namespace created by [`with_namespace`], so leftovers
/// (e.g. kept with `COREFORGE_KEEP_NAMESPACES=1`) are easy to find and clean:
/// `kubectl delete ns -l coreforge.dev/test=true`.
pub const TEST_NAMESPACE_LABEL: &str = "coreforge.dev/test";

/// Shorthand for `Duration::from_secs`.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// The repository root (where Cargo.toml is).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Where tests keep what they produce: controller logs (`<namespace>-<n>.log`),
/// per-namespace kubeconfigs, scratch files.
pub fn test_logs() -> PathBuf {
    repo_root().join("target").join("test-logs")
}

/// The state directory of the local control plane; `COREFORGE_CLUSTER_DIR`
/// overrides it, as for the scripts in tests/cluster.
pub fn cluster_dir() -> PathBuf {
    match std::env::var_os("COREFORGE_CLUSTER_DIR") {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir),
        _ => repo_root().join("target").join("cluster"),
    }
}

/// The cluster-admin kubeconfig written by `tests/cluster/up.sh`.
pub fn kubeconfig_path() -> PathBuf {
    cluster_dir().join("kubeconfig")
}

/// A pinned version from `tests/cluster/versions.env`, e.g.
/// `pinned_version("KUBERNETES_VERSION")` is `"v1.33.13"`.
pub fn pinned_version(name: &str) -> anyhow::Result<String> {
    let path = repo_root().join("tests/cluster/versions.env");
    let text = std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    text.lines()
        .filter_map(|line| line.trim().split_once('='))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim().trim_matches('"').to_string())
        .ok_or_else(|| anyhow!("{name} is not set in {}", path.display()))
}

/// `kubectl` from the cluster's cache, pointed at the local control plane.
/// Call [`client`] (or `ensure_cluster`) first so that it exists.
pub fn kubectl() -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(cluster_dir().join("bin").join("kubectl"));
    cmd.env("KUBECONFIG", kubeconfig_path()).kill_on_drop(true);
    cmd
}

/// Starts the local control plane if needed, once per test process.
///
/// This runs `tests/cluster/up.sh`, which returns in well under a second when
/// every component is already up and healthy (it checks each one, not just the
/// apiserver), replaces a crashed cluster, and builds the binaries on the very
/// first run. Tests running in parallel share one attempt; if it fails, they
/// all fail with its output.
pub async fn ensure_cluster() -> anyhow::Result<()> {
    static UP: OnceLock<Result<(), String>> = OnceLock::new();
    // The first caller runs up.sh on a blocking thread; concurrent callers
    // block on the OnceLock (each #[tokio::test] has a runtime of its own, so
    // nothing else is starved meanwhile).
    let outcome = tokio::task::spawn_blocking(|| UP.get_or_init(run_up_script).clone())
        .await
        .context("the task starting the cluster panicked")?;
    outcome.map_err(|e| anyhow!(e))
}

fn run_up_script() -> Result<(), String> {
    let script = repo_root().join("tests/cluster/up.sh");
    let output = std::process::Command::new(&script)
        .current_dir(repo_root())
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("could not run {}: {e}", script.display()))?;
    if output.status.success() {
        return Ok(());
    }
    Err(format!(
        "{} failed ({}); its output:\n{}{}",
        script.display(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
    ))
}

/// The client configuration for the local control plane (cluster-admin).
pub async fn config() -> anyhow::Result<Config> {
    ensure_cluster().await?;
    let path = kubeconfig_path();
    let kubeconfig = Kubeconfig::read_from(&path).with_context(|| format!("reading {}", path.display()))?;
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .with_context(|| format!("loading {}", path.display()))
}

/// A cluster-admin client for the local control plane, starting it if needed.
///
/// A fresh client per call: a `kube::Client` is bound to the tokio runtime it
/// was created on, and every `#[tokio::test]` has its own runtime.
pub async fn client() -> Client {
    try_client().await.expect("the local control plane is not available")
}

/// Like [`client`], returning the error instead of panicking.
pub async fn try_client() -> anyhow::Result<Client> {
    Client::try_from(config().await?).context("building the client")
}

/// A client that authenticates with a bearer token only (e.g. a ServiceAccount
/// token from a TokenRequest), to test what a least-privileged identity can do.
pub async fn client_with_token(token: &str) -> anyhow::Result<Client> {
    let mut config = config().await?;
    config.auth_info = AuthInfo { token: Some(token.to_string().into()), ..AuthInfo::default() };
    Client::try_from(config).context("building the token client")
}

/// A unique DNS-1123 label for a test namespace: `t-<test name>-<suffix>`.
pub fn unique_namespace_name(test_name: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let mut slug = String::new();
    for c in test_name.chars() {
        let c = c.to_ascii_lowercase();
        if c.is_ascii_lowercase() || c.is_ascii_digit() {
            slug.push(c);
        } else if !slug.ends_with('-') {
            slug.push('-');
        }
    }
    let slug: String = slug.trim_matches('-').chars().take(40).collect();
    let slug = slug.trim_end_matches('-');
    let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
    let mix = (nanos as u64)
        ^ (u64::from(std::process::id()) << 32)
        ^ u64::from(COUNTER.fetch_add(1, Ordering::Relaxed)).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    let suffix = format!("{:08x}", (mix ^ (mix >> 29)) as u32);
    if slug.is_empty() { format!("t-{suffix}") } else { format!("t-{slug}-{suffix}") }
}

/// Runs `body` in a throwaway namespace and deletes the namespace afterwards,
/// whatever happened.
///
/// The namespace is unique (see [`unique_namespace_name`]), labelled
/// `coreforge.dev/test=true`, and its `default` ServiceAccount exists before
/// `body` starts (pods cannot be created before that). The body runs as its
/// own task so that a panic is caught, the namespace still deleted, and the
/// panic then resumed; an error is returned with the namespace name added.
///
/// Set `COREFORGE_KEEP_NAMESPACES=1` to keep the namespace of a failed test
/// for inspection.
pub async fn with_namespace<F, Fut>(test_name: &str, body: F) -> anyhow::Result<()>
where
    F: FnOnce(Client, String) -> Fut,
    Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let client = try_client().await?;
    let ns = create_namespace(&client, test_name).await?;

    let outcome = tokio::spawn(body(client.clone(), ns.clone())).await;

    let failed = !matches!(outcome, Ok(Ok(())));
    if failed {
        print_controller_logs(&ns);
    }
    let keep = failed && std::env::var_os("COREFORGE_KEEP_NAMESPACES").is_some_and(|v| v != "0");
    if keep {
        eprintln!("keeping namespace {ns} of failed test {test_name} (COREFORGE_KEEP_NAMESPACES)");
    } else if let Err(e) = delete_namespace(&client, &ns).await {
        eprintln!("warning: could not delete namespace {ns}: {e:#}");
    }

    match outcome {
        Ok(result) => result.with_context(|| format!("test {test_name} in namespace {ns}")),
        Err(join_error) if join_error.is_panic() => std::panic::resume_unwind(join_error.into_panic()),
        Err(join_error) => Err(anyhow!("test {test_name} in namespace {ns} was cancelled: {join_error}")),
    }
}

/// The log of the `n`th controller a test started in `namespace` (counting from 0).
pub fn controller_log(namespace: &str, n: usize) -> PathBuf {
    test_logs().join(format!("{namespace}-{n}.log"))
}

/// Prints the end of every controller log of `namespace`, so a failed test's output
/// says what the controller was doing (the whole logs stay under [`test_logs`]).
fn print_controller_logs(namespace: &str) {
    const TAIL: usize = 40;
    let logs = (0..).map(|n| controller_log(namespace, n)).take_while(|p| p.exists());
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        // Every reconcile ends with a debug line "reconciled"; what it did is in the others.
        let lines: Vec<&str> = text.lines().filter(|l| !l.contains(" reconciled release=")).collect();
        eprintln!("---- last {TAIL} lines of {} (without \"reconciled\" lines) ----", log.display());
        for line in &lines[lines.len().saturating_sub(TAIL)..] {
            eprintln!("{line}");
        }
    }
}

/// Creates a uniquely named, labelled namespace and waits until pods can be
/// created in it (its `default` ServiceAccount exists).
pub async fn create_namespace(client: &Client, test_name: &str) -> anyhow::Result<String> {
    let name = unique_namespace_name(test_name);
    let namespaces: Api<Namespace> = Api::all(client.clone());
    let namespace: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": name,
            "labels": { TEST_NAMESPACE_LABEL: "true" },
            "annotations": { "coreforge.dev/test-name": test_name },
        },
    }))?;
    namespaces
        .create(&PostParams::default(), &namespace)
        .await
        .with_context(|| format!("creating namespace {name}"))?;
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), &name);
    wait_for(&accounts, "default", &format!("the default ServiceAccount of namespace {name}"), secs(60), |_| true)
        .await?;
    Ok(name)
}

/// Starts deleting a namespace (everything in it goes with it). Does not wait
/// for the deletion to finish: nothing reuses the name, and the namespace
/// controller finishes it in the background.
pub async fn delete_namespace(client: &Client, name: &str) -> anyhow::Result<()> {
    let namespaces: Api<Namespace> = Api::all(client.clone());
    match namespaces.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 => Ok(()),
        Err(e) => Err(e).with_context(|| format!("deleting namespace {name}")),
    }
}

/// Watches `name` until `cond` holds and returns the object that satisfied it.
///
/// `what` describes the wait for the error message ("job demo to complete").
/// On timeout the error contains the last observed version of the object (its
/// status, or the whole object if it has none), or says it never existed.
/// Watch errors are retried until the deadline.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    timeout: Duration,
    cond: impl Fn(&K) -> bool,
) -> anyhow::Result<K>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned + Send + 'static,
{
    let last_seen: Arc<Mutex<Option<K>>> = Arc::new(Mutex::new(None));
    let condition = {
        let last_seen = last_seen.clone();
        move |obj: Option<&K>| {
            *last_seen.lock().unwrap() = obj.cloned();
            obj.is_some_and(&cond)
        }
    };
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error = None;
    loop {
        match tokio::time::timeout_at(deadline, await_condition(api.clone(), name, &condition)).await {
            Ok(Ok(Some(obj))) => return Ok(obj),
            // The condition never accepts an absent object; keep watching.
            Ok(Ok(None)) => {}
            Ok(Err(e)) => {
                last_error = Some(e.to_string());
                if tokio::time::timeout_at(deadline, tokio::time::sleep(Duration::from_millis(500))).await.is_err() {
                    break;
                }
            }
            Err(_elapsed) => break,
        }
    }
    let seen = last_seen.lock().unwrap().clone();
    let mut message = format!("timed out after {timeout:?} waiting for {what} ({})", describe::<K>(api, name));
    match seen {
        Some(obj) => message.push_str(&format!("; last observed:\n{}", status_text(&obj))),
        None => message.push_str("; the object was never observed (does not exist?)"),
    }
    if let Some(e) = last_error {
        message.push_str(&format!("\nlast watch error: {e}"));
    }
    Err(anyhow!(message))
}

/// Waits until `name` no longer exists (watch-based).
pub async fn wait_deleted<K>(api: &Api<K>, name: &str, what: &str, timeout: Duration) -> anyhow::Result<()>
where
    K: Resource + Clone + Debug + Serialize + DeserializeOwned + Send + 'static,
{
    let current = match api.get_opt(name).await? {
        None => return Ok(()),
        Some(obj) => obj,
    };
    let uid = current.uid().unwrap_or_default();
    match tokio::time::timeout(timeout, await_condition(api.clone(), name, conditions::is_deleted(&uid))).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(anyhow!("watching {} while waiting for {what}: {e}", describe::<K>(api, name))),
        Err(_) => {
            let seen = api.get_opt(name).await.ok().flatten();
            let shown = seen.map(|o| status_text(&o)).unwrap_or_else(|| "(gone by now)".into());
            Err(anyhow!(
                "timed out after {timeout:?} waiting for {what} ({}); still there:\n{shown}",
                describe::<K>(api, name)
            ))
        }
    }
}

/// Polls `probe` every `interval` until it returns `Ok(Some(value))`, for
/// things that cannot be watched (HTTP endpoints, files, logs). `Ok(None)`
/// means "not yet"; an error is remembered and retried. Each attempt is itself
/// bounded by the overall deadline. The timeout error names `what` and the
/// last error.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, interval: Duration, mut probe: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last_error: Option<anyhow::Error> = None;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        match tokio::time::timeout_at(deadline, probe()).await {
            Ok(Ok(Some(value))) => return Ok(value),
            Ok(Ok(None)) => {}
            Ok(Err(e)) => last_error = Some(e),
            Err(_elapsed) => break,
        }
        let next = tokio::time::Instant::now() + interval;
        if next >= deadline {
            break;
        }
        tokio::time::sleep_until(next).await;
    }
    match last_error {
        Some(e) => Err(e.context(format!("timed out after {timeout:?} ({attempts} attempts) waiting for {what}"))),
        None => bail!("timed out after {timeout:?} ({attempts} attempts) waiting for {what} (never ready)"),
    }
}

/// Runs a command (e.g. from [`kubectl`]) and returns its stdout, failing with
/// its stderr when it exits non-zero.
pub async fn run(cmd: &mut tokio::process::Command) -> anyhow::Result<String> {
    let shown = format!("{:?}", cmd.as_std());
    let output = cmd.stdin(std::process::Stdio::null()).output().await.with_context(|| format!("running {shown}"))?;
    if !output.status.success() {
        bail!("{shown} failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// The value of a condition (`"True"`, `"False"`, ...) in an object's
/// `status.conditions`, for any resource, read through its JSON form.
pub fn condition_status<K: Serialize>(obj: &K, type_: &str) -> Option<String> {
    let value = serde_json::to_value(obj).ok()?;
    value
        .pointer("/status/conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(|t| t.as_str()) == Some(type_))?
        .get("status")?
        .as_str()
        .map(str::to_string)
}

/// Whether the object has condition `type_` with status `"True"`.
pub fn has_condition<K: Serialize>(obj: &K, type_: &str) -> bool {
    condition_status(obj, type_).as_deref() == Some("True")
}

/// The object's API path, e.g. `/apis/batch/v1/namespaces/t-x/jobs/demo`.
fn describe<K: Resource>(api: &Api<K>, name: &str) -> String {
    format!("{}/{name}", api.resource_url())
}

/// The object's `status` as pretty JSON (or the whole object without
/// managedFields when it has no status), for error messages.
fn status_text<K: Serialize>(obj: &K) -> String {
    let Ok(mut value) = serde_json::to_value(obj) else {
        return "(could not serialize the object)".into();
    };
    if let Some(meta) = value.get_mut("metadata").and_then(|m| m.as_object_mut()) {
        meta.remove("managedFields");
    }
    let shown = match value.get("status") {
        Some(status) if !status.is_null() => serde_json::json!({ "status": status }),
        _ => value,
    };
    serde_json::to_string_pretty(&shown).unwrap_or_default()
}

/// Reads a file relative to the repository root (handy for fixtures).
pub fn repo_file(path: impl AsRef<Path>) -> anyhow::Result<String> {
    let full = repo_root().join(path);
    std::fs::read_to_string(&full).with_context(|| format!("reading {}", full.display()))
}
