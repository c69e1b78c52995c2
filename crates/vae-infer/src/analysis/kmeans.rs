//! k-means: greedy k-means++ seeding (Arthur & Vassilvitskii 2007, with scikit-learn's
//! 2 + ln k local trials per centre), Lloyd iterations, the best of several seeded restarts.

use vae_core::Rng;

use crate::{InferError, Result};

/// How to fit k-means.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct KMeansConfig {
    /// Number of clusters.
    pub k: usize,
    /// Independent seedings; the fit with the lowest inertia wins.
    pub restarts: usize,
    /// Lloyd iterations per restart at most.
    pub max_iter: usize,
    /// Convergence: the summed squared centre shift falls below `tol` times the mean variance
    /// of the features (scikit-learn's rule), or no assignment changes.
    pub tol: f64,
    pub seed: u64,
}

impl Default for KMeansConfig {
    /// scikit-learn's `KMeans(10, n_init=10)`: 300 iterations, tol 1e-4.
    fn default() -> Self {
        Self {
            k: 10,
            restarts: 10,
            max_iter: 300,
            tol: 1e-4,
            seed: 0,
        }
    }
}

/// A fitted k-means model.
#[derive(Debug, Clone, PartialEq)]
pub struct KMeans {
    pub k: usize,
    pub dim: usize,
    /// Centres, row-major `[k, dim]`.
    pub centroids: Vec<f64>,
    /// Sum of squared distances of the training points to their centres.
    pub inertia: f64,
    /// Lloyd iterations of the winning restart.
    pub iterations: usize,
    /// Which restart won.
    pub restart: usize,
}

fn sq_dist(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| (x - y) * (x - y)).sum()
}

/// Index and squared distance of the centre nearest to `p` (the lowest index on ties).
fn nearest(p: &[f64], centroids: &[f64], dim: usize) -> (usize, f64) {
    let mut best = (0, f64::INFINITY);
    for (j, c) in centroids.chunks_exact(dim).enumerate() {
        let d = sq_dist(p, c);
        if d < best.1 {
            best = (j, d);
        }
    }
    best
}

/// Greedy k-means++: each new centre is the best (lowest potential) of `2 + ln k` candidates
/// drawn with probability proportional to the squared distance to the nearest chosen centre.
fn seed_plus_plus(x: &[f64], dim: usize, k: usize, rng: &mut Rng) -> Vec<f64> {
    let n = x.len() / dim;
    let point = |i: usize| &x[i * dim..(i + 1) * dim];
    let trials = 2 + (k as f64).ln() as usize;
    let mut centroids = Vec::with_capacity(k * dim);
    let first = rng.below(n as u64) as usize;
    centroids.extend_from_slice(point(first));
    let mut closest: Vec<f64> = (0..n).map(|i| sq_dist(point(i), point(first))).collect();
    let mut cumulative = vec![0f64; n];
    for _ in 1..k {
        let mut acc = 0.0;
        for (c, &d) in cumulative.iter_mut().zip(&closest) {
            acc += d;
            *c = acc;
        }
        let mut best: Option<(f64, usize, Vec<f64>)> = None;
        for _ in 0..trials {
            let r = rng.uniform_f64() * acc;
            let cand = cumulative.partition_point(|&c| c < r).min(n - 1);
            let dists: Vec<f64> = (0..n)
                .map(|i| sq_dist(point(i), point(cand)).min(closest[i]))
                .collect();
            let pot: f64 = dists.iter().sum();
            if best.as_ref().is_none_or(|b| pot < b.0) {
                best = Some((pot, cand, dists));
            }
        }
        if let Some((_, cand, dists)) = best {
            centroids.extend_from_slice(point(cand));
            closest = dists;
        }
    }
    centroids
}

