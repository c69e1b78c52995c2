//! The flags both binaries take, defined once: where to compute, with how many threads and
//! which kernels, and the seed of the random draws. Each is optional so that vae-train's `--config` file can set
//! it too; the defaults are those of the accessors.

use serde::{Deserialize, Serialize};
use vae_core::candle_core::Device;

use crate::Result;

/// `--device`, `--threads`, `--seed`, `--kernels`.
#[derive(Debug, Clone, Default, PartialEq, Eq, clap::Args, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct RuntimeFlags {
    /// auto, cpu, cuda, cuda:N or metal (default auto: a GPU if one is there, else the CPU).
    #[arg(long)]
    pub device: Option<String>,
    /// CPU threads (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Seed of the random draws (default 0).
    #[arg(long)]
    pub seed: Option<u64>,
    /// native (default): the fused CPU kernels where the data is on the CPU; composite: candle's
    /// operations everywhere, the path a GPU runs (to check one against the other).
    #[arg(long, value_enum)]
    pub kernels: Option<KernelChoice>,
}

/// The kernels a run may choose (`--kernels`); the exact passes belong to the coder alone.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum KernelChoice {
    #[default]
    Native,
    Composite,
}

impl KernelChoice {
    pub fn kernels(self) -> vae_core::ops::Kernels {
        match self {
            KernelChoice::Native => vae_core::ops::Kernels::Native,
            KernelChoice::Composite => vae_core::ops::Kernels::Composite,
        }
    }

    pub fn is_native(&self) -> bool {
        *self == KernelChoice::Native
    }
}

impl RuntimeFlags {
    /// The device name, `auto` when not given.
    pub fn device_name(&self) -> &str {
        self.device.as_deref().unwrap_or("auto")
    }

    /// Opens the device.
    pub fn device(&self) -> Result<Device> {
        Ok(vae_core::device::select(self.device_name())?)
    }

    /// The thread count, all cores when not given.
    pub fn threads(&self) -> usize {
        self.threads
            .unwrap_or_else(vae_core::par::available_threads)
    }

    /// The seed, 0 when not given.
    pub fn seed(&self) -> u64 {
        self.seed.unwrap_or(0)
    }

    /// The kernels, native when not given.
    pub fn kernels(&self) -> vae_core::ops::Kernels {
        self.kernels.unwrap_or_default().kernels()
    }
}

/// Whether to colour what goes to `stream`: only a terminal, and not when `NO_COLOR` is set
/// (<https://no-color.org>).
pub fn colour(stream: &impl std::io::IsTerminal) -> bool {
    stream.is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
}

/// Logs to standard error at `default` level (`RUST_LOG` overrides it), coloured only on a
/// terminal without `NO_COLOR`.
pub fn init_logging(default: &str) {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default)),
        )
        .with_writer(std::io::stderr)
        .with_ansi(colour(&std::io::stderr()))
        .with_target(false)
        .without_time()
        .init();
}
