//! Integer entropy models for constriction's stack coder, and the latent bins.
//!
//! Every model is a cumulative distribution over `0..n` in fixed point: integers with
//! `C(0) = 0`, `C(n) = 2^PRECISION` and `C(i + 1) > C(i)`, computed from a float CDF `F` by
//! [`quantise`]: `C(i) = floor(F(i) (2^P - 2n)) + 2i`. The `2i` term gives every symbol at least
//! two units (a leaky model), so even a float CDF that steps back by an ulp cannot produce a
//! zero-probability symbol or a decreasing `C`. Decoding searches `C` by bisection, evaluating
//! the same function the encoder evaluates, so the two sides agree by construction.
//! constriction's own quantizers evaluate f64 CDFs through libm and are not used.

use std::num::NonZeroU32;
use std::sync::OnceLock;

use constriction::stream::model::{DecoderModel, EncoderModel, EntropyModel};

use crate::detmath::{normal_cdf, normal_quantile, normal_quantile_rough};
use crate::{CodecError, Result};

/// Bits of fixed-point precision of every model (constriction's default for 32-bit words).
pub const PRECISION: usize = 24;
/// 2^PRECISION.
pub const TOTAL: u32 = 1 << PRECISION;

/// The stack coder: 32-bit words, 64-bit state.
pub type Coder = constriction::stream::stack::DefaultAnsCoder;

/// A distribution over `0..len()` given by its integer CDF.
#[allow(clippy::len_without_is_empty)] // a distribution always has symbols
pub trait IntCdf {
    /// The number of symbols, at least 2.
    fn len(&self) -> u32;
    /// `C(i)` for `i` in `0..=len()`: 0 at 0, [`TOTAL`] at `len()`, strictly increasing.
    fn cdf(&self, i: u32) -> u32;
    /// A guess of the symbol whose interval holds `quantile`, where a cheap one exists. The
    /// search starts there; the symbol found does not depend on the guess.
    fn guess(&self, _quantile: u32) -> Option<u32> {
        None
    }
}

/// `floor(clamp(f, 0, 1) * (2^P - 2n)) + 2i` for symbol edge `i` of `n`; exact at both ends.
#[inline(always)]
pub fn quantise(f: f64, i: u32, n: u32) -> u32 {
    if i == 0 {
        return 0;
    }
    if i >= n {
        return TOTAL;
    }
    // NaN compares false twice and becomes 0 (a NaN never reaches here from validated
    // parameters; the clamp keeps the result in range whatever happens).
    let f = if f > 0.0 { f.min(1.0) } else { 0.0 };
    let span = (TOTAL - 2 * n) as f64;
    (f * span) as u32 + 2 * i
}

/// An [`IntCdf`] as a constriction entropy model (symbols are `u32`).
#[derive(Debug, Clone, Copy)]
pub struct Model<M>(pub M);

impl<M: IntCdf> EntropyModel<PRECISION> for Model<M> {
    type Symbol = u32;
    type Probability = u32;
}

impl<M: IntCdf> EncoderModel<PRECISION> for Model<M> {
    fn left_cumulative_and_probability(
        &self,
        symbol: impl std::borrow::Borrow<u32>,
    ) -> Option<(u32, NonZeroU32)> {
        let s = *symbol.borrow();
        if s >= self.0.len() {
            return None;
        }
        let (l, r) = (self.0.cdf(s), self.0.cdf(s + 1));
        NonZeroU32::new(r.checked_sub(l)?).map(|p| (l, p))
    }
}

