//! Classifiers on latent codes, fitted on the training split and scored on the test split:
//! k nearest neighbours and multinomial logistic regression (a linear probe).

use vae_core::candle_core::{Device, Tensor};

use crate::{InferError, Result};

/// Test rows per distance block: a block's distances to 60,000 training rows take 60 MB.
const BLOCK: usize = 256;

fn check_rows(x: &[f32], dim: usize, what: &str) -> Result<usize> {
    if dim == 0 || !x.len().is_multiple_of(dim) {
        return Err(InferError::Input(format!(
            "{what}: {} values are not rows of {dim}",
            x.len()
        )));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(InferError::Input(format!(
            "{what}: latent value {} of row {} is not finite",
            x[i],
            i / dim
        )));
    }
    Ok(x.len() / dim)
}

fn num_threads(work: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(work.max(1))
}

/// k-nearest-neighbour classification by Euclidean distance with uniform votes.
///
/// Distances come in blocks from one matrix product (|t|^2 - 2 x.t, the |x|^2 term being the
/// same for every candidate of a row), the k nearest are kept by insertion into a sorted list of
/// k (earlier training rows win exact distance ties), and the vote goes to the most frequent
/// label, the smallest label among equally frequent ones (scikit-learn's rule, through
/// `scipy.stats.mode`). Blocks of test rows are shared among the cores.
pub fn knn_predict(
    train: &[f32],
    train_labels: &[u32],
    test: &[f32],
    dim: usize,
    k: usize,
) -> Result<Vec<u32>> {
    let n = check_rows(train, dim, "k-NN training set")?;
    let m = check_rows(test, dim, "k-NN test set")?;
    if train_labels.len() != n {
        return Err(InferError::Input(format!(
            "{} labels for {n} training rows",
            train_labels.len()
        )));
    }
    if k == 0 || k > n {
        return Err(InferError::Flag(format!(
            "--k {k}: must be between 1 and the {n} training rows"
        )));
    }
    let classes = train_labels.iter().max().map_or(0, |&c| c as usize + 1);
    let mut tt = vec![0f32; n * dim];
    for i in 0..n {
        for t in 0..dim {
            tt[t * n + i] = train[i * dim + t];
        }
    }
    let train_t = Tensor::from_vec(tt, (dim, n), &Device::Cpu)?;
    let norms: Vec<f32> = train
        .chunks_exact(dim)
        .map(|r| r.iter().map(|v| v * v).sum())
        .collect();
    let block = |rows: &[f32]| -> Result<Vec<u32>> {
        let mb = rows.len() / dim;
        let x = Tensor::from_slice(rows, (mb, dim), &Device::Cpu)?;
        let cross = x.matmul(&train_t)?.flatten_all()?.to_vec1::<f32>()?;
        let mut out = Vec::with_capacity(mb);
        let mut best: Vec<(f32, usize)> = Vec::with_capacity(k + 1);
        let mut votes = vec![0usize; classes];
        for r in 0..mb {
            best.clear();
            let row = &cross[r * n..(r + 1) * n];
            for (j, (&c, &tn)) in row.iter().zip(&norms).enumerate() {
                let d = tn - 2.0 * c;
                if best.len() == k {
                    if d >= best[k - 1].0 {
                        continue;
                    }
                    best.pop();
                }
                // After the last entry that is <= d: earlier rows stay ahead on ties.
                let pos = best.partition_point(|e| e.0 <= d);
                best.insert(pos, (d, j));
            }
            votes.iter_mut().for_each(|v| *v = 0);
            for &(_, j) in &best {
                votes[train_labels[j] as usize] += 1;
            }
            let mut label = 0;
            for (c, &v) in votes.iter().enumerate() {
                if v > votes[label] {
                    label = c;
                }
            }
            out.push(label as u32);
        }
        Ok(out)
    };
    let threads = num_threads(m.div_ceil(BLOCK));
    let per = m.div_ceil(threads).div_ceil(BLOCK) * BLOCK;
    let parts: Vec<Result<Vec<u32>>> = std::thread::scope(|s| {
        let handles: Vec<_> = test
            .chunks(per.max(1) * dim)
            .map(|part| {
                let block = &block;
                s.spawn(move || -> Result<Vec<u32>> {
                    let mut out = Vec::with_capacity(part.len() / dim);
                    for rows in part.chunks(BLOCK * dim) {
                        out.extend(block(rows)?);
                    }
                    Ok(out)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(InferError::Input("a k-NN thread panicked".into())))
            })
            .collect()
    });
    let mut pred = Vec::with_capacity(m);
    for p in parts {
        pred.extend(p?);
    }
    Ok(pred)
}

/// How to fit the logistic regression.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LogisticConfig {
    /// Inverse L2 strength, as scikit-learn's `C` (the intercepts are not penalised).
    pub c: f64,
    /// L-BFGS iterations at most.
    pub max_iter: usize,
    /// Stop when every gradient component of the mean objective is below this.
    pub tol: f64,
}

