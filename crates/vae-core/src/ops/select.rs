//! The one place that decides which implementation an operation runs.
//!
//! A model is built with a [`Kernels`] setting, and each layer and likelihood passes it to the
//! operations it calls; each operation asks [`Kernels::route`] with its tensors and runs:
//! - [`Route::Cpu`]: its fused CPU kernel (one pass over memory, a hand-written backward);
//! - [`Route::Composite`]: the same value as a composition of candle operations, on any device
//!   and dtype: what a device without kernels of its own runs (CUDA and Metal today), and the
//!   reference the tests compare the fused kernels with;
//! - [`Route::Exact`]: fixed-order forward passes whose bits depend neither on the batch, the
//!   thread count nor the SIMD level (lossless coding), where the operation has one.
//!
//! A CUDA kernel of an operation goes beside its CPU kernel: a `Route::Cuda` chosen here for
//! CUDA tensors when the `cuda` feature is built, and a `cuda_fwd` in the operation's candle
//! `CustomOp`. Nothing here is process-wide: two models with different settings can run side
//! by side (the tests do).

use candle_core::{DType, Tensor};

use crate::fastmath::SimdLevel;

/// Which implementations a model's operations run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Kernels {
    /// Each operation's own kernel for its tensors' device where it has one (the fused CPU
    /// kernels, on f32), the candle composite otherwise.
    #[default]
    Native,
    /// The candle composite of every operation on every device.
    Composite,
    /// The exact forward passes; `simd` caps the SIMD level their kernels may use (their bits
    /// are the same at every level; the cap lets a test show it). They have no backward pass.
    Exact { simd: Option<SimdLevel> },
}

/// The implementation one call of an operation runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    Cpu,
    Composite,
    Exact(Option<SimdLevel>),
}

impl Kernels {
    /// The exact passes at the CPU's own SIMD level.
    pub fn exact() -> Self {
        Kernels::Exact { simd: None }
    }

    pub fn is_exact(self) -> bool {
        matches!(self, Kernels::Exact { .. })
    }

    /// The route of an operation on `ts`: the CPU kernels need every tensor in f32 on the CPU.
    pub fn route(self, ts: &[&Tensor]) -> Route {
        match self {
            Kernels::Exact { simd } => Route::Exact(simd),
            Kernels::Composite => Route::Composite,
            Kernels::Native => {
                if ts
                    .iter()
                    .all(|t| t.device().is_cpu() && t.dtype() == DType::F32)
                {
                    Route::Cpu
                } else {
                    Route::Composite
                }
            }
        }
    }

    /// Whether an operation with an exact form on `ts` runs its fused CPU kernel (the
    /// hierarchical model's fused block and group also ask this: in exact mode they give way
    /// to their layers' exact passes).
    pub fn fused(self, ts: &[&Tensor]) -> bool {
        self.route(ts) == Route::Cpu
    }

    /// Whether an operation runs its CPU kernel on `ts` natively and in exact mode too: one
    /// with no exact form (the likelihoods, the optimizer: their figures are reported, never
    /// coded), or one whose kernel is exact itself (copies, and sums in the composite's order:
    /// the hierarchical model's pooling, upsampling and state update).
    pub fn cpu_kernel(self, ts: &[&Tensor]) -> bool {
        self != Kernels::Composite && Kernels::Native.fused(ts)
    }

    /// The setting's name on the command line (`--kernels`).
    pub fn name(self) -> &'static str {
        match self {
            Kernels::Native => "native",
            Kernels::Composite => "composite",
            Kernels::Exact { .. } => "exact",
        }
    }

    /// From its command-line name (`native` or `composite`; exact passes are chosen by the
    /// coder, not by a flag).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "native" => Some(Kernels::Native),
            "composite" => Some(Kernels::Composite),
            _ => None,
        }
    }
}
