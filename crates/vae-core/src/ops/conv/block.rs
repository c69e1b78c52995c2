//! VDVAE's bottleneck residual block as one operation on channels-last maps:
//! `y = [x +] W4 act(W3 ⊛ act(W2 ⊛ act(W1 act(x) + b1) + b2) + b3) + b4`, with `W1` and `W4`
//! 1x1 convolutions (`cin → mid → out` channels) and `W2`, `W3` 3x3 ones (padding 1).
//!
//! As separate operations the block is ten graph nodes: each allocates its output, and candle's
//! backward pass allocates, zeroes and adds a gradient buffer for each, on maps of the full
//! width. Here the block is one node: the forward pass keeps its three inner maps (what the
//! backward pass needs; the activation's derivative is read from them) and the backward pass
//! runs the four products' gradients in a row, in scratch buffers, returning the input, kernel
//! and bias gradients in one buffer. The kernels and biases arrive packed (`[w1 | w2 | w3 | w4]`
//! flattened in PyTorch's layouts, `[b1 | b2 | b3 | b4]`); the tests compare the block with the
//! composition of [`super::conv2d_with`] calls and with finite differences.

use std::ops::Range;
use std::sync::Mutex;

use candle_core::{CpuStorage, CustomOp3, Layout, Shape, Tensor};

use super::layout::{grad_last, kernel_to_first, kernel_to_last, with_scratch};
use super::products::{conv_last, conv_last_backward, conv_last_backward_of, conv_last_of, Dx};
use super::Geom;
use crate::ops::linear::bias_activate;
use crate::ops::storage::{slice, zeroed};
use crate::ops::Act;

/// The channels and the activation of a bottleneck block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSpec {
    pub cin: usize,
    pub mid: usize,
    pub out: usize,
    /// Adds the input to the output (then `out == cin`).
    pub residual: bool,
    /// Before each convolution: relu or tanh (their derivatives follow from their outputs).
    pub act: Act,
}

impl BlockSpec {
    /// Lengths of the four kernels in the packed buffer.
    pub(crate) fn kernel_lens(&self) -> [usize; 4] {
        let (c, m, o) = (self.cin, self.mid, self.out);
        [m * c, 9 * m * m, 9 * m * m, o * m]
    }

    /// Lengths of the four biases in the packed buffer.
    pub(crate) fn bias_lens(&self) -> [usize; 4] {
        [self.mid, self.mid, self.mid, self.out]
    }

    fn check(&self) -> candle_core::Result<()> {
        if self.residual && self.out != self.cin {
            candle_core::bail!(
                "block: a residual block maps {} channels to {}",
                self.cin,
                self.out
            );
        }
        if !matches!(self.act, Act::Relu | Act::Tanh) {
            candle_core::bail!("block: the fused block takes relu or tanh");
        }
        Ok(())
    }
}

/// Splits a packed buffer into pieces of the given lengths.
fn pieces(all: &[f32], lens: [usize; 4]) -> [&[f32]; 4] {
    let (a, rest) = all.split_at(lens[0]);
    let (b, rest) = rest.split_at(lens[1]);
    let (c, d) = rest.split_at(lens[2]);
    [a, b, c, &d[..lens[3]]]
}

/// The block's geometries over `n` maps of `h` x `w`: a 1x1 convolution's from `c` input
/// channels (a function of `c`), and the 3x3 convolutions' (padded by 1) on the `m` inner
/// channels. The forward and the backward pass share them.
fn geoms(n: usize, h: usize, w: usize, m: usize) -> (impl Fn(usize) -> Geom, Geom) {
    let point = move |c| Geom {
        b: n,
        c,
        h,
        w,
        k: 1,
        stride: 1,
        pad: 0,
    };
    let three = Geom {
        k: 3,
        pad: 1,
        ..point(m)
    };
    (point, three)
}

/// The maps the backward pass needs: the outputs of the first three convolutions, after their
/// activations (`[rows, mid]` each).
struct Inner {
    y1: Vec<f32>,
    y2: Vec<f32>,
    y3: Vec<f32>,
}

/// `(n, h, w)` and the channels of a channels-last map.
fn map_dims(l: &Layout) -> candle_core::Result<((usize, usize, usize), usize)> {
    match l.shape().dims() {
        &[n, h, w, c] => Ok(((n, h, w), c)),
        d => candle_core::bail!("block: expected a [n, h, w, c] map, got {d:?}"),
    }
}

/// The epilogue of a hidden layer's product: its bias and activation, block by block.
fn hidden(b: &[f32], act: Act) -> impl FnMut(Range<usize>, &mut [f32]) + '_ {
    move |_, y| bias_activate(y, b, act)
}

