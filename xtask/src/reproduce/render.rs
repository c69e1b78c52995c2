//! The markdown of docs/RESULTS.md: the tables, pictures and commands of a reproduction, the
//! kept hierarchical section, and the check that every row has its numbers.

use std::fmt::Write as _;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::{fmt, num, stem, Plan, Row, CONFIGS};

/// The rows of the PyTorch comparison: label, key of `bench/torch_vae.py`'s evaluation, and the
/// figure published for it (PyTorch, full Fashion-MNIST, 10 epochs), shown when PyTorch is not
/// run.
const TORCH: [(&str, &str, &str); 7] = [
    ("test negative ELBO", "neg_elbo", "244.2"),
    ("NLL (K=1000, first 1,000 test images)", "nll", "240.9"),
    ("k-NN (k=5) accuracy", "knn5_accuracy", "0.853"),
    ("logistic regression accuracy", "linear_accuracy", "0.796"),
    ("k-means accuracy", "kmeans_accuracy", "0.540"),
    ("k-means NMI", "kmeans_nmi", "0.547"),
    ("k-means ARI", "kmeans_ari", "0.374"),
];

pub(super) fn render(
    plan: &Plan,
    rows: &[Row],
    full: Option<&Value>,
    torch: Option<&Value>,
    classical: Option<&[Value]>,
    log: &str,
    seconds: f64,
) -> String {
    let mut m = String::new();
    let title = if plan.quick {
        "Results (quick run on the embedded sample)"
    } else {
        "Results"
    };
    let _ = writeln!(m, "# {title}\n");
    let _ = writeln!(
        m,
        "Written by `cargo xtask reproduce{}` in {:.0} s on a {}-core CPU; every figure below comes from \
         the commands listed at the end. Data: {}. Each configuration trains for {} epochs with Adam \
         1e-3 and batch 128; NLL is the importance-sampled negative log-likelihood with K = {} on the \
         first {} test images. bits/dim is that NLL in bits per pixel where it bounds −log2 P of the \
         8-bit test images, as `density` says: `discrete`, a likelihood over the 256 grey levels; \
         `dequantized`, a density on [0, 1] scored on (v + u)/256 with u uniform, plus log2 256 per \
         pixel; `none`, a Bernoulli on grey levels, which is no distribution over 8-bit images (its \
         figures are cross-entropies, and it has no bits/dim). −ELBO bits/dim is the test −ELBO of the \
         whole test split in the same unit, the bound a bits-back coder reaches on those images.\n",
        match (plan.quick, torch.is_some()) {
            (true, _) => " --quick",
            (false, true) => " --vs-torch PYTHON",
            (false, false) => "",
        },
        seconds,
        std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
        if plan.quick { "the embedded 6,000 / 1,000-image sample of Fashion-MNIST" } else { "Fashion-MNIST, 60,000 training and 10,000 test images" },
        plan.epochs,
        plan.nll_k,
        plan.nll_limit
    );
    let _ = writeln!(m, "| configuration | epochs | train seconds | test −ELBO | NLL | density | bits/dim | −ELBO bits/dim | k-NN | linear | k-means acc. | NMI | ARI |");
    let _ = writeln!(
        m,
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
    );
    for r in rows {
        let (a, n, ari) = match r.kmeans {
            Some((a, n, ari)) => (Some(a), Some(n), Some(ari)),
            None => (None, None, None),
        };
        let _ = writeln!(
            m,
            "| {} | {} | {:.0} | {:.2} | {:.2} | {} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            r.epochs,
            r.seconds,
            r.neg_elbo,
            r.nll,
            r.density,
            fmt(r.bpd, 4),
            fmt(r.elbo_bpd, 4),
            fmt(r.knn, 3),
            fmt(r.linear, 3),
            fmt(a, 3),
            fmt(n, 3),
            fmt(ari, 3)
        );
    }
    if let Some(f) = full {
        let _ = writeln!(
            m,
            "\nReference run (`pytorch-example`) on the whole test split with K = {}{}: NLL {:.2} nats, −ELBO {:.2} nats ({} images), in {:.0} s.",
            f.get("iw_samples").and_then(Value::as_u64).unwrap_or(0),
            if plan.quick { "" } else { " (`evaluate`'s default)" },
            num(f, "nll"),
            num(f, "neg_elbo"),
            f.get("examples").and_then(Value::as_u64).unwrap_or(0),
            num(f, "seconds")
        );
    }
    if let Some(classical) = classical {
        render_classical(&mut m, rows, classical);
    }
    let _ = writeln!(m, "\n## PyTorch reference\n");
    let source = if torch.is_some() {
        "measured in this run (`cargo xtask reproduce --vs-torch PYTHON`, same machine, same thread count)"
    } else {
        "as published for this workload; `cargo xtask reproduce --vs-torch PYTHON` measures them beside ours"
    };
    let _ = writeln!(m, "`bench/torch_vae.py --epochs 10 --evaluate` (the same net and loss as `pytorch-example`) on full Fashion-MNIST, {source}{}:\n",
        if plan.quick { " (this quick run trains on the 6,000-image sample for 2 epochs: the columns are not comparable, the table only shows the layout)" } else { "" });
    let _ = writeln!(m, "| measure | PyTorch | ours (`pytorch-example`) |");
    let _ = writeln!(m, "| --- | --- | --- |");
    if let Some(r) = rows.first() {
        let ours = [
            format!("{:.2}", r.neg_elbo),
            format!("{:.2}", r.nll),
            fmt(r.knn, 3),
            fmt(r.linear, 3),
            fmt(r.kmeans.map(|k| k.0), 3),
            fmt(r.kmeans.map(|k| k.1), 3),
            fmt(r.kmeans.map(|k| k.2), 3),
        ];
        for ((label, key, published), o) in TORCH.iter().zip(ours) {
            let theirs = match torch {
                Some(t) if key.starts_with("neg") || *key == "nll" => format!("{:.2}", num(t, key)),
                Some(t) => format!("{:.3}", num(t, key)),
                None => (*published).to_string(),
            };
            let _ = writeln!(m, "| {label} | {theirs} | {o} |");
        }
    }
    let _ = writeln!(m, "\n## Pictures\n");
    for c in CONFIGS.iter().filter(|c| c.analyse) {
        let name = stem(c.name);
        let _ = writeln!(m, "`{}`: samples from the prior, and test images (odd rows) above their reconstructions (each pixel shows the mean of the likelihood, not a draw).\n", c.name);
        let _ = writeln!(m, "![{name} samples](results/{name}-samples.png) ![{name} reconstructions](results/{name}-reconstructions.png)\n");
    }
    let _ = writeln!(m, "The reference run's full report: [results/pytorch-example-report.html](results/pytorch-example-report.html).\n");
    let _ = writeln!(m, "## Commands\n\n```");
    m.push_str(log);
    let _ = writeln!(m, "```");
    m
}

