use candle_core::{Device, Tensor, Var};

use super::*;
use crate::ops::Kernels;
use crate::Rng;

fn rand(shape: &[usize], seed: u64) -> Var {
    let n = shape.iter().product();
    Var::from_vec(Rng::new(seed).normal_vec(n), shape, &Device::Cpu).unwrap()
}

fn noise(like: &Tensor, seed: u64) -> Tensor {
    Tensor::from_vec(
        Rng::new(seed).normal_vec(like.elem_count()),
        like.shape(),
        &Device::Cpu,
    )
    .unwrap()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    (a - b)
        .unwrap()
        .abs()
        .unwrap()
        .flatten_all()
        .unwrap()
        .max(0)
        .unwrap()
        .to_scalar::<f32>()
        .unwrap()
}

/// An NCHW map in memory order `m`.
fn in_layout(x: &Tensor, m: MapLayout) -> Tensor {
    match m {
        MapLayout::Nchw => x.clone(),
        MapLayout::Nhwc => x.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap(),
    }
}

/// The conv preset's shapes and odd ones: (batch, in channels, side, out channels, k, stride,
/// pad). The last one's im2col matrices span several row blocks, the last one partial (2 blocks
/// of 256 columns for the convolution, 8 for the transposed one).
const SHAPES: [(usize, usize, usize, usize, usize, usize, usize); 5] = [
    (2, 1, 28, 3, 4, 2, 1),
    (3, 4, 7, 5, 4, 2, 1),
    (2, 3, 9, 2, 3, 1, 1),
    (1, 2, 6, 3, 3, 2, 0),
    (5, 16, 20, 4, 4, 2, 1),
];

const LAYOUTS: [MapLayout; 2] = [MapLayout::Nchw, MapLayout::Nhwc];
const ACTS: [Act; 4] = [Act::Identity, Act::Relu, Act::Tanh, Act::Sigmoid];

