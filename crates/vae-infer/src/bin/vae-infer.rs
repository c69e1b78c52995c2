//! `vae-infer`: sampling, evaluation and latent-space analysis of a trained VAE.

use std::process::ExitCode;

use clap::Parser;
use vae_infer::cli::{dispatch, Cli};

fn main() -> ExitCode {
    vae_core::device::configure_process();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .init();
    match dispatch(&cli) {
        Ok(out) => {
            println!("{out}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}
