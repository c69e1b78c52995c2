//! Scores of a clustering or a classification against true labels: accuracy, accuracy after
//! the best one-to-one matching of clusters to classes (Hungarian algorithm), normalised mutual
//! information and the adjusted Rand index, with scikit-learn's definitions.

use pathfinding::kuhn_munkres::kuhn_munkres;
use pathfinding::matrix::Matrix;

use crate::{InferError, Result};

/// Counts `table[c][y]` of examples put in cluster `c` whose label is `y`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Contingency {
    pub table: Vec<Vec<u64>>,
    pub n: u64,
}

impl Contingency {
    /// The table of `pred` (clusters) against `truth` (labels); both as long, not empty.
    pub fn new(pred: &[u32], truth: &[u32]) -> Result<Self> {
        if pred.len() != truth.len() {
            return Err(InferError::Input(format!(
                "{} predictions for {} labels",
                pred.len(),
                truth.len()
            )));
        }
        if pred.is_empty() {
            return Err(InferError::Input("no examples to score".into()));
        }
        let rows = pred.iter().max().map_or(0, |&m| m as usize + 1);
        let cols = truth.iter().max().map_or(0, |&m| m as usize + 1);
        let mut table = vec![vec![0u64; cols]; rows];
        for (&p, &y) in pred.iter().zip(truth) {
            table[p as usize][y as usize] += 1;
        }
        // Drop clusters and labels that never occur: they change no score.
        table.retain(|r| r.iter().any(|&c| c > 0));
        let keep: Vec<usize> = (0..cols)
            .filter(|&j| table.iter().any(|r| r[j] > 0))
            .collect();
        let table = table
            .into_iter()
            .map(|r| keep.iter().map(|&j| r[j]).collect())
            .collect();
        Ok(Self {
            table,
            n: pred.len() as u64,
        })
    }

    fn row_sums(&self) -> Vec<u64> {
        self.table.iter().map(|r| r.iter().sum()).collect()
    }

    fn col_sums(&self) -> Vec<u64> {
        let cols = self.table.first().map_or(0, Vec::len);
        (0..cols)
            .map(|j| self.table.iter().map(|r| r[j]).sum())
            .collect()
    }
}

/// The share of predictions equal to the labels.
pub fn accuracy(pred: &[u32], truth: &[u32]) -> Result<f64> {
    if pred.len() != truth.len() || pred.is_empty() {
        return Err(InferError::Input(format!(
            "{} predictions for {} labels",
            pred.len(),
            truth.len()
        )));
    }
    let hits = pred.iter().zip(truth).filter(|(p, y)| p == y).count();
    Ok(hits as f64 / pred.len() as f64)
}

/// Clustering accuracy: the share of examples whose cluster is matched to their label by the
/// one-to-one matching of clusters to labels that maximises it (scipy's linear_sum_assignment
/// on the contingency table; here pathfinding's Kuhn-Munkres). With more clusters than labels,
/// the unmatched clusters count as wrong.
pub fn matched_accuracy(c: &Contingency) -> f64 {
    let rows = c.table.len();
    let cols = c.table.first().map_or(0, Vec::len);
    if rows == 0 || cols == 0 {
        return 0.0;
    }
    // Kuhn-Munkres needs no more rows than columns: transpose when there are more clusters.
    let (r, k, values): (usize, usize, Vec<i64>) = if rows <= cols {
        let v = c.table.iter().flatten().map(|&x| x as i64).collect();
        (rows, cols, v)
    } else {
        let v = (0..cols)
            .flat_map(|j| c.table.iter().map(move |row| row[j] as i64))
            .collect();
        (cols, rows, v)
    };
    match Matrix::from_vec(r, k, values) {
        Ok(m) => kuhn_munkres(&m).0 as f64 / c.n as f64,
        Err(_) => 0.0,
    }
}

/// Shannon entropy (nats) of a distribution given by counts summing to `n`.
fn entropy(counts: &[u64], n: f64) -> f64 {
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = c as f64 / n;
            -p * p.ln()
        })
        .sum()
}