impl<M: IntCdf> DecoderModel<PRECISION> for Model<M> {
    fn quantile_function(&self, quantile: u32) -> (u32, u32, NonZeroU32) {
        let n = self.0.len();
        // Invariant: C(lo) <= quantile < C(hi).
        let (mut lo, mut hi) = (0u32, n);
        let (mut clo, mut chi) = (0u32, TOTAL);
        if let Some(g) = self.0.guess(quantile).filter(|&g| g < n) {
            // Gallop from the guess to a bracket, then bisect inside it.
            let cg = self.0.cdf(g);
            let mut step = 1;
            if cg <= quantile {
                (lo, clo) = (g, cg);
                while lo + step < n {
                    let c = self.0.cdf(lo + step);
                    if c > quantile {
                        (hi, chi) = (lo + step, c);
                        break;
                    }
                    (lo, clo) = (lo + step, c);
                    step *= 2;
                }
            } else {
                (hi, chi) = (g, cg);
                while hi > step {
                    let c = self.0.cdf(hi - step);
                    if c <= quantile {
                        (lo, clo) = (hi - step, c);
                        break;
                    }
                    (hi, chi) = (hi - step, c);
                    step *= 2;
                }
            }
        }
        while hi - lo > 1 {
            let mid = lo + (hi - lo) / 2;
            let c = self.0.cdf(mid);
            if c <= quantile {
                lo = mid;
                clo = c;
            } else {
                hi = mid;
                chi = c;
            }
        }
        // C is strictly increasing, so chi > clo; the fallback is unreachable.
        (
            lo,
            clo,
            NonZeroU32::new(chi - clo).unwrap_or(NonZeroU32::MIN),
        )
    }
}

/// One symbol's interval `[left, left + prob)`, as an encoder model for that symbol: what
/// [`crate::bitsback`] pushes once it has the interval (and counted its bits), so that the
/// coder does not evaluate the CDF again.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Interval {
    pub left: u32,
    pub prob: NonZeroU32,
}

impl EntropyModel<PRECISION> for Interval {
    type Symbol = u32;
    type Probability = u32;
}

impl EncoderModel<PRECISION> for Interval {
    fn left_cumulative_and_probability(
        &self,
        _symbol: impl std::borrow::Borrow<u32>,
    ) -> Option<(u32, NonZeroU32)> {
        Some((self.left, self.prob))
    }
}

/// A model that remembers the probability of the last symbol decoded with it (to count its
/// bits without evaluating the CDF again).
#[derive(Debug)]
pub(crate) struct Recording<M> {
    pub model: Model<M>,
    pub last: std::cell::Cell<u32>,
}

impl<M: IntCdf> EntropyModel<PRECISION> for &Recording<M> {
    type Symbol = u32;
    type Probability = u32;
}

impl<M: IntCdf> DecoderModel<PRECISION> for &Recording<M> {
    fn quantile_function(&self, quantile: u32) -> (u32, u32, NonZeroU32) {
        let r = self.model.quantile_function(quantile);
        self.last.set(r.2.get());
        r
    }
}

/// A table of `C(0..=n)`.
#[derive(Debug, Clone)]
pub struct TableCdf(pub Vec<u32>);

impl IntCdf for &TableCdf {
    fn len(&self) -> u32 {
        (self.0.len() - 1) as u32
    }
    fn cdf(&self, i: u32) -> u32 {
        self.0[i as usize]
    }
}

/// A one-dimensional Gaussian N(mu, sigma^2).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Gaussian {
    pub mu: f64,
    pub sigma: f64,
}

impl Gaussian {
    /// The standard normal N(0, 1), the prior of a single-latent VAE.
    pub const STANDARD: Gaussian = Gaussian {
        mu: 0.0,
        sigma: 1.0,
    };

    /// N(mu, e^logvar) with the deterministic `exp`.
    pub fn from_mu_logvar(mu: f64, logvar: f64) -> Gaussian {
        Gaussian {
            mu,
            sigma: crate::detmath::exp(0.5 * logvar),
        }
    }

    /// Checks that mu is finite and sigma finite and positive.
    pub fn validate(&self, what: &str) -> Result<()> {
        if self.mu.is_finite() && self.sigma.is_finite() && self.sigma > 0.0 {
            Ok(())
        } else {
            Err(CodecError::BadParameter(format!(
                "{what}: N({}, {}) needs a finite mean and a finite positive sigma",
                self.mu, self.sigma
            )))
        }
    }
}

/// The smallest and largest supported latent bin precisions.
pub const LATENT_BITS: std::ops::RangeInclusive<u32> = 4..=20;

