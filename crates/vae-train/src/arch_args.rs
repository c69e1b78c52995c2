//! The flags that choose the architecture (`--arch`) and set the hierarchical one's sizes.

use clap::ValueEnum;
use serde::{Deserialize, Serialize};
use vae_core::{Arch, ModelConfig, Preset};

use crate::{Result, TrainError};

/// The architectures by command-line name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ValueEnum)]
#[serde(rename_all = "kebab-case")]
pub enum ArchKind {
    Mlp,
    Conv,
    Hierarchical,
}

impl ArchKind {
    /// The preset whose architecture `--arch` starts from.
    fn preset(self) -> Preset {
        match self {
            Self::Mlp => Preset::PytorchExample,
            Self::Conv => Preset::Conv,
            Self::Hierarchical => Preset::Hvae,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Mlp => "mlp",
            Self::Conv => "conv",
            Self::Hierarchical => "hierarchical",
        }
    }
}

/// `--arch` and the settings of the hierarchical architecture.
#[derive(Debug, Clone, Default, clap::Args, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct ArchArgs {
    /// The architecture, with the settings of the preset that uses it (mlp: pytorch-example,
    /// conv: conv, hierarchical: hvae) unless the preset already has it.
    #[arg(long, value_enum)]
    pub arch: Option<ArchKind>,
    /// Channels of the hierarchical architecture's feature maps.
    #[arg(long)]
    pub width: Option<usize>,
    /// Channels inside each block of the hierarchical architecture.
    #[arg(long)]
    pub bottleneck: Option<usize>,
    /// Channels of each spatial latent group of the hierarchical architecture.
    #[arg(long)]
    pub z_channels: Option<usize>,
    /// Spatial latent groups per resolution of the hierarchical architecture, coarsest first,
    /// comma-separated (e.g. 2,4: two groups at a quarter of the input's side, four at half).
    #[arg(long, value_delimiter = ',')]
    pub groups: Option<Vec<usize>>,
    /// Residual blocks per resolution of the hierarchical architecture's encoder (and of its
    /// decoder at the input's resolution).
    #[arg(long)]
    pub blocks: Option<usize>,
}

impl ArchArgs {
    /// Sets the architecture of `model` (before the other architecture flags apply).
    pub fn apply(&self, model: &mut ModelConfig) -> Result<()> {
        if let Some(kind) = self.arch {
            if model.arch.name() != kind.name() {
                model.arch = kind.preset().model(model.shape).arch;
            }
        }
        let given = self.width.is_some()
            || self.bottleneck.is_some()
            || self.z_channels.is_some()
            || self.groups.is_some()
            || self.blocks.is_some();
        match &mut model.arch {
            Arch::Hierarchical(h) => {
                if let Some(v) = self.width {
                    h.width = v;
                }
                if let Some(v) = self.bottleneck {
                    h.bottleneck = v;
                }
                if let Some(v) = self.z_channels {
                    h.z_channels = v;
                }
                if let Some(v) = &self.groups {
                    h.groups = v.clone();
                }
                if let Some(v) = self.blocks {
                    h.blocks = v;
                }
                Ok(())
            }
            _ if given => Err(TrainError::Flag(
                "--width, --bottleneck, --z-channels, --groups and --blocks apply to the hierarchical architecture only (--arch hierarchical or --preset hvae)".into(),
            )),
            _ => Ok(()),
        }
    }
}
