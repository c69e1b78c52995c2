//! The memory passes around the matrix products of a convolution: im2col and its adjoint on
//! channels-last maps, transposes between the two memory orders (with the bias, the activation
//! or its derivative applied on the way), kernel permutations, and per-thread scratch buffers.

use std::cell::RefCell;
use std::mem::MaybeUninit;

use super::Geom;
use crate::multiversion;
use crate::ops::Act;

thread_local! {
    /// Buffers of earlier operations on this thread, kept for the next ones.
    static SCRATCH: RefCell<Vec<Vec<f32>>> = const { RefCell::new(Vec::new()) };
}

/// Buffers larger than this are freed after use rather than kept (inference on large batches
/// would otherwise hold them for the life of the thread).
const KEEP_FLOATS: usize = 8 << 20;

/// Runs `f` on a scratch buffer of `n` floats from this thread's pool. Its contents are
/// unspecified (whatever an earlier operation left): `f` must write every element it reads.
/// The products, im2col and transposes of a training step reuse the same buffers step after
/// step instead of allocating (and zeroing, and faulting in) tens of megabytes each time.
pub(in crate::ops) fn with_scratch<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    let mut buf = SCRATCH
        .with(|s| {
            let mut pool = s.borrow_mut();
            // The smallest buffer that fits, else the largest (to be grown).
            let best = (0..pool.len())
                .filter(|&i| pool[i].len() >= n)
                .min_by_key(|&i| pool[i].len())
                .or_else(|| (0..pool.len()).max_by_key(|&i| pool[i].len()));
            best.map(|i| pool.swap_remove(i))
        })
        .unwrap_or_default();
    if buf.len() < n {
        buf.resize(n, 0.0);
    }
    let r = f(&mut buf[..n]);
    if buf.len() <= KEEP_FLOATS {
        SCRATCH.with(|s| s.borrow_mut().push(buf));
    }
    r
}

/// [`with_scratch`] with the buffer starting on a 64-byte boundary: a 512-bit load from it (at
/// a multiple of 16 floats) then reads one cache line, not two.
pub(in crate::ops) fn with_aligned_scratch<R>(n: usize, f: impl FnOnce(&mut [f32]) -> R) -> R {
    with_scratch(n + 15, |buf| {
        let at = buf.as_ptr().align_offset(64).min(15);
        f(&mut buf[at..at + n])
    })
}

/// A zeroed buffer of floats that starts on a 64-byte boundary (see [`with_aligned_scratch`]).
pub(in crate::ops) struct AlignedBuf {
    buf: Vec<f32>,
    at: usize,
    n: usize,
}

impl AlignedBuf {
    pub(in crate::ops) fn zeros(n: usize) -> Self {
        let buf = vec![0f32; n + 15];
        let at = buf.as_ptr().align_offset(64).min(15);
        Self { buf, at, n }
    }
}

impl std::ops::Deref for AlignedBuf {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.buf[self.at..self.at + self.n]
    }
}

impl std::ops::DerefMut for AlignedBuf {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.buf[self.at..self.at + self.n]
    }
}

/// Copies `src` into `dst` (same length); runs of four (one kernel row of a one-channel map),
/// runs of whole 16-float vectors (a kernel row of 16, 32 or 64 channels, channels-last) and
/// runs shorter than a vector (a pixel of a map of few channels, at the image's edge) are moved
/// inline rather than by a call to `memcpy`, which costs more than the copy for a few hundred
/// bytes.
#[inline(always)]
fn copy(dst: &mut [f32], src: &[f32]) {
    if let (Ok(d), Ok(s)) = (
        <&mut [f32; 4]>::try_from(&mut *dst),
        <&[f32; 4]>::try_from(src),
    ) {
        *d = *s;
    } else if dst.len().is_multiple_of(16) && dst.len() <= 256 {
        for (d, s) in dst.chunks_exact_mut(16).zip(src.chunks_exact(16)) {
            if let (Ok(d), Ok(s)) = (<&mut [f32; 16]>::try_from(d), <&[f32; 16]>::try_from(s)) {
                *d = *s;
            }
        }
    } else if dst.len() < 16 {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = *s;
        }
    } else {
        dst.copy_from_slice(src);
    }
}

