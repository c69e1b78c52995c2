//! The rate of a hierarchical model's images when only its first `m` latent groups are coded
//! (sampled from their posteriors, their KL paid) and every group below is set to its prior
//! mean: `cargo run --release -p vae-infer --example coding_levels -- RUN [N] [BITS]`. With
//! BITS, each coded latent is the median of its bin among 2^BITS bins of equal mass under its
//! prior (as the codec's bins at that precision give it to the decoder); its KL stays the
//! continuous one, an upper bound of the discretised KL the codec pays.

use vae_core::arch::hierarchical::LOG_SCALE_BOUND;
use vae_core::candle_core::{Device, Tensor, D};
use vae_core::Rng;

fn main() -> anyhow::Result<()> {
    vae_core::device::configure_process();
    let mut args = std::env::args().skip(1);
    let run = std::path::PathBuf::from(
        args.next()
            .ok_or_else(|| anyhow::anyhow!("usage: coding_levels RUN [N]"))?,
    );
    let n: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(200);
    let bits: Option<u32> = args.next().and_then(|s| s.parse().ok());
    let dir = vae_run::RunDir::new(&run);
    let (w, c) = dir.finished(false)?;
    let m = vae_infer::model::load(&w, &c, &Device::Cpu)?;
    let data = m
        .data
        .clone()
        .ok_or_else(|| anyhow::anyhow!("{}: the run names no data set", run.display()))?
        .load()?;
    let test = &data.splits.test;
    let rows: Vec<usize> = (0..n.min(test.len())).collect();
    let mut buf = Vec::new();
    test.gather(&rows, &mut buf);
    let d = test.shape.dim();
    let x = Tensor::from_vec(buf, (rows.len(), d), &Device::Cpu)?;
    let groups = m.model.latent().groups.len();
    let l = LOG_SCALE_BOUND;
    let log_sigma =
        |raw: &Tensor| -> vae_core::candle_core::Result<Tensor> { (raw / l)?.tanh()? * l };
    for coded in 1..=groups {
        let mut rng = Rng::new(7);
        let mut kl_total =
            Tensor::zeros(rows.len(), vae_core::candle_core::DType::F32, &Device::Cpu)?;
        let params = m
            .model
            .coding_pass(Some(&x), rows.len(), &mut |g, prior, post| {
                let Some(post) = post else {
                    return Err(vae_core::Error::Config(
                        "a coding pass with images has posteriors".into(),
                    ));
                };
                let (pm, pls) = match prior {
                    Some(p) => (p.mu.clone(), log_sigma(&p.raw_log_sigma)?),
                    None => (post.mu.zeros_like()?, post.mu.zeros_like()?),
                };
                if g >= coded {
                    return Ok(pm);
                }
                let qls = log_sigma(&post.raw_log_sigma)?;
                let eps = Tensor::from_vec(
                    rng.normal_vec(post.mu.elem_count()),
                    post.mu.shape(),
                    &Device::Cpu,
                )?;
                let mut z = (&post.mu + (qls.exp()? * eps)?)?;
                if let Some(b) = bits {
                    z = binned(&z, &pm, &pls, b)?;
                }
                let var_ratio = ((&qls - &pls)? * 2.0)?.exp()?;
                let m2 = ((&post.mu - &pm)? * pls.neg()?.exp()?)?.sqr()?;
                let kl = ((((var_ratio + m2)? - 1.0)? * 0.5)? - (&qls - &pls)?)?.sum(D::Minus1)?;
                kl_total = (&kl_total + kl)?;
                Ok(z)
            })?;
        let lp = m
            .model
            .likelihood()
            .log_prob(&params, &x, m.model.kernels())?;
        let nats = (kl_total - lp)?.mean_all()?.to_scalar::<f32>()? as f64;
        println!(
            "groups coded {coded}/{groups}: {:.4} bits/dim",
            nats / (d as f64 * std::f64::consts::LN_2)
        );
    }
    Ok(())
}

/// Each value of `z` as the median of its bin among 2^bits of equal mass under N(pm, e^pls).
fn binned(
    z: &Tensor,
    pm: &Tensor,
    pls: &Tensor,
    bits: u32,
) -> vae_core::candle_core::Result<Tensor> {
    use vae_codec::detmath::{normal_cdf, normal_quantile};
    let n = f64::from(1u32 << bits);
    let (zv, mv, sv) = (
        z.flatten_all()?.to_vec1::<f32>()?,
        pm.flatten_all()?.to_vec1::<f32>()?,
        pls.flatten_all()?.to_vec1::<f32>()?,
    );
    let out: Vec<f32> = zv
        .iter()
        .zip(&mv)
        .zip(&sv)
        .map(|((&z, &m), &ls)| {
            let s = f64::from(ls).exp();
            let u = (f64::from(z) - f64::from(m)) / s;
            let bin = (normal_cdf(u) * n).floor().clamp(0.0, n - 1.0);
            (f64::from(m) + s * normal_quantile((bin + 0.5) / n)) as f32
        })
        .collect();
    Tensor::from_vec(out, z.shape(), z.device())
}
