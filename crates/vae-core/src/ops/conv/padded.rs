//! Zero-padded copies of channels-last maps, and the windows of a convolution's output pixels
//! in them: what the direct products read in place of im2col rows, and where a transposed
//! convolution's columns are added without a test at the image's edges.

use std::mem::MaybeUninit;

use super::Geom;
use crate::multiversion;

/// Height and width of the padded image.
pub(super) fn padded_dims(g: Geom) -> (usize, usize) {
    (g.h + 2 * g.pad, g.w + 2 * g.pad)
}

/// Floats of the padded copy of the batch.
pub(super) fn padded_len(g: Geom) -> usize {
    let (hp, wp) = padded_dims(g);
    g.b * hp * wp * g.c
}

/// The channels-last image `x` `[b, h, w, c]` with `pad` zeros on each side, into `out`
/// (`padded_len` floats, every one written).
pub(super) fn pad(x: &[f32], g: Geom, out: &mut [f32]) {
    let (hp, wp) = padded_dims(g);
    let (line, pline) = (g.w * g.c, wp * g.c);
    let left = g.pad * g.c;
    assert_eq!(x.len(), g.image());
    assert_eq!(out.len(), padded_len(g));
    for (img, dst) in x
        .chunks_exact(g.h * line)
        .zip(out.chunks_exact_mut(hp * pline))
    {
        let (top, rest) = dst.split_at_mut(g.pad * pline);
        top.fill(0.0);
        let (mid, bottom) = rest.split_at_mut(g.h * pline);
        bottom.fill(0.0);
        for (src, d) in img.chunks_exact(line).zip(mid.chunks_exact_mut(pline)) {
            d[..left].fill(0.0);
            d[left..left + line].copy_from_slice(src);
            d[left + line..].fill(0.0);
        }
    }
}

/// The offsets in the padded image of the windows (their top-left values) of output pixels
/// `first..first + n`, in order: walked along the lines, with no division a pixel.
pub(super) fn windows(g: Geom, first: usize, n: usize) -> impl Iterator<Item = usize> {
    let (ho, wo) = (g.ho(), g.wo());
    let (hp, wp) = padded_dims(g);
    // (A map with no output pixels has no windows to walk.)
    let (mut b, mut oy, mut ox) = match first.checked_div(ho * wo) {
        Some(b) => (b, first / wo % ho, first % wo),
        None => (0, 0, 0),
    };
    (0..n).map(move |_| {
        let at = ((b * hp + oy * g.stride) * wp + ox * g.stride) * g.c;
        ox += 1;
        if ox == wo {
            ox = 0;
            oy += 1;
            if oy == ho {
                oy = 0;
                b += 1;
            }
        }
        at
    })
}

multiversion! {
    /// The adjoint of im2col into a padded image: adds `cols`, rows `first..` of an im2col
    /// matrix of the geometry `g`, into `xp` (`padded_len` floats), each kernel row of a window
    /// as one run of `k·c` values, with no test at the image's edges (the padding takes what
    /// falls outside; [`unpad_add`] leaves it).
    pub(super) fn col2im_padded(cols: &[f32], g: Geom, first: usize, xp: &mut [f32]) {
        let (ncol, run) = (g.cols(), g.k * g.c);
        let (_, wp) = padded_dims(g);
        let line = wp * g.c;
        assert_eq!(xp.len(), padded_len(g));
        if ncol == 0 {
            return;
        }
        let n = cols.len() / ncol;
        assert!(first + n <= g.rows());
        for (win, row) in windows(g, first, n).zip(cols.chunks_exact(ncol)) {
            for (ky, src) in row.chunks_exact(run).enumerate() {
                let dst = &mut xp[win + ky * line..][..run];
                for (d, s) in dst.iter_mut().zip(src) {
                    *d += s;
                }
            }
        }
    }
}

/// `f(x[i], inside[i])` for each value of the image `x` `[b, h, w, c]` and the value at the
/// same pixel and channel inside the padded image `xp` (of [`padded_len`]).
fn with_inside<T>(xp: &[f32], g: Geom, x: &mut [T], f: impl Fn(&mut T, f32)) {
    let (hp, wp) = padded_dims(g);
    let (line, pline) = (g.w * g.c, wp * g.c);
    let left = g.pad * g.c;
    assert_eq!(x.len(), g.image());
    assert_eq!(xp.len(), padded_len(g));
    for (img, src) in x
        .chunks_exact_mut(g.h * line)
        .zip(xp.chunks_exact(hp * pline))
    {
        let mid = &src[g.pad * pline..][..g.h * pline];
        for (d, s) in img.chunks_exact_mut(line).zip(mid.chunks_exact(pline)) {
            for (d, &s) in d.iter_mut().zip(&s[left..left + line]) {
                f(d, s);
            }
        }
    }
}

/// Adds the inside of the padded image `xp` (of [`padded_len`]) to the image `x`
/// `[b, h, w, c]`.
pub(super) fn unpad_add(xp: &[f32], g: Geom, x: &mut [f32]) {
    with_inside(xp, g, x, |d, s| *d += s);
}

/// Writes the inside of the padded image `xp` over the image `x` `[b, h, w, c]` (every value
/// of it).
pub(super) fn unpad(xp: &[f32], g: Geom, x: &mut [MaybeUninit<f32>]) {
    with_inside(xp, g, x, |d, s| {
        d.write(s);
    });
}
