//! `vae-infer`: sampling, evaluation and latent-space analysis of a trained VAE.

use std::process::ExitCode;

use clap::Parser;
use vae_infer::cli::{dispatch, Cli};

fn main() -> ExitCode {
    vae_core::device::configure_process();
    let cli = Cli::parse();
    vae_run::flags::init_logging("warn");
    match dispatch(&cli) {
        Ok(out) if cli.command.stdout_is_data() => {
            eprintln!("{out}");
            ExitCode::SUCCESS
        }
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
