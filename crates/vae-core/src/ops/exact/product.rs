//! The fixed-order matrix product of the exact convolutions.
//!
//! `y[i, j] = Σ_t a[i, t] b[t, j]` with every sum taken in one order, spelled out here: a
//! single accumulator per output element, starting at 0, to which `a[i, t] · b[t, j]` (the
//! product rounded to f32) is added for `t = 0, 1, …, k - 1`, each addition rounded. Nothing
//! is reassociated and Rust never contracts `a * b + c` into a fused multiply-add, so the bits
//! depend on nothing but the operands: not on the SIMD level, which only decides how many
//! output columns one instruction updates at a time (the lanes are different outputs, never
//! parts of one sum), not on the rows computed together, not on the thread.
//!
//! The right-hand side is packed into panels of [`NR`] columns (`t`-major, so one step loads
//! the `NR` values of a row of `b` as one vector); a block of [`MR`] rows of `a` shares each
//! pass over a panel. With no fused multiply-add the multiplications are off the critical
//! path of the additions, and the `MR · NR / lanes` independent accumulators keep the adders
//! busy.

use crate::multiversion;

/// Columns of a packed panel (the outputs one step of the kernel updates for one row).
pub(super) const NR: usize = 16;
/// Rows of `a` that share each pass over a panel.
const MR: usize = 4;

/// Floats of the packing of a `[k, n]` right-hand side: whole panels.
pub(super) fn packed_len(k: usize, n: usize) -> usize {
    k * n.div_ceil(NR) * NR
}

/// Packs `b` `[k, n]` into `out` ([`packed_len`] floats): panel `p` holds `b[t, NR p + l]` at
/// `p k NR + t NR + l`, zero past column `n`. `b[t, j]` is `src[row(t) + col(j)]`.
pub(super) fn pack(
    k: usize,
    n: usize,
    src: &[f32],
    out: &mut [f32],
    row: impl Fn(usize) -> usize,
    col: impl Fn(usize) -> usize,
) {
    for (p, panel) in out.chunks_exact_mut(k * NR).enumerate() {
        // The panel's columns inside `b`, and where its padding starts.
        let w = NR.min(n.saturating_sub(p * NR));
        let cols: [usize; NR] = std::array::from_fn(|l| if l < w { col(p * NR + l) } else { 0 });
        for (t, dst) in panel.chunks_exact_mut(NR).enumerate() {
            let r = row(t);
            let (vals, pad) = dst.split_at_mut(w);
            for (v, c) in vals.iter_mut().zip(&cols) {
                *v = src[r + c];
            }
            pad.fill(0.0);
        }
    }
}

/// Copies the first `w` sums of a block's row (`w` is [`NR`] but at the last panel).
#[inline(always)]
fn store(dst: &mut [f32], s: &[f32; NR], w: usize) {
    if let Ok(d) = <&mut [f32; NR]>::try_from(&mut dst[..w]) {
        *d = *s;
    } else {
        dst[..w].copy_from_slice(&s[..w]);
    }
}

multiversion! {
    /// `y[i, j] = Σ_t a[i, t] b[t, j]` in the order of the module documentation, for `a`
    /// `[m, k]` row-major, `b` `[k, n]` packed by [`pack`], `y` `[m, n]` row-major (every
    /// element written).
    pub(super) fn product(a: &[f32], k: usize, b: &[f32], n: usize, y: &mut [f32]) {
        if k == 0 {
            y.fill(0.0);
            return;
        }
        let mut ya = y.chunks_exact_mut(MR * n);
        let mut aa = a.chunks_exact(MR * k);
        for (yb, ab) in (&mut ya).zip(&mut aa) {
            let (a0, rest) = ab.split_at(k);
            let (a1, rest) = rest.split_at(k);
            let (a2, a3) = rest.split_at(k);
            for (p, panel) in b.chunks_exact(k * NR).enumerate() {
                let s = block4([a0, a1, a2, a3], panel);
                let (j0, w) = (p * NR, NR.min(n - p * NR));
                for (r, s) in s.iter().enumerate() {
                    store(&mut yb[r * n + j0..], s, w);
                }
            }
        }
        for (yr, ar) in ya
            .into_remainder()
            .chunks_exact_mut(n)
            .zip(aa.remainder().chunks_exact(k))
        {
            for (p, panel) in b.chunks_exact(k * NR).enumerate() {
                let s = block1(ar, panel);
                let (j0, w) = (p * NR, NR.min(n - p * NR));
                store(&mut yr[j0..], &s, w);
            }
        }
    }
}

/// Four rows against one panel: each of the `4 · NR` sums in the order of the module
/// documentation.
#[inline(always)]
fn block4(a: [&[f32]; 4], panel: &[f32]) -> [[f32; NR]; 4] {
    let mut s = [[0f32; NR]; 4];
    let steps = panel
        .chunks_exact(NR)
        .zip(a[0])
        .zip(a[1])
        .zip(a[2])
        .zip(a[3]);
    for ((((b, &x0), &x1), &x2), &x3) in steps {
        let b: &[f32; NR] = b.try_into().unwrap_or(&[0.0; NR]);
        for l in 0..NR {
            s[0][l] += x0 * b[l];
            s[1][l] += x1 * b[l];
            s[2][l] += x2 * b[l];
            s[3][l] += x3 * b[l];
        }
    }
    s
}

/// One row against one panel, each sum in the same order as [`block4`]'s.
#[inline(always)]
fn block1(a: &[f32], panel: &[f32]) -> [f32; NR] {
    let mut s = [0f32; NR];
    for (b, &x) in panel.chunks_exact(NR).zip(a) {
        let b: &[f32; NR] = b.try_into().unwrap_or(&[0.0; NR]);
        for l in 0..NR {
            s[l] += x * b[l];
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fastmath::{with_simd_cap, SimdLevel};
    use crate::Rng;

    /// The same bits as the order written out one element at a time, at every SIMD level and
    /// for every number of rows (the four-row blocks and the single rows agree).
    #[test]
    fn product_follows_the_written_order() {
        for (m, k, n) in [
            (7, 37, 19),
            (4, 16, 16),
            (1, 288, 80),
            (9, 3, 33),
            (5, 1, 1),
        ] {
            let a = Rng::new(1).normal_vec(m * k);
            let b = Rng::new(2).normal_vec(k * n);
            let mut packed = vec![f32::NAN; packed_len(k, n)];
            pack(k, n, &b, &mut packed, |t| t * n, |j| j);
            let want: Vec<u32> = (0..m * n)
                .map(|e| {
                    let (i, j) = (e / n, e % n);
                    let mut s = 0f32;
                    for t in 0..k {
                        s += a[i * k + t] * b[t * n + j];
                    }
                    s.to_bits()
                })
                .collect();
            for level in [SimdLevel::Baseline, SimdLevel::V3, SimdLevel::V4] {
                let mut y = vec![f32::NAN; m * n];
                with_simd_cap(Some(level), || product(&a, k, &packed, n, &mut y));
                let got: Vec<u32> = y.iter().map(|v| v.to_bits()).collect();
                assert_eq!(got, want, "{m}x{k}x{n} at {level:?}");
                // Row by row: the same bits.
                for i in 0..m {
                    let mut row = vec![0f32; n];
                    with_simd_cap(Some(level), || {
                        product(&a[i * k..][..k], k, &packed, n, &mut row)
                    });
                    let got: Vec<u32> = row.iter().map(|v| v.to_bits()).collect();
                    assert_eq!(got, want[i * n..][..n], "row {i} of {m}x{k}x{n}");
                }
            }
        }
    }
}