/// The output pixels of `rows` im2col rows from row `first`, as runs along one output line:
/// `(row, (image, line, column), n)`, the run's first row (counted from `first`), its first
/// pixel, and its length. Each run shares its image and input rows: im2col finds the image once
/// per run and writes its rows front to back; col2im takes a kernel row at a time and adds the
/// run's windows into the one input row it touches.
fn runs(
    first: usize,
    rows: usize,
    ho: usize,
    wo: usize,
) -> impl Iterator<Item = (usize, (usize, usize, usize), usize)> {
    let mut at = (first / (ho * wo), first / wo % ho, first % wo);
    let mut row = 0;
    std::iter::from_fn(move || {
        if row >= rows {
            return None;
        }
        let n = (wo - at.2).min(rows - row);
        let run = (row, at, n);
        row += n;
        at.2 = 0;
        at.1 += 1;
        if at.1 == ho {
            at.1 = 0;
            at.0 += 1;
        }
        Some(run)
    })
}

multiversion! {
    /// Rows `first..` of the im2col matrix `[b * ho * wo, k * k * c]` of `x` `[b, h, w, c]`, as
    /// many as `out` holds: columns in `(ky, kx, c)` order, zeros where the window leaves the
    /// image. Writes every element of `out`.
    pub(in crate::ops) fn im2col(x: &[f32], g: Geom, first: usize, out: &mut [f32]) {
        let (ho, wo, k, c) = (g.ho(), g.wo(), g.k, g.c);
        let (run, line) = (k * c, g.w * c);
        let ncol = k * run;
        debug_assert!(out.len().is_multiple_of(ncol) && first + out.len() / ncol <= g.rows());
        debug_assert_eq!(x.len(), g.image());
        for (row, (b, oy, ox0), n) in runs(first, out.len() / ncol, ho, wo) {
            let img = &x[b * g.h * line..][..g.h * line];
            let seg = &mut out[row * ncol..(row + n) * ncol];
            // Pixel by pixel, so that each im2col row is written front to back.
            for (ox, dst_row) in (ox0..).zip(seg.chunks_exact_mut(ncol)) {
                let x0 = (ox * g.stride) as isize - g.pad as isize;
                let inside = x0 >= 0 && x0 as usize + k <= g.w;
                for (ky, dst) in dst_row.chunks_exact_mut(run).enumerate() {
                    let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                    if iy < 0 || iy >= g.h as isize {
                        dst.fill(0.0);
                        continue;
                    }
                    let src = &img[iy as usize * line..][..line];
                    if inside {
                        copy(dst, &src[x0 as usize * c..][..run]);
                        continue;
                    }
                    for (kx, d) in dst.chunks_exact_mut(c).enumerate() {
                        let ix = x0 + kx as isize;
                        if ix < 0 || ix >= g.w as isize {
                            d.fill(0.0);
                        } else {
                            copy(d, &src[ix as usize * c..][..c]);
                        }
                    }
                }
            }
        }
    }
}