/// Lloyd's iterations from `centroids`; returns the centres, inertia and iterations run.
fn lloyd(
    x: &[f64],
    dim: usize,
    mut centroids: Vec<f64>,
    max_iter: usize,
    tol: f64,
) -> (Vec<f64>, f64, usize) {
    let n = x.len() / dim;
    let k = centroids.len() / dim;
    let mut labels = vec![usize::MAX; n];
    let mut dists = vec![0f64; n];
    let mut iterations = 0;
    for it in 0..max_iter {
        iterations = it + 1;
        let mut changed = false;
        for i in 0..n {
            let (j, d) = nearest(&x[i * dim..(i + 1) * dim], &centroids, dim);
            changed |= labels[i] != j;
            labels[i] = j;
            dists[i] = d;
        }
        if !changed {
            break;
        }
        let mut sums = vec![0f64; k * dim];
        let mut counts = vec![0usize; k];
        for i in 0..n {
            let j = labels[i];
            counts[j] += 1;
            for (s, v) in sums[j * dim..(j + 1) * dim]
                .iter_mut()
                .zip(&x[i * dim..(i + 1) * dim])
            {
                *s += v;
            }
        }
        // Empty clusters take the points farthest from their centres (as scikit-learn does).
        let empty: Vec<usize> = (0..k).filter(|&j| counts[j] == 0).collect();
        if !empty.is_empty() {
            let mut far: Vec<usize> = (0..n).collect();
            far.sort_by(|&a, &b| dists[b].total_cmp(&dists[a]).then(a.cmp(&b)));
            for (&j, &i) in empty.iter().zip(&far) {
                sums[j * dim..(j + 1) * dim].copy_from_slice(&x[i * dim..(i + 1) * dim]);
                counts[j] = 1;
            }
        }
        let mut shift = 0.0;
        for j in 0..k {
            for t in 0..dim {
                let new = sums[j * dim + t] / counts[j] as f64;
                let old = centroids[j * dim + t];
                shift += (new - old) * (new - old);
                centroids[j * dim + t] = new;
            }
        }
        if shift <= tol {
            // Converged by the shift rule: the final assignment below uses these centres.
            break;
        }
    }
    let inertia = (0..n)
        .map(|i| nearest(&x[i * dim..(i + 1) * dim], &centroids, dim).1)
        .sum();
    (centroids, inertia, iterations)
}

