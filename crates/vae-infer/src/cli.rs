//! The command line of `vae-infer`: one subcommand per file of [`crate::commands`].

use clap::Parser;

use crate::commands::Cmd;
use crate::Result;

/// Use a trained variational autoencoder: sample, evaluate, analyse its latent space.
#[derive(Debug, Parser)]
#[command(name = "vae-infer", version)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Cmd,
}

/// Runs a command and renders its report: JSON, or readable lines.
pub fn dispatch(cli: &Cli) -> Result<String> {
    cli.command.execute()
}
