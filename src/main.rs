//! `coreforge`: parses the command line and hands over to the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use coreforge::fence::Fence;
use coreforge::telemetry::LogFormat;

/// coreforge: build, test, publish and retire core images as products.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start: the size of the controller's variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Run the controller (uses KUBECONFIG or the in-cluster service account).
    Controller {
        /// Watch only this namespace; repeat for several (default: all namespaces).
        #[arg(long = "namespace", env = "COREFORGE_NAMESPACES", value_delimiter = ',')]
        namespaces: Vec<String>,
        /// Address of the HTTP server for /metrics, /livez and /readyz.
        #[arg(long, default_value = "0.0.0.0:8080", env = "COREFORGE_HTTP_ADDR")]
        http_addr: std::net::SocketAddr,
        /// Elect a leader among replicas with a Lease; only the leader reconciles.
        #[arg(long, env = "COREFORGE_LEADER_ELECT")]
        leader_elect: bool,
        /// Name of the Lease.
        #[arg(long, default_value = "coreforge", env = "COREFORGE_LEASE_NAME")]
        lease_name: String,
        /// Namespace of the Lease (default: the pod's namespace, from POD_NAMESPACE).
        #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
        lease_namespace: String,
        /// How long the Lease is valid without renewal (a follower takes over after it).
        #[arg(long, default_value = "15s", value_parser = parse_duration_arg)]
        lease_duration: std::time::Duration,
        /// Builder image for CoreBuilds that name none (pin it by digest).
        #[arg(long, env = "COREFORGE_BUILDER_IMAGE", default_value = coreforge::snapshot::DEFAULT_BUILDER_IMAGE)]
        builder_image: String,
        /// A Linux capability a CoreBuild's builder or tester may add beyond the default
        /// builder's (SETUID, SETGID, SETFCAP, or with --user-namespaced-builders those of
        /// that variant); repeat the flag, or comma-separate.
        #[arg(long = "allow-builder-capability", env = "COREFORGE_ALLOW_BUILDER_CAPABILITIES", value_delimiter = ',')]
        allow_builder_capabilities: Vec<String>,
        /// A builder image a CoreBuild may name besides the default: a repository (any tag
        /// or digest of it) or a prefix ending in `/`; repeat the flag, or comma-separate.
        #[arg(long = "allow-builder-image", env = "COREFORGE_ALLOW_BUILDER_IMAGES", value_delimiter = ',')]
        allow_builder_images: Vec<String>,
        /// A ServiceAccount a CoreBuild's builder or tester may run as (default: none but
        /// the namespace's `default`); repeat the flag, or comma-separate.
        #[arg(
            long = "allow-builder-service-account",
            env = "COREFORGE_ALLOW_BUILDER_SERVICE_ACCOUNTS",
            value_delimiter = ','
        )]
        allow_builder_service_accounts: Vec<String>,
        /// Let a CoreBuild's builder or tester run privileged.
        #[arg(long, env = "COREFORGE_ALLOW_PRIVILEGED_BUILDERS")]
        allow_privileged_builders: bool,
        /// Give build pods a user namespace of their own (hostUsers: false): their root is
        /// an unprivileged user on the node. The nodes' runtime must support it
        /// (containerd 2 or CRI-O 1.25, runc 1.2, Linux 6.3 or later).
        #[arg(long, env = "COREFORGE_USER_NAMESPACED_BUILDERS")]
        user_namespaced_builders: bool,
        /// How many attempts of a release keep their Jobs, pods and snapshot (the current
        /// one included); those of older attempts are deleted.
        #[arg(long, env = "COREFORGE_KEEP_ATTEMPTS", default_value_t = coreforge::controller::context::DEFAULT_KEEP_ATTEMPTS, value_parser = clap::value_parser!(u32).range(1..))]
        keep_attempts: u32,
        /// How many releases are reconciled at once per watched namespace (and as many
        /// CoreBuilds).
        #[arg(long, env = "COREFORGE_MAX_CONCURRENT_RECONCILES", default_value_t = coreforge::controller::DEFAULT_CONCURRENCY, value_parser = clap::value_parser!(u16).range(1..))]
        max_concurrent_reconciles: u16,
        /// At most this many requests per second, on average, to the Kubernetes API server
        /// (watches included), so that a burst of releases never crowds its other clients out.
        #[arg(long, env = "COREFORGE_KUBE_API_QPS", default_value_t = coreforge::kubeclient::DEFAULT_QPS, value_parser = clap::value_parser!(u32).range(1..))]
        kube_api_qps: u32,
        /// At most this many requests at once after a quiet spell, above `--kube-api-qps`.
        #[arg(long, env = "COREFORGE_KUBE_API_BURST", default_value_t = coreforge::kubeclient::DEFAULT_BURST, value_parser = clap::value_parser!(u32).range(1..))]
        kube_api_burst: u32,
        /// `/livez` fails when a reconcile has run this long (the controller is wedged; a
        /// reconcile's own timeout is 5 minutes).
        #[arg(long, default_value = "10m", env = "COREFORGE_LIVENESS_STALL_AFTER", value_parser = parse_duration_arg)]
        liveness_stall_after: std::time::Duration,
        /// Serve the consumers' catalog on the HTTP address: `/catalog` (HTML) and
        /// `/api/v1/catalog` (JSON); `--catalog=false` turns it off.
        #[arg(long, env = "COREFORGE_CATALOG", default_value_t = true, action = clap::ArgAction::Set)]
        catalog: bool,
        /// The Secret (`<namespace>/<name>`) of the key published releases are signed with
        /// when their CoreBuild names none (`spec.catalog.signingKeySecret`), in the layout
        /// `cosign generate-key-pair k8s://<namespace>/<name>` writes. Default: none.
        #[arg(long, env = "COREFORGE_SIGNING_KEY_SECRET", value_parser = clap::value_parser!(coreforge::signing::KeyRef))]
        signing_key_secret: Option<coreforge::signing::KeyRef>,
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "COREFORGE_LOG_FORMAT")]
        log_format: LogFormat,
    },
    /// Print the service catalog: each CoreBuild, its channels and its releases with their
    /// dates, days of support left and advisories (reads through the API server with
    /// KUBECONFIG, like kubectl).
    Catalog {
        /// Namespace (default: the kubeconfig context's).
        #[arg(long, short = 'n', conflicts_with = "all_namespaces")]
        namespace: Option<String>,
        /// Every namespace.
        #[arg(long, short = 'A')]
        all_namespaces: bool,
        /// Output format.
        #[arg(long, short = 'o', value_enum, default_value_t = Output::Text)]
        output: Output,
    },
    /// Print the release notes of an ImageRelease (advisories, base image change,
    /// contract changes), and where to pull it.
    Notes {
        /// The ImageRelease.
        release: String,
        /// Namespace (default: the kubeconfig context's).
        #[arg(long, short = 'n')]
        namespace: Option<String>,
    },
    /// Print the CustomResourceDefinitions, or write them into a directory.
    Crd {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long, conflicts_with = "check")]
        output_dir: Option<PathBuf>,
        /// Exit non-zero if the CRD files in this directory differ from the types.
        #[arg(long)]
        check: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Controller {
            namespaces,
            http_addr,
            log_format,
            leader_elect,
            lease_name,
            lease_namespace,
            lease_duration,
            builder_image,
            allow_builder_capabilities,
            allow_builder_images,
            allow_builder_service_accounts,
            allow_privileged_builders,
            user_namespaced_builders,
            keep_attempts,
            max_concurrent_reconciles,
            kube_api_qps,
            kube_api_burst,
            liveness_stall_after,
            catalog,
            signing_key_secret,
        } => {
            coreforge::telemetry::init(log_format);
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let identity = std::env::var("POD_NAME").unwrap_or_else(|_| {
                    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
                    format!("{}-{}", host.trim(), std::process::id())
                });
                let mut config = kube::Config::infer().await?;
                // Names every request in audit logs and apiserver metrics as ours, and whose.
                let agent = format!("coreforge/{} ({identity})", env!("CARGO_PKG_VERSION"));
                config.headers.push((http::header::USER_AGENT, http::HeaderValue::from_str(&agent)?));
                // With leader election, writes wait for the Lease, and stop when it lapses.
                let fence = if leader_elect { Fence::closed() } else { Fence::open() };
                let client = coreforge::kubeclient::build(config.clone(), kube_api_qps, kube_api_burst, fence.clone())?;
                let lease_client = coreforge::kubeclient::build_unlimited(config)?;
                let election = leader_elect
                    .then(|| coreforge::leader::Election::new(lease_name, lease_namespace, identity, lease_duration));
                let pods = coreforge::controller::context::PodConfig {
                    builder_image,
                    privileges: coreforge::privileges::Privileges::new(
                        allow_builder_capabilities,
                        allow_privileged_builders,
                    )
                    .with_builder_images(allow_builder_images)
                    .with_service_accounts(allow_builder_service_accounts),
                    user_namespaced_builders,
                    keep_attempts,
                };
                let settings = coreforge::controller::Settings {
                    namespaces,
                    http_addr: Some(http_addr),
                    election,
                    pods,
                    concurrency: max_concurrent_reconciles,
                    fence,
                    stall_after: liveness_stall_after,
                    catalog,
                    signing_key: signing_key_secret,
                };
                coreforge::controller::run(client, lease_client, settings, coreforge::controller::shutdown_signal())
                    .await
            })
        }
        Command::Catalog { namespace, all_namespaces, output } => {
            block_on(print_catalog(namespace, all_namespaces, output))
        }
        Command::Notes { release, namespace } => block_on(print_notes(release, namespace)),
        Command::Crd { check: Some(dir), .. } => {
            let drift = coreforge::crdgen::drifted(&dir)?;
            anyhow::ensure!(drift.is_empty(), "stale CRDs in {}: {drift:?}; run `make crds`", dir.display());
            Ok(())
        }
        Command::Crd { output_dir: Some(dir), .. } => coreforge::crdgen::write_all(&dir),
        Command::Crd { output_dir: None, .. } => {
            print!("{}", coreforge::crdgen::render_all()?);
            Ok(())
        }
    }
}