/// The forward pass on `x` `[rows, cin]`: the output `[rows, out]` and the inner maps.
fn forward(
    spec: &BlockSpec,
    (n, h, w): (usize, usize, usize),
    x: &[f32],
    ws: [&[f32]; 4],
    bs: [&[f32]; 4],
) -> (Vec<f32>, Inner) {
    let (m, act) = (spec.mid, spec.act);
    let (point, three) = geoms(n, h, w, m);
    // Each layer's bias and activation (and the last one's residual) are applied to each
    // block of its product as the product leaves it.
    let y1 = conv_last_of(x, act, point(spec.cin), ws[0], m, hidden(bs[0], act));
    let y2 = conv_last(
        &y1,
        three,
        &kernel_to_last(ws[1], m, m, 9),
        m,
        hidden(bs[1], act),
    );
    let y3 = conv_last(
        &y2,
        three,
        &kernel_to_last(ws[2], m, m, 9),
        m,
        hidden(bs[2], act),
    );
    let o = spec.out;
    let y = conv_last(&y3, point(m), ws[3], o, |r, y| {
        let skip = spec.residual.then(|| &x[r.start * o..r.end * o]);
        bias_residual(y, bs[3], skip)
    });
    (y, Inner { y1, y2, y3 })
}

/// `(n, h, w)` of the input map and the input, kernel and bias values.
type Inputs<'a> = ((usize, usize, usize), &'a [f32], &'a [f32], &'a [f32]);

/// The block as a candle operation on `(x, packed kernels, packed biases)`.
pub(crate) struct BlockOp {
    pub spec: BlockSpec,
    /// Keep the inner maps for the backward pass (some input is tracked).
    pub keep: bool,
    inner: Mutex<Option<Inner>>,
}

impl BlockOp {
    pub(crate) fn new(spec: BlockSpec, keep: bool) -> Self {
        Self {
            spec,
            keep,
            inner: Mutex::new(None),
        }
    }

    fn checked_inputs<'a>(
        &self,
        xs: &'a CpuStorage,
        xl: &Layout,
        ws: &'a CpuStorage,
        wl: &Layout,
        bs: &'a CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<Inputs<'a>> {
        self.spec.check()?;
        let (dims, c) = map_dims(xl)?;
        let (x, w, b) = (slice(xs, xl)?, slice(ws, wl)?, slice(bs, bl)?);
        let (nw, nb) = (
            self.spec.kernel_lens().iter().sum::<usize>(),
            self.spec.bias_lens().iter().sum::<usize>(),
        );
        if c != self.spec.cin || w.len() != nw || b.len() != nb {
            candle_core::bail!(
                "block: input {:?}, {} kernel and {} bias values for {:?}",
                xl.shape(),
                w.len(),
                b.len(),
                self.spec
            );
        }
        Ok((dims, x, w, b))
    }
}

impl CustomOp3 for BlockOp {
    fn name(&self) -> &'static str {
        "bottleneck-block"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        bs: &CpuStorage,
        bl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (dims, x, w, b) = self.checked_inputs(xs, xl, ws, wl, bs, bl)?;
        let s = &self.spec;
        let (y, inner) = forward(
            s,
            dims,
            x,
            pieces(w, s.kernel_lens()),
            pieces(b, s.bias_lens()),
        );
        if self.keep {
            *self
                .inner
                .lock()
                .map_err(|_| candle_core::Error::Msg("block: poisoned".into()))? = Some(inner);
        }
        let (n, h, wd) = dims;
        Ok((CpuStorage::F32(y), Shape::from((n, h, wd, s.out))))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        _y: &Tensor,
        dy: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let inner = self
            .inner
            .lock()
            .map_err(|_| candle_core::Error::Msg("block: poisoned".into()))?
            .take();
        let need_dx = x.track_op();
        let op = BlockBackward {
            spec: self.spec,
            inner: Mutex::new(inner),
            need_dx,
        };
        let packed = x.apply_op3_no_bwd(w, &dy.contiguous()?, &op)?;
        let (nx, nw) = (if need_dx { x.elem_count() } else { 0 }, w.elem_count());
        let dx = need_dx
            .then(|| packed.narrow(0, 0, nx)?.reshape(x.shape()))
            .transpose()?;
        let dw = packed.narrow(0, nx, nw)?;
        let db = packed.narrow(0, nx + nw, b.elem_count())?;
        Ok((dx, Some(dw), Some(db)))
    }
}

/// The gradients of [`BlockOp`] from `(x, packed kernels, dy)`: `[dx | dw | db]` (`dx` only
/// when `need_dx`), with the inner maps of the forward pass (recomputed when absent).
struct BlockBackward {
    spec: BlockSpec,
    inner: Mutex<Option<Inner>>,
    need_dx: bool,
}