/// The NCHW wrappers against candle's own convolutions: values and all three gradients (the
/// kernel gradient of the transposed convolution by finite differences, see below).
#[test]
fn convolutions_match_candle() -> candle_core::Result<()> {
    for (b, c, h, o, k, s, p) in SHAPES {
        let x = rand(&[b, c, h, h], 1);
        let w = rand(&[o, c, k, k], 2);
        let bias = rand(&[o], 3);
        let ours = conv2d(x.as_tensor(), w.as_tensor(), bias.as_tensor(), s, p)?;
        let theirs = x
            .as_tensor()
            .conv2d(w.as_tensor(), p, s, 1, 1)?
            .broadcast_add(&bias.as_tensor().reshape((1, o, 1, 1))?)?;
        assert_eq!(ours.dims(), theirs.dims());
        assert!(max_diff(&ours, &theirs) < 1e-4);
        let up = noise(&ours, 4);
        let g1 = (ours * &up)?.sum_all()?.backward()?;
        let g2 = (theirs * &up)?.sum_all()?.backward()?;
        for v in [&x, &w, &bias] {
            let d = max_diff(
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert!(d < 1e-3, "conv2d gradient differs by {d}");
        }

        // The transposed convolution with a kernel [o, c, k, k] maps o channels back to c.
        let xt = rand(&[b, o, h, h], 5);
        let bt = rand(&[c], 6);
        let ours = conv_transpose2d(xt.as_tensor(), w.as_tensor(), bt.as_tensor(), s, p)?;
        let theirs = xt
            .as_tensor()
            .conv_transpose2d(w.as_tensor(), p, 0, s, 1)?
            .broadcast_add(&bt.as_tensor().reshape((1, c, 1, 1))?)?;
        assert_eq!(ours.dims(), theirs.dims());
        assert!(max_diff(&ours, &theirs) < 1e-4);
        let up = noise(&ours, 7);
        let g1 = (ours * &up)?.sum_all()?.backward()?;
        let g2 = (theirs * &up)?.sum_all()?.backward()?;
        for v in [&xt, &bt] {
            let d = max_diff(
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            assert!(d < 1e-3, "conv-transpose2d gradient differs by {d}");
        }
        // candle's transposed convolution gives no trustworthy kernel gradient for every
        // geometry: that one is checked by finite differences.
        let gw = g1.get(w.as_tensor()).unwrap();
        let f = |wt: &Tensor| {
            let y = conv_transpose2d(xt.as_tensor(), wt, bt.as_tensor(), s, p).unwrap();
            dot(&y, &up)
        };
        check_fd(w.as_tensor(), gw, f, 7, "conv-transpose2d dW");
    }
    Ok(())
}

/// `sum(a * b)` in f64.
fn dot(a: &Tensor, b: &Tensor) -> f64 {
    let a = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let b = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum()
}

/// Central differences of `f` at `at`, every `step`-th coordinate, against the gradient `grad`.
fn check_fd(at: &Tensor, grad: &Tensor, f: impl Fn(&Tensor) -> f64, step: usize, what: &str) {
    let base = at.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    let g = grad.flatten_all().unwrap().to_vec1::<f32>().unwrap();
    assert_eq!(base.len(), g.len());
    let h = 1e-2f32;
    for i in (0..base.len()).step_by(step) {
        let (mut pp, mut mm) = (base.clone(), base.clone());
        pp[i] += h;
        mm[i] -= h;
        let t = |v: Vec<f32>| Tensor::from_vec(v, at.shape(), &Device::Cpu).unwrap();
        let fd = (f(&t(pp)) - f(&t(mm))) / (2.0 * h as f64);
        assert!(
            (g[i] as f64 - fd).abs() < 2e-2 * fd.abs().max(1.0),
            "{what}[{i}]: {} vs {fd}",
            g[i]
        );
    }
}

/// The fused operations against their composite twins, in every combination of memory orders
/// and activations: values, and the gradients of input, kernel and bias (the kernel of the
/// transposed convolution by finite differences). A data input gets no gradient computed.
#[test]
fn fused_convolutions_match_composite_in_every_layout() -> candle_core::Result<()> {
    for (i, (b, c, h, o, k, s, p)) in SHAPES.into_iter().enumerate() {
        for (j, (input, output)) in LAYOUTS
            .into_iter()
            .flat_map(|a| LAYOUTS.map(|b| (a, b)))
            .enumerate()
        {
            // Every activation for the conv preset's shape, one each for the others.
            let acts: Vec<Act> = if i == 0 {
                ACTS.to_vec()
            } else {
                vec![ACTS[(i + j) % 4]]
            };
            for act in acts {
                let opts = ConvOpts::new(s, p).act(act).layouts(input, output);
                let what = format!("{:?} {opts:?}", SHAPES[i]);
                let x = Var::from_tensor(&in_layout(rand(&[b, c, h, h], 11).as_tensor(), input))?;
                let w = rand(&[o, c, k, k], 12);
                let bias = rand(&[o], 13);
                let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), bias.as_tensor());
                let f = conv2d_with(xt, wt, bt, opts)?;
                let r = composite::conv2d(xt, wt, bt, opts)?;
                assert_eq!(f.dims(), r.dims(), "{what}");
                assert!(max_diff(&f, &r) < 1e-4, "conv2d {what}: values");
                let up = noise(&f, 14);
                let gf = (&f * &up)?.sum_all()?.backward()?;
                let gr = (&r * &up)?.sum_all()?.backward()?;
                for v in [xt, wt, bt] {
                    let d = max_diff(gf.get(v).unwrap(), gr.get(v).unwrap());
                    assert!(d < 1e-3, "conv2d {what}: gradient differs by {d}");
                }
                let xd = xt.detach();
                let g = conv2d_with(&xd, wt, bt, opts)?.sum_all()?.backward()?;
                assert!(g.get(&xd).is_none() && g.get(wt).is_some());

                // The transposed convolution from o channels back to c.
                let biast = rand(&[c], 15);
                let x = Var::from_tensor(&in_layout(rand(&[b, o, h, h], 16).as_tensor(), input))?;
                let (xt, bt) = (x.as_tensor(), biast.as_tensor());
                let f = conv_transpose2d_with(xt, wt, bt, opts)?;
                let r = composite::conv_transpose2d(xt, wt, bt, opts)?;
                assert_eq!(f.dims(), r.dims(), "{what}");
                assert!(max_diff(&f, &r) < 1e-4, "conv-transpose2d {what}: values");
                let up = noise(&f, 17);
                let gf = (&f * &up)?.sum_all()?.backward()?;
                let gr = (&r * &up)?.sum_all()?.backward()?;
                for v in [xt, bt] {
                    let d = max_diff(gf.get(v).unwrap(), gr.get(v).unwrap());
                    assert!(d < 1e-3, "conv-transpose2d {what}: gradient differs by {d}");
                }
                let loss =
                    |wv: &Tensor| dot(&conv_transpose2d_with(xt, wv, bt, opts).unwrap(), &up);
                // (Not through the kink of the ReLU: the gradient through G is checked above.)
                if act != Act::Relu {
                    check_fd(
                        wt,
                        gf.get(wt).unwrap(),
                        loss,
                        11,
                        &format!("convT dW {what}"),
                    );
                }
                let xd = xt.detach();
                let g = conv_transpose2d_with(&xd, wt, bt, opts)?
                    .sum_all()?
                    .backward()?;
                assert!(g.get(&xd).is_none() && g.get(wt).is_some());
            }
        }
    }
    Ok(())
}

