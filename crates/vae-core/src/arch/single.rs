//! One latent group with a diagonal Gaussian posterior: an encoder body, a dense head giving
//! mu and log sigma², and a decoder — the model of the mlp and conv architectures.

use candle_core::Tensor;
use candle_nn::VarBuilder;

use super::layers::Linear;
use super::{LatentLayout, Net, Pass};
use crate::dist::{std_normal_log_prob, DiagonalGaussian};
use crate::ops::{Act, Kernels};
use crate::Result;

/// The feature extractor of an encoder: `x` (and labels) to the input of the head.
pub trait EncoderBody: std::fmt::Debug + Send + Sync {
    fn forward(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<Tensor>;
}

/// A decoder: codes `z` (and labels) to the likelihood's raw parameters `[b, P·D]`.
pub trait Decoder: std::fmt::Debug + Send + Sync {
    /// With `out_act` applied to the output.
    fn forward(&self, z: &Tensor, labels: Option<&Tensor>, out_act: Act) -> Result<Tensor>;
    /// Whether `out_act` is fused into the last layer.
    fn fuses_output(&self) -> bool {
        false
    }
}

/// A single-latent VAE: q(z|x) = N(mu(x), diag sigma²(x)) from `head` (`encoder.head`,
/// `2 * latent` outputs: mu, then log sigma²), prior N(0, I).
#[derive(Debug)]
pub struct GaussianLatent {
    body: Box<dyn EncoderBody>,
    head: Linear,
    decoder: Box<dyn Decoder>,
    layout: LatentLayout,
}

impl GaussianLatent {
    /// `features` is the width of the body's output; the head is created as `encoder.head`.
    pub(crate) fn new(
        vb: &VarBuilder,
        body: Box<dyn EncoderBody>,
        features: usize,
        latent: usize,
        decoder: Box<dyn Decoder>,
        k: Kernels,
    ) -> Result<Self> {
        let head = Linear::new(vb.pp("encoder").pp("head"), features, 2 * latent, k)?;
        Ok(Self {
            body,
            head,
            decoder,
            layout: LatentLayout::single(latent),
        })
    }
}

/// `t` `[b, d]` repeated `k` times along the rows: `[k·b, d]`, sample-major.
pub(crate) fn repeat_rows(t: &Tensor, k: usize) -> candle_core::Result<Tensor> {
    let (b, d) = t.dims2()?;
    t.unsqueeze(0)?.broadcast_as((k, b, d))?.reshape((k * b, d))
}

impl Net for GaussianLatent {
    fn latent(&self) -> &LatentLayout {
        &self.layout
    }

    fn encode(&self, x: &Tensor, labels: Option<&Tensor>) -> Result<DiagonalGaussian> {
        let h = self.body.forward(x, labels)?;
        let p = self.head.forward(&h, Act::Identity)?;
        let l = self.layout.noise_dim();
        Ok(DiagonalGaussian::new(
            p.narrow(1, 0, l)?,
            p.narrow(1, l, l)?,
        ))
    }

    fn decode(&self, z: &Tensor, labels: Option<&Tensor>, out_act: Act) -> Result<Tensor> {
        self.decoder.forward(z, labels, out_act)
    }

    fn fuses_output(&self) -> bool {
        self.decoder.fuses_output()
    }

    fn pass(
        &self,
        x: &Tensor,
        labels: Option<&Tensor>,
        eps: &Tensor,
        densities: bool,
    ) -> Result<Pass> {
        let eps = if eps.rank() == 2 {
            eps.unsqueeze(0)?
        } else {
            eps.clone()
        };
        let q = self.encode(x, labels)?;
        let kl = q.kl_std_normal_per_dim()?;
        let (k, b, l) = eps.dims3()?;
        if k == 1 && !densities {
            let z = q.rsample(&eps.squeeze(0)?)?;
            let params = self.decode(&z, labels, Act::Identity)?;
            return Ok(Pass {
                params,
                kl,
                log_p: None,
                log_q: None,
            });
        }
        let z =
            q.mu.unsqueeze(0)?
                .broadcast_add(&q.std()?.unsqueeze(0)?.broadcast_mul(&eps)?)?;
        let zf = z.reshape((k * b, l))?;
        let labels_k = labels.map(|y| repeat_rows(y, k)).transpose()?;
        let params = self.decode(&zf, labels_k.as_ref(), Act::Identity)?;
        let log_p = std_normal_log_prob(&z)?;
        let log_q = q.log_prob_from_eps(&eps)?;
        debug_assert_eq!(log_p.dims(), &[k, b]);
        Ok(Pass {
            params,
            kl,
            log_p: Some(log_p),
            log_q: Some(log_q),
        })
    }
}
