//! A Q-network's forward pass for one observation, on slices of its weights: what an actor
//! (and the evaluation) runs at every greedy step ([`crate::policy::Policy`]).
//!
//! Why: at a batch of one the arithmetic is small (MinAtar's network: about 0.2 MFLOP) and
//! libtorch's fixed cost per op is not. The same pass through tensor ops (the input's copy and
//! scaling, the patch product, `addmm`, ReLU, `argmax`, reading the result back) took 30 us on
//! MinAtar; these loops take a fraction of that (`wndqn bench acting`, docs/BENCHMARKS.md). On a
//! CPU, an actor's greedy steps shared its core with the learner, so each microsecond here is
//! one the learner loses.
//!
//! The steps read the network's own tensors (shallow copies, the same storage), so a weight
//! load or a weight-norm fold is seen at the next step without a copy. The products are
//! [`crate::gemm::nt_slices`]; the layer norm is the explicit pass's kernel. Sums run in
//! another order than libtorch's, so Q-values agree to rounding, not bit for bit (the test
//! `acting_pass_gives_the_networks_q_values` checks every variant).

use tch::Tensor;

use crate::kernels::{f32s, relu, transpose_blocks, Pass};
use crate::layers::{conv_windows, layer_norm_rows, LAYER_NORM_EPS};
use crate::replay::ObsRef;

/// What a layer does to one sample.
#[derive(Debug)]
pub(crate) enum Shape {
    /// `[inputs] -> [outputs]`.
    Dense,
    /// A convolution without padding on a channel-major map, giving `[outputs, oh, ow]`: its
    /// windows' corners in the input (one per output position, position-major) and a window's
    /// offsets from its corner (in the weight's order, `c, ky, kx`), for
    /// [`crate::gemm::indexed_slices`], which reads the patches where they lie.
    Conv { oh: usize, ow: usize, corners: Vec<isize>, window: Vec<isize> },
}

impl Shape {
    /// A `kernel x kernel` convolution, windows `stride` apart, on a `[c, h, w]` map.
    pub(crate) fn conv(c: usize, h: usize, w: usize, kernel: usize, stride: usize) -> Shape {
        let (oh, ow) = ((h - kernel) / stride + 1, (w - kernel) / stride + 1);
        let (corners, window) = conv_windows(c, h, w, kernel, stride);
        Shape::Conv { oh, ow, corners, window }
    }
}

/// One layer's forward pass for one sample, reading the layer's tensors (contiguous CPU f32).
#[derive(Debug)]
pub(crate) struct Step {
    pub(crate) shape: Shape,
    /// The effective weight, `[outputs, fan-in]` (a convolution's `[outputs, c, k, k]`).
    pub(crate) weight: Tensor,
    pub(crate) bias: Tensor,
    /// Mean-only BN's running mean (subtracted before the bias, as in evaluation).
    pub(crate) running_mean: Option<Tensor>,
    /// Layer norm's scale and shift, and whether it runs over a map's channels at each position
    /// (else over the whole output).
    pub(crate) layer_norm: Option<(Tensor, Tensor, bool)>,
    pub(crate) relu: bool,
    /// A convolution's weight transposed, `[fan-in, outputs]`, as of the last
    /// [`ActingNet::refresh`].
    pub(crate) wt: Vec<f32>,
}

impl Step {
    fn outputs(&self) -> usize {
        self.weight.size()[0] as usize
    }

    /// Take the layer's current weight into what is kept of it (a convolution's transpose).
    fn refresh(&mut self) {
        if matches!(self.shape, Shape::Conv { .. }) {
            // SAFETY: as in `forward`.
            let w = unsafe { f32s(&self.weight) };
            let out = self.outputs();
            self.wt.resize(w.len(), 0.0);
            transpose_blocks(w, &mut self.wt, out, w.len() / out, Pass::Copy);
        }
    }