/// The heading of the section of RESULTS.md that a rewrite keeps (see [`run`]).
pub(crate) const KEPT_SECTION: &str = "\n## Hierarchical VAE";

/// `md` followed by the section of `old` (the file being replaced) from `heading` to its end,
/// if it has one: what was run by hand beside the generated tables survives their rewrite.
pub(crate) fn with_kept_section(md: String, old: Option<&str>, heading: &str) -> String {
    match old.and_then(|o| o.find(heading).map(|at| &o[at..])) {
        Some(kept) => md + kept,
        None => md,
    }
}

/// The discrete models' rates beside the classical codecs' on the same test images.
fn render_classical(m: &mut String, rows: &[Row], classical: &[Value]) {
    let _ = writeln!(m, "\n## Against the classical lossless codecs\n");
    let _ = writeln!(
        m,
        "The same 10,000 test images, 8 bits per pixel raw. The models' rate is their test −ELBO in \
         bits/dim (a bound on −log2 P(image) that `vae-infer compress` reaches to within a few \
         thousandths, see [COMPRESSION.md](COMPRESSION.md)); the codecs' is every byte of their \
         output, each image coded on its own (`per-image`, what a file format does) or the whole \
         set as one stream or mosaic (`stream`), by vae-codec's `baselines` example (gzip -9, \
         bzip2 -9, xz -9e, PNG at its best deflate level with adaptive filtering, lossless WebP at method 6). The \
         NLL column above is tighter still, on the first test images.\n"
    );
    let _ = writeln!(m, "| model or codec | bits/dim |");
    let _ = writeln!(m, "| --- | --- |");
    let mut lines: Vec<(String, f64)> = rows
        .iter()
        .filter(|r| r.density == "discrete")
        .filter_map(|r| {
            r.elbo_bpd
                .map(|b| (format!("{} ({} epochs)", r.name, r.epochs), b))
        })
        .collect();
    let best_model = lines.iter().map(|l| l.1).fold(f64::INFINITY, f64::min);
    let per_image = classical
        .iter()
        .filter(|c| c.get("mode").and_then(Value::as_str) == Some("per-image"))
        .min_by(|a, b| num(a, "bits_per_dim").total_cmp(&num(b, "bits_per_dim")));
    for c in classical {
        lines.push((
            format!(
                "{} ({})",
                c.get("codec").and_then(Value::as_str).unwrap_or("?"),
                c.get("mode").and_then(Value::as_str).unwrap_or("?")
            ),
            num(c, "bits_per_dim"),
        ));
    }
    lines.sort_by(|a, b| a.1.total_cmp(&b.1));
    for (name, b) in &lines {
        let _ = writeln!(m, "| {name} | {b:.4} |");
    }
    if let Some(p) = per_image {
        let (codec, pb) = (
            p.get("codec").and_then(Value::as_str).unwrap_or("?"),
            num(p, "bits_per_dim"),
        );
        let verdict = if best_model < pb {
            format!(
                "the best model's −ELBO is {:.4} bits/dim, {:.1}% below it",
                best_model,
                100.0 * (1.0 - best_model / pb)
            )
        } else {
            format!("no model gets below it (best {best_model:.4})")
        };
        let _ = writeln!(
            m,
            "\nThe best classical codec per image is {codec} at {pb:.4} bits/dim; {verdict}."
        );
    }
}