/// Normalised mutual information with the arithmetic mean of the entropies as normaliser
/// (scikit-learn's `normalized_mutual_info_score` default): MI / ((H(C) + H(Y)) / 2). Both
/// partitions with a single group give 1, as scikit-learn does.
pub fn nmi(c: &Contingency) -> f64 {
    let n = c.n as f64;
    let (a, b) = (c.row_sums(), c.col_sums());
    if a.len() == 1 && b.len() == 1 {
        return 1.0;
    }
    let mut mi = 0.0;
    for (i, row) in c.table.iter().enumerate() {
        for (j, &nij) in row.iter().enumerate() {
            if nij > 0 {
                let nij = nij as f64;
                mi += nij / n * (n * nij / (a[i] as f64 * b[j] as f64)).ln();
            }
        }
    }
    if mi <= 0.0 {
        return 0.0;
    }
    let norm = ((entropy(&a, n) + entropy(&b, n)) / 2.0).max(f64::EPSILON);
    (mi / norm).min(1.0)
}

/// Adjusted Rand index (Hubert & Arabie 1985) from the pair confusion counts, as scikit-learn's
/// `adjusted_rand_score`: 2 (tp tn - fn fp) / ((tp + fn)(fn + tn) + (tp + fp)(fp + tn)), 1 when
/// the two partitions agree on every pair.
pub fn ari(c: &Contingency) -> f64 {
    let n = c.n as f64;
    let sum_sq: f64 = c
        .table
        .iter()
        .flatten()
        .map(|&x| (x as f64) * (x as f64))
        .sum();
    let sq = |v: Vec<u64>| v.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>();
    let (sa, sb) = (sq(c.row_sums()), sq(c.col_sums()));
    // Ordered pairs, as sklearn's pair_confusion_matrix counts them.
    let tp = sum_sq - n;
    let fp = sa - sum_sq; // same cluster, different labels
    let fn_ = sb - sum_sq; // same label, different clusters
    let tn = n * n - fp - fn_ - sum_sq;
    if fn_ == 0.0 && fp == 0.0 {
        return 1.0;
    }
    2.0 * (tp * tn - fn_ * fp) / ((tp + fn_) * (fn_ + tn) + (tp + fp) * (fp + tn))
}

/// Accuracy after matching, NMI and ARI of a clustering.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct ClusterScores {
    pub accuracy: f64,
    pub nmi: f64,
    pub ari: f64,
}

