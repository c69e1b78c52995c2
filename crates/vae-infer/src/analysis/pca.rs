//! Principal component analysis of latent codes, for 2-D pictures of the latent space.
//!
//! The covariance matrix is `dim x dim` (tens of rows), so its eigenvectors come from the
//! cyclic Jacobi method in a few dozen lines rather than from a linear-algebra dependency.

/// The leading principal axes of a set of rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Pca {
    pub mean: Vec<f64>,
    /// Unit axes, row-major `[components, dim]`, by decreasing variance.
    pub axes: Vec<f64>,
    /// Share of the total variance along each axis.
    pub explained: Vec<f64>,
}

/// Eigenvalues and eigenvectors (columns of the returned row-major matrix) of a symmetric
/// `n x n` matrix, by cyclic Jacobi rotations until the off-diagonal mass vanishes.
pub fn symmetric_eigen(a: &[f64], n: usize) -> (Vec<f64>, Vec<f64>) {
    let mut a = a.to_vec();
    let mut v = vec![0f64; n * n];
    for i in 0..n {
        v[i * n + i] = 1.0;
    }
    let total: f64 = a.iter().map(|x| x * x).sum();
    for _sweep in 0..100 {
        let off: f64 = (0..n)
            .flat_map(|i| (0..n).filter(move |&j| j != i).map(move |j| (i, j)))
            .map(|(i, j)| a[i * n + j] * a[i * n + j])
            .sum();
        if off <= 1e-30 * total.max(f64::MIN_POSITIVE) {
            break;
        }
        for p in 0..n {
            for q in p + 1..n {
                let apq = a[p * n + q];
                if apq == 0.0 {
                    continue;
                }
                let theta = (a[q * n + q] - a[p * n + p]) / (2.0 * apq);
                let t = theta.signum() / (theta.abs() + (theta * theta + 1.0).sqrt());
                let t = if theta == 0.0 { 1.0 } else { t };
                let c = 1.0 / (t * t + 1.0).sqrt();
                let s = t * c;
                for k in 0..n {
                    let (akp, akq) = (a[k * n + p], a[k * n + q]);
                    a[k * n + p] = c * akp - s * akq;
                    a[k * n + q] = s * akp + c * akq;
                }
                for k in 0..n {
                    let (apk, aqk) = (a[p * n + k], a[q * n + k]);
                    a[p * n + k] = c * apk - s * aqk;
                    a[q * n + k] = s * apk + c * aqk;
                }
                for k in 0..n {
                    let (vkp, vkq) = (v[k * n + p], v[k * n + q]);
                    v[k * n + p] = c * vkp - s * vkq;
                    v[k * n + q] = s * vkp + c * vkq;
                }
            }
        }
    }
    ((0..n).map(|i| a[i * n + i]).collect(), v)
}

impl Pca {
    /// The `components` leading axes of the rows of `x` (`[n, dim]`). Each axis is signed so
    /// that its largest component is positive (the result does not depend on rounding).
    pub fn fit(x: &[f32], dim: usize, components: usize) -> Self {
        let n = (x.len() / dim.max(1)).max(1);
        let mut mean = vec![0f64; dim];
        for r in x.chunks_exact(dim) {
            for (m, &v) in mean.iter_mut().zip(r) {
                *m += f64::from(v);
            }
        }
        mean.iter_mut().for_each(|m| *m /= n as f64);
        let mut cov = vec![0f64; dim * dim];
        let mut c = vec![0f64; dim];
        for r in x.chunks_exact(dim) {
            for (ci, (&v, m)) in c.iter_mut().zip(r.iter().zip(&mean)) {
                *ci = f64::from(v) - m;
            }
            for i in 0..dim {
                for j in i..dim {
                    cov[i * dim + j] += c[i] * c[j];
                }
            }
        }
        for i in 0..dim {
            for j in i..dim {
                cov[i * dim + j] /= n as f64;
                cov[j * dim + i] = cov[i * dim + j];
            }
        }
        let (values, vectors) = symmetric_eigen(&cov, dim);
        let mut order: Vec<usize> = (0..dim).collect();
        order.sort_by(|&a, &b| values[b].total_cmp(&values[a]).then(a.cmp(&b)));
        let total: f64 = values.iter().map(|v| v.max(0.0)).sum();
        let mut axes = Vec::with_capacity(components * dim);
        let mut explained = Vec::with_capacity(components);
        for &e in order.iter().take(components) {
            let mut axis: Vec<f64> = (0..dim).map(|i| vectors[i * dim + e]).collect();
            let big = axis
                .iter()
                .copied()
                .fold(0f64, |b, v| if v.abs() > b.abs() { v } else { b });
            if big < 0.0 {
                axis.iter_mut().for_each(|v| *v = -*v);
            }
            axes.extend(axis);
            explained.push(if total > 0.0 {
                values[e].max(0.0) / total
            } else {
                0.0
            });
        }
        Self {
            mean,
            axes,
            explained,
        }
    }

    /// The coordinates of each row of `x` on the axes, row-major `[n, components]`.
    pub fn project(&self, x: &[f32]) -> Vec<f64> {
        let dim = self.mean.len();
        x.chunks_exact(dim)
            .flat_map(|r| {
                self.axes.chunks_exact(dim).map(move |a| {
                    r.iter()
                        .zip(&self.mean)
                        .zip(a)
                        .map(|((&v, m), w)| (f64::from(v) - m) * w)
                        .sum::<f64>()
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jacobi_diagonalises_a_known_matrix() {
        // [[2,1],[1,2]] has eigenvalues 1 and 3 with vectors (1,-1)/sqrt2 and (1,1)/sqrt2.
        let (vals, vecs) = symmetric_eigen(&[2.0, 1.0, 1.0, 2.0], 2);
        let mut v = vals.clone();
        v.sort_by(f64::total_cmp);
        assert!((v[0] - 1.0).abs() < 1e-12 && (v[1] - 3.0).abs() < 1e-12);
        let big = if vals[0] > vals[1] { 0 } else { 1 };
        assert!((vecs[big].abs() - std::f64::consts::FRAC_1_SQRT_2).abs() < 1e-12);
        assert!((vecs[big] - vecs[2 + big]).abs() < 1e-12);
    }

    #[test]
    fn pca_finds_the_long_axis() {
        // Points along (3, 4)/5, each with a twin across it at ±0.1 (so no correlation between
        // the two directions), in 3-D with a constant third dimension.
        let mut x = Vec::new();
        for i in 0..200 {
            let t = (i as f32 - 100.0) / 10.0;
            for e in [0.1f32, -0.1] {
                x.extend([
                    3.0 * t / 5.0 - 4.0 * e / 5.0,
                    4.0 * t / 5.0 + 3.0 * e / 5.0,
                    7.0,
                ]);
            }
        }
        let p = Pca::fit(&x, 3, 2);
        assert!(
            (p.axes[0] - 0.6).abs() < 1e-5 && (p.axes[1] - 0.8).abs() < 1e-5,
            "{:?}",
            p.axes
        );
        assert!(p.axes[2].abs() < 1e-9);
        assert!(p.explained[0] > 0.99 && p.explained[0] + p.explained[1] > 0.999999);
        let proj = p.project(&x[..3]);
        // The first point sits at t = -10 (less the mean, -0.05) on the first axis.
        assert!((proj[0] + 9.95).abs() < 1e-4, "{proj:?}");
    }
}
