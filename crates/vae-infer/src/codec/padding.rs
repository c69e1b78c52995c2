//! What pads a picture's last row and column of tiles, chosen by the model (`--padding auto`):
//! of the candidates (the picture's edges repeated, 0, 255), the one whose padded tiles the
//! model scores cheapest, by their negative ELBO with the latents at their posterior means.
//! Edges suit pictures whose content runs into the border; a constant suits data on a plain
//! background (Fashion-MNIST's pictures lie on black, and zeros cost them fewer bits than
//! repeated edges: `tests/tests/codec.rs` checks it). The choice is recorded per picture in the
//! file, so decoding does not make it again; the model's exact passes make it the same
//! whatever the threads or the CPU. `--padding edge` or `--padding V` imposes one.

use vae_codec::format::Padding;
use vae_core::par;

use super::png::Picture;
use super::tiles;
use super::CodecModel;
use crate::{InferError, Result};

/// The paddings tried, in order of preference on a tie.
pub const CANDIDATES: [Padding; 3] = [Padding::Edge, Padding::Constant(0), Padding::Constant(255)];

/// Tiles scored per pass of the model.
const ROWS_PER_PASS: usize = 64;
/// Pictures whose padded tiles are held at once.
const PICTURES_PER_ROUND: usize = 256;

/// `--padding`: the model's choice per picture, or one padding for all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PaddingChoice {
    #[default]
    Auto,
    Fixed(Padding),
}

impl std::str::FromStr for PaddingChoice {
    type Err = String;

    /// `auto`, `edge`, or a value from 0 to 255.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "auto" => Ok(Self::Auto),
            "edge" => Ok(Self::Fixed(Padding::Edge)),
            v => v
                .parse::<u8>()
                .map(|v| Self::Fixed(Padding::Constant(v)))
                .map_err(|_| format!("`{v}`: expected auto, edge or a value from 0 to 255")),
        }
    }
}

/// The padding of each picture as `choice` says (see [`choose`] for `auto`).
pub fn paddings(
    choice: PaddingChoice,
    glue: &CodecModel,
    pics: &[&Picture],
    threads: usize,
) -> Result<Vec<Padding>> {
    match choice {
        PaddingChoice::Auto => choose(glue, pics, threads),
        PaddingChoice::Fixed(p) => Ok(vec![p; pics.len()]),
    }
}

/// The name of a padding in reports: `edge`, or the constant.
pub fn name(p: Padding) -> String {
    match p {
        Padding::Edge => "edge".into(),
        Padding::Constant(v) => v.to_string(),
    }
}

/// The padding of each picture (pictures that fill their tiles get [`Padding::Edge`], which
/// pads nothing), scored on `threads` threads.
pub fn choose(glue: &CodecModel, pics: &[&Picture], threads: usize) -> Result<Vec<Padding>> {
    let tile = glue.vae().config().shape;
    let d = tile.dim();
    let mut out = Vec::with_capacity(pics.len());
    for round in pics.chunks(PICTURES_PER_ROUND) {
        // The padded tiles of every picture under every candidate, and whose they are.
        let mut rows = Vec::new();
        let mut owner = Vec::new();
        for (i, p) in round.iter().enumerate() {
            let which = tiles::padded_tiles(p.shape, tile);
            if which.is_empty() {
                continue;
            }
            for (c, &pad) in CANDIDATES.iter().enumerate() {
                rows.extend(tiles::cut_some(
                    &p.pixels,
                    p.shape,
                    tile,
                    pad,
                    which.iter().copied(),
                )?);
                owner.extend(std::iter::repeat_n((i, c), which.len()));
            }
        }
        let costs = score(glue, &rows, d, threads)?;
        let mut sums = vec![[0f64; CANDIDATES.len()]; round.len()];
        for (&(i, c), cost) in owner.iter().zip(costs) {
            sums[i][c] += cost;
        }
        out.extend(sums.iter().map(|s| {
            // The first of the cheapest; a NaN is never chosen over a number.
            let key = |v: f64| if v.is_nan() { f64::INFINITY } else { v };
            let best = (1..s.len()).fold(0, |b, c| if key(s[c]) < key(s[b]) { c } else { b });
            CANDIDATES[best]
        }));
    }
    Ok(out)
}

/// The cost of each of the tiles `rows` (`d` values each), in nats, in parallel passes.
fn score(glue: &CodecModel, rows: &[u8], d: usize, threads: usize) -> Result<Vec<f64>> {
    let n = rows.len() / d.max(1);
    let batch = ROWS_PER_PASS
        .min(glue.vae().rows_per_pass().unwrap_or(usize::MAX))
        .max(1);
    let parts = par::map_ranges(n.div_ceil(batch), threads, |r| -> Result<Vec<f64>> {
        let mut out = Vec::new();
        for b in r {
            let imgs: Vec<&[u8]> = (b * batch..((b + 1) * batch).min(n))
                .map(|i| &rows[i * d..(i + 1) * d])
                .collect();
            out.extend(glue.cost_at_means(&imgs)?);
        }
        Ok(out)
    });
    let mut costs = Vec::with_capacity(n);
    for p in parts {
        costs.extend(p?);
    }
    if costs.len() != n {
        return Err(InferError::Input(format!(
            "{} costs for {n} tiles",
            costs.len()
        )));
    }
    Ok(costs)
}