/// The bins of a standard normal: `2^bits` intervals of equal mass.
///
/// Bin `i` covers `[t_i, t_{i+1})` with `t_i = Φ⁻¹(i / 2^bits)` (`t_0 = -inf`,
/// `t_{2^bits} = +inf`) and stands for its median `Φ⁻¹((i + 1/2) / 2^bits)`. A latent with
/// prior N(mu, sigma) uses the bins mapped through `mu + sigma t`.
#[derive(Debug)]
pub struct Bins {
    bits: u32,
    edges: Vec<f64>,
    centres: Vec<f64>,
}

impl Bins {
    /// The bins for `bits` from 1 to the top of [`LATENT_BITS`] (below its start: the
    /// coarse bins of a chunk's warm-up), built once per process.
    pub fn get(bits: u32) -> Result<&'static Bins> {
        static CACHE: [OnceLock<Bins>; 21] = [const { OnceLock::new() }; 21];
        if !(1..=*LATENT_BITS.end()).contains(&bits) {
            return Err(CodecError::BadParameter(format!(
                "latent bin precision {bits} is outside {}..={}",
                LATENT_BITS.start(),
                LATENT_BITS.end()
            )));
        }
        Ok(CACHE[bits as usize].get_or_init(|| Bins::build(bits)))
    }

    fn build(bits: u32) -> Bins {
        let n = 1usize << bits;
        let scale = 1.0 / n as f64;
        let edges = (0..=n).map(|i| normal_quantile(i as f64 * scale)).collect();
        let centres = (0..n)
            .map(|i| normal_quantile((i as f64 + 0.5) * scale))
            .collect();
        Bins {
            bits,
            edges,
            centres,
        }
    }

    pub fn bits(&self) -> u32 {
        self.bits
    }

    /// The number of bins, `2^bits`.
    pub fn count(&self) -> u32 {
        1 << self.bits
    }

    /// The standardised edge `t_i`, `i` in `0..=count()`.
    pub fn edge(&self, i: u32) -> f64 {
        self.edges[i as usize]
    }

    /// The standardised value of bin `i`.
    pub fn centre(&self, i: u32) -> f64 {
        self.centres[i as usize]
    }

    /// The bin holding the standardised value `u`: the number of inner edges <= u (0 for NaN).
    ///
    /// The search starts from a guess (the bins have equal mass, so bin ≈ Φ(u) · count, with a
    /// logistic approximation of Φ within 2e-4) and gallops to a bracket: a few comparisons
    /// instead of `bits` probes across the table. The edges alone decide the result.
    pub fn bin_of(&self, u: f64) -> u32 {
        let inner = &self.edges[1..self.edges.len() - 1];
        let m = inner.len();
        let below = |i: usize| inner[i] <= u; // true on a prefix of `inner`
        let p = 1.0 / (1.0 + (-(1.5976 * u + 0.07056 * u * u * u)).exp());
        let g = if p.is_nan() {
            0
        } else {
            ((p * (m + 1) as f64) as usize).min(m)
        };
        // The answer `a` (the first index that is not below) lies in [lo, hi].
        let (lo, hi) = if g < m && below(g) {
            let (mut lo, mut step) = (g + 1, 1);
            loop {
                let probe = lo + step - 1;
                if probe >= m {
                    break (lo, m);
                }
                if !below(probe) {
                    break (lo, probe);
                }
                lo = probe + 1;
                step *= 2;
            }
        } else {
            let (mut hi, mut step) = (g, 1);
            loop {
                if hi == 0 {
                    break (0, 0);
                }
                let probe = hi.saturating_sub(step);
                if below(probe) {
                    break (probe + 1, hi);
                }
                hi = probe;
                step *= 2;
            }
        };
        (lo + inner[lo..hi].partition_point(|&t| t <= u)) as u32
    }

    /// The value of bin `i` under the prior `p`: `mu + sigma * centre(i)`.
    pub fn value(&self, p: Gaussian, i: u32) -> f64 {
        p.mu + p.sigma * self.centre(i)
    }
}

/// The prior model of one latent: uniform over the bins (exact in fixed point).
#[derive(Debug, Clone, Copy)]
pub struct UniformBins {
    pub bits: u32,
}

