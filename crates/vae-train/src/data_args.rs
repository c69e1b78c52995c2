//! The data flags of `vae-train`, resolved into a [`DataConfig`].

use std::path::PathBuf;

use clap::Args;
use serde::{Deserialize, Serialize};
use vae_core::Preset;
use vae_data::{Binarize, DataConfig, FlatDataConfig, Normalize, Stream};

/// Which data to train on and how to prepare it.
#[derive(Debug, Clone, Args, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct DataArgs {
    /// Dataset name: fashion-mnist, mnist, kmnist, cifar10 or sample. Looked for in --data-dir,
    /// then $VAE_DATA_DIR/<name>, then /usr/share/datasets/<name>, then on the Hugging Face hub.
    #[arg(long)]
    pub dataset: Option<String>,
    /// Directory holding the dataset's files (IDX files, or CIFAR-10 binary batches).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// A folder of PNG/JPEG pictures: loose, or one sub-folder per class (optionally inside
    /// train/ and test/).
    #[arg(long, value_name = "DIR")]
    pub images: Option<PathBuf>,
    /// Resize every picture of --images to NxN.
    #[arg(long, value_name = "N")]
    pub image_size: Option<usize>,
    /// 1 (grey) or 3 (RGB) channels for --images (default: RGB if any picture has colour).
    #[arg(long, value_name = "1|3")]
    pub channels: Option<usize>,
    /// A CSV file of numbers, one example a row (a header row is detected).
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// An NPY file holding a 2-D array (f32, f64 or u8), one example a row.
    #[arg(long, value_name = "FILE")]
    pub npy: Option<PathBuf>,
    /// The label column of --csv (header name or 0-based index) or --npy (index).
    #[arg(long, value_name = "NAME|INDEX")]
    pub label_column: Option<String>,
    /// Scaling of --csv/--npy columns: unit (min-max to [0,1]), standard (zero mean, unit
    /// variance) or none.
    #[arg(long, value_enum)]
    pub normalize: Option<Normalize>,
    /// Hold out this fraction of the training examples as the validation split (instead of the
    /// test split); data without a test split holds out 0.1 by default.
    #[arg(long, value_name = "F")]
    pub val_fraction: Option<f64>,
    /// Seed of the validation split.
    #[arg(long, value_name = "N")]
    pub split_seed: Option<u64>,
    /// Memory-map raw IDX image files: auto (files of 256 MiB or more), on or off.
    #[arg(long, value_enum)]
    pub stream: Option<Stream>,
    /// Binarisation of pixel values.
    #[arg(long, value_enum)]
    pub binarize: Option<Binarize>,
    /// Uniform dequantization: train a density on (v + u)/256, u ~ U[0, 1), for the bound on
    /// the 8-bit data it is scored with.
    #[arg(long)]
    #[serde(default)]
    pub dequantize: bool,
}

impl DataArgs {
    /// The data part of the configuration for `preset`; conflicting flags are refused with a
    /// message naming them.
    pub fn to_config(&self, preset: Preset) -> vae_data::Result<DataConfig> {
        DataConfig::try_from(self.flat(preset))
    }

    /// The flags as the flat form of the configuration.
    fn flat(&self, preset: Preset) -> FlatDataConfig {
        let source = [
            ("images", self.images.is_some()),
            ("csv", self.csv.is_some()),
            ("npy", self.npy.is_some()),
        ]
        .into_iter()
        .find(|(_, given)| *given)
        .map(|(kind, _)| kind.to_string());
        let defaults = FlatDataConfig::from(DataConfig::default());
        FlatDataConfig {
            dataset: self.dataset.clone().or(source).unwrap_or(defaults.dataset),
            data_dir: self.data_dir.clone(),
            binarize: self.binarize.unwrap_or(match preset {
                Preset::Iwae => Binarize::Dynamic,
                _ => Binarize::None,
            }),
            dequantize: self.dequantize,
            images: self.images.clone(),
            image_size: self.image_size,
            channels: self.channels,
            csv: self.csv.clone(),
            npy: self.npy.clone(),
            label_column: self.label_column.clone(),
            normalize: self.normalize.unwrap_or(defaults.normalize),
            val_fraction: self.val_fraction,
            split_seed: self.split_seed.unwrap_or(defaults.split_seed),
            stream: self.stream.unwrap_or(defaults.stream),
        }
    }

