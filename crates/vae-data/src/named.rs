//! The datasets known by name: one table with their format, classes, shape, hub repository
//! and how to install them, instead of string comparisons where they are used.

use vae_core::DataShape;

/// How a named dataset's files are laid out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The four IDX files (train/t10k images and labels, raw or gzipped).
    Idx,
    /// CIFAR-10 binary batches (`data_batch_1.bin` … `test_batch.bin`).
    Cifar10,
    /// Compiled into the binaries (the Fashion-MNIST sample).
    Embedded,
}

/// A dataset known by name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NamedDataset {
    pub name: &'static str,
    pub format: Format,
    /// Number of classes of the labels.
    pub classes: usize,
    pub shape: DataShape,
    /// Names of the classes, for legends (empty when none are known).
    pub class_names: &'static [&'static str],
    /// The Hugging Face hub repository candle-datasets downloads it from, if it has a loader.
    pub hub_repo: Option<&'static str>,
    /// A Debian package that installs it under `/usr/share/datasets/<name>`.
    pub debian_package: Option<&'static str>,
    /// The dataset used instead when this one is found nowhere (the default dataset falls back
    /// to the embedded sample).
    pub fallback: Option<&'static str>,
}

const FASHION: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

const CIFAR: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

const DIGITS: [&str; 10] = ["0", "1", "2", "3", "4", "5", "6", "7", "8", "9"];

const GREY_28: DataShape = DataShape {
    channels: 1,
    height: 28,
    width: 28,
};

/// Every dataset known by name.
pub const DATASETS: [NamedDataset; 5] = [
    NamedDataset {
        name: "fashion-mnist",
        format: Format::Idx,
        classes: 10,
        shape: GREY_28,
        class_names: &FASHION,
        hub_repo: Some("zalando-datasets/fashion_mnist"),
        debian_package: Some("dataset-fashion-mnist"),
        fallback: Some("sample"),
    },
    NamedDataset {
        name: "mnist",
        format: Format::Idx,
        classes: 10,
        shape: GREY_28,
        class_names: &DIGITS,
        hub_repo: Some("ylecun/mnist"),
        debian_package: None,
        fallback: None,
    },
    NamedDataset {
        name: "kmnist",
        format: Format::Idx,
        classes: 10,
        shape: GREY_28,
        class_names: &[],
        hub_repo: None,
        debian_package: None,
        fallback: None,
    },
    NamedDataset {
        name: "cifar10",
        format: Format::Cifar10,
        classes: 10,
        shape: DataShape {
            channels: 3,
            height: 32,
            width: 32,
        },
        class_names: &CIFAR,
        hub_repo: Some("cifar10"),
        debian_package: None,
        fallback: None,
    },
    NamedDataset {
        name: "sample",
        format: Format::Embedded,
        classes: 10,
        shape: GREY_28,
        class_names: &FASHION,
        hub_repo: None,
        debian_package: None,
        fallback: None,
    },
];

/// The default dataset's name.
pub const DEFAULT: &str = "fashion-mnist";

/// The dataset called `name`, if there is one.
pub fn find(name: &str) -> Option<&'static NamedDataset> {
    DATASETS.iter().find(|d| d.name == name)
}

/// The names of all datasets, for messages.
pub fn names() -> Vec<&'static str> {
    DATASETS.iter().map(|d| d.name).collect()
}

/// `c name` labels of `classes` classes for legends (`c` alone where the name is unknown).
pub fn class_labels(dataset: Option<&str>, classes: usize) -> Vec<String> {
    let known = dataset.and_then(find).map_or(&[][..], |d| d.class_names);
    (0..classes)
        .map(|c| match known.get(c) {
            Some(n) if *n != c.to_string() => format!("{c} {n}"),
            _ => c.to_string(),
        })
        .collect()
}

impl NamedDataset {
    /// How to provide the files of this dataset.
    pub fn install_hint(&self) -> String {
        let files = match self.format {
            Format::Cifar10 => "unpack cifar-10-binary.tar.gz (data_batch_1.bin ... data_batch_5.bin, test_batch.bin) into a directory",
            _ => "put the four IDX files (train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte, t10k-labels-idx1-ubyte, each raw or .gz) in a directory",
        };
        let apt = match self.debian_package {
            Some(p) => format!("install it with `apt-get install {p}` (Debian), or "),
            None => String::new(),
        };
        let hub = match (self.hub_repo, cfg!(feature = "hub")) {
            (Some(_), true) => {
                "; with a network connection it is downloaded from the Hugging Face hub"
            }
            (Some(_), false) => {
                "; or rebuild with `--features hub` to download it from the Hugging Face hub"
            }
            (None, _) => "",
        };
        format!(
            "to provide it: {apt}{files} and pass --data-dir DIR, or make it $VAE_DATA_DIR/{}{hub}",
            self.name
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_table_is_consistent() {
        for d in DATASETS {
            assert_eq!(find(d.name), Some(&d));
            assert!(d.class_names.is_empty() || d.class_names.len() == d.classes);
            if let Some(f) = d.fallback {
                assert!(find(f).is_some(), "{} falls back to an unknown {f}", d.name);
            }
        }
        assert!(find(DEFAULT).is_some());
        assert_eq!(
            class_labels(Some("sample"), 2),
            vec!["0 T-shirt/top", "1 Trouser"]
        );
        assert_eq!(class_labels(Some("mnist"), 2), vec!["0", "1"]);
        assert_eq!(class_labels(None, 2), vec!["0", "1"]);
        let hint = find("cifar10")
            .map(|d| d.install_hint())
            .unwrap_or_default();
        assert!(
            hint.contains("test_batch.bin") && hint.contains("hub"),
            "{hint}"
        );
    }
}