/// Finite differences through the activation (tanh) for input, kernel and bias of both
/// operations, with the input channels-last and the output channels-first.
/// A 1x1 convolution of `pre(x)` with the activation fused (applied block by block as the
/// product takes the rows, its derivative from `x`) against the activation as a pass of its
/// own followed by the convolution: values and the three gradients, in every pair of memory
/// orders, on one row block and on several. Other convolutions take the separate pass; the
/// fused operation refuses them, and the transposed convolution has no input activation.
#[test]
fn input_activation_fused_into_pointwise_convolution() -> candle_core::Result<()> {
    // (batch, in channels, side, out channels): 108 rows, and 4,500 rows of 16 columns (two
    // blocks of 4,096 rows, the second partial).
    for (b, c, h, o) in [(3, 5, 6, 4), (5, 16, 30, 3)] {
        for (input, output) in LAYOUTS.into_iter().flat_map(|a| LAYOUTS.map(|b| (a, b))) {
            for pre in [Act::Relu, Act::Tanh, Act::Sigmoid] {
                let opts = ConvOpts::new(1, 0).layouts(input, output);
                let what = format!("{:?} {pre:?} {opts:?}", (b, c, h, o));
                let x = Var::from_tensor(&in_layout(rand(&[b, c, h, h], 21).as_tensor(), input))?;
                let w = rand(&[o, c, 1, 1], 22);
                let bias = rand(&[o], 23);
                let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), bias.as_tensor());
                let fused = conv2d_with(xt, wt, bt, opts.pre(pre))?;
                let apart = conv2d_with(&crate::ops::composite::activate(xt, pre)?, wt, bt, opts)?;
                assert_eq!(fused.dims(), apart.dims(), "{what}");
                assert!(max_diff(&fused, &apart) < 1e-5, "{what}: values");
                let reference = composite::conv2d(xt, wt, bt, opts.pre(pre))?;
                assert!(
                    max_diff(&fused, &reference) < 1e-4,
                    "{what}: composite values"
                );
                let up = noise(&fused, 24);
                let gf = (&fused * &up)?.sum_all()?.backward()?;
                let ga = (&apart * &up)?.sum_all()?.backward()?;
                for v in [xt, wt, bt] {
                    let d = max_diff(gf.get(v).unwrap(), ga.get(v).unwrap());
                    assert!(d < 1e-4, "{what}: gradient differs by {d}");
                }
            }
        }
    }

    // A 3x3 convolution of relu(x): the activation apart, the same values and gradients.
    let x = rand(&[2, 3, 5, 5], 25);
    let w = rand(&[4, 3, 3, 3], 26);
    let bias = rand(&[4], 27);
    let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), bias.as_tensor());
    let opts = ConvOpts::new(1, 1);
    let with_pre = conv2d_with(xt, wt, bt, opts.pre(Act::Relu))?;
    let apart = conv2d_with(&xt.relu()?, wt, bt, opts)?;
    assert_eq!(max_diff(&with_pre, &apart), 0.0);
    let g1 = with_pre.sum_all()?.backward()?;
    let g2 = apart.sum_all()?.backward()?;
    assert_eq!(max_diff(g1.get(xt).unwrap(), g2.get(xt).unwrap()), 0.0);
    let err = xt
        .apply_op3(wt, bt, kernels::Conv2d(opts.pre(Act::Relu)))
        .unwrap_err();
    assert!(err.to_string().contains("1x1"), "{err}");
    let wtr = rand(&[3, 4, 3, 3], 28);
    let err =
        conv_transpose2d_with(&with_pre, wtr.as_tensor(), bt, opts.pre(Act::Relu)).unwrap_err();
    assert!(err.to_string().contains("input activation"), "{err}");
    Ok(())
}