impl IntCdf for UniformBins {
    fn len(&self) -> u32 {
        1 << self.bits
    }
    fn cdf(&self, i: u32) -> u32 {
        i << (PRECISION as u32 - self.bits)
    }
}

/// The posterior window reaches this many posterior sigmas either side of its mean: the mass
/// outside, 2 Φ(-9) ≈ 2e-19, is far below the fixed-point resolution.
const WINDOW_SIGMAS: f64 = 9.0;

/// The posterior model of one latent: the N(mu_q, sigma_q) mass of each bin of the prior
/// N(mu_p, sigma_p), restricted to the bins that meet `mu_q ± 9 sigma_q` (at least two).
///
/// Symbols are bin indices relative to [`PosteriorBins::first`]. Bins outside the window have
/// probability zero: the encoder pops a bin from this model and the decoder pushes that same
/// bin back, so it is always inside.
#[derive(Debug, Clone, Copy)]
pub struct PosteriorBins<'b> {
    bins: &'b Bins,
    prior: Gaussian,
    post: Gaussian,
    first: u32,
    len: u32,
}

impl<'b> PosteriorBins<'b> {
    pub fn new(bins: &'b Bins, prior: Gaussian, post: Gaussian) -> Result<Self> {
        prior.validate("latent prior")?;
        post.validate("latent posterior")?;
        let standard = |v: f64| (v - prior.mu) / prior.sigma;
        let mut first = bins.bin_of(standard(post.mu - WINDOW_SIGMAS * post.sigma));
        let mut last = bins.bin_of(standard(post.mu + WINDOW_SIGMAS * post.sigma));
        if last <= first {
            if first + 1 < bins.count() {
                last = first + 1;
            } else {
                first = last - 1;
            }
        }
        // The window's first edge lies at or below mu_q - 9 sigma_q and its last at or above
        // mu_q + 9 sigma_q, so the posterior's mass outside it (at most Φ(-9) ≈ 1e-19 a side)
        // is below f64's resolution of 1: the window's CDF is Φ itself, unnormalised.
        Ok(PosteriorBins {
            bins,
            prior,
            post,
            first,
            len: last - first + 1,
        })
    }

    /// The first bin of the window.
    pub fn first(&self) -> u32 {
        self.first
    }

    /// Φ((mu_p + sigma_p t_j - mu_q) / sigma_q): non-decreasing in j.
    #[inline(always)]
    fn float_cdf(&self, j: u32) -> f64 {
        let e = self.prior.mu + self.prior.sigma * self.bins.edge(j);
        normal_cdf((e - self.post.mu) / self.post.sigma)
    }
}