/// Fits k-means to the rows of `x` (`[n, dim]`, row-major). Restarts run on all cores, each from
/// its own generator (seed, restart number), so the result does not depend on the thread count.
pub fn fit(x: &[f32], dim: usize, cfg: &KMeansConfig) -> Result<KMeans> {
    if dim == 0 || !x.len().is_multiple_of(dim) {
        return Err(InferError::Input(format!(
            "{} values are not rows of {dim}",
            x.len()
        )));
    }
    let n = x.len() / dim;
    if cfg.k == 0 {
        return Err(InferError::Flag("--k must be at least 1".into()));
    }
    if cfg.k > n {
        return Err(InferError::Flag(format!(
            "--k {}: more clusters than the {n} points",
            cfg.k
        )));
    }
    if cfg.restarts == 0 {
        return Err(InferError::Flag("--restarts must be at least 1".into()));
    }
    if cfg.max_iter == 0 {
        return Err(InferError::Flag("--max-iter must be at least 1".into()));
    }
    if let Some(i) = x.iter().position(|v| !v.is_finite()) {
        return Err(InferError::Input(format!(
            "latent value {} of row {} is not finite",
            x[i],
            i / dim
        )));
    }
    let xd: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
    // scikit-learn's tolerance: tol times the mean over features of their variance.
    let mut var_sum = 0.0;
    for t in 0..dim {
        let mean = (0..n).map(|i| xd[i * dim + t]).sum::<f64>() / n as f64;
        var_sum += (0..n)
            .map(|i| (xd[i * dim + t] - mean).powi(2))
            .sum::<f64>()
            / n as f64;
    }
    let tol = cfg.tol * var_sum / dim as f64;
    let run = |r: usize| -> KMeans {
        let mut rng = Rng::stream(cfg.seed, 0xc1_0000 + r as u64);
        let init = seed_plus_plus(&xd, dim, cfg.k, &mut rng);
        let (centroids, inertia, iterations) = lloyd(&xd, dim, init, cfg.max_iter, tol);
        KMeans {
            k: cfg.k,
            dim,
            centroids,
            inertia,
            iterations,
            restart: r,
        }
    };
    let threads = std::thread::available_parallelism()
        .map_or(1, |t| t.get())
        .min(cfg.restarts);
    let fits: Vec<KMeans> = if threads <= 1 {
        (0..cfg.restarts).map(run).collect()
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| {
                    let run = &run;
                    s.spawn(move || {
                        (t..cfg.restarts)
                            .step_by(threads)
                            .map(run)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            handles
                .into_iter()
                .flat_map(|h| h.join().unwrap_or_default())
                .collect()
        })
    };
    // Lowest inertia; the lowest restart number on ties (independent of thread timing).
    fits.into_iter()
        .min_by(|a, b| {
            a.inertia
                .total_cmp(&b.inertia)
                .then(a.restart.cmp(&b.restart))
        })
        .ok_or_else(|| InferError::Input("k-means: every restart failed".into()))
}

impl KMeans {
    /// The nearest centre of each row of `x` (`[n, dim]`).
    pub fn predict(&self, x: &[f32]) -> Vec<u32> {
        let mut p = vec![0f64; self.dim];
        x.chunks_exact(self.dim)
            .map(|row| {
                for (a, &b) in p.iter_mut().zip(row) {
                    *a = f64::from(b);
                }
                nearest(&p, &self.centroids, self.dim).0 as u32
            })
            .collect()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::analysis::metrics::cluster_scores;

    /// `per` points around each of `centres` (2-D), spread `spread`, labels = centre index.
    pub(crate) fn blobs(
        centres: &[[f32; 2]],
        per: usize,
        spread: f32,
        seed: u64,
    ) -> (Vec<f32>, Vec<u32>) {
        let mut rng = Rng::new(seed);
        let mut x = Vec::new();
        let mut y = Vec::new();
        for (c, centre) in centres.iter().enumerate() {
            for _ in 0..per {
                let e = rng.normal_vec(2);
                x.push(centre[0] + spread * e[0]);
                x.push(centre[1] + spread * e[1]);
                y.push(c as u32);
            }
        }
        (x, y)
    }

    #[test]
    fn separated_blobs_are_found_exactly() -> Result<()> {
        let centres = [
            [0.0, 0.0],
            [10.0, 0.0],
            [0.0, 10.0],
            [10.0, 10.0],
            [5.0, 20.0],
        ];
        let (x, y) = blobs(&centres, 60, 0.5, 1);
        let cfg = KMeansConfig {
            k: 5,
            restarts: 4,
            ..KMeansConfig::default()
        };
        let km = fit(&x, 2, &cfg)?;
        let pred = km.predict(&x);
        let s = cluster_scores(&pred, &y)?;
        assert_eq!((s.accuracy, s.nmi, s.ari), (1.0, 1.0, 1.0), "{s:?}");
        // Every centre lies near a true centre.
        for c in km.centroids.chunks_exact(2) {
            let d = centres
                .iter()
                .map(|t| (c[0] - f64::from(t[0])).hypot(c[1] - f64::from(t[1])))
                .fold(f64::INFINITY, f64::min);
            assert!(d < 0.3, "centre {c:?} is {d} from the nearest blob");
        }
        // Same seed, same fit.
        assert_eq!(fit(&x, 2, &cfg)?, km);
        Ok(())
    }

    #[test]
    fn restarts_keep_the_lowest_inertia() -> Result<()> {
        let (x, _) = blobs(&[[0.0, 0.0], [3.0, 0.0], [0.0, 3.0]], 50, 1.0, 2);
        let one = fit(
            &x,
            2,
            &KMeansConfig {
                k: 3,
                restarts: 1,
                ..KMeansConfig::default()
            },
        )?;
        let many = fit(
            &x,
            2,
            &KMeansConfig {
                k: 3,
                restarts: 8,
                ..KMeansConfig::default()
            },
        )?;
        assert!(many.inertia <= one.inertia);
        Ok(())
    }

    #[test]
    fn bad_settings_are_refused() {
        let x = [0.0f32, 1.0, 2.0, 3.0];
        let cfg = KMeansConfig::default();
        assert!(fit(&x, 2, &KMeansConfig { k: 3, ..cfg }).is_err());
        assert!(fit(&x, 2, &KMeansConfig { k: 0, ..cfg }).is_err());
        assert!(fit(&x, 3, &KMeansConfig { k: 1, ..cfg }).is_err());
        assert!(fit(&[f32::NAN, 0.0], 2, &KMeansConfig { k: 1, ..cfg }).is_err());
    }
}
