//! Named datasets from the Hugging Face hub, through candle-datasets (feature `hub`).
//!
//! The download runs on a helper thread that the caller waits for with a time limit, and it is
//! only started when the hub's host answers a TCP connection within [`CONNECT_TIMEOUT`] (or a
//! copy may be in the local hub cache): offline, the attempt fails within seconds instead of
//! hanging. What the hub gives (candle tensors of f32 pixels in [0, 1] and u8 labels) is
//! converted by [`from_tensors`] and validated like any file.
//!
//! Environment: `HF_ENDPOINT` (the hub's address), `HF_HOME` / `HF_HUB_CACHE` (its cache),
//! `HF_HUB_OFFLINE=1` (cache only), `VAE_HUB_TIMEOUT` (seconds the whole download may take,
//! default [`DEFAULT_TIMEOUT`]).

use std::path::{Path, PathBuf};
use std::time::Duration;

use vae_core::candle_core::{DType, Tensor};
use vae_core::DataShape;

use crate::dataset::{Dataset, Splits, Values};
use crate::error::{DataError, Result};

/// How long the hub's host has to accept a connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a whole download may take unless `VAE_HUB_TIMEOUT` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(600);

/// The hub repository that candle-datasets loads for a dataset name, if it has a loader.
pub fn repo_id(name: &str) -> Option<&'static str> {
    crate::named::find(name).and_then(|d| d.hub_repo)
}

/// The shape of a dataset's examples as candle-datasets returns them.
fn shape_of(name: &str) -> DataShape {
    crate::named::find(name).map_or(DataShape::image(1, 28, 28), |d| d.shape)
}

/// Converts one split given as candle tensors (pixels in [0, 1], any shape with `shape.dim()`
/// values per example; integer labels) into a [`Dataset`], checking every value and label.
/// `what` names the source in errors.
pub fn split_from_tensors(
    images: &Tensor,
    labels: &Tensor,
    shape: DataShape,
    num_classes: usize,
    what: &Path,
) -> Result<Dataset> {
    let bad = |msg: String| DataError::format(what, msg);
    let candle = |e: vae_core::candle_core::Error| bad(format!("unreadable tensor: {e}"));
    let d = shape.dim();
    let n = images.dims().first().copied().unwrap_or(0);
    if n == 0 {
        return Err(bad("holds zero images".into()));
    }
    if images.elem_count() != n * d {
        return Err(bad(format!(
            "images of shape {:?} do not hold {n} examples of {}x{}x{}",
            images.dims(),
            shape.channels,
            shape.height,
            shape.width
        )));
    }
    if labels.dims() != [n] {
        return Err(bad(format!(
            "labels of shape {:?} for {n} images",
            labels.dims()
        )));
    }
    let px = images
        .flatten_all()
        .and_then(|t| t.to_dtype(DType::F32))
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(candle)?;
    let mut values = Vec::with_capacity(px.len());
    for (i, &v) in px.iter().enumerate() {
        // Pixels come as u8 / 255: anything outside [0, 1] (or not a number) is not an image.
        if !(-1e-4..=1.0 + 1e-4).contains(&v) {
            return Err(bad(format!(
                "pixel {} of image {} is {v}, outside [0, 1]",
                i % d,
                i / d
            )));
        }
        values.push((v.clamp(0.0, 1.0) * 255.0).round() as u8);
    }
    let labels = labels
        .to_dtype(DType::U32)
        .and_then(|t| t.to_vec1::<u32>())
        .map_err(candle)?;
    if let Some(pos) = labels.iter().position(|&l| l as usize >= num_classes) {
        return Err(bad(format!(
            "label {} at index {pos} is out of range (expected 0..{num_classes})",
            labels[pos]
        )));
    }
    Dataset::new(shape, Values::U8(values), Some(labels), Some(num_classes))
}

/// Converts what the hub loader of dataset `name` returned: train and test images and labels.
pub fn from_tensors(
    name: &str,
    train_images: &Tensor,
    train_labels: &Tensor,
    test_images: &Tensor,
    test_labels: &Tensor,
    num_classes: usize,
) -> Result<Splits> {
    let shape = shape_of(name);
    let what =
        |split: &str| PathBuf::from(format!("<hub {}>/{split}", repo_id(name).unwrap_or(name)));
    Ok(Splits {
        train: split_from_tensors(
            train_images,
            train_labels,
            shape,
            num_classes,
            &what("train"),
        )?,
        test: split_from_tensors(test_images, test_labels, shape, num_classes, &what("test"))?,
    })
}

