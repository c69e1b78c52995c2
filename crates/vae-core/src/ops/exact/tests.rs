use super::*;
use crate::fastmath::{with_simd_cap, SimdLevel};
use crate::ops::{ConvOpts, MapLayout};
use crate::Rng;

fn rand(shape: &[usize], seed: u64) -> Tensor {
    let n = shape.iter().product();
    Tensor::from_vec(Rng::new(seed).normal_vec(n), shape, &Device::Cpu).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    host(t).unwrap().iter().map(|v| v.to_bits()).collect()
}

fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
    let (a, b) = (host(a).unwrap(), host(b).unwrap());
    a.iter()
        .zip(&b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

fn nhwc(t: &Tensor) -> Tensor {
    t.permute((0, 2, 3, 1)).unwrap().contiguous().unwrap()
}

fn opts(stride: usize, pad: usize) -> ConvOpts {
    ConvOpts::new(stride, pad)
}

/// The exact kernels agree with candle's to f32 tolerance, give the same bits at every
/// SIMD level, and the same bits for a row alone as inside a batch.
#[test]
fn exact_kernels_match_candle_and_do_not_depend_on_simd_or_batch() {
    let (x, w, b) = (rand(&[5, 37], 1), rand(&[19, 37], 2), rand(&[19], 3));
    let xc = rand(&[3, 2, 9, 9], 4);
    let wc = rand(&[4, 2, 4, 4], 5);
    let bc = rand(&[4], 6);
    let xt = rand(&[3, 4, 5, 5], 7);
    let bt = rand(&[2], 8);
    let run = || {
        (
            linear(&x, &w, &b, Act::Tanh).unwrap(),
            conv2d(&xc, &wc, &bc, opts(2, 1)).unwrap(),
            conv_transpose2d(&xt, &wc, &bt, opts(2, 1)).unwrap(),
        )
    };
    let (l, c, t) = run();
    let want_l = (x
        .matmul(&w.t().unwrap())
        .unwrap()
        .broadcast_add(&b)
        .unwrap())
    .tanh()
    .unwrap();
    assert!(max_diff(&l, &want_l) < 1e-5);
    let want_c = xc
        .conv2d(&wc, 1, 2, 1, 1)
        .unwrap()
        .broadcast_add(&bc.reshape((1, 4, 1, 1)).unwrap())
        .unwrap();
    assert_eq!(c.dims(), want_c.dims());
    assert!(max_diff(&c, &want_c) < 1e-4);
    let want_t = xt
        .conv_transpose2d(&wc, 1, 0, 2, 1)
        .unwrap()
        .broadcast_add(&bt.reshape((1, 2, 1, 1)).unwrap())
        .unwrap();
    assert_eq!(t.dims(), want_t.dims());
    assert!(max_diff(&t, &want_t) < 1e-4);
    for level in [SimdLevel::Baseline, SimdLevel::V3, SimdLevel::V4] {
        let (l2, c2, t2) = with_simd_cap(Some(level), run);
        assert_eq!(bits(&l), bits(&l2), "{level:?}");
        assert_eq!(bits(&c), bits(&c2), "{level:?}");
        assert_eq!(bits(&t), bits(&t2), "{level:?}");
    }
    // Activations on their own: fastmath's, not candle's (libm) tanh and sigmoid.
    let y = rand(&[3, 2, 7, 5], 9);
    for act in [Act::Tanh, Act::Sigmoid, Act::Relu, Act::Identity] {
        let got = activate_tensor(&y, act).unwrap();
        assert_eq!(got.dims(), y.dims());
        let want: Vec<u32> = host(&y)
            .unwrap()
            .iter()
            .map(|&v| match act {
                Act::Tanh => fastmath::tanh(v),
                Act::Sigmoid => fastmath::sigmoid(v),
                Act::Relu => v.max(0.0),
                Act::Identity => v,
            })
            .map(f32::to_bits)
            .collect();
        assert_eq!(bits(&got), want, "{act:?}");
        assert!(max_diff(&got, &super::super::composite_activate(&y, act).unwrap()) < 1e-6);
    }
    let row = linear(&x.narrow(0, 2, 1).unwrap(), &w, &b, Act::Tanh).unwrap();
    assert_eq!(bits(&row), bits(&l.narrow(0, 2, 1).unwrap()));
    let one = conv2d(&xc.narrow(0, 1, 1).unwrap(), &wc, &bc, opts(2, 1)).unwrap();
    assert_eq!(bits(&one), bits(&c.narrow(0, 1, 1).unwrap()));
    let one = conv_transpose2d(&xt.narrow(0, 2, 1).unwrap(), &wc, &bt, opts(2, 1)).unwrap();
    assert_eq!(bits(&one), bits(&t.narrow(0, 2, 1).unwrap()));
}

/// conv2d's sums in the order the documentation writes out, one output at a time: from 0, the
/// products of the taps in `(ky, kx, c)` order (zero outside the image), then the bias.
fn conv2d_reference(x: &Tensor, w: &Tensor, b: &Tensor, stride: usize, pad: usize) -> Vec<u32> {
    let (n, c, h, wd) = x.dims4().unwrap();
    let (o, _, k, _) = w.dims4().unwrap();
    let (xv, wv, bv) = (host(x).unwrap(), host(w).unwrap(), host(b).unwrap());
    let (ho, wo) = (
        (h + 2 * pad - k) / stride + 1,
        (wd + 2 * pad - k) / stride + 1,
    );
    let mut out = Vec::new();
    for bi in 0..n {
        for oi in 0..o {
            for oy in 0..ho {
                for ox in 0..wo {
                    let mut s = 0f32;
                    for ky in 0..k {
                        for kx in 0..k {
                            for ci in 0..c {
                                let (iy, ix) = (oy * stride + ky, ox * stride + kx);
                                let v = if iy < pad || ix < pad || iy - pad >= h || ix - pad >= wd {
                                    0.0
                                } else {
                                    xv[((bi * c + ci) * h + iy - pad) * wd + ix - pad]
                                };
                                s += v * wv[((oi * c + ci) * k + ky) * k + kx];
                            }
                        }
                    }
                    out.push((s + bv[oi]).to_bits());
                }
            }
        }
    }
    out
}

/// conv_transpose2d's in the documented order: each input pixel's products (a sum over the
/// input channels from 0) added to the output from 0, input pixels in order, then the bias.
fn conv_transpose2d_reference(
    x: &Tensor,
    w: &Tensor,
    b: &Tensor,
    stride: usize,
    pad: usize,
) -> Vec<u32> {
    let (n, cin, h, wd) = x.dims4().unwrap();
    let (_, cout, k, _) = w.dims4().unwrap();
    let (xv, wv, bv) = (host(x).unwrap(), host(w).unwrap(), host(b).unwrap());
    let (ho, wo) = (
        (h - 1) * stride + k - 2 * pad,
        (wd - 1) * stride + k - 2 * pad,
    );
    let mut y = vec![0f32; n * cout * ho * wo];
    for bi in 0..n {
        for iy in 0..h {
            for ix in 0..wd {
                for ky in 0..k {
                    for kx in 0..k {
                        let (oy, ox) = (iy * stride + ky, ix * stride + kx);
                        if oy < pad || ox < pad || oy - pad >= ho || ox - pad >= wo {
                            continue;
                        }
                        for co in 0..cout {
                            let mut s = 0f32;
                            for ci in 0..cin {
                                s += xv[((bi * cin + ci) * h + iy) * wd + ix]
                                    * wv[((ci * cout + co) * k + ky) * k + kx];
                            }
                            y[((bi * cout + co) * ho + oy - pad) * wo + ox - pad] += s;
                        }
                    }
                }
            }
        }
    }
    y.iter()
        .enumerate()
        .map(|(i, v)| (v + bv[i / (ho * wo) % cout]).to_bits())
        .collect()
}

/// The convolutions give exactly the sums written out above, for both memory orders of
/// input and output (channels-last maps are the same values, transposed), at every SIMD
/// level, with blocks of im2col rows beyond the first (a large batch) and 1x1 kernels.
#[test]
fn exact_convolutions_follow_the_written_order_in_either_memory_order() {
    let cases = [
        // (input [n, c, h, w], kernel size, out channels, stride, pad)
        ([2, 3, 7, 6], 3, 20, 1, 1),
        ([1, 5, 9, 9], 4, 3, 2, 1),
        ([3, 17, 4, 5], 1, 33, 1, 0),
        ([300, 8, 14, 14], 3, 5, 1, 1),
    ];
    for (i, (shape, k, o, stride, pad)) in cases.into_iter().enumerate() {
        let seed = 10 * i as u64;
        let c = shape[1];
        let x = rand(&shape, seed);
        let w = rand(&[o, c, k, k], seed + 1);
        let b = rand(&[o], seed + 2);
        let want = conv2d_reference(&x, &w, &b, stride, pad);
        for level in [SimdLevel::Baseline, SimdLevel::V3, SimdLevel::V4] {
            for (li, lo) in [
                (MapLayout::Nchw, MapLayout::Nchw),
                (MapLayout::Nhwc, MapLayout::Nhwc),
                (MapLayout::Nchw, MapLayout::Nhwc),
                (MapLayout::Nhwc, MapLayout::Nchw),
            ] {
                let xi = if li == MapLayout::Nhwc {
                    nhwc(&x)
                } else {
                    x.clone()
                };
                let y = with_simd_cap(Some(level), || {
                    conv2d(&xi, &w, &b, opts(stride, pad).layouts(li, lo)).unwrap()
                });
                let y = if lo == MapLayout::Nhwc {
                    y.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap()
                } else {
                    y
                };
                assert!(bits(&y) == want, "case {i}, {level:?}, {li:?} to {lo:?}");
            }
        }
        // The activation after the bias.
        let y = conv2d(&x, &w, &b, opts(stride, pad).act(Act::Tanh)).unwrap();
        let t: Vec<u32> = want
            .iter()
            .map(|&v| fastmath::tanh(f32::from_bits(v)).to_bits())
            .collect();
        assert!(bits(&y) == t, "case {i}, tanh");
    }
    for (i, (shape, k, o, stride, pad)) in [([2, 6, 4, 3], 4, 5, 2, 1), ([1, 3, 5, 5], 3, 18, 1, 0)]
        .into_iter()
        .enumerate()
    {
        let x = rand(&shape, 50 + i as u64);
        let w = rand(&[shape[1], o, k, k], 60 + i as u64);
        let b = rand(&[o], 70 + i as u64);
        let want = conv_transpose2d_reference(&x, &w, &b, stride, pad);
        for level in [SimdLevel::Baseline, SimdLevel::V3, SimdLevel::V4] {
            for (li, lo) in [
                (MapLayout::Nchw, MapLayout::Nchw),
                (MapLayout::Nhwc, MapLayout::Nhwc),
            ] {
                let xi = if li == MapLayout::Nhwc {
                    nhwc(&x)
                } else {
                    x.clone()
                };
                let y = with_simd_cap(Some(level), || {
                    conv_transpose2d(&xi, &w, &b, opts(stride, pad).layouts(li, lo)).unwrap()
                });
                let y = if lo == MapLayout::Nhwc {
                    y.permute((0, 3, 1, 2)).unwrap().contiguous().unwrap()
                } else {
                    y
                };
                assert!(bits(&y) == want, "transposed case {i}, {level:?}, {li:?}");
            }
        }
    }
}