multiversion! {
    /// The adjoint of [`im2col`]: adds `cols`, rows `first..` of an im2col matrix, into the
    /// image `x` `[b, h, w, c]` (which holds the values to add to).
    pub(in crate::ops) fn col2im(cols: &[f32], g: Geom, first: usize, x: &mut [f32]) {
        let (ho, wo, k, c) = (g.ho(), g.wo(), g.k, g.c);
        let (run, line) = (k * c, g.w * c);
        let ncol = k * run;
        for (row, (b, oy, ox0), n) in runs(first, cols.len() / ncol, ho, wo) {
            let img = &mut x[b * g.h * line..][..g.h * line];
            let seg = &cols[row * ncol..(row + n) * ncol];
            for ky in 0..k {
                let iy = (oy * g.stride + ky) as isize - g.pad as isize;
                if iy < 0 || iy >= g.h as isize {
                    continue;
                }
                let dst = &mut img[iy as usize * line..][..line];
                let rows = seg.chunks_exact(ncol).map(|r| &r[ky * run..][..run]);
                for (ox, src) in (ox0..).zip(rows) {
                    let x0 = (ox * g.stride) as isize - g.pad as isize;
                    if x0 >= 0 && x0 as usize + k <= g.w {
                        for (d, s) in dst[x0 as usize * c..][..run].iter_mut().zip(src) {
                            *d += s;
                        }
                        continue;
                    }
                    for (kx, s) in src.chunks_exact(c).enumerate() {
                        let ix = x0 + kx as isize;
                        if ix >= 0 && ix < g.w as isize {
                            for (d, s) in dst[ix as usize * c..][..c].iter_mut().zip(s) {
                                *d += s;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `[b, c, s]` (channels first) to `[b, s, c]` (channels last); `out` is fully written.
pub(in crate::ops) fn to_last(x: &[f32], b: usize, c: usize, s: usize, out: &mut [f32]) {
    for (src, dst) in x
        .chunks_exact(c * s)
        .zip(out.chunks_exact_mut(c * s))
        .take(b)
    {
        for (ci, plane) in src.chunks_exact(s).enumerate() {
            for (si, v) in plane.iter().enumerate() {
                dst[si * c + ci] = *v;
            }
        }
    }
}

/// `[b, s, c]` to `[b, c, s]`, adding `bias[c]` when given and applying `act`.
pub(in crate::ops) fn to_first(
    y: &[f32],
    b: usize,
    c: usize,
    s: usize,
    bias: Option<&[f32]>,
    act: Act,
    out: &mut [f32],
) {
    for (src, dst) in y
        .chunks_exact(c * s)
        .zip(out.chunks_exact_mut(c * s))
        .take(b)
    {
        for (ci, plane) in dst.chunks_exact_mut(s).enumerate() {
            let add = bias.map_or(0.0, |v| v[ci]);
            for (si, d) in plane.iter_mut().enumerate() {
                *d = src[si * c + ci] + add;
            }
            super::super::linear::activate(plane, act);
        }
    }
}

/// The derivative of `act` at the output `y`.
#[inline(always)]
fn act_grad(act: Act, y: f32, g: f32) -> f32 {
    match act {
        Act::Identity => g,
        Act::Relu => {
            if y > 0.0 {
                g
            } else {
                0.0
            }
        }
        Act::Tanh => g * (1.0 - y * y),
        Act::Sigmoid => g * (y * (1.0 - y)),
    }
}

multiversion! {
    /// The gradient through the activation of a channels-last output `y` `[rows, c]`, into `g`
    /// (same order), and its column sums (the bias gradient) into `db`.
    pub(in crate::ops) fn grad_last(y: &[f32], dy: &[f32], act: Act, g: &mut [f32], db: &mut [f32]) {
        let c = db.len();
        db.fill(0.0);
        for ((g, y), dy) in g.chunks_exact_mut(c).zip(y.chunks_exact(c)).zip(dy.chunks_exact(c)) {
            match act {
                Act::Identity => g.copy_from_slice(dy),
                _ => {
                    for ((g, &y), &dy) in g.iter_mut().zip(y).zip(dy) {
                        *g = act_grad(act, y, dy);
                    }
                }
            }
            for (s, &v) in db.iter_mut().zip(g.iter()) {
                *s += v;
            }
        }
    }
}

/// The gradient through the activation of a channels-first output `y` `[b, c, s]`, written
/// channels-last (`[b, s, c]`) into `g`, and its sums per channel into `db`.
pub(super) fn grad_first_to_last(
    y: &[f32],
    dy: &[f32],
    act: Act,
    b: usize,
    s: usize,
    g: &mut [f32],
    db: &mut [f32],
) {
    let c = db.len();
    db.fill(0.0);
    for bi in 0..b {
        let dst = &mut g[bi * s * c..][..s * c];
        for (ci, sum) in db.iter_mut().enumerate() {
            let at = (bi * c + ci) * s;
            let (yp, dp) = (&y[at..at + s], &dy[at..at + s]);
            let mut acc = 0f32;
            for (si, (&y, &dy)) in yp.iter().zip(dp).enumerate() {
                let v = act_grad(act, y, dy);
                dst[si * c + ci] = v;
                acc += v;
            }
            *sum += acc;
        }
    }
}

/// A kernel `[a, c, kk]` (PyTorch's order, `kk = k * k`) to `[a, kk, c]`, the column order of
/// channels-last im2col.
pub(super) fn kernel_to_last(w: &[f32], a: usize, c: usize, kk: usize) -> Vec<f32> {
    let mut out = vec![0f32; a * c * kk];
    to_last(w, a, c, kk, &mut out);
    out
}

/// The inverse of [`kernel_to_last`], into `out`.
pub(super) fn kernel_to_first(w: &[f32], a: usize, c: usize, kk: usize, out: &mut [f32]) {
    to_first(w, a, c, kk, None, Act::Identity, out);
}

crate::multiversion! {
    /// `out = act(x)`, in one pass.
    pub(super) fn activated(x: &[f32], act: Act, out: &mut [f32]) {
        match act {
            Act::Identity => out.copy_from_slice(x),
            Act::Relu => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = v.max(0.0);
                }
            }
            Act::Tanh => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = crate::fastmath::tanh(v);
                }
            }
            Act::Sigmoid => {
                for (o, &v) in out.iter_mut().zip(x) {
                    *o = crate::fastmath::sigmoid(v);
                }
            }
        }
    }
}

crate::multiversion! {
    /// The gradient of an input `x` from that of `a = act(x)`, `g`, written into `dx`, plus
    /// the output gradient `skip` of a residual block. The derivative is read from `a` itself
    /// (relu: where a > 0, which is where x > 0; tanh: 1 - a²; sigmoid: a (1 - a)).
    pub(super) fn grad_from_activated(
        a: &[f32],
        act: Act,
        g: &[f32],
        skip: Option<&[f32]>,
        dx: &mut [MaybeUninit<f32>],
    ) {
        // (Out of place: in place, relu's zeros are compiled to a masked store, slow on AMD's
        // CPUs.)
        let terms = dx.iter_mut().zip(a).zip(g);
        match skip {
            Some(skip) => {
                for (((d, &v), &g), &s) in terms.zip(skip) {
                    d.write(act_grad(act, v, g) + s);
                }
            }
            None => {
                for ((d, &v), &g) in terms {
                    d.write(act_grad(act, v, g));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    /// The runs of im2col rows from any first row (a block that starts inside an image, at a
    /// line's end, at an image's last pixel), for any number of rows, cover the rows in order
    /// with the pixels division gives, each run on one output line.
    #[test]
    fn runs_cover_the_pixels_division_gives() {
        for (ho, wo) in [(1, 1), (1, 5), (4, 1), (3, 7), (7, 7)] {
            for first in 0..3 * ho * wo {
                for rows in [0, 1, wo, 2 * ho * wo + 3] {
                    let mut counted = Vec::new();
                    for (row, (b, y, x), n) in super::runs(first, rows, ho, wo) {
                        assert_eq!(row, counted.len(), "runs are contiguous");
                        assert!(n > 0 && x + n <= wo, "a run stays on its line");
                        counted.extend((x..x + n).map(|x| (b, y, x)));
                    }
                    let divided: Vec<_> = (first..first + rows)
                        .map(|r| (r / (ho * wo), r / wo % ho, r % wo))
                        .collect();
                    assert_eq!(
                        counted, divided,
                        "ho {ho} wo {wo} first {first} rows {rows}"
                    );
                }
            }
        }
    }
}