/// How `coreforge catalog` prints.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Output {
    /// Tables for people.
    Text,
    /// The JSON of the catalog API (`/api/v1/catalog`).
    Json,
}

/// A client as kubectl makes one (KUBECONFIG, else in-cluster), and its default namespace.
async fn kube_client() -> anyhow::Result<(kube::Client, String)> {
    let config = kube::Config::infer().await?;
    let namespace = config.default_namespace.clone();
    Ok((kube::Client::try_from(config)?, namespace))
}

/// `coreforge catalog`: the catalog read through the API server.
async fn print_catalog(namespace: Option<String>, all_namespaces: bool, output: Output) -> anyhow::Result<()> {
    use coreforge::browse::{self, Scope};
    let (client, default_namespace) = kube_client().await?;
    let scope =
        if all_namespaces { Scope::All } else { Scope::Namespaces(vec![namespace.unwrap_or(default_namespace)]) };
    let view = browse::load(&client, &scope).await?;
    match output {
        Output::Text => print!("{}", browse::text::catalog(&view)),
        Output::Json => println!("{}", serde_json::to_string_pretty(&view)?),
    }
    Ok(())
}

/// `coreforge notes`: one release's notes.
async fn print_notes(release: String, namespace: Option<String>) -> anyhow::Result<()> {
    let (client, default_namespace) = kube_client().await?;
    let namespace = namespace.unwrap_or(default_namespace);
    let release = coreforge::browse::load_release(&client, &namespace, &release).await?;
    print!("{}", coreforge::browse::text::notes(&release));
    Ok(())
}

fn block_on(work: impl Future<Output = anyhow::Result<()>>) -> anyhow::Result<()> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()?.block_on(work)
}

fn parse_duration_arg(text: &str) -> Result<std::time::Duration, String> {
    coreforge::api::parse_duration(text).ok_or_else(|| format!("{text:?} is not a duration such as 15s or 1m"))
}