#[test]
fn fused_gradients_match_finite_differences() -> candle_core::Result<()> {
    let (b, c, h, o) = (2, 3, 6, 4);
    let opts = ConvOpts::new(2, 1)
        .act(Act::Tanh)
        .layouts(MapLayout::Nhwc, MapLayout::Nchw);
    let x = Var::from_tensor(&in_layout(
        rand(&[b, c, h, h], 21).as_tensor(),
        MapLayout::Nhwc,
    ))?;
    let w = rand(&[o, c, 4, 4], 22);
    let bias = rand(&[o], 23);
    let (xt, wt, bt) = (x.as_tensor(), w.as_tensor(), bias.as_tensor());
    let y = conv2d_with(xt, wt, bt, opts)?;
    let up = noise(&y, 24);
    let g = (&y * &up)?.sum_all()?.backward()?;
    check_fd(
        xt,
        g.get(xt).unwrap(),
        |v| dot(&conv2d_with(v, wt, bt, opts).unwrap(), &up),
        3,
        "conv dx",
    );
    check_fd(
        wt,
        g.get(wt).unwrap(),
        |v| dot(&conv2d_with(xt, v, bt, opts).unwrap(), &up),
        5,
        "conv dW",
    );
    check_fd(
        bt,
        g.get(bt).unwrap(),
        |v| dot(&conv2d_with(xt, wt, v, opts).unwrap(), &up),
        1,
        "conv db",
    );

    let x = Var::from_tensor(&in_layout(
        rand(&[b, o, 3, 3], 25).as_tensor(),
        MapLayout::Nhwc,
    ))?;
    let bias = rand(&[c], 26);
    let (xt, bt) = (x.as_tensor(), bias.as_tensor());
    let y = conv_transpose2d_with(xt, wt, bt, opts)?;
    assert_eq!(y.dims(), [b, c, 6, 6]);
    let up = noise(&y, 27);
    let g = (&y * &up)?.sum_all()?.backward()?;
    let f = |x: &Tensor, w: &Tensor, bb: &Tensor| {
        dot(&conv_transpose2d_with(x, w, bb, opts).unwrap(), &up)
    };
    check_fd(xt, g.get(xt).unwrap(), |v| f(v, wt, bt), 3, "convT dx");
    check_fd(wt, g.get(wt).unwrap(), |v| f(xt, v, bt), 5, "convT dW");
    check_fd(bt, g.get(bt).unwrap(), |v| f(xt, wt, v), 1, "convT db");
    Ok(())
}