/// The written file must have every row, each with finite numbers.
pub(super) fn check(md: &str) -> Result<()> {
    for c in &CONFIGS {
        let line = md
            .lines()
            .find(|l| l.starts_with(&format!("| {} |", c.name)))
            .with_context(|| format!("RESULTS.md has no row for `{}`", c.name))?;
        let cells: Vec<&str> = line
            .split('|')
            .map(str::trim)
            .filter(|x| !x.is_empty())
            .collect();
        for (i, cell) in cells.iter().enumerate().take(5).skip(1) {
            let v: f64 = cell.parse().with_context(|| {
                format!("row `{}`, column {i}: `{cell}` is not a number", c.name)
            })?;
            if !v.is_finite() {
                bail!("row `{}`, column {i}: {v}", c.name);
            }
        }
        let density = cells.get(5).copied().unwrap_or("");
        let bpd = cells.get(6).copied().unwrap_or("");
        match density {
            "none" if bpd != "–" => {
                bail!("row `{}` prints a bits/dim for a cross-entropy", c.name)
            }
            "none" => {}
            "discrete" | "dequantized" | "binary" => {
                let v: f64 = bpd
                    .parse()
                    .with_context(|| format!("row `{}`: bits/dim `{bpd}`", c.name))?;
                // An upper bound on -log2 P: positive, and above 8 only for a model worse
                // than the uniform distribution (possible for a density with a fixed variance).
                if !(v > 0.0 && v.is_finite()) {
                    bail!("row `{}`: bits/dim {v} is not positive", c.name);
                }
            }
            other => bail!("row `{}`: unknown density `{other}`", c.name),
        }
        let elbo_bpd = cells.get(7).copied().unwrap_or("");
        match density {
            "none" if elbo_bpd != "–" => {
                bail!(
                    "row `{}` prints a −ELBO bits/dim for a cross-entropy",
                    c.name
                )
            }
            "none" => {}
            _ => {
                let v: f64 = elbo_bpd
                    .parse()
                    .with_context(|| format!("row `{}`: −ELBO bits/dim `{elbo_bpd}`", c.name))?;
                if !(v > 0.0 && v.is_finite()) {
                    bail!("row `{}`: −ELBO bits/dim {v} is not positive", c.name);
                }
            }
        }
        if c.analyse && cells[8..].contains(&"–") {
            bail!("row `{}` lacks its analysis figures", c.name);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rewrite_keeps_the_hierarchical_section_and_nothing_else() {
        let old = "# Results\n\nold table\n\n## Hierarchical VAE\n\nits run\n";
        let md = with_kept_section("# Results\n\nnew table\n".into(), Some(old), KEPT_SECTION);
        assert_eq!(
            md,
            "# Results\n\nnew table\n\n## Hierarchical VAE\n\nits run\n"
        );
        // Without the section (or without an old file) the new text is all there is.
        let none = with_kept_section(
            "new\n".into(),
            Some("# Results\n\nold table\n"),
            KEPT_SECTION,
        );
        assert_eq!(none, "new\n");
        assert_eq!(
            with_kept_section("new\n".into(), None, KEPT_SECTION),
            "new\n"
        );
    }
}