impl CustomOp3 for BlockBackward {
    fn name(&self) -> &'static str {
        "bottleneck-block-backward"
    }

    fn cpu_fwd(
        &self,
        xs: &CpuStorage,
        xl: &Layout,
        ws: &CpuStorage,
        wl: &Layout,
        dys: &CpuStorage,
        dyl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let s = self.spec;
        s.check()?;
        let ((n, h, wd), c) = map_dims(xl)?;
        let (x, w, dy) = (slice(xs, xl)?, slice(ws, wl)?, slice(dys, dyl)?);
        let rows = n * h * wd;
        let (m, o, act) = (s.mid, s.out, s.act);
        let (klens, blens) = (s.kernel_lens(), s.bias_lens());
        let (nw, nb) = (klens.iter().sum::<usize>(), blens.iter().sum::<usize>());
        if c != s.cin || w.len() != nw || dy.len() != rows * o {
            candle_core::bail!("block backward: gradient {:?} does not fit", dyl.shape());
        }
        let ws = pieces(w, klens);
        // The forward operation keeps its inner maps whenever an input is tracked, which is
        // when a backward pass can run.
        let inner = self
            .inner
            .lock()
            .map_err(|_| candle_core::Error::Msg("block: poisoned".into()))?
            .take()
            .ok_or_else(|| candle_core::Error::Msg("block backward: no inner maps kept".into()))?;
        let nx = if self.need_dx { x.len() } else { 0 };
        let len = nx + nw + nb;
        // dx is written whole by the first layer's product (a 1x1 convolution), so it is not
        // zeroed first; the kernel and bias gradients are.
        let mut out: Vec<f32> = Vec::with_capacity(len);
        let (dx_out, rest) = out.spare_capacity_mut()[..len].split_at_mut(nx);
        let (dw_out, db_out) = rest.split_at_mut(nw);
        let (dw_out, db_out) = (zeroed(dw_out), zeroed(db_out));
        let [dw1, dw2, dw3, dw4] = {
            let (a, r) = dw_out.split_at_mut(klens[0]);
            let (b2, r) = r.split_at_mut(klens[1]);
            let (c3, d4) = r.split_at_mut(klens[2]);
            [a, b2, c3, d4]
        };
        let [db1, db2, db3, db4] = {
            let (a, r) = db_out.split_at_mut(blens[0]);
            let (b2, r) = r.split_at_mut(blens[1]);
            let (c3, d4) = r.split_at_mut(blens[2]);
            [a, b2, c3, d4]
        };
        let (point, three) = geoms(n, h, wd, m);
        with_scratch(rows * m, |g| {
            with_scratch(rows * m, |d| {
                // Last layer (no activation): db4, dW4 and d = dy W4.
                column_sums(dy, db4);
                conv_last_backward(&inner.y3, point(m), dy, o, dw4, Some((ws[3], &mut *d)));
                // Through act(y3), the third and second convolutions.
                for (y_out, y_in, wk, dwk, dbk) in [
                    (&inner.y3, &inner.y2, ws[2], &mut *dw3, &mut *db3),
                    (&inner.y2, &inner.y1, ws[1], &mut *dw2, &mut *db2),
                ] {
                    grad_last(y_out, d, act, g, dbk);
                    let wt = kernel_to_last(wk, m, m, 9);
                    let mut dwt = vec![0f32; 9 * m * m];
                    // (d was read above; the 3x3 convolution adds its gradient into zeros.)
                    d.fill(0.0);
                    conv_last_backward(y_in, three, g, m, &mut dwt, Some((&wt, &mut *d)));
                    kernel_to_first(&dwt, m, m, 9, dwk);
                }
                // Through act(y1), the first convolution, whose input is act(x), and act: the
                // gradient of x, plus dy where the block adds its input.
                grad_last(&inner.y1, d, act, g, db1);
                let dx = self.need_dx.then_some((ws[0], Dx::Write(&mut *dx_out)));
                let skip = s.residual.then_some(dy);
                conv_last_backward_of(x, act, point(c), g, m, dw1, dx, skip);
            })
        });
        // SAFETY: dx was written whole above (when it has a part), dw and db zeroed then
        // written; together they are the first len elements.
        unsafe { out.set_len(len) };
        Ok((CpuStorage::F32(out), Shape::from(len)))
    }
}

/// Column sums of a `[rows, c]` matrix into `sums` (`c` values).
fn column_sums(m: &[f32], sums: &mut [f32]) {
    sums.fill(0.0);
    for row in m.chunks_exact(sums.len()) {
        for (s, &v) in sums.iter_mut().zip(row) {
            *s += v;
        }
    }
}

crate::multiversion! {
    /// Adds the bias to each row of `y` `[rows, c]`, and the block's input for a residual block.
    fn bias_residual(y: &mut [f32], b: &[f32], x: Option<&[f32]>) {
        match x {
            Some(x) => {
                for (row, xr) in y.chunks_exact_mut(b.len()).zip(x.chunks_exact(b.len())) {
                    for ((v, &b), &x) in row.iter_mut().zip(b).zip(xr) {
                        *v += b + x;
                    }
                }
            }
            None => bias_activate(y, b, Act::Identity),
        }
    }
}