/// The scratch buffers hold no state between operations: the same call twice, with other
/// operations between them, gives the same bits.
#[test]
fn results_do_not_depend_on_earlier_calls() -> candle_core::Result<()> {
    let x = rand(&[3, 4, 7, 7], 31);
    let w = rand(&[5, 4, 4, 4], 32);
    let bias = rand(&[5], 33);
    let opts = ConvOpts::new(2, 1).act(Act::Relu);
    let run = || -> candle_core::Result<Vec<f32>> {
        let y = conv2d_with(x.as_tensor(), w.as_tensor(), bias.as_tensor(), opts)?;
        let g = y.sqr()?.sum_all()?.backward()?;
        let mut v = y.flatten_all()?.to_vec1::<f32>()?;
        v.extend(
            g.get(x.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
        v.extend(
            g.get(w.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f32>()?,
        );
        Ok(v)
    };
    let first = run()?;
    let big = rand(&[4, 4, 16, 16], 34);
    conv2d_with(big.as_tensor(), w.as_tensor(), bias.as_tensor(), opts)?
        .sum_all()?
        .backward()?;
    assert_eq!(first, run()?);
    Ok(())
}

/// The block's four convolutions one by one on channels-last maps: the reference of the fused
/// block.
fn layered_block(
    x: &Tensor,
    ws: [&Tensor; 4],
    bs: [&Tensor; 4],
    spec: BlockSpec,
) -> candle_core::Result<Tensor> {
    let act = |t: &Tensor| match spec.act {
        Act::Tanh => t.tanh(),
        _ => t.relu(),
    };
    let mut t = act(x)?;
    for i in 0..4 {
        let pad = if i == 1 || i == 2 { 1 } else { 0 };
        let o = ConvOpts::new(1, pad)
            .layouts(MapLayout::Nhwc, MapLayout::Nhwc)
            .act(if i < 3 { spec.act } else { Act::Identity });
        t = conv2d_with(&t, ws[i], bs[i], o)?;
    }
    if spec.residual {
        x + t
    } else {
        Ok(t)
    }
}

/// The fused block against its four convolutions: the output and the gradients of the input
/// and of all eight kernels and biases, for both activations, with and without the residual
/// connection, on maps whose 3x3 im2col matrices span several row blocks.
#[test]
fn fused_block_matches_its_convolutions() -> candle_core::Result<()> {
    for (n, side, cin, mid, out, residual, act) in [
        (3, 7, 6, 4, 6, true, Act::Relu),
        (2, 5, 6, 3, 9, false, Act::Tanh),
        (4, 28, 16, 8, 16, true, Act::Tanh),
        (2, 14, 12, 8, 5, false, Act::Relu),
    ] {
        let spec = BlockSpec {
            cin,
            mid,
            out,
            residual,
            act,
        };
        let x = rand(&[n, side, side, cin], 1);
        let shapes = [
            [mid, cin, 1, 1],
            [mid, mid, 3, 3],
            [mid, mid, 3, 3],
            [out, mid, 1, 1],
        ];
        let ws: Vec<Var> = (0..4).map(|i| rand(&shapes[i], 10 + i as u64)).collect();
        let bs: Vec<Var> = (0..4)
            .map(|i| rand(&[shapes[i][0]], 20 + i as u64))
            .collect();
        let wr = [0, 1, 2, 3].map(|i| ws[i].as_tensor());
        let br = [0, 1, 2, 3].map(|i| bs[i].as_tensor());
        assert!(Kernels::Native.fused(&[x.as_tensor()]));
        let fused = bottleneck_block(x.as_tensor(), wr, br, spec)?;
        let layered = layered_block(x.as_tensor(), wr, br, spec)?;
        assert_eq!(fused.dims(), &[n, side, side, out]);
        let d = max_diff(&fused, &layered);
        assert!(d < 1e-4, "block output differs by {d}");
        let up = noise(&fused, 4);
        let g1 = (fused * &up)?.sum_all()?.backward()?;
        let g2 = (layered * &up)?.sum_all()?.backward()?;
        for v in std::iter::once(&x).chain(&ws).chain(&bs) {
            let (a, b) = (
                g1.get(v.as_tensor()).unwrap(),
                g2.get(v.as_tensor()).unwrap(),
            );
            let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?.max(1.0);
            let d = max_diff(a, b) / scale;
            assert!(d < 1e-4, "block gradient of {:?} differs by {d}", v.dims());
        }
    }
    Ok(())
}

/// Without a tracked input the block keeps nothing for a backward pass, and gives the same
/// values.
#[test]
fn untracked_block_gives_the_same_values() -> candle_core::Result<()> {
    let spec = BlockSpec {
        cin: 4,
        mid: 3,
        out: 4,
        residual: true,
        act: Act::Relu,
    };
    let x = rand(&[2, 6, 6, 4], 1);
    let shapes = [[3, 4, 1, 1], [3, 3, 3, 3], [3, 3, 3, 3], [4, 3, 1, 1]];
    let ws: Vec<Tensor> = (0..4)
        .map(|i| rand(&shapes[i], 10 + i as u64).as_tensor().detach())
        .collect();
    let bs: Vec<Tensor> = (0..4)
        .map(|i| rand(&[shapes[i][0]], 20 + i as u64).as_tensor().detach())
        .collect();
    let xd = x.as_tensor().detach();
    let wr = [0, 1, 2, 3].map(|i| &ws[i]);
    let br = [0, 1, 2, 3].map(|i| &bs[i]);
    let a = bottleneck_block(&xd, wr, br, spec)?;
    let b = layered_block(&xd, wr, br, spec)?;
    // Sums in another order: rounding differences only.
    assert!(max_diff(&a, &b) < 1e-4, "{}", max_diff(&a, &b));
    Ok(())
}

/// Shapes the direct products take on an AVX-512 CPU (output channels a multiple of 16, kernel
/// rows of whole vectors): (batch, in channels, side, out channels, k, stride, pad). The conv
/// preset's second layer; 48 and 80 channels (tiles of 3 vectors, and 4 then 1); a 3x3
/// convolution of stride 1 (the hierarchical model's); a stride without padding; a batch of more
/// pixels than several blocks of the kernel gradient; 16 channels out of 4 in; an odd output
/// side and 48 channels for the phases of the transposed products (the input gradient of a 4x4
/// stride-2 convolution and the transposed convolution's output, 16 or more channels).
const DIRECT_SHAPES: [(usize, usize, usize, usize, usize, usize, usize); 13] = [
    (3, 32, 14, 64, 4, 2, 1),
    (2, 16, 9, 48, 3, 2, 0),
    (2, 4, 8, 80, 4, 2, 1),
    (2, 32, 7, 32, 3, 1, 1),
    (1, 16, 11, 16, 4, 3, 2),
    (12, 16, 14, 32, 4, 2, 1),
    (2, 4, 6, 16, 4, 2, 1),
    (2, 16, 10, 16, 4, 2, 1),
    (2, 48, 6, 32, 4, 2, 1),
    // Runs shorter than a vector: whole-kernel tiles and the taps' kernel gradient (the conv
    // preset's first and last layers, over more pixels than a block; a 3x3 one-channel layer;
    // 48 rows of the gradient; an odd kernel of 50 values).
    (3, 1, 28, 32, 4, 2, 1),
    (2, 1, 9, 16, 3, 1, 1),
    (2, 3, 8, 48, 4, 2, 1),
    (2, 2, 7, 16, 5, 1, 2),
];

/// The shapes of the direct products (where the CPU has AVX-512; elsewhere these shapes take
/// im2col and `gemm` too) against candle's convolutions: values, and the gradients of input,
/// kernel and bias of the convolution and of the transposed convolution (whose kernel
/// gradient is the direct product over the output gradient's windows), channels-last in and
/// out as between the layers of a stack; then against the same operation with the direct
/// products switched off (the SIMD level capped at AVX2). Both to the rounding of sums of up
/// to 512 products of unit-variance values taken in other orders (values up to ~50 before the
/// activation): 2e-5 of the largest value, where a wrong tap or a lost block is off by O(1).
#[test]
fn direct_products_match_candle_and_im2col() -> candle_core::Result<()> {
    use crate::fastmath::{simd_level, with_simd_cap, SimdLevel};
    let nhwc = MapLayout::Nhwc;
    for (i, (b, c, h, o, k, s, p)) in DIRECT_SHAPES.into_iter().enumerate() {
        let what = format!("{:?} at {:?}", DIRECT_SHAPES[i], simd_level());
        let opts = ConvOpts::new(s, p).act(Act::Tanh).layouts(nhwc, nhwc);
        let x = Var::from_tensor(&in_layout(rand(&[b, c, h, h], 41).as_tensor(), nhwc))?;
        let w = rand(&[o, c, k, k], 42);
        let bias = rand(&[o], 43);
        let ho = (h + 2 * p - k) / s + 1;
        let xt = Var::from_tensor(&in_layout(rand(&[b, o, ho, ho], 44).as_tensor(), nhwc))?;
        let biast = rand(&[c], 45);
        // Values and gradients of both operations, in one list.
        let run = |fused: bool| -> candle_core::Result<Vec<Tensor>> {
            let (xv, wv, bv) = (x.as_tensor(), w.as_tensor(), bias.as_tensor());
            let y = if fused {
                conv2d_with(xv, wv, bv, opts)?
            } else {
                composite::conv2d(xv, wv, bv, opts)?
            };
            let g = (&y * noise(&y, 46))?.sum_all()?.backward()?;
            let (xv, bv) = (xt.as_tensor(), biast.as_tensor());
            let yt = if fused {
                conv_transpose2d_with(xv, wv, bv, opts)?
            } else {
                composite::conv_transpose2d(xv, wv, bv, opts)?
            };
            let gt = (&yt * noise(&yt, 47))?.sum_all()?.backward()?;
            let mut all = vec![y.clone()];
            for v in [x.as_tensor(), wv, bias.as_tensor()] {
                all.push(g.get(v).unwrap().clone());
            }
            all.push(yt.clone());
            for v in [xv, wv, bv] {
                all.push(gt.get(v).unwrap().clone());
            }
            Ok(all)
        };
        let names = ["y", "dx", "dw", "db", "yT", "dxT", "dwT", "dbT"];
        let fused = run(true)?;
        let reference = run(false)?;
        let im2col = with_simd_cap(Some(SimdLevel::V3), || run(true))?;
        for ((name, f), (r, m)) in names.iter().zip(&fused).zip(reference.iter().zip(&im2col)) {
            let scale = 1f32.max(r.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?);
            let d = max_diff(f, r) / scale;
            assert!(d < 2e-5, "{what}: {name} differs from candle's by {d}");
            let d = max_diff(f, m) / scale;
            assert!(d < 2e-5, "{what}: {name} differs from im2col's by {d}");
        }
    }
    Ok(())
}
