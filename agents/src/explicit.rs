//! The training pass of a small network on the CPU with its backward pass written out: the
//! matrix products are [`crate::gemm`]'s (own AVX-512 kernels, else libtorch's `addmm`/`mm`:
//! MKL), everything between them (bias and
//! mean-only BN, layer norm, ReLU, the dueling head, the TD loss and every backward step of
//! those) is a loop over the activations here, and no autograd graph is built.
//!
//! Why: a MinAtar or CartPole update is mostly libtorch's cost per op, not arithmetic. Through
//! autograd `perf` put about 45% of a MinAtar update in MKL's products and most of the rest in
//! per-op dispatch, autograd and allocation; written out, the products are about 57% and the
//! update is 1.3x faster (the MLP's 1.8x; AMD EPYC, one thread, docs/BENCHMARKS.md). And a
//! normalization costs what its loops cost: through autograd layer norm added ATen's layer
//! norm, its backward and two more parameters for autograd per layer.
//!
//! Which networks ([`crate::qnet::QNetwork::explicit_ready`]): dense layers, and a first
//! convolution computed as a product over patches (MinAtar's), every weight plain or made plain
//! for the pass ([`crate::reparam`]), f32 on the CPU. Others (the Nature network's oneDNN
//! convolutions, CUDA, bf16) take autograd. `QNetwork`'s test
//! `explicit_pass_gives_autograd_gradients` checks every variant against autograd, and the
//! PyTorch oracles check whole updates.

use tch::Tensor;

/// What a layer's explicit forward pass keeps for its backward pass.
#[derive(Debug)]
pub struct LayerTape {
    /// The matrix product's left operand: the layer's input `[B, in]`, or a convolution's
    /// patches `[B * positions, C * k * k]`, or its input map (`patches_in_place`).
    pub input: Tensor,
    /// `input` is a convolution's input map, whose patches the kernels read where they lie
    /// (`Patches::product`, `Patches::weight_grad_t`).
    pub patches_in_place: bool,
    /// Layer norm: the normalized pre-activation (in the layout it was normalized in) and
    /// `1 / sqrt(var + eps)` per normalized row.
    pub ln: Option<(Tensor, Vec<f32>)>,
}

/// The TD loss and its gradient: `q` `[B, A]`, `actions` `[B]`, `target` `[B]`; Huber (delta
/// one) or squared error, averaged over the batch. Returns the loss, `Q(s, a)` per sample and
/// `dL/dq` (`[B, A]`, zero but at the actions taken).
pub(crate) fn td_loss(q: &[f32], actions: &[i64], target: &[f32], huber: bool) -> (f64, Vec<f32>, Vec<f32>) {
    let b = actions.len();
    let a = q.len() / b;
    let mut dq = vec![0f32; q.len()];
    let mut q_sa = Vec::with_capacity(b);
    let mut loss = 0f64;
    for (i, (&act, &t)) in actions.iter().zip(target).enumerate() {
        let v = q[i * a + act as usize];
        q_sa.push(v);
        let d = v - t;
        let (l, g) = if !huber {
            (d * d, 2.0 * d)
        } else if d.abs() < 1.0 {
            (0.5 * d * d, d)
        } else {
            (d.abs() - 0.5, d.signum())
        };
        loss += l as f64;
        dq[i * a + act as usize] = g / b as f32;
    }
    (loss / b as f64, q_sa, dq)
}
