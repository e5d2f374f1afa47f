use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// coreforge: build, test, publish and retire core images as products.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Print the CustomResourceDefinitions, or write them into a directory.
    Crd {
        /// Write one file per CRD into this directory instead of printing.
        #[arg(long)]
        output_dir: Option<PathBuf>,
    },
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Crd { output_dir: Some(dir) } => coreforge::crdgen::write_all(&dir),
        Command::Crd { output_dir: None } => {
            print!("{}", coreforge::crdgen::render_all()?);
            Ok(())
        }
    }
}
