//! What a layer computes its products in: f32, or bf16 (convolutions and matrix products, the
//! weights and every other value staying f32; on CUDA also TF32).

use tch::{Kind, Tensor};

/// What a layer computes its convolution or matrix product in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compute {
    /// f32 throughout.
    #[default]
    F32,
    /// bf16 inputs and weights for the convolution or matrix product, as autocast casts them,
    /// and bf16 activations between layers; the weights themselves, the weight-norm norms and
    /// scales, the batch means and the biases stay f32 (a scale, mean or bias is cast to bf16
    /// only where it meets the activation). `channels_last` runs convolutions in channels-last
    /// memory format, the layout oneDNN's bf16 kernels are fastest in.
    Bf16 {
        /// Convolutions in channels-last memory format.
        channels_last: bool,
    },
}

impl Compute {
    /// `t` in this computation's dtype (and layout, for a convolution's 4-d operands).
    pub(super) fn operand(self, t: &Tensor, conv: bool) -> Tensor {
        match self {
            Compute::F32 => t.shallow_clone(),
            Compute::Bf16 { channels_last } => {
                let cl = channels_last && conv && t.dim() == 4;
                crate::ext::precision::to(t, Kind::BFloat16, cl).unwrap_or_else(|_| t.to_kind(Kind::BFloat16))
            }
        }
    }
}
