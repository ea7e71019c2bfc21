//! Dense and convolutional layers for `tch`, plain or normalized, one file a normalization:
//!
//! - [`Param::Plain`](crate::normalization::Param): `y = W x + b`, PyTorch's default init
//!   (uniform, bound `1/sqrt(fan_in)`);
//! - [`weight_norm`]: `w = g v / ||v||`, with its data-dependent init and its projection to fixed
//!   norms; [`mean_only_bn`] after it;
//! - [`spectral`]: `W / sigma(W)` by power iteration;
//! - [`layer_norm`]: layer norm of the pre-activation, any layer;
//! - [`patches`]: a first convolution as one product over its patches (MinAtar's);
//! - [`materialized`]: weight or spectral norm of a small CPU layer as loops around a plain pass;
//! - [`precision`]: f32, bf16 or TF32 products ([`Compute`]).
//!
//! Every layer also supports the data-dependent initialization of Section 3 ([`Layer::data_init`]).
//! What a variant asks of each layer comes from [`crate::normalization::Recipe`].

mod layer_norm;
mod materialized;
mod mean_only_bn;
mod patches;
mod precision;
mod spectral;
mod weight_norm;

pub(crate) use layer_norm::layer_norm as layer_norm_rows;
use layer_norm::layer_norm_backward;
pub use layer_norm::LAYER_NORM_EPS;
pub use materialized::MAX_WEIGHTS;
pub(crate) use patches::windows as conv_windows;
pub use precision::Compute;
pub use spectral::{SPECTRAL_EPS, SPECTRAL_INIT_ITERS};

use layer_norm::LayerNorm;
use materialized::{Materialized, Weights};
use patches::Patches;
use spectral::normalize;

use tch::{nn, Kind, Tensor};

use crate::explicit::LayerTape;
use crate::kernels::{f32s, f32s_mut, plain_f32, Pass};
use crate::normalization::{LayerConfig, Param};

/// `y`, through a ReLU (a tensor op) with `relu`.
pub(crate) fn rectified(y: Tensor, relu: bool) -> Tensor {
    if relu {
        y.relu()
    } else {
        y
    }
}

/// A layer's operands for one set of weights, made ready for its product once and used by every
/// forward pass until the weights change ([`Layer::operands`]): the weight (with a convolution's
/// weight-norm scale folded in) in the computation's dtype and layout, and the bias and output
/// scale in the dtype they meet the activation in. An update's online passes share one set, so
/// that fc1's 1.6M weights are cast to bf16 once per update, not once per pass; a target network
/// keeps its set from one sync to the next.
#[derive(Debug)]
pub struct Operands {
    w: Tensor,
    bias: Tensor,
    out_scale: Option<Tensor>,
    /// A dense layer's `w` transposed, contiguous `[in, out]`, where it is kept (a target
    /// network's, made once per weight change): MKL multiplies a batch by it faster than by
    /// `w^T` seen through strides (32x1024 by 1024x128: 94 against 114 us, AMD EPYC, one thread).
    wt: Option<Tensor>,
}

impl Operands {
    /// The same operands outside autograd (for the passes that need no gradient).
    pub fn detach(&self) -> Operands {
        Operands {
            w: self.w.detach(),
            bias: self.bias.detach(),
            out_scale: self.out_scale.as_ref().map(Tensor::detach),
            wt: self.wt.as_ref().map(Tensor::detach),
        }
    }

    /// Take `new`'s values in place (same shapes and dtypes), so that a captured CUDA graph
    /// reading these tensors sees them.
    pub fn refresh(&mut self, new: &Operands) {
        // An operand that is the weight itself (f32, nothing folded) is refreshed already.
        let take = |old: &mut Tensor, new: &Tensor| {
            if old.data_ptr() != new.data_ptr() {
                old.copy_(new);
            }
        };
        tch::no_grad(|| {
            take(&mut self.w, &new.w);
            take(&mut self.bias, &new.bias);
            if let (Some(o), Some(n)) = (&mut self.out_scale, &new.out_scale) {
                take(o, n);
            }
            if let (Some(o), Some(n)) = (&mut self.wt, &new.wt) {
                take(o, n);
            }
        });
    }
}

#[derive(Debug, Clone, Copy)]
enum Op {
    Linear,
    Conv2d { stride: i64 },
}

/// A linear or 2-D convolution layer (without its nonlinearity).
#[derive(Debug)]
pub struct Layer {
    op: Op,
    /// `W` (plain) or `v` (weight norm).
    pub weight: Tensor,
    /// `g`, one per output unit (weight norm only).
    pub g: Option<Tensor>,
    /// Bias, one per output unit.
    pub bias: Tensor,
    running_mean: Option<Tensor>,
    bn_momentum: f64,
    /// Spectral norm's left and right singular vector estimates `(u, v)`.
    spectral: Option<(Tensor, Tensor)>,
    /// Projected weight norm: every row's `||v||` at initialization.
    norm0: Option<Tensor>,
    layer_norm: Option<LayerNorm>,
    /// A convolution on an input that needs no gradient (the observation) as one matrix
    /// product over its patches ([`Layer::use_patch_product`]).
    patches: Option<Patches>,
    /// Weight or spectral norm computed by loops around a plain training pass
    /// ([`Layer::materialize`]).
    materialized: Option<Materialized>,
    /// Gradient buffers of the explicit training pass ([`Layer::prepare_explicit`]).
    explicit: Option<ExplicitGrads>,
}

/// The gradient buffers that the explicit training pass writes ([`crate::explicit`]).
#[derive(Debug)]
struct ExplicitGrads {
    /// The weight's (or its materialized effective weight's): a tensor of its own, not a view
    /// (an optimizer's `zero_grad` detaches gradients in place, which a view refuses).
    weight: Tensor,
    bias: Tensor,
    /// Layer norm's scale and shift.
    ln: Option<(Tensor, Tensor)>,
}

fn fan_in(dims: &[i64]) -> i64 {
    dims[1..].iter().product()
}

