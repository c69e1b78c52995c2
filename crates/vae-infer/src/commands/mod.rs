//! The commands of `vae-infer`, one file each: its flags (`Args`), what it computed (`Report`,
//! printed as JSON with `--json`, else as [`Report::text`]) and how it runs ([`Command::run`]).
//!
//! A new command is a file here and one line in the [`commands!`] list below.

use clap::Subcommand;
use serde::Serialize;

use crate::args::ModelArgs;
use crate::Result;

/// What a command's flags must provide.
pub trait Command {
    type Report: Report;
    /// The model flags (for `--json`).
    fn model(&self) -> &ModelArgs;
    /// Runs the command.
    fn run(&self) -> Result<Self::Report>;
    /// Whether the command writes its output to standard output (`--out -`), so that its
    /// report goes to standard error.
    fn stdout_is_data(&self) -> bool {
        false
    }
}

/// What a command computed.
pub trait Report: Serialize {
    /// The readable summary.
    fn text(&self) -> String;
}

/// Runs a command and renders its report: JSON, or readable lines.
pub fn execute<C: Command>(c: &C) -> Result<String> {
    let r = c.run()?;
    if c.model().json {
        Ok(serde_json::to_string(&r)?)
    } else {
        Ok(r.text())
    }
}

/// Declares the command modules, the subcommand enum and its dispatch from one list.
macro_rules! commands {
    ($($(#[$doc:meta])* $variant:ident => $module:ident,)*) => {
        $(pub mod $module;)*

        /// The subcommands of `vae-infer`.
        #[derive(Debug, Subcommand)]
        pub enum Cmd {
            $($(#[$doc])* $variant($module::Args),)*
        }

        impl Cmd {
            /// Runs the subcommand and renders its report.
            pub fn execute(&self) -> Result<String> {
                match self {
                    $(Cmd::$variant(a) => execute(a),)*
                }
            }

            /// Whether standard output carries the command's data (its report then goes to
            /// standard error).
            pub fn stdout_is_data(&self) -> bool {
                match self {
                    $(Cmd::$variant(a) => a.stdout_is_data(),)*
                }
            }
        }
    };
}

commands! {
    /// Decode codes drawn from the prior into a PNG grid.
    Sample => sample,
    /// Negative ELBO (reconstruction + KL) of a split, per example, in nats, and the
    /// importance-sampled log-likelihood.
    Evaluate => evaluate,
    /// Validation images above their reconstructions, as a PNG grid.
    Reconstruct => reconstruct,
    /// Decode the path between the posterior means of two validation images.
    Interpolate => interpolate,
    /// Move one latent dimension at a time around a base code, one row per dimension.
    Traverse => traverse,
    /// Decode a grid over two latent dimensions at prior quantiles.
    Manifold => manifold,
    /// Write the posterior means and log-variances of a split (CSV, NPY or safetensors).
    Encode => encode,
    /// k-means on latent means (fit on train, scored on test): accuracy, NMI, ARI.
    Cluster => cluster,
    /// k-NN or logistic regression on latent means (fit on train, scored on test).
    Classify => classify,
    /// Latent scatter coloured by label and training curves, as PNG charts.
    Plot => plot,
    /// One self-contained HTML page with pictures and numbers.
    Report => report,
    /// Encoding and sampling speed of the model, in examples per second.
    Throughput => throughput,
    /// Lossless compression of 8-bit images by bits-back coding with the model.
    Compress => compress,
    /// The images of a compressed file, written back as they came.
    Decompress => decompress,
}