    /// The output for input `x` (a `[c, h, w]` map channel-major, or a vector).
    fn forward(&self, x: &[f32]) -> Vec<f32> {
        let out = self.outputs();
        // SAFETY: the layer's tensors are contiguous CPU f32 (checked when the step was made),
        // and nothing writes them during a forward pass (loads take `&mut` of the policy).
        let (weight, bias) = unsafe { (f32s(&self.weight), f32s(&self.bias)) };
        let fan_in = weight.len() / out;
        let bias_in_product = self.running_mean.is_none().then_some(bias);
        let (mut y, positions) = match &self.shape {
            Shape::Dense => {
                let mut y = vec![0f32; out];
                crate::gemm::nt_slices(1, out, fan_in, x, weight, bias_in_product, &mut y);
                (y, 1)
            }
            Shape::Conv { corners, window, .. } => {
                let mut y = vec![0f32; corners.len() * out];
                crate::gemm::indexed_slices(x, corners, window, &self.wt, bias_in_product, &mut y);
                (y, corners.len())
            }
        };
        if let Some(rm) = &self.running_mean {
            // SAFETY: as above.
            let rm = unsafe { f32s(rm) };
            for row in y.chunks_exact_mut(out) {
                for ((e, &m), &b) in row.iter_mut().zip(rm).zip(bias) {
                    *e = (*e - m) + b;
                }
            }
        }
        // Position-major rows of channels: a position's layer norm over its channels here,
        // then the map channel-major; a layer norm over the whole output after that.
        let ln = self.layer_norm.as_ref().map(|(g, b, channels)| {
            // SAFETY: as above.
            (unsafe { (f32s(g), f32s(b)) }, *channels)
        });
        let normalize = |y: &mut [f32], (g, b): (&[f32], &[f32])| {
            let mut rstd = vec![0f32; y.len() / g.len()];
            layer_norm_rows(y, g, b, LAYER_NORM_EPS, self.relu, &mut [], &mut rstd, 1);
        };
        if let Some((affine, true)) = ln {
            normalize(&mut y, affine);
        }
        let relu_alone = self.relu && ln.is_none();
        if positions > 1 {
            let mut map = vec![0f32; y.len()];
            transpose_blocks(&y, &mut map, positions, out, if relu_alone { Pass::Relu } else { Pass::Copy });
            y = map;
        } else if relu_alone {
            relu(&mut y);
        }
        if let Some((affine, false)) = ln {
            normalize(&mut y, affine);
        }
        y
    }
}

/// A network's forward pass for one observation ([`crate::qnet::QNetwork::acting`]).
#[derive(Debug)]
pub struct ActingNet {
    /// The convolutions and dense layers, then the head's (value then advantage stream for a
    /// dueling head).
    pub(crate) body: Vec<Step>,
    pub(crate) heads: Vec<Step>,
    pub(crate) dueling: bool,
}

impl ActingNet {
    /// Take the network's weights as they are now: after every load or fold of them.
    pub fn refresh(&mut self) {
        self.body.iter_mut().chain(&mut self.heads).for_each(Step::refresh);
    }

    /// Q-values for one observation: `u8` frames scaled by `1 / 255` as the network's input,
    /// vectors as they are.
    pub fn q_values(&self, obs: ObsRef<'_>) -> Vec<f32> {
        let mut x: Vec<f32> = match obs {
            ObsRef::Frame(f) => f.iter().map(|&p| f32::from(p) / 255.0).collect(),
            ObsRef::Vector(v) => v.to_vec(),
        };
        for s in &self.body {
            x = s.forward(&x);
        }
        let h = &self.heads;
        if !self.dueling {
            return h[1].forward(&h[0].forward(&x));
        }
        let v = h[1].forward(&h[0].forward(&x))[0];
        let adv = h[3].forward(&h[2].forward(&x));
        let mean = adv.iter().sum::<f32>() / adv.len() as f32;
        adv.iter().map(|&a| (v + a) - mean).collect()
    }

    /// The action of the highest Q-value (the first of equal ones).
    pub fn greedy(&self, obs: ObsRef<'_>) -> usize {
        let q = self.q_values(obs);
        let mut best = 0;
        for (i, &v) in q.iter().enumerate() {
            if v > q[best] || (v.is_nan() && !q[best].is_nan()) {
                best = i;
            }
        }
        best
    }
}