impl Layer {
    fn new(p: &nn::Path, op: Op, wdims: &[i64], cfg: LayerConfig) -> Layer {
        let out = wdims[0];
        let bound = 1.0 / (fan_in(wdims) as f64).sqrt();
        let (weight, g, bias) = match cfg.param {
            Param::Plain | Param::Spectral => (
                p.var("weight", wdims, nn::Init::Uniform { lo: -bound, up: bound }),
                None,
                p.var("bias", &[out], nn::Init::Uniform { lo: -bound, up: bound }),
            ),
            Param::WeightNorm { .. } => (
                p.var("v", wdims, nn::Init::Randn { mean: 0.0, stdev: cfg.v_init_std }),
                Some(p.var("g", &[out], nn::Init::Const(1.0))),
                p.var("bias", &[out], nn::Init::Const(0.0)),
            ),
        };
        let running_mean = match cfg.param {
            Param::WeightNorm { mean_only_bn: true } => Some(p.zeros_no_train("running_mean", &[out])),
            _ => None,
        };
        let spectral = (cfg.param == Param::Spectral).then(|| {
            let (u, v) = (p.zeros_no_train("sn_u", &[out]), p.zeros_no_train("sn_v", &[fan_in(wdims)]));
            tch::no_grad(|| {
                for t in [&u, &v] {
                    t.shallow_clone().copy_(&normalize(&t.randn_like()));
                }
            });
            (u, v)
        });
        let norm0 = (cfg.project && g.is_some()).then(|| {
            let n = p.zeros_no_train("v_norm0", &[out]);
            tch::no_grad(|| {
                n.shallow_clone().copy_(&weight.norm_scalaropt_dim(
                    2.0,
                    (1..wdims.len() as i64).collect::<Vec<_>>(),
                    false,
                ))
            });
            n
        });
        let layer = Layer {
            op,
            weight,
            g,
            bias,
            running_mean,
            bn_momentum: cfg.bn_momentum,
            spectral,
            norm0,
            layer_norm: None,
            patches: None,
            materialized: None,
            explicit: None,
        };
        for _ in 0..SPECTRAL_INIT_ITERS {
            let _ = layer.power_iteration();
        }
        layer
    }

    /// Compute this layer's weight or spectral norm around its training passes as a plain
    /// layer's, by loops ([`crate::reparam`]): where the weight is small, on the CPU. Returns
    /// whether it does.
    pub fn materialize(&mut self) -> bool {
        if self.materialized.is_none() {
            self.materialized = self.reparam_weights().and_then(|p| Materialized::new(&p));
        }
        self.materialized.is_some()
    }

    /// Prepare this layer for the explicit training pass ([`crate::explicit`]): gradient
    /// buffers for its bias and layer norm. False where it cannot take that pass: a weight
    /// normalized by tensor ops (not [`Layer::materialize`]d), a convolution not computed over
    /// patches, or not f32 on the CPU.
    pub fn prepare_explicit(&mut self) -> bool {
        let ready = plain_f32(&self.weight)
            && plain_f32(&self.bias)
            && (self.reparam_weights().is_none() || self.materialized.is_some())
            && (matches!(self.op, Op::Linear) || self.patches.is_some())
            && self.layer_norm.as_ref().is_none_or(|l| plain_f32(&l.weight) && plain_f32(&l.bias));
        if ready && self.explicit.is_none() {
            let buf = |t: &Tensor| {
                let g = t.zeros_like();
                crate::ext::multi_tensor::set_grad(t, Some(&g)).ok().map(|_| g)
            };
            let ln = match &self.layer_norm {
                Some(l) => match (buf(&l.weight), buf(&l.bias)) {
                    (Some(w), Some(b)) => Some((w, b)),
                    _ => return false,
                },
                None => None,
            };
            let Some(bias) = buf(&self.bias) else { return false };
            let weight = self.weight.zeros_like();
            self.explicit = Some(ExplicitGrads { weight, bias, ln });
        }
        ready
    }

    /// The explicit training pass's forward step ([`crate::explicit`]): the output for input
    /// `x` with `ops` from [`Layer::train_operands`] (a plain weight), mean-only BN's batch mean
    /// (and its running mean updated) and layer norm, as [`Layer::forward_with`] in training,
    /// then a ReLU with `relu` (in layer norm's loop where there is one); and what the backward
    /// step needs for the first `keep` samples of the batch (the others only need their output:
    /// [`crate::qnet::QNetwork::explicit_forward`]).
    pub fn explicit_forward(&self, x: &Tensor, ops: &Operands, keep: i64, relu: bool) -> (Tensor, LayerTape) {
        let out = self.weight.size()[0];
        let batch = x.size()[0];
        let mobn = self.running_mean.is_some();
        let bias = (!mobn).then_some(&ops.bias);
        let (input, pre, patches_in_place) = match (&self.op, &self.patches) {
            (Op::Conv2d { .. }, Some(p)) => match p.forward(x, &ops.w.reshape([out, -1]).tr(), bias) {
                (pre, None) => (x.shallow_clone(), pre, true),
                (pre, Some(cols)) => (cols, pre, false),
            },
            _ => (x.shallow_clone(), crate::gemm::product(bias, x, &ops.w.tr()), false),
        };
        if let Some(rm) = &self.running_mean {
            // SAFETY: `pre` is a fresh contiguous f32 product no one else holds; the bias and
            // running mean are contiguous CPU f32 (`prepare_explicit`) and written by no one
            // else during the pass.
            let (pre_s, bias, rm) = unsafe { (f32s_mut(&pre), f32s(&ops.bias), f32s_mut(rm)) };
            let mean = mean_only_bn::mean_only_bn(pre_s, bias);
            let m = self.bn_momentum as f32;
            for (r, x) in rm.iter_mut().zip(mean) {
                *r = *r * m + x * (1.0 - m);
            }
        }
        // Without a layer norm the ReLU rides in the convolution's transposed copy; a layer
        // norm (over a map's channels: interleaved rows, vectorized across the positions) and
        // its ReLU follow it.
        let relu_alone = relu && self.layer_norm.is_none();
        let y = match &self.patches {
            Some(p) if matches!(self.op, Op::Conv2d { .. }) => {
                let pass = if relu_alone { Pass::Relu } else { Pass::Copy };
                p.to_channels_first(&pre, batch, pass)
            }
            _ => {
                if relu_alone {
                    // SAFETY: a fresh contiguous f32 activation of this pass.
                    crate::kernels::relu(unsafe { f32s_mut(&pre) });
                }
                pre
            }
        };
        let ln = self.layer_norm_explicit(&y, keep, batch, relu);
        let input = if keep == batch { input } else { input.narrow(0, 0, input.size()[0] / batch * keep) };
        (y, LayerTape { input, patches_in_place, ln })
    }