/// Every clustering score of `pred` against `truth`.
pub fn cluster_scores(pred: &[u32], truth: &[u32]) -> Result<ClusterScores> {
    let c = Contingency::new(pred, truth)?;
    Ok(ClusterScores {
        accuracy: matched_accuracy(&c),
        nmi: nmi(&c),
        ari: ari(&c),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn perfect_and_permuted_clusterings_score_one() -> Result<()> {
        let truth: Vec<u32> = (0..300).map(|i| (i % 10) as u32).collect();
        let s = cluster_scores(&truth, &truth)?;
        assert_eq!((s.accuracy, s.nmi, s.ari), (1.0, 1.0, 1.0));
        // Cluster numbers are arbitrary: relabelling y -> (3y + 7) mod 10 changes nothing.
        let perm: Vec<u32> = truth.iter().map(|&y| (3 * y + 7) % 10).collect();
        let s = cluster_scores(&perm, &truth)?;
        assert!((s.accuracy - 1.0).abs() < 1e-12, "{s:?}");
        assert!((s.nmi - 1.0).abs() < 1e-12, "{s:?}");
        assert!((s.ari - 1.0).abs() < 1e-12, "{s:?}");
        // ...while plain accuracy sees the relabelling.
        assert_eq!(accuracy(&perm, &truth)?, 0.0);
        Ok(())
    }

    #[test]
    fn small_example_matches_sklearns_formulas() -> Result<()> {
        // scikit-learn's docstring example: adjusted_rand_score([0, 0, 1, 2], [0, 0, 1, 1])
        // is 0.57. By hand: the contingency table (rows = labels [0,0,1,1], columns = truth)
        // is [[2,0,0],[0,1,1]]; sum C(nij,2) = 1, sum C(a,2) = 2 (rows 2,2),
        // sum C(b,2) = 1 (columns 2,1,1), C(4,2) = 6, expected = 2*1/6 = 1/3,
        // max = (2+1)/2 = 3/2: ARI = (1 - 1/3)/(3/2 - 1/3) = 4/7.
        // NMI: H(truth) = 1.5 ln 2, H(pred) = ln 2, MI = ln 2 (pred 0 is pure, pred 1 splits
        // evenly): NMI = ln 2 / (2.5 ln 2 / 2) = 0.8.
        // scikit-learn 1.9.1 prints 0.5714285714285714 and 0.7999999999999999.
        let truth = [0, 0, 1, 2];
        let pred = [0, 0, 1, 1];
        let s = cluster_scores(&pred, &truth)?;
        assert!((s.ari - 4.0 / 7.0).abs() < 1e-12, "{s:?}");
        assert!((s.nmi - 0.8).abs() < 1e-12, "{s:?}");
        // Best matching: cluster 0 -> label 0 (2), cluster 1 -> label 1 or 2 (1): 3 of 4.
        assert!((s.accuracy - 0.75).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn larger_hand_example() -> Result<()> {
        // truth 0,0,0,1,1,1,2,2,2 and pred 0,0,1,1,1,2,2,2,2: the contingency table
        // (rows = clusters, columns = labels) is [[2,0,0],[1,2,0],[0,1,3]], cluster sizes
        // 2,3,4, label sizes 3,3,3, n = 9.
        // ARI: sum C(nij,2) = 1+1+3 = 5; sum C(a,2) = 1+3+6 = 10; sum C(b,2) = 3*3 = 9;
        // C(9,2) = 36; expected = 10*9/36 = 2.5; max = 9.5: ARI = 2.5/7 = 0.357142857...
        // NMI: MI = sum nij/n ln(n nij / (ai bj))
        //   = 2/9 ln(18/6) + 1/9 ln(9/9) + 2/9 ln(18/9) + 1/9 ln(9/12) + 3/9 ln(27/12),
        // H(labels) = ln 3, H(clusters) = -(2/9 ln 2/9 + 3/9 ln 3/9 + 4/9 ln 4/9).
        let truth = [0, 0, 0, 1, 1, 1, 2, 2, 2];
        let pred = [0, 0, 1, 1, 1, 2, 2, 2, 2];
        let s = cluster_scores(&pred, &truth)?;
        assert!((s.ari - 2.5 / 7.0).abs() < 1e-12, "{s:?}");
        let l = |x: f64| x.ln();
        let mi =
            2.0 / 9.0 * l(3.0) + 2.0 / 9.0 * l(2.0) + 1.0 / 9.0 * l(0.75) + 3.0 / 9.0 * l(2.25);
        let hc = -(2.0 / 9.0 * l(2.0 / 9.0) + 3.0 / 9.0 * l(3.0 / 9.0) + 4.0 / 9.0 * l(4.0 / 9.0));
        let want = mi / ((l(3.0) + hc) / 2.0);
        assert!((s.nmi - want).abs() < 1e-12, "{} vs {want}", s.nmi);
        // The expression above evaluates to 0.589509827447...; scikit-learn 1.9.1 prints
        // adjusted_rand_score 0.35714285714285715, normalized_mutual_info_score 0.589509827447305.
        assert!((s.nmi - 0.589_509_827_447).abs() < 1e-9, "{}", s.nmi);
        // Matching 0->0, 1->1, 2->2 gives 2+2+3 = 7 of 9.
        assert!((s.accuracy - 7.0 / 9.0).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn more_clusters_than_labels_and_degenerate_cases() -> Result<()> {
        // Four clusters for two labels: the best matching covers 2 + 2 of 6.
        let truth = [0, 0, 0, 1, 1, 1];
        let pred = [0, 0, 1, 2, 2, 3];
        let s = cluster_scores(&pred, &truth)?;
        assert!((s.accuracy - 4.0 / 6.0).abs() < 1e-12);
        // Everything in one cluster: no information.
        let one = cluster_scores(&[0; 6], &truth)?;
        assert_eq!(one.nmi, 0.0);
        assert_eq!(one.ari, 0.0);
        assert!(Contingency::new(&[0, 1], &[0]).is_err());
        assert!(cluster_scores(&[], &[]).is_err());
        Ok(())
    }
}