impl Default for LogisticConfig {
    /// scikit-learn's `LogisticRegression(max_iter=2000)`: C = 1, with a tighter tolerance.
    fn default() -> Self {
        Self {
            c: 1.0,
            max_iter: 2000,
            tol: 1e-6,
        }
    }
}

/// A fitted multinomial logistic regression on standardised features.
#[derive(Debug, Clone, PartialEq)]
pub struct Logistic {
    pub dim: usize,
    pub classes: usize,
    /// Feature means and standard deviations of the training set.
    pub mean: Vec<f64>,
    pub scale: Vec<f64>,
    /// `[classes, dim + 1]`: the weights of each class, then its intercept.
    pub weights: Vec<f64>,
    /// The objective at the optimum: mean cross-entropy plus the L2 term.
    pub objective: f64,
    pub iterations: usize,
    pub converged: bool,
}

/// Standardised rows: (x - mean) / scale.
fn standardise(x: &[f32], mean: &[f64], scale: &[f64]) -> Vec<f64> {
    let dim = mean.len();
    x.chunks_exact(dim)
        .flat_map(|r| {
            r.iter()
                .zip(mean.iter().zip(scale))
                .map(|(&v, (m, s))| (f64::from(v) - m) / s)
        })
        .collect()
}

/// Mean cross-entropy of softmax(x W^T + b) plus `l2 / 2 |W|^2`, and its gradient.
fn objective(
    theta: &[f64],
    x: &[f64],
    y: &[u32],
    dim: usize,
    k: usize,
    l2: f64,
) -> (f64, Vec<f64>) {
    let n = y.len();
    let w = dim + 1;
    let part = |rows: std::ops::Range<usize>| -> (f64, Vec<f64>) {
        let mut loss = 0.0;
        let mut grad = vec![0f64; k * w];
        let mut s = vec![0f64; k];
        for i in rows {
            let xi = &x[i * dim..(i + 1) * dim];
            for (c, sc) in s.iter_mut().enumerate() {
                let wc = &theta[c * w..(c + 1) * w];
                *sc = wc[dim] + wc[..dim].iter().zip(xi).map(|(a, b)| a * b).sum::<f64>();
            }
            let max = s.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|v| (v - max).exp()).sum();
            let lse = max + z.ln();
            loss += lse - s[y[i] as usize];
            for c in 0..k {
                let p = (s[c] - lse).exp() - f64::from(u8::from(c == y[i] as usize));
                let g = &mut grad[c * w..(c + 1) * w];
                for (gt, xt) in g[..dim].iter_mut().zip(xi) {
                    *gt += p * xt;
                }
                g[dim] += p;
            }
        }
        (loss, grad)
    };
    let threads = num_threads(n / 4096);
    let parts: Vec<(f64, Vec<f64>)> = if threads <= 1 {
        vec![part(0..n)]
    } else {
        std::thread::scope(|sc| {
            let hs: Vec<_> = (0..threads)
                .map(|t| {
                    let part = &part;
                    sc.spawn(move || part(t * n / threads..(t + 1) * n / threads))
                })
                .collect();
            hs.into_iter()
                .map(|h| h.join().unwrap_or((f64::NAN, vec![f64::NAN; k * w])))
                .collect()
        })
    };
    let mut loss = 0.0;
    let mut grad = vec![0f64; k * w];
    for (l, g) in parts {
        loss += l;
        for (a, b) in grad.iter_mut().zip(g) {
            *a += b;
        }
    }
    let inv_n = 1.0 / n as f64;
    loss *= inv_n;
    grad.iter_mut().for_each(|g| *g *= inv_n);
    for c in 0..k {
        for t in 0..dim {
            let v = theta[c * w + t];
            loss += 0.5 * l2 * v * v;
            grad[c * w + t] += l2 * v;
        }
    }
    (loss, grad)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Fits multinomial logistic regression by L-BFGS (10 correction pairs, backtracking line
/// search with the Armijo condition). The objective is scikit-learn's: mean cross-entropy plus
/// |W|^2 / (2 C n), on features standardised with the training set's mean and deviation.
pub fn fit_logistic(x: &[f32], y: &[u32], dim: usize, cfg: &LogisticConfig) -> Result<Logistic> {
    let n = check_rows(x, dim, "linear probe training set")?;
    if y.len() != n || n == 0 {
        return Err(InferError::Input(format!(
            "{} labels for {n} training rows",
            y.len()
        )));
    }
    if !(cfg.c > 0.0 && cfg.c.is_finite()) {
        return Err(InferError::Flag(format!(
            "--c must be positive, got {}",
            cfg.c
        )));
    }
    let k = y.iter().max().map_or(0, |&c| c as usize + 1);
    let mut mean = vec![0f64; dim];
    let mut scale = vec![0f64; dim];
    for r in x.chunks_exact(dim) {
        for (m, &v) in mean.iter_mut().zip(r) {
            *m += f64::from(v);
        }
    }
    mean.iter_mut().for_each(|m| *m /= n as f64);
    for r in x.chunks_exact(dim) {
        for ((s, m), &v) in scale.iter_mut().zip(&mean).zip(r) {
            *s += (f64::from(v) - m).powi(2);
        }
    }
    for s in &mut scale {
        *s = (*s / n as f64).sqrt();
        if *s < 1e-12 {
            *s = 1.0;
        }
    }
    let xs = standardise(x, &mean, &scale);
    let l2 = 1.0 / (cfg.c * n as f64);
    let eval = |th: &[f64]| objective(th, &xs, y, dim, k, l2);

    let size = k * (dim + 1);
    let mut theta = vec![0f64; size];
    let (mut f, mut g) = eval(&theta);
    let memory = 10;
    let mut hist: std::collections::VecDeque<(Vec<f64>, Vec<f64>, f64)> =
        std::collections::VecDeque::new();
    let mut iterations = 0;
    let mut converged = false;
    while iterations < cfg.max_iter {
        if g.iter().fold(0f64, |a, v| a.max(v.abs())) <= cfg.tol {
            converged = true;
            break;
        }
        iterations += 1;
        // Two-loop recursion: d = -H g.
        let mut q = g.clone();
        let mut alphas = Vec::with_capacity(hist.len());
        for (s, yv, rho) in hist.iter().rev() {
            let a = rho * dot(s, &q);
            for (qi, yi) in q.iter_mut().zip(yv) {
                *qi -= a * yi;
            }
            alphas.push(a);
        }
        let gamma = hist
            .back()
            .map_or(1.0 / dot(&g, &g).sqrt().max(1.0), |(s, yv, _)| {
                dot(s, yv) / dot(yv, yv)
            });
        q.iter_mut().for_each(|v| *v *= gamma);
        for ((s, yv, rho), a) in hist.iter().zip(alphas.iter().rev()) {
            let b = rho * dot(yv, &q);
            for (qi, si) in q.iter_mut().zip(s) {
                *qi += (a - b) * si;
            }
        }
        let mut d: Vec<f64> = q.iter().map(|v| -v).collect();
        let mut slope = dot(&g, &d);
        if slope >= 0.0 {
            // Not a descent direction (can follow from rounding): restart from the gradient.
            hist.clear();
            d = g.iter().map(|v| -v).collect();
            slope = dot(&g, &d);
        }
        let mut step = 1.0;
        let mut accepted = None;
        for _ in 0..60 {
            let cand: Vec<f64> = theta.iter().zip(&d).map(|(t, di)| t + step * di).collect();
            let (fc, gc) = eval(&cand);
            if fc.is_finite() && fc <= f + 1e-4 * step * slope {
                accepted = Some((cand, fc, gc));
                break;
            }
            step *= 0.5;
        }
        let Some((cand, fc, gc)) = accepted else {
            // No decrease along the direction: the optimum is reached to working precision.
            converged = true;
            break;
        };
        let s: Vec<f64> = cand.iter().zip(&theta).map(|(a, b)| a - b).collect();
        let yv: Vec<f64> = gc.iter().zip(&g).map(|(a, b)| a - b).collect();
        let sy = dot(&s, &yv);
        if sy > 1e-12 * dot(&yv, &yv) {
            if hist.len() == memory {
                hist.pop_front();
            }
            hist.push_back((s, yv, 1.0 / sy));
        }
        let decrease = f - fc;
        theta = cand;
        f = fc;
        g = gc;
        // scipy's L-BFGS-B stopping rule as scikit-learn sets it (ftol = 64 machine epsilons).
        if decrease <= 64.0 * f64::EPSILON * f.abs().max(1.0) {
            converged = true;
            break;
        }
    }
    Ok(Logistic {
        dim,
        classes: k,
        mean,
        scale,
        weights: theta,
        objective: f,
        iterations,
        converged,
    })
}

impl Logistic {
    /// The most probable class of each row of `x` (the lowest class on ties).
    pub fn predict(&self, x: &[f32]) -> Result<Vec<u32>> {
        check_rows(x, self.dim, "linear probe test set")?;
        let xs = standardise(x, &self.mean, &self.scale);
        let w = self.dim + 1;
        Ok(xs
            .chunks_exact(self.dim)
            .map(|r| {
                let mut best = (0u32, f64::NEG_INFINITY);
                for c in 0..self.classes {
                    let wc = &self.weights[c * w..(c + 1) * w];
                    let s = wc[self.dim] + dot(&wc[..self.dim], r);
                    if s > best.1 {
                        best = (c as u32, s);
                    }
                }
                best.0
            })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::analysis::kmeans::tests::blobs;
    use crate::analysis::metrics::accuracy;

    #[test]
    fn knn_on_separable_blobs_is_perfect() -> Result<()> {
        let centres = [[0.0, 0.0], [6.0, 0.0], [0.0, 6.0], [6.0, 6.0]];
        let (train, ytr) = blobs(&centres, 300, 0.7, 3);
        let (test, yte) = blobs(&centres, 700, 0.7, 4);
        let pred = knn_predict(&train, &ytr, &test, 2, 5)?;
        assert_eq!(accuracy(&pred, &yte)?, 1.0);
        Ok(())
    }

    #[test]
    fn knn_matches_brute_force_and_breaks_ties_by_smallest_label() -> Result<()> {
        // Overlapping blobs: compare with an exact f64 brute force on every test row.
        let centres = [[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]];
        let (train, ytr) = blobs(&centres, 200, 0.8, 5);
        let (test, _) = blobs(&centres, 100, 0.8, 6);
        let k = 7;
        let pred = knn_predict(&train, &ytr, &test, 2, k)?;
        let mut disagreements = 0;
        for (r, row) in test.chunks_exact(2).enumerate() {
            let mut d: Vec<(f64, usize)> = train
                .chunks_exact(2)
                .enumerate()
                .map(|(j, t)| {
                    let dx = f64::from(row[0] - t[0]);
                    let dy = f64::from(row[1] - t[1]);
                    (dx * dx + dy * dy, j)
                })
                .collect();
            d.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
            let mut votes = [0; 3];
            for &(_, j) in &d[..k] {
                votes[ytr[j] as usize] += 1;
            }
            let want = (0..3).fold(0, |b, c| if votes[c] > votes[b] { c } else { b });
            disagreements += usize::from(pred[r] != want as u32);
        }
        // f32 distances may reorder near-equal neighbours; almost every row agrees exactly.
        assert!(disagreements <= 2, "{disagreements} of 300 rows differ");

        // A 2-2 tie between labels 1 and 0 (k = 4) goes to label 0.
        let train = [0.0f32, 1.0, 2.0, 3.0];
        let labels = [1, 0, 1, 0];
        assert_eq!(knn_predict(&train, &labels, &[1.5], 1, 4)?, vec![0]);
        assert!(knn_predict(&train, &labels, &[1.5], 1, 5).is_err());
        assert!(knn_predict(&train, &labels, &[1.5], 1, 0).is_err());
        Ok(())
    }

    #[test]
    fn linear_probe_on_separable_blobs_is_perfect_and_converges() -> Result<()> {
        let centres = [[0.0, 0.0], [8.0, 0.0], [0.0, 8.0], [8.0, 8.0], [4.0, 16.0]];
        let (train, ytr) = blobs(&centres, 200, 1.0, 7);
        let (test, yte) = blobs(&centres, 400, 1.0, 8);
        let m = fit_logistic(&train, &ytr, 2, &LogisticConfig::default())?;
        assert!(m.converged, "no convergence in {} iterations", m.iterations);
        assert_eq!(accuracy(&m.predict(&test)?, &yte)?, 1.0);
        Ok(())
    }

    #[test]
    fn linear_probe_gradient_matches_finite_differences_and_optimum_is_stationary() -> Result<()> {
        let (x, y) = blobs(&[[0.0, 0.0], [1.0, 0.5], [0.2, 1.0]], 40, 0.6, 9);
        let xs: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let theta: Vec<f64> = (0..9).map(|i| 0.3 * (i as f64 - 4.0) / 4.0).collect();
        let l2 = 0.05;
        let (_, g) = objective(&theta, &xs, &y, 2, 3, l2);
        for i in 0..9 {
            let h = 1e-6;
            let mut a = theta.clone();
            let mut b = theta.clone();
            a[i] += h;
            b[i] -= h;
            let fd = (objective(&a, &xs, &y, 2, 3, l2).0 - objective(&b, &xs, &y, 2, 3, l2).0)
                / (2.0 * h);
            assert!((fd - g[i]).abs() < 1e-7, "component {i}: {fd} vs {}", g[i]);
        }
        // Overlapping classes: a finite optimum, where the gradient vanishes.
        let m = fit_logistic(&x, &y, 2, &LogisticConfig::default())?;
        assert!(m.converged);
        let xs = standardise(&x, &m.mean, &m.scale);
        let (_, g) = objective(&m.weights, &xs, &y, 2, 3, 1.0 / y.len() as f64);
        assert!(g.iter().all(|v| v.abs() < 1e-5), "{g:?}");
        Ok(())
    }
}