    /// The explicit training pass's backward step: `d` is `dL/d(output)` of
    /// [`Layer::explicit_forward`] (contiguous f32, overwritten), `act` that output where it
    /// went through a ReLU; the parameters' gradients are set (the weight's, or its
    /// materialized effective weight's, for [`Layer::finish_grad`]), and `dL/d(input)` is
    /// returned when `need_dx`.
    pub fn explicit_backward(
        &self,
        tape: LayerTape,
        d: Tensor,
        ops: &Operands,
        need_dx: bool,
        act: Option<&Tensor>,
    ) -> Option<Tensor> {
        let grads = self.explicit.as_ref().expect("explicit_backward after prepare_explicit");
        let out = self.weight.size()[0];
        let ln_back = |d: &Tensor, tape_ln: &Option<(Tensor, Vec<f32>)>| {
            if let (Some(l), Some((xhat, rstd)), Some((dw, db))) = (&self.layer_norm, tape_ln, &grads.ln) {
                // SAFETY: `d` and `xhat` are contiguous f32 activations of this pass, the
                // parameters and their gradient buffers contiguous CPU f32, all distinct.
                unsafe {
                    layer_norm_backward(
                        f32s_mut(d),
                        f32s(xhat),
                        rstd,
                        (f32s(&l.weight), f32s(&l.bias)),
                        act.is_some(),
                        (f32s_mut(dw), f32s_mut(db)),
                        self.layer_norm_stride(d),
                    );
                }
            }
        };
        // Without a layer norm, ReLU's backward (the output's sign) rides in the convolution's
        // transposed copy.
        // SAFETY: `y` is the layer's output, contiguous f32, which nothing writes in this pass.
        let gate = act.filter(|_| tape.ln.is_none()).map(|y| Pass::MaskBy(unsafe { f32s(y) }));
        let d = match (&self.op, &self.patches) {
            (Op::Conv2d { .. }, Some(p)) => {
                ln_back(&d, &tape.ln);
                p.to_positions_first(&d, gate.unwrap_or(Pass::Copy)).view([-1, out])
            }
            _ => {
                if let Some(Pass::MaskBy(y)) = gate {
                    // SAFETY: `d` is a contiguous f32 gradient of this pass.
                    crate::kernels::relu_backward(unsafe { f32s_mut(&d) }, y);
                }
                ln_back(&d, &tape.ln);
                d
            }
        };
        // SAFETY: `d` is a contiguous f32 gradient of this pass; the bias buffer is ours.
        unsafe {
            crate::kernels::col_sums(f32s(&d), f32s_mut(&grads.bias));
            if self.running_mean.is_some() {
                mean_only_bn::sub_col_means(f32s_mut(&d), out as usize);
            }
        }
        let mut dw = grads.weight.view([out, -1]);
        match (&self.patches, tape.patches_in_place) {
            (Some(p), true) => match p.weight_grad_t(&tape.input, &d) {
                Some(dw_t) => {
                    dw.copy_(&dw_t.tr());
                }
                None => crate::gemm::product_into(&dw, &d.tr(), &p.gather(&tape.input)),
            },
            _ => crate::gemm::product_into(&dw, &d.tr(), &tape.input),
        }
        let w = self.materialized.as_ref().map_or(&self.weight, |m| &m.w);
        crate::ext::multi_tensor::set_grad(w, Some(&grads.weight)).expect("the gradient has the weight's shape");
        need_dx.then(|| crate::gemm::product(None, &d, &ops.w.view([out, -1])))
    }