impl IntCdf for PosteriorBins<'_> {
    fn len(&self) -> u32 {
        self.len
    }
    /// The bin where the posterior reaches the quantile's share of its mass, by a rough Φ⁻¹:
    /// the search then needs a few CDF evaluations instead of log2(len).
    fn guess(&self, quantile: u32) -> Option<u32> {
        let f = quantile as f64 / TOTAL as f64;
        let z = self.post.mu + self.post.sigma * normal_quantile_rough(f);
        let u = (z - self.prior.mu) / self.prior.sigma;
        Some(
            self.bins
                .bin_of(u)
                .saturating_sub(self.first)
                .min(self.len - 1),
        )
    }
    fn cdf(&self, i: u32) -> u32 {
        if i == 0 || i >= self.len {
            return quantise(0.0, i, self.len);
        }
        quantise(self.float_cdf(self.first + i), i, self.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use constriction::stream::{Decode, Encode};

    fn check_cdf(m: impl IntCdf) {
        let n = m.len();
        assert!(n >= 2);
        assert_eq!(m.cdf(0), 0);
        assert_eq!(m.cdf(n), TOTAL);
        for i in 0..n {
            assert!(m.cdf(i + 1) > m.cdf(i), "C({}) <= C({i})", i + 1);
        }
    }

    #[test]
    fn bins_have_equal_mass_and_sorted_edges() {
        let b = Bins::get(12).unwrap();
        assert_eq!(b.count(), 4096);
        assert_eq!(b.edge(0), f64::NEG_INFINITY);
        assert_eq!(b.edge(4096), f64::INFINITY);
        assert_eq!(b.edge(2048), 0.0);
        for i in 0..4096 {
            assert!(b.edge(i) < b.edge(i + 1));
            assert!(b.edge(i) < b.centre(i) && b.centre(i) < b.edge(i + 1));
            let mass = normal_cdf(b.edge(i + 1)) - normal_cdf(b.edge(i));
            assert!((mass * 4096.0 - 1.0).abs() < 1e-9, "bin {i}: mass {mass}");
            assert_eq!(b.bin_of(b.centre(i)), i);
            assert_eq!(b.bin_of(b.edge(i).max(-1e300)), i);
        }
        assert!(Bins::get(0).is_err() && Bins::get(21).is_err());
        assert_eq!(Bins::get(1).unwrap().count(), 2);
    }

    /// The guessed search gives the plain count of inner edges <= u, for every kind of value.
    #[test]
    fn bin_of_counts_the_edges_below() {
        for bits in [1, 3, 14, 20] {
            let b = Bins::get(bits).unwrap();
            let inner = &b.edges[1..b.edges.len() - 1];
            let plain = |u: f64| inner.partition_point(|&t| t <= u) as u32;
            let mut state = 0x9e37_79b9_7f4a_7c15u64 ^ u64::from(bits);
            let mut rng = || {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                (state >> 11) as f64 / (1u64 << 53) as f64
            };
            let mut values: Vec<f64> = vec![
                f64::NAN,
                f64::INFINITY,
                f64::NEG_INFINITY,
                f64::MAX,
                -f64::MAX,
                0.0,
                -0.0,
                1e-300,
                8.5,
                -8.5,
                40.0,
                -40.0,
            ];
            values.extend(inner.iter().step_by(inner.len().div_ceil(500)).copied());
            values.extend(inner.iter().map(|&t| t.next_down()).step_by(997));
            values.extend((0..20_000).map(|_| rng() * 12.0 - 6.0));
            for u in values {
                assert_eq!(b.bin_of(u), plain(u), "{bits} bits, u = {u:e}");
            }
        }
    }

    #[test]
    fn posterior_cdfs_are_valid_for_extreme_parameters() {
        let bins = Bins::get(16).unwrap();
        for prior in [
            Gaussian::STANDARD,
            Gaussian {
                mu: 3.0,
                sigma: 0.01,
            },
        ] {
            for mu in [-1e6, -40.0, -5.0, -0.3, 0.0, 1e-9, 2.5, 9.0, 1e9] {
                for sigma in [1e-30, 1e-9, 1e-4, 0.05, 1.0, 7.0, 1e8] {
                    let m = PosteriorBins::new(bins, prior, Gaussian { mu, sigma }).unwrap();
                    assert!(m.first() + m.len() <= bins.count());
                    check_cdf(m);
                }
            }
        }
        for bad in [
            Gaussian {
                mu: f64::NAN,
                sigma: 1.0,
            },
            Gaussian {
                mu: 0.0,
                sigma: 0.0,
            },
            Gaussian {
                mu: 0.0,
                sigma: f64::INFINITY,
            },
        ] {
            assert!(PosteriorBins::new(bins, Gaussian::STANDARD, bad).is_err());
        }
    }

    /// The quantised posterior is close to the exact bin masses: its cross-entropy exceeds the
    /// exact entropy by little (leak and rounding).
    #[test]
    fn posterior_masses_match_the_gaussian() {
        let bins = Bins::get(16).unwrap();
        let post = Gaussian {
            mu: 0.7,
            sigma: 0.02,
        };
        let m = PosteriorBins::new(bins, Gaussian::STANDARD, post).unwrap();
        let (mut h, mut ce) = (0.0, 0.0);
        for i in 0..m.len() {
            let p = normal_cdf((bins.edge(m.first() + i + 1) - 0.7) / 0.02)
                - normal_cdf((bins.edge(m.first() + i) - 0.7) / 0.02);
            let q = (m.cdf(i + 1) - m.cdf(i)) as f64 / TOTAL as f64;
            if p > 0.0 {
                h -= p * p.log2();
                ce -= p * q.log2();
            }
        }
        assert!(ce - h < 1e-3, "excess {} bits", ce - h);
    }

    #[test]
    fn symbols_round_trip_through_the_coder() {
        let bins = Bins::get(14).unwrap();
        let mut coder = Coder::new();
        let posts: Vec<_> = (0..500)
            .map(|i| Gaussian {
                mu: (i as f64 * 0.37).sin() * 3.0,
                sigma: 0.001 + (i % 7) as f64 * 0.2,
            })
            .collect();
        let syms: Vec<u32> = (0..500u32).map(|i| (i * 7919) % 5).collect();
        for (p, &s) in posts.iter().zip(&syms).rev() {
            let m = Model(PosteriorBins::new(bins, Gaussian::STANDARD, *p).unwrap());
            coder.encode_symbol(s.min(m.0.len() - 1), m).unwrap();
        }
        let prior = Model(UniformBins { bits: 14 });
        for i in 0..100u32 {
            coder.encode_symbol((i * 131) % 16384, prior).unwrap();
        }
        for i in (0..100u32).rev() {
            assert_eq!(coder.decode_symbol(prior).unwrap(), (i * 131) % 16384);
        }
        for (p, &s) in posts.iter().zip(&syms) {
            let m = Model(PosteriorBins::new(bins, Gaussian::STANDARD, *p).unwrap());
            assert_eq!(coder.decode_symbol(m).unwrap(), s.min(m.0.len() - 1));
        }
        assert!(coder.is_empty());
    }

    /// The posterior's guess finds the symbol plain bisection finds, for sharp, wide and
    /// off-centre posteriors and every part of the quantile range.
    #[test]
    fn posterior_guess_finds_the_bisection_symbol() {
        #[derive(Clone, Copy)]
        struct Plain<'a>(PosteriorBins<'a>);
        impl IntCdf for Plain<'_> {
            fn len(&self) -> u32 {
                self.0.len()
            }
            fn cdf(&self, i: u32) -> u32 {
                self.0.cdf(i)
            }
        }
        for bits in [3, 10, 14] {
            let bins = Bins::get(bits).unwrap();
            for (mu, sigma) in [
                (0.0, 1.0),
                (0.7, 0.02),
                (-3.5, 0.3),
                (2.0, 1e-6),
                (40.0, 2.0),
            ] {
                let prior = Gaussian {
                    mu: 0.1,
                    sigma: 0.8,
                };
                let m = PosteriorBins::new(bins, prior, Gaussian { mu, sigma }).unwrap();
                for q in (0..TOTAL).step_by(65_537).chain([0, 1, TOTAL - 1]) {
                    assert_eq!(
                        Model(m).quantile_function(q),
                        Model(Plain(m)).quantile_function(q),
                        "{bits} bits, N({mu}, {sigma}), quantile {q}"
                    );
                }
            }
        }
    }

    /// The search from a guess finds the same symbol as plain bisection, whatever the guess.
    #[test]
    fn guessed_search_agrees_with_bisection() {
        struct Guessing<'a>(&'a TableCdf, u32);
        impl IntCdf for Guessing<'_> {
            fn len(&self) -> u32 {
                self.0 .0.len() as u32 - 1
            }
            fn cdf(&self, i: u32) -> u32 {
                self.0 .0[i as usize]
            }
            fn guess(&self, _q: u32) -> Option<u32> {
                Some(self.1)
            }
        }
        let t = crate::pixels::beta_binomial_table(0.7, 3.0);
        for g in [0, 1, 17, 128, 254, 255, 256, 9999] {
            for q in (0..TOTAL).step_by(4099).chain([0, TOTAL - 1]) {
                let plain = Model(&t).quantile_function(q);
                let guessed = Model(Guessing(&t, g)).quantile_function(q);
                assert_eq!(plain, guessed, "guess {g}, quantile {q}");
            }
        }
    }
}
