//! What the two likelihoods over the 256 levels of an 8-bit pixel share: the level of a data
//! value, the smooth bound on their parameters, shape checks, the host round trip of `mean` and
//! `sample`, and the CDF of a probability table.
//!
//! Data are f32 values v/255 for levels v in {0, ..., 255}. A value x is read as the nearest
//! level, v = round(255 · clamp(x, 0, 1)): exact for the k/255 values a dataset holds (255 · x
//! is within 1e-4 of k in f32), and a definition for anything else (values between levels go to
//! the nearest one, values outside [0, 1] to the end levels).

use candle_core::{DType, Device, Tensor, D};

/// The number of levels of an 8-bit pixel.
pub const LEVELS: usize = 256;
/// The largest level.
pub(crate) const TOP: f32 = 255.0;

/// Adding and subtracting 1.5 · 2^23 rounds an f32 of magnitude below 2^22 to the nearest integer.
const ROUND_MAGIC: f32 = 12_582_912.0;

/// The level of a data value as a float in {0, ..., 255} (see the module documentation).
#[inline(always)]
pub(crate) fn level(x: f32) -> f32 {
    // max then min: `clamp` keeps loops from vectorising. NaN becomes level 0.
    #[allow(clippy::manual_clamp)]
    let v = x.max(0.0).min(1.0) * TOP;
    (v + ROUND_MAGIC) - ROUND_MAGIC
}

/// The same for tensors.
pub(crate) fn level_tensor(x: &Tensor) -> candle_core::Result<Tensor> {
    (x.clamp(0f32, 1f32)? * f64::from(TOP))?.round()
}

/// A smooth bound of a raw output into the open interval (lo, hi):
/// `mid + half · tanh((raw - mid) / half)`, the identity to first order near `mid`, with a
/// nonzero gradient everywhere (as the log-variance of `gaussian-learned`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Bound {
    pub mid: f32,
    pub half: f32,
}

impl Bound {
    pub const fn new(lo: f32, hi: f32) -> Self {
        Bound {
            mid: 0.5 * (lo + hi),
            half: 0.5 * (hi - lo),
        }
    }

    /// The bounded value and its derivative with respect to `raw`.
    #[inline(always)]
    pub fn apply(self, raw: f32) -> (f32, f32) {
        let t = crate::fastmath::tanh((raw - self.mid) / self.half);
        (self.mid + self.half * t, 1.0 - t * t)
    }

    /// The bounded value in f64 (host-side probability tables).
    pub fn apply_f64(self, raw: f64) -> f64 {
        let (mid, half) = (f64::from(self.mid), f64::from(self.half));
        mid + half * ((raw - mid) / half).tanh()
    }

    /// The bounded value of every element of a tensor, differentiable.
    pub fn apply_tensor(self, raw: &Tensor) -> candle_core::Result<Tensor> {
        let (mid, half) = (f64::from(self.mid), f64::from(self.half));
        (((raw - mid)? / half)?.tanh()? * half)? + mid
    }
}

/// Checks `params` `[batch, pp·dim]` against `x` `[batch, dim]`; returns (batch, dim).
pub(crate) fn check_shapes(
    what: &str,
    params: &Tensor,
    x: &Tensor,
    pp: usize,
) -> candle_core::Result<(usize, usize)> {
    let (b, d) = x.dims2()?;
    let (pb, pd) = params.dims2()?;
    if pb != b || pd != pp * d {
        candle_core::bail!(
            "{what}: params of shape [{pb}, {pd}] for data [{b}, {d}] (expected [{b}, {}])",
            pp * d
        );
    }
    Ok((b, d))
}

/// (batch, dim) of `params` `[batch, pp·dim]`.
pub(crate) fn dims_of(
    what: &str,
    params: &Tensor,
    pp: usize,
) -> candle_core::Result<(usize, usize)> {
    let (b, pd) = params.dims2()?;
    if pd % pp != 0 {
        candle_core::bail!("{what}: {pd} parameter columns do not split into {pp} blocks");
    }
    Ok((b, pd / pp))
}

/// `params` as an f32 vector on the host, and (batch, dim).
pub(crate) fn host_params(
    what: &str,
    params: &Tensor,
    pp: usize,
) -> candle_core::Result<(Vec<f32>, usize, usize)> {
    let (b, d) = dims_of(what, params, pp)?;
    let v = params
        .to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()?;
    Ok((v, b, d))
}

/// A `[batch, dim]` host result as a tensor on the device and with the dtype of `like`.
pub(crate) fn to_like(
    v: Vec<f32>,
    b: usize,
    d: usize,
    like: &Tensor,
) -> candle_core::Result<Tensor> {
    Tensor::from_vec(v, (b, d), &Device::Cpu)?
        .to_device(like.device())?
        .to_dtype(like.dtype())
}

/// Checks that there is one uniform per pixel.
pub(crate) fn check_uniforms(
    what: &str,
    uniforms: &[f32],
    b: usize,
    d: usize,
) -> candle_core::Result<()> {
    if uniforms.len() != b * d {
        candle_core::bail!("{what}: {} uniforms for {b}x{d} pixels", uniforms.len());
    }
    Ok(())
}

/// The cumulative distribution `C(v) = P(V ≤ v)` of a probability table.
pub fn cdf(pmf: &[f64; LEVELS]) -> [f64; LEVELS] {
    let mut c = [0f64; LEVELS];
    let mut acc = 0.0;
    for (c, p) in c.iter_mut().zip(pmf) {
        acc += p;
        *c = acc;
    }
    c
}

/// The inverse-CDF draw for a uniform u in [0, 1): the smallest level v with u < C(v), or 255
/// when rounding leaves the last C(v) at or below u.
pub fn inverse_cdf(cdf: &[f64; LEVELS], u: f64) -> usize {
    cdf[..LEVELS - 1].partition_point(|&c| c <= u)
}

/// Block `p` of `[batch, pp·dim]` parameters as `[batch, dim]`.
pub(crate) fn block(params: &Tensor, p: usize, d: usize) -> candle_core::Result<Tensor> {
    params.narrow(D::Minus1, p * d, d)
}