    fn reparam_weights(&self) -> Option<Weights<'_>> {
        match (&self.g, &self.spectral) {
            (Some(g), _) => Some(Weights::WeightNorm { v: &self.weight, g, norms: self.norm0.as_ref() }),
            (None, Some((u, v))) => Some(Weights::Spectral { w: &self.weight, u, v, eps: SPECTRAL_EPS }),
            (None, None) => None,
        }
    }

    /// This layer's operands for a training pass, the output scale they use and weight norm's
    /// `||v||` (see [`Layer::wn_scale_const_norm`]): a materialized layer's effective weight
    /// (no scale); spectral norm's scale after its one power iteration of the update
    /// ([`Layer::spectral_train_scale`]); projected weight norm's known norms; others as
    /// [`Layer::wn_scale_const_norm`] with `known`. After the backward pass,
    /// [`Layer::finish_grad`] with the scale.
    pub fn train_operands(
        &self,
        known: Option<Tensor>,
        compute: Compute,
    ) -> (Operands, Option<Tensor>, Option<Tensor>) {
        if let (Some(m), Some(p)) = (&self.materialized, self.reparam_weights()) {
            m.forward(&p);
            return (self.weight_operands(&m.w, compute), None, None);
        }
        let (scale, norm) = match self.spectral_train_scale() {
            Some(s) => (Some(s), None),
            None => {
                let known = self.norm0.as_ref().map(Tensor::shallow_clone).or(known);
                self.wn_scale_const_norm(known).map_or((None, None), |(s, n)| (Some(s), Some(n)))
            }
        };
        (self.operands(scale.as_ref(), compute), scale, norm)
    }

    /// After the backward pass of [`Layer::train_operands`]: a materialized layer's parameter
    /// gradients from its effective weight's; spectral norm's share of `dL/dW`
    /// ([`Layer::complete_spectral_grad`]) for the scale it used. Weight norm's tensor-op
    /// path finishes in the optimizer ([`Layer::v_grad_dots`]).
    pub fn finish_grad(&self, scale: Option<&Tensor>) {
        if let (Some(m), Some(p)) = (&self.materialized, self.reparam_weights()) {
            m.backward(&p);
        } else if let Some(s) = scale {
            self.complete_spectral_grad(s);
        }
    }

    /// Bake this layer's weight or spectral norm into its weight, in place: `v` becomes
    /// `g v / ||v||`, `W` becomes `W / sigma` (an acting copy's weights, which only run forward
    /// passes between loads: [`crate::qnet::QNetwork::fold_weight_norm`]). By loops on
    /// contiguous CPU f32 tensors (projected weight norm's row rescale with `g` as the target
    /// norms; `u . W v`, then a product by its reciprocal), else tensor ops; nothing for a
    /// plain layer.
    pub fn fold(&self) {
        let spectral = self.spectral.as_ref();
        if self.g.is_none() && spectral.is_none() {
            return;
        }
        let loops = plain_f32(&self.weight)
            && self.g.as_ref().is_none_or(plain_f32)
            && spectral.is_none_or(|(u, v)| plain_f32(u) && plain_f32(v));
        if !loops {
            tch::no_grad(|| self.weight.shallow_clone().copy_(&self.effective_weight()));
            return;
        }
        // SAFETY: contiguous CPU f32 tensors (checked above); the weight is this layer's own,
        // which no one reads or writes during the fold, and `g`, `u`, `v` are distinct from it.
        unsafe {
            let w = f32s_mut(&self.weight);
            match (&self.g, spectral) {
                (Some(g), _) => weight_norm::project(w, f32s(g)),
                (None, Some((u, v))) => spectral::sn_fold(w, f32s(u), f32s(v)),
                (None, None) => {}
            }
        }
    }

    /// This layer's forward pass for one sample on `in_shape` (`[c, h, w]` for a convolution),
    /// for an acting copy whose weight holds the effective weight
    /// ([`crate::qnet::QNetwork::fold_weight_norm`]): it reads this layer's tensors where they
    /// are. None where they are not contiguous CPU f32, or `in_shape` does not fit.
    pub(crate) fn acting_step(&self, in_shape: &[i64], relu: bool) -> Option<crate::acting::Step> {
        use crate::acting::{Shape, Step};
        let ws = self.weight.size();
        let fan_in: i64 = ws[1..].iter().product();
        let shape = match self.op {
            Op::Linear => (in_shape.iter().product::<i64>() == fan_in).then_some(Shape::Dense)?,
            Op::Conv2d { stride } => {
                let &[c, h, w] = in_shape else { return None };
                let k = ws[2];
                if c != ws[1] || h < k || w < k || ws[3] != k {
                    return None;
                }
                let u = |v: i64| v as usize;
                Shape::conv(u(c), u(h), u(w), u(k), u(stride))
            }
        };
        let layer_norm =
            self.layer_norm.as_ref().map(|l| (l.weight.shallow_clone(), l.bias.shallow_clone(), l.channels));
        let step = Step {
            shape,
            weight: self.weight.shallow_clone(),
            bias: self.bias.shallow_clone(),
            running_mean: self.running_mean.as_ref().map(Tensor::shallow_clone),
            layer_norm,
            relu,
            wt: Vec::new(),
        };
        let tensors = [Some(&step.weight), Some(&step.bias), step.running_mean.as_ref()];
        let ln = step.layer_norm.iter().flat_map(|(g, b, _)| [g, b]);
        let ok = tensors.into_iter().flatten().chain(ln).all(plain_f32);
        ok.then_some(step)
    }

    /// The operands of a network that only runs forward passes between weight changes (a
    /// target network): every normalization folded into the weight, so that each pass costs
    /// a plain layer's.
    pub fn folded_operands(&self, compute: Compute) -> Operands {
        let mut ops = self.weight_operands(&tch::no_grad(|| self.effective_weight()), compute);
        if matches!(self.op, Op::Linear) && plain_f32(&ops.w) && self.running_mean.is_none() {
            ops.wt = Some(ops.w.tr().contiguous());
        }
        ops
    }

    /// Operands for an effective weight `w` (every normalization in it), as
    /// [`Layer::operands`] makes them without a scale.
    fn weight_operands(&self, w: &Tensor, compute: Compute) -> Operands {
        let w = compute.operand(w, matches!(self.op, Op::Conv2d { .. }));
        // As in `operands`: the bias meets the activation in its dtype, f32 after mean-only BN.
        let kind = if self.running_mean.is_some() { Kind::Float } else { w.kind() };
        let bias = if self.bias.kind() == kind { self.bias.shallow_clone() } else { self.bias.to_kind(kind) };
        Operands { w, bias, out_scale: None, wt: None }
    }

    /// A dense layer `in_dim -> out_dim` under path `p`.
    pub fn linear(p: &nn::Path, in_dim: i64, out_dim: i64, cfg: LayerConfig) -> Layer {
        Layer::new(p, Op::Linear, &[out_dim, in_dim], cfg)
    }

    /// A square-kernel 2-D convolution without padding.
    pub fn conv2d(p: &nn::Path, in_ch: i64, out_ch: i64, kernel: i64, stride: i64, cfg: LayerConfig) -> Layer {
        Layer::new(p, Op::Conv2d { stride }, &[out_ch, in_ch, kernel, kernel], cfg)
    }

    /// Per-unit shape for broadcasting over the weight (`[out, 1, ...]`).
    fn unit_view(&self, t: &Tensor) -> Tensor {
        match self.op {
            Op::Linear => t.view([-1, 1]),
            Op::Conv2d { .. } => t.view([-1, 1, 1, 1]),
        }
    }

    /// Per-unit shape for broadcasting over an activation (`[1, out]` or `[1, out, 1, 1]`).
    fn act_view(&self, t: &Tensor) -> Tensor {
        match self.op {
            Op::Linear => t.view([1, -1]),
            Op::Conv2d { .. } => t.view([1, -1, 1, 1]),
        }
    }

    /// Axes of the weight that the norm runs over (all but the output axis).
    fn norm_dims(&self) -> Vec<i64> {
        (1..self.weight.dim() as i64).collect()
    }

    /// The effective weight `w`: `W`, or `g v / ||v||`.
    pub fn effective_weight(&self) -> Tensor {
        match (&self.g, self.sigma()) {
            (Some(g), _) => {
                let scale = g / self.v_norm();
                &self.weight * self.unit_view(&scale)
            }
            (None, Some(sigma)) => &self.weight / sigma,
            (None, None) => self.weight.shallow_clone(),
        }
    }

    fn apply_op(&self, x: &Tensor, w: &Tensor, bias: Option<&Tensor>) -> Tensor {
        match self.op {
            Op::Linear => x.linear(w, bias),
            Op::Conv2d { stride } => match &self.patches {
                Some(p) if !x.requires_grad() => p.conv(x, w, bias),
                _ => x.conv2d(w, bias, [stride, stride], [0, 0], [1, 1], 1),
            },
        }
    }

    fn stat_dims(&self) -> Vec<i64> {
        match self.op {
            Op::Linear => vec![0],
            Op::Conv2d { .. } => vec![0, 2, 3],
        }
    }

    /// Pre-activation for input `x`. `train` selects the minibatch mean (and updates the running
    /// mean) in mean-only BN layers; it changes nothing elsewhere.
    ///
    /// Weight norm is computed as `(v . x) * g / ||v||` (paper Section 2.1): scaling the output
    /// per unit instead of materializing `w` costs one pass over `v` for its norm, not several.
    pub fn forward_t(&self, x: &Tensor, train: bool) -> Tensor {
        self.forward_scaled(x, train, self.wn_scale().as_ref(), Compute::F32)
    }

    /// [`Layer::forward_t`] with a precomputed [`Layer::wn_scale`] (shared between the passes
    /// of one update, or cached in a target network between syncs), computed as `compute` says.
    pub fn forward_scaled(&self, x: &Tensor, train: bool, scale: Option<&Tensor>, compute: Compute) -> Tensor {
        self.forward_with(x, train, &self.operands(scale, compute), compute)
    }

    /// This layer's [`Operands`] for weight-norm scale `scale` (None: plain, or already folded).
    ///
    /// Where the scale goes: a convolution's kernel is small next to a batch of its outputs
    /// (conv1: 8k weights, 400k outputs at batch 32), so the scale is folded into the kernel,
    /// `conv(x, v * g/||v||) + b`, and the convolution runs as a plain one with its bias fused;
    /// a dense layer's matrix is large next to its outputs (fc1: 1.6M weights, 16k outputs), so
    /// its output is scaled instead, together with the bias in one pass (`b + (v.x) * s`). The
    /// same function either way; autograd gives the same gradients.
    pub fn operands(&self, scale: Option<&Tensor>, compute: Compute) -> Operands {
        let conv = matches!(self.op, Op::Conv2d { .. });
        let fold = conv && scale.is_some();
        let w = match scale {
            Some(s) if fold => &self.weight * self.unit_view(s),
            _ => self.weight.shallow_clone(),
        };
        let w = compute.operand(&w, conv);
        // A per-unit f32 vector meets the activation in the activation's dtype; mean-only BN
        // works in f32 (it subtracts a mean from values close to it, which bf16 would cancel).
        let kind = if self.running_mean.is_some() { Kind::Float } else { w.kind() };
        let cast = |v: &Tensor| if v.kind() == kind { v.shallow_clone() } else { v.to_kind(kind) };
        let out_scale = scale.filter(|_| !fold).map(|s| self.act_view(&cast(s)));
        Operands { w, bias: cast(&self.bias), out_scale, wt: None }
    }

    /// The pre-activation for input `x` with operands from [`Layer::operands`].
    pub fn forward_with(&self, x: &Tensor, train: bool, ops: &Operands, compute: Compute) -> Tensor {
        self.forward_act(x, train, ops, compute, false)
    }

    /// [`Layer::forward_with`], then a ReLU with `relu` (in layer norm's loop where that runs:
    /// [`LayerNorm::in_place`]).
    pub fn forward_act(&self, x: &Tensor, train: bool, ops: &Operands, compute: Compute, relu: bool) -> Tensor {
        let pre = self.pre_activation(x, train, ops, compute);
        match &self.layer_norm {
            Some(ln) => ln.apply(&pre, relu),
            None => rectified(pre, relu),
        }
    }

    fn pre_activation(&self, x: &Tensor, train: bool, ops: &Operands, compute: Compute) -> Tensor {
        let x = compute.operand(x, matches!(self.op, Op::Conv2d { .. }));
        let Some(rm) = &self.running_mean else {
            return match (&ops.out_scale, &ops.wt) {
                (None, Some(wt)) => crate::gemm::product(Some(&ops.bias), &x, wt),
                (None, None) => self.apply_op(&x, &ops.w, Some(&ops.bias)),
                (Some(s), _) => self.act_view(&ops.bias).addcmul(&self.apply_op(&x, &ops.w, None), s),
            };
        };
        let pre = self.apply_op(&x, &ops.w, None).to_kind(Kind::Float);
        let pre = match &ops.out_scale {
            Some(s) => pre * s,
            None => pre,
        };
        let pre = if train {
            let mean = pre.mean_dim(self.stat_dims(), false, Kind::Float);
            tch::no_grad(|| {
                let mut rm = rm.shallow_clone();
                let _ = rm.g_mul_scalar_(self.bn_momentum);
                let _ = rm.g_add_(&(mean.detach() * (1.0 - self.bn_momentum)));
            });
            pre - self.act_view(&mean)
        } else {
            pre - self.act_view(rm)
        };
        pre + self.act_view(&ops.bias)
    }

    /// Data-dependent initialization on input batch `x` (paper Section 3): rescale so that this
    /// layer's pre-activations have mean 0 and std `init_scale` per output unit over the batch
    /// (and positions, for convolutions). Returns the new pre-activations.
    ///
    /// Weight norm: `g <- s / sigma`, `b <- -mu s / sigma` where mu, sigma are the statistics of
    /// `v.x / ||v||`. Plain: `W <- W s / sigma`, `b <- (b - mu) s / sigma` on `W x + b`.
    /// Mean-only BN: `b <- 0` (the mean is removed by the BN) and the running mean starts at the
    /// batch mean.
    pub fn data_init(&self, x: &Tensor, init_scale: f64) -> Tensor {
        tch::no_grad(|| {
            let dims = self.stat_dims();
            match &self.g {
                Some(g) => {
                    let dir = &self.weight / self.unit_view(&self.v_norm());
                    let t = self.apply_op(x, &dir, None);
                    let (std, mean) = t.std_mean_correction(Some(dims.as_slice()), 0, false);
                    let scale = init_scale / (std + 1e-8);
                    let mut g = g.shallow_clone();
                    g.copy_(&scale);
                    match &self.running_mean {
                        Some(rm) => {
                            rm.shallow_clone().copy_(&(&mean * &scale));
                            let _ = self.bias.shallow_clone().zero_();
                        }
                        None => self.bias.shallow_clone().copy_(&(-&mean * &scale)),
                    }
                }
                None => {
                    let t = self.apply_op(x, &self.weight, Some(&self.bias));
                    let (std, mean) = t.std_mean_correction(Some(dims.as_slice()), 0, false);
                    let scale = init_scale / (std + 1e-8);
                    let w = &self.weight * self.unit_view(&scale);
                    self.weight.shallow_clone().copy_(&w);
                    let b = (&self.bias - &mean) * &scale;
                    self.bias.shallow_clone().copy_(&b);
                }
            }
            self.forward_t(x, false)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalization::LayerNormAxes;
    use tch::{nn, Device};

    fn wn() -> LayerConfig {
        LayerConfig::default()
    }

    #[test]
    fn wn_forward_equals_explicit_formula() {
        tch::manual_seed(0);
        let vs = nn::VarStore::new(Device::Cpu);
        let l = Layer::conv2d(&vs.root().sub("c"), 3, 5, 3, 2, wn());
        tch::no_grad(|| {
            l.g.as_ref().unwrap().shallow_clone().copy_(&Tensor::from_slice(&[0.5f32, 1.0, 2.0, -1.0, 3.0]));
            l.bias.shallow_clone().copy_(&Tensor::from_slice(&[0.1f32, 0.2, 0.3, 0.4, 0.5]));
        });
        let x = Tensor::randn([2, 3, 9, 9], (Kind::Float, Device::Cpu));
        let y = l.forward_t(&x, true);
        // Explicit: for each output channel o, w_o = g_o v_o / sqrt(sum v_o^2).
        let v = Vec::<f32>::try_from(l.weight.flatten(0, -1)).unwrap();
        let g = Vec::<f32>::try_from(l.g.as_ref().unwrap()).unwrap();
        let per = 3 * 3 * 3;
        let mut w = vec![0f32; v.len()];
        for o in 0..5 {
            let n: f32 = v[o * per..(o + 1) * per].iter().map(|a| a * a).sum::<f32>().sqrt();
            for k in 0..per {
                w[o * per + k] = g[o] * v[o * per + k] / n;
            }
        }
        let w = Tensor::from_slice(&w).view([5, 3, 3, 3]);
        let expect = x.conv2d(&w, Some(&l.bias), [2, 2], [0, 0], [1, 1], 1);
        let diff = f64::try_from((y - expect).abs().max()).unwrap();
        assert!(diff < 1e-5, "max diff {diff}");
        // ||w|| per unit is |g|.
        let wn = l.effective_weight().square().sum_dim_intlist([1i64, 2, 3].as_slice(), false, Kind::Float).sqrt();
        let gabs = l.g.as_ref().unwrap().abs();
        assert!(f64::try_from((wn - gabs).abs().max()).unwrap() < 1e-5);
    }

    #[test]
    fn autograd_matches_paper_gradients() {
        tch::manual_seed(1);
        let vs = nn::VarStore::new(Device::Cpu);
        let l = Layer::linear(&vs.root().sub("l"), 6, 4, wn());
        tch::no_grad(|| l.g.as_ref().unwrap().shallow_clone().copy_(&Tensor::from_slice(&[0.7f32, -1.3, 2.0, 0.4])));
        let x = Tensor::randn([8, 6], (Kind::Float, Device::Cpu));
        let target = Tensor::randn([8, 4], (Kind::Float, Device::Cpu));
        // dL/dw from an explicit-w copy of the same computation.
        let w = l.effective_weight().detach().set_requires_grad(true);
        let loss_w = (x.linear(&w, Some(&l.bias.detach())) - &target).square().sum(Kind::Float);
        loss_w.backward();
        let gw = w.grad();
        let loss = (l.forward_t(&x, true) - &target).square().sum(Kind::Float);
        loss.backward();
        let g = l.g.as_ref().unwrap().detach();
        let v = l.weight.detach();
        let vn = l.v_norm().detach().view([-1, 1]);
        // Paper: dL/dg = (dL/dw . v) / ||v||
        let dg = ((&gw * &v).sum_dim_intlist([1i64].as_slice(), false, Kind::Float)) / vn.view([-1]);
        // dL/dv = g/||v|| dL/dw - g dL/dg / ||v||^2 v
        let dv = (g.view([-1, 1]) / &vn) * &gw - (g.view([-1, 1]) * dg.view([-1, 1]) / vn.square()) * &v;
        let e1 = f64::try_from((l.g.as_ref().unwrap().grad() - &dg).abs().max()).unwrap();
        let e2 = f64::try_from((l.weight.grad() - &dv).abs().max()).unwrap();
        assert!(e1 < 1e-4 && e2 < 1e-4, "dg err {e1}, dv err {e2}");
        // The gradient w.r.t. v is orthogonal to v.
        let dot =
            f64::try_from((l.weight.grad() * &v).sum_dim_intlist([1i64].as_slice(), false, Kind::Float).abs().max())
                .unwrap();
        assert!(dot < 1e-4, "v . dL/dv = {dot}");
    }

    #[test]
    fn v_norm_grows_under_plain_sgd() {
        tch::manual_seed(2);
        let vs = nn::VarStore::new(Device::Cpu);
        let l = Layer::linear(&vs.root().sub("l"), 10, 5, wn());
        let x = Tensor::randn([32, 10], (Kind::Float, Device::Cpu));
        let y = Tensor::randn([32, 5], (Kind::Float, Device::Cpu));
        let mut prev = Vec::<f32>::try_from(l.v_norm().detach()).unwrap();
        for _ in 0..50 {
            for t in vs.trainable_variables() {
                let mut t = t;
                t.zero_grad();
            }
            (l.forward_t(&x, true) - &y).square().mean(Kind::Float).backward();
            tch::no_grad(|| {
                for t in vs.trainable_variables() {
                    let mut t = t;
                    let _ = t.g_sub_(&(t.grad() * 0.5));
                }
            });
            let now = Vec::<f32>::try_from(l.v_norm().detach()).unwrap();
            for (a, b) in prev.iter().zip(&now) {
                assert!(b >= &(a - 1e-6), "||v|| shrank from {a} to {b}");
            }
            prev = now;
        }
    }

    /// The convolution as a product over patches gives the convolution's output and the same
    /// weight and bias gradients, for every parameterization, stride and a non-square map.
    #[test]
    fn patch_product_equals_the_convolution() {
        tch::manual_seed(5);
        let vs = nn::VarStore::new(Device::Cpu);
        let x = Tensor::randn([5, 3, 10, 9], (Kind::Float, Device::Cpu));
        for (i, param) in
            [Param::Plain, Param::WeightNorm { mean_only_bn: false }, Param::Spectral].into_iter().enumerate()
        {
            for stride in [1, 2] {
                let cfg = LayerConfig { param, ..Default::default() };
                let mut l = Layer::conv2d(&vs.root().sub(format!("c{i}s{stride}")), 3, 7, 3, stride, cfg);
                let run = |l: &Layer| {
                    let y = l.forward_t(&x, true);
                    // Fixed cotangents, not from the global generator (tests running beside
                    // this one draw from it too).
                    let t =
                        Tensor::arange(y.numel() as i64, (Kind::Float, Device::Cpu)).sin().view(y.size().as_slice());
                    (&y * t).sum(Kind::Float).backward();
                    let grads = (l.weight.grad().copy(), l.bias.grad().copy());
                    for p in [&l.weight, &l.bias] {
                        let _ = p.grad().zero_();
                    }
                    (y.detach(), grads)
                };
                let (y_conv, (gw_conv, gb_conv)) = run(&l);
                l.use_patch_product([3, 10, 9]);
                assert!(l.patches.is_some());
                let (y_patch, (gw_patch, gb_patch)) = run(&l);
                assert_eq!(y_conv.size(), y_patch.size());
                for (what, a, b) in [("output", y_conv, y_patch), ("dW", gw_conv, gw_patch), ("db", gb_conv, gb_patch)]
                {
                    let err = f64::try_from((&a - &b).abs().max()).unwrap();
                    let scale = f64::try_from(a.abs().max()).unwrap();
                    assert!(err <= 1e-5 * scale.max(1.0), "{param:?} stride {stride}: {what} differs by {err}");
                }
            }
        }
    }

    fn check_init(l: &Layer, x: &Tensor, s: f64, dims: &[i64]) {
        let y = l.data_init(x, s);
        let (std, mean) = y.std_mean_correction(Some(dims), 0, false);
        let (e_mean, e_std) = (f64::try_from(mean.abs().max()).unwrap(), f64::try_from((std - s).abs().max()).unwrap());
        assert!(e_mean < 1e-4 && e_std < 1e-4, "mean err {e_mean}, std err {e_std}");
    }

    #[test]
    fn data_init_normalizes_every_parameterization() {
        tch::manual_seed(3);
        let vs = nn::VarStore::new(Device::Cpu);
        let x = Tensor::randn([64, 4, 12, 12], (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
        for (i, param) in
            [Param::Plain, Param::WeightNorm { mean_only_bn: false }, Param::WeightNorm { mean_only_bn: true }]
                .into_iter()
                .enumerate()
        {
            let cfg = LayerConfig { param, ..Default::default() };
            let c = Layer::conv2d(&vs.root().sub(format!("c{i}")), 4, 8, 3, 1, cfg);
            check_init(&c, &x, 0.5, &[0, 2, 3]);
            let d = Layer::linear(&vs.root().sub(format!("d{i}")), 4 * 144, 16, cfg);
            check_init(&d, &x.flatten(1, -1), 1.0, &[0]);
        }
    }

    /// The explicit pass's layer norm and the ReLU in its loops give autograd's output and
    /// gradients on sizes that are no multiples of the loops' 8 lanes (13 units) or 4 rows (7
    /// kept samples of 10): every value is fixed (no global generator, which tests running
    /// beside this one draw from too).
    #[test]
    fn explicit_layer_norm_tails_give_autograd_gradients() {
        let vs = nn::VarStore::new(Device::Cpu);
        let plain = LayerConfig { param: Param::Plain, ..Default::default() };
        let mut l = Layer::linear(&vs.root().sub("d"), 6, 13, plain);
        l.add_layer_norm(&vs.root().sub("ln"), &[13], LayerNormAxes::Channels);
        let fixed = |n: i64, f: f64| Tensor::arange(n, (Kind::Float, Device::Cpu)).g_mul_scalar(f).sin();
        tch::no_grad(|| {
            let ln = l.layer_norm.as_ref().unwrap();
            for (t, f, shift) in
                [(&l.weight, 0.7, 0.0), (&l.bias, 1.3, 0.0), (&ln.weight, 0.9, 1.0), (&ln.bias, 2.1, 0.0)]
            {
                t.shallow_clone().copy_(&(fixed(t.numel() as i64, f).view(t.size().as_slice()) * 0.5 + shift));
            }
        });
        assert!(l.prepare_explicit());
        let (batch, keep) = (10, 7);
        let x = fixed(batch * 6, 0.37).view([batch, 6]) * 2.0;
        let cot = fixed(keep * 13, 0.53).view([keep, 13]);
        let (ops, _, _) = l.train_operands(None, Compute::F32);
        let (y, tape) = tch::no_grad(|| l.explicit_forward(&x, &ops, keep, true));
        let act = y.narrow(0, 0, keep);
        let dx = tch::no_grad(|| l.explicit_backward(tape, cot.copy(), &ops, true, Some(&act))).unwrap();
        let params = [&l.weight, &l.bias, &l.layer_norm.as_ref().unwrap().weight, &l.layer_norm.as_ref().unwrap().bias];
        let explicit: Vec<Tensor> = params.iter().map(|p| p.grad().copy()).collect();
        for p in params {
            crate::ext::multi_tensor::set_grad(p, None).unwrap();
        }
        let xr = x.narrow(0, 0, keep).copy().set_requires_grad(true);
        let yr = l.forward_act(&xr, true, &l.operands(None, Compute::F32), Compute::F32, true);
        (&yr * &cot).sum(Kind::Float).backward();
        let close = |a: &Tensor, b: &Tensor, what: &str| {
            let err = f64::try_from((a - b).abs().max()).unwrap() / f64::try_from(a.abs().max()).unwrap().max(1e-12);
            assert!(err < 1e-5, "{what}: relative error {err}");
        };
        close(&yr.detach(), &act, "output");
        close(&xr.grad(), &dx, "input gradient");
        for (p, e) in params.iter().zip(&explicit) {
            close(&p.grad(), e, "a parameter's gradient");
        }
    }

    /// Layer norm outside autograd (the loop, in place) equals ATen's layer norm, for a dense
    /// layer's units and a convolution's channels or whole map, with a trained-looking affine.
    #[test]
    fn layer_norm_in_place_equals_atens() {
        let vs = nn::VarStore::new(Device::Cpu);
        let plain = LayerConfig { param: Param::Plain, ..Default::default() };
        let cases = [
            (Layer::linear(&vs.root().sub("d"), 6, 37, plain), vec![9i64, 6], vec![37i64], LayerNormAxes::Channels),
            (
                Layer::conv2d(&vs.root().sub("c"), 3, 5, 3, 1, plain),
                vec![4, 3, 10, 9],
                vec![5, 8, 7],
                LayerNormAxes::Channels,
            ),
            (
                Layer::conv2d(&vs.root().sub("m"), 3, 5, 3, 1, plain),
                vec![4, 3, 10, 9],
                vec![5, 8, 7],
                LayerNormAxes::Chw,
            ),
        ];
        for (i, (mut l, in_shape, out_shape, axes)) in cases.into_iter().enumerate() {
            l.add_layer_norm(&vs.root().sub(format!("ln{i}")), &out_shape, axes);
            let ln = l.layer_norm.as_ref().unwrap();
            tch::no_grad(|| {
                let _ = ln.weight.shallow_clone().uniform_(0.5, 1.5);
                let _ = ln.bias.shallow_clone().uniform_(-0.5, 0.5);
            });
            let x = Tensor::randn(in_shape.as_slice(), (Kind::Float, Device::Cpu)) * 3.0 + 1.0;
            let ops = l.operands(None, Compute::F32);
            let pre = tch::no_grad(|| l.pre_activation(&x, false, &ops, Compute::F32));
            // ATen's (in autograd), and the loop's with and without the ReLU in it.
            let reference = ln.apply(&pre.set_requires_grad(true), false).detach();
            for relu in [false, true] {
                let fast = tch::no_grad(|| l.forward_act(&x, false, &ops, Compute::F32, relu));
                let want = if relu { reference.relu() } else { reference.shallow_clone() };
                let err = f64::try_from((&want - &fast).abs().max()).unwrap();
                assert!(err < 1e-5, "case {i} ({axes:?}, relu {relu}): differs by {err}");
            }
        }
    }

    #[test]
    fn mean_only_bn_uses_batch_mean_then_running_mean() {
        tch::manual_seed(4);
        let vs = nn::VarStore::new(Device::Cpu);
        let cfg = LayerConfig { param: Param::WeightNorm { mean_only_bn: true }, ..Default::default() };
        let l = Layer::linear(&vs.root().sub("l"), 3, 2, cfg);
        let x = Tensor::randn([16, 3], (Kind::Float, Device::Cpu)) + 5.0;
        let y = l.forward_t(&x, true);
        // Training: each unit's output has mean = bias (0).
        let m = f64::try_from(y.mean_dim([0i64].as_slice(), false, Kind::Float).abs().max()).unwrap();
        assert!(m < 1e-5);
        // The running mean moved by (1 - momentum) toward the batch mean.
        let pre = x.linear::<Tensor>(&l.effective_weight(), None).mean_dim([0i64].as_slice(), false, Kind::Float);
        let rm = vs.variables()["l.running_mean"].shallow_clone();
        let err = f64::try_from((rm - pre * 0.1).abs().max()).unwrap();
        assert!(err < 1e-5, "{err}");
        // Eval uses it: output differs from the training-mode output.
        let ye = l.forward_t(&x, false);
        assert!(f64::try_from((ye - y).abs().max()).unwrap() > 1e-3);
    }
}