/// The hub cache folder that a copy of `repo` would be in.
pub fn cache_dir(repo: &str) -> Option<PathBuf> {
    let env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    let hub = env("HF_HUB_CACHE")
        .or_else(|| env("HUGGINGFACE_HUB_CACHE"))
        .or_else(|| env("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| env("XDG_CACHE_HOME").map(|c| c.join("huggingface/hub")))
        .or_else(|| env("HOME").map(|h| h.join(".cache/huggingface/hub")))?;
    Some(hub.join(format!("datasets--{}", repo.replace('/', "--"))))
}

/// The host and port of the hub (`HF_ENDPOINT`, default `https://huggingface.co`).
pub fn endpoint() -> (String, u16) {
    let url = std::env::var("HF_ENDPOINT")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "https://huggingface.co".into());
    let (default_port, rest) = match url.split_once("://") {
        Some(("http", rest)) => (80, rest),
        Some((_, rest)) => (443, rest),
        None => (443, url.as_str()),
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let authority = authority.rsplit('@').next().unwrap_or(authority);
    if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6.split_once(']').unwrap_or((v6, ""));
        let port = after.strip_prefix(':').and_then(|p| p.parse().ok());
        return (host.to_string(), port.unwrap_or(default_port));
    }
    match authority.rsplit_once(':') {
        Some((host, port)) => match port.parse() {
            Ok(p) => (host.to_string(), p),
            Err(_) => (authority.to_string(), default_port),
        },
        None => (authority.to_string(), default_port),
    }
}

/// Whether the hub's host accepts a TCP connection within `timeout` (name lookup included).
pub fn reachable(host: &str, port: u16, timeout: Duration) -> std::result::Result<(), String> {
    use std::net::{TcpStream, ToSocketAddrs};
    let (tx, rx) = std::sync::mpsc::channel();
    let target = format!("{host}:{port}");
    let t = target.clone();
    // Name lookup cannot be given a time limit: it runs on its own thread.
    std::thread::spawn(move || {
        let r = (|| {
            let addrs: Vec<_> = t
                .to_socket_addrs()
                .map_err(|e| format!("cannot resolve {t}: {e}"))?
                .collect();
            let mut last = format!("no address for {t}");
            for a in addrs {
                match TcpStream::connect_timeout(&a, timeout) {
                    Ok(_) => return Ok(()),
                    Err(e) => last = format!("cannot connect to {a}: {e}"),
                }
            }
            Err(last)
        })();
        let _ = tx.send(r);
    });
    match rx.recv_timeout(timeout) {
        Ok(r) => r,
        Err(_) => Err(format!(
            "no answer from {target} within {}s",
            timeout.as_secs()
        )),
    }
}

/// How long a download may take: `VAE_HUB_TIMEOUT` seconds, or [`DEFAULT_TIMEOUT`].
pub fn timeout() -> Duration {
    std::env::var("VAE_HUB_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(DEFAULT_TIMEOUT, Duration::from_secs_f64)
}

fn offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "1" | "true" | "yes" | "on"
        )
    })
}

/// Downloads (or takes from the hub cache) dataset `name`. The error says why it could not.
#[cfg(feature = "hub")]
pub fn load(name: &str) -> std::result::Result<Splits, String> {
    use candle_datasets::vision;

    let repo =
        repo_id(name).ok_or_else(|| format!("candle-datasets has no hub loader for `{name}`"))?;
    let cached = cache_dir(repo).is_some_and(|d| d.is_dir());
    if !cached {
        if offline() {
            return Err(format!(
                "{repo}: HF_HUB_OFFLINE is set and the hub cache has no copy"
            ));
        }
        let (host, port) = endpoint();
        reachable(&host, port, CONNECT_TIMEOUT)
            .map_err(|e| format!("{repo}: the hub is unreachable (offline?): {e}"))?;
    }
    let limit = timeout();
    let (tx, rx) = std::sync::mpsc::channel();
    let name_owned = name.to_string();
    // The loader cannot be cancelled; if it overruns, it is left behind and its result dropped.
    std::thread::spawn(move || {
        let r = match name_owned.as_str() {
            "mnist" => vision::mnist::load(),
            "fashion-mnist" => vision::fashion_mnist::load(),
            _ => vision::cifar::load(),
        };
        let _ = tx.send(r);
    });
    let ds = match rx.recv_timeout(limit) {
        Ok(Ok(ds)) => ds,
        Ok(Err(e)) => return Err(format!("{repo}: {e}")),
        Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
            return Err(format!(
                "{repo}: no complete download within {}s (VAE_HUB_TIMEOUT sets the limit)",
                limit.as_secs_f64()
            ))
        }
        Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
            return Err(format!(
                "{repo}: the hub loader failed on the downloaded data"
            ))
        }
    };
    let fix = |t: &Tensor| -> std::result::Result<Tensor, String> {
        if name == "cifar10" {
            // candle-datasets lays the hub's CIFAR pictures out as (n, channel, x, y); the
            // model wants (n, channel, y, x), as in the binary batches.
            t.transpose(2, 3)
                .and_then(|t| t.contiguous())
                .map_err(|e| format!("{repo}: {e}"))
        } else {
            Ok(t.clone())
        }
    };
    from_tensors(
        name,
        &fix(&ds.train_images)?,
        &ds.train_labels,
        &fix(&ds.test_images)?,
        &ds.test_labels,
        ds.labels,
    )
    .map_err(|e| e.to_string())
}

/// Without the `hub` feature there is no download.
#[cfg(not(feature = "hub"))]
pub fn load(name: &str) -> std::result::Result<Splits, String> {
    let _ = (name, offline());
    Err("not tried: this build has no hub support (rebuild with `--features hub`, e.g. `cargo run --release -p vae-train --features hub`)".into())
}