    /// The configuration `saved` with the flags given now applied (to compare a resumed run's
    /// flags with the configuration it was started with).
    pub fn over(&self, saved: &DataConfig) -> vae_data::Result<DataConfig> {
        let mut given = self.clone();
        given.fill_from(&FlatDataConfig::from(saved.clone()));
        // Every setting is given now, so the preset's defaults do not matter.
        given.to_config(Preset::default())
    }

    /// Takes every setting not given from `saved`.
    fn fill_from(&mut self, saved: &FlatDataConfig) {
        fn fill<T: Clone>(given: &mut Option<T>, saved: &Option<T>) {
            if given.is_none() {
                *given = saved.clone();
            }
        }
        self.dataset.get_or_insert_with(|| saved.dataset.clone());
        fill(&mut self.data_dir, &saved.data_dir);
        fill(&mut self.images, &saved.images);
        fill(&mut self.image_size, &saved.image_size);
        fill(&mut self.channels, &saved.channels);
        fill(&mut self.csv, &saved.csv);
        fill(&mut self.npy, &saved.npy);
        fill(&mut self.label_column, &saved.label_column);
        fill(&mut self.val_fraction, &saved.val_fraction);
        self.normalize.get_or_insert(saved.normalize);
        self.split_seed.get_or_insert(saved.split_seed);
        self.stream.get_or_insert(saved.stream);
        self.binarize.get_or_insert(saved.binarize);
        self.dequantize |= saved.dequantize;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        data: DataArgs,
    }

    fn config(args: &[&str]) -> vae_data::Result<DataConfig> {
        let cli = Cli::parse_from(std::iter::once("vae-train").chain(args.iter().copied()));
        cli.data.to_config(Preset::PytorchExample)
    }

    fn flat(args: &[&str]) -> FlatDataConfig {
        FlatDataConfig::from(config(args).expect("valid flags"))
    }

    #[test]
    fn flags_reach_the_data_config() {
        let c = flat(&[
            "--csv",
            "t.csv",
            "--label-column",
            "species",
            "--normalize",
            "standard",
            "--val-fraction",
            "0.25",
            "--split-seed",
            "7",
        ]);
        assert_eq!(c.dataset, "csv");
        assert_eq!(c.csv, Some(PathBuf::from("t.csv")));
        assert_eq!(c.label_column.as_deref(), Some("species"));
        assert_eq!(c.normalize, Normalize::Standard);
        assert_eq!(c.val_fraction, Some(0.25));
        assert_eq!(c.split_seed, 7);
        let c = flat(&["--images", "pics", "--image-size", "16", "--channels", "1"]);
        assert_eq!(
            (c.dataset.as_str(), c.image_size, c.channels),
            ("images", Some(16), Some(1))
        );
        let c = flat(&["--stream", "on", "--binarize", "static"]);
        assert_eq!(c.dataset, "fashion-mnist");
        assert_eq!((c.stream, c.binarize), (Stream::On, Binarize::Static));
    }

    #[test]
    fn conflicting_sources_are_refused_by_name() {
        let err = config(&["--dataset", "mnist", "--csv", "t.csv"]).expect_err("accepted");
        assert!(err
            .to_string()
            .contains("--dataset mnist cannot be combined with --csv"));
        let err = config(&["--csv", "t.csv", "--npy", "t.npy"]).expect_err("accepted");
        assert!(
            err.to_string().contains("only one of --csv, --npy"),
            "{err}"
        );
        let err = config(&["--image-size", "8"]).expect_err("accepted");
        assert!(err.to_string().contains("--image-size applies to --images"));
    }
}
