//! `coreforge`: parses the command line and hands over to the library.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use coreforge::telemetry::LogFormat;

/// coreforge: build, test, publish and retire core images as products.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

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
        /// Log format.
        #[arg(long, value_enum, default_value_t = LogFormat::Text, env = "COREFORGE_LOG_FORMAT")]
        log_format: LogFormat,
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
        Command::Controller { namespaces, http_addr, log_format } => {
            coreforge::telemetry::init(log_format);
            let runtime = tokio::runtime::Runtime::new()?;
            runtime.block_on(async {
                let mut config = kube::Config::infer().await?;
                // Names every request in audit logs and apiserver metrics as ours.
                config.headers.push((
                    http::header::USER_AGENT,
                    http::HeaderValue::from_static(concat!("coreforge/", env!("CARGO_PKG_VERSION"))),
                ));
                let client = kube::Client::try_from(config)?;
                coreforge::metrics::METRICS.leader.set(1);
                let settings = coreforge::controller::Settings { namespaces, http_addr: Some(http_addr) };
                coreforge::controller::run(client, settings, coreforge::controller::shutdown_signal()).await
            })
        }
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
