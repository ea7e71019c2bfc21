//! Q-networks: the Nature CNN (Mnih et al. 2015) for `4x84x84` u8 frames, the MinAtar network
//! (Young & Tian 2019) for `C x 10 x 10` grids and an MLP for vector observations, in the
//! variants the paper compares, with an optional dueling head.

use serde::{Deserialize, Serialize};
use tch::{nn, Kind, Tensor};

use crate::explicit::LayerTape;
use crate::kernels::{f32s, f32s_mut};
use crate::layers::{rectified, Compute, Layer, Operands};
use crate::normalization::{NormOptions, Variant};

/// Network body.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum), value(rename_all = "snake_case"))]
pub enum Arch {
    /// Nature CNN: conv 32x8s4, 64x4s2, 64x3s1, dense 512 (input `C x 84 x 84`).
    Nature,
    /// Two hidden dense layers of `hidden` units (vector input).
    Mlp,
    /// MinAtar's DQN network: conv 16x3s1 (no padding), dense 128 (input `C x 10 x 10`).
    Minatar,
}

impl Arch {
    /// The config/CLI name (`nature`).
    pub fn name(self) -> &'static str {
        match self {
            Arch::Nature => "nature",
            Arch::Mlp => "mlp",
            Arch::Minatar => "minatar",
        }
    }
}

/// What to build.
#[derive(Debug, Clone)]
pub struct QNetConfig {
    /// Body.
    pub arch: Arch,
    /// Parameterization.
    pub variant: Variant,
    /// Dueling head (value + advantage streams).
    pub dueling: bool,
    /// Observation shape (`[C, H, W]` or `[n]`).
    pub obs_shape: Vec<i64>,
    /// Number of actions.
    pub num_actions: i64,
    /// MLP hidden width.
    pub hidden: i64,
    /// Settings of the layer-norm and spectral-norm variants.
    pub norm: NormOptions,
}

/// One layer's matrix product per sample: `positions` output positions (1 for a dense layer), each
/// `inputs` long (a convolution's `C k k`), `outputs` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Product {
    /// Output positions per sample.
    pub positions: i64,
    /// The product's inner dimension.
    pub inputs: i64,
    /// Output units (channels).
    pub outputs: i64,
}

impl QNetConfig {
    /// The Nature network on 4 x 84 x 84 frames with 6 actions (the tests' network).
    #[cfg(test)]
    pub(crate) fn nature(variant: Variant, dueling: bool) -> QNetConfig {
        QNetConfig {
            arch: Arch::Nature,
            variant,
            dueling,
            obs_shape: vec![4, 84, 84],
            num_actions: 6,
            hidden: 0,
            norm: Default::default(),
        }
    }

    /// Every layer's [`Product`], in layer order (as [`QNetwork::new`] builds them).
    pub fn products(&self) -> Vec<Product> {
        let mut out = Vec::new();
        let feat = match self.arch {
            Arch::Nature | Arch::Minatar => {
                let (mut ch, mut h, mut w) = (self.obs_shape[0], self.obs_shape[1], self.obs_shape[2]);
                let specs: &[(i64, i64, i64)] =
                    if self.arch == Arch::Nature { &[(32, 8, 4), (64, 4, 2), (64, 3, 1)] } else { &[(16, 3, 1)] };
                for &(co, k, s) in specs {
                    (h, w) = ((h - k) / s + 1, (w - k) / s + 1);
                    out.push(Product { positions: h * w, inputs: ch * k * k, outputs: co });
                    ch = co;
                }
                ch * h * w
            }
            Arch::Mlp => {
                out.push(Product { positions: 1, inputs: self.obs_shape.iter().product(), outputs: self.hidden });
                self.hidden
            }
        };
        let width = match self.arch {
            Arch::Nature => 512,
            Arch::Minatar => 128,
            Arch::Mlp => self.hidden,
        };
        let dense = |inputs, outputs| Product { positions: 1, inputs, outputs };
        if self.dueling {
            out.extend([dense(feat, width), dense(width, 1), dense(feat, width), dense(width, self.num_actions)]);
        } else {
            out.extend([dense(feat, width), dense(width, self.num_actions)]);
        }
        out
    }

    /// The floating-point operations of one DQN update's matrix products on a batch of `batch`:
    /// the online pass on the batch (and on the next observations under `double_dqn`), the
    /// target pass on the next observations, the backward pass (every weight's gradient, every
    /// input's but the observation's).
    pub fn update_flops(&self, batch: i64, double_dqn: bool) -> f64 {
        let forward_rows = batch * (2 + i64::from(double_dqn));
        self.products()
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let per_row = 2.0 * (p.positions * p.inputs * p.outputs) as f64;
                per_row * (forward_rows + batch + if i > 0 { batch } else { 0 }) as f64
            })
            .sum()
    }
}

/// What the forward passes of a gradient step use, made once per step
/// ([`QNetwork::train_pass`]).
#[derive(Debug)]
pub struct TrainPass {
    /// Every layer's operands.
    pub ops: Vec<Operands>,
    /// Every layer's output scale (weight norm's `g / ||v||`, spectral norm's `1 / sigma`) on
    /// the tensor-op path.
    scales: Vec<Option<Tensor>>,
    /// Weight norm's `||v||` held constant on the tensor-op path.
    norms: Vec<Option<Tensor>>,
}

/// What the explicit training pass's forward passes keep for its backward pass
/// ([`QNetwork::explicit_forward`]).
#[derive(Debug)]
pub struct NetTape {
    layers: Vec<LayerTape>,
    /// Every hidden layer's output after its ReLU (None for the output layers).
    acts: Vec<Option<Tensor>>,
}

/// A Q-network: observations in, one Q-value per action out.
#[derive(Debug)]
pub struct QNetwork {
    cfg: QNetConfig,
    convs: Vec<Layer>,
    dense: Vec<Layer>,
    heads: Vec<Layer>,
    compute: Compute,
    /// Gradient steps take the explicit training pass ([`QNetwork::prepare_explicit`]).
    explicit: bool,
}

impl QNetwork {
    /// Build under `p` (variables named `conv0.v`, `fc0.g`, `q.bias`, ...).
    pub fn new(p: &nn::Path, cfg: &QNetConfig) -> QNetwork {
        let (variant, opts) = (cfg.variant, cfg.norm);
        let recipe = variant.recipe();
        let lc = recipe.layer(&opts, false);
        // Layer norm before every hidden nonlinearity: on every layer but the outputs.
        let hidden = |mut l: Layer, name: &str, out_shape: &[i64]| {
            if recipe.layer_norm {
                l.add_layer_norm(&p.sub(name).sub("ln"), out_shape, opts.layer_norm_axes);
            }
            l
        };
        let mut convs = Vec::new();
        let mut dense = Vec::new();
        let feat = match cfg.arch {
            Arch::Nature | Arch::Minatar => {
                let (c, h, w) = (cfg.obs_shape[0], cfg.obs_shape[1], cfg.obs_shape[2]);
                let specs: &[(i64, i64, i64, i64)] = if cfg.arch == Arch::Nature {
                    &[(c, 32, 8, 4), (32, 64, 4, 2), (64, 64, 3, 1)]
                } else {
                    &[(c, 16, 3, 1)]
                };
                let (mut oh, mut ow, mut ch) = (h, w, c);
                for (i, &(ci, co, k, s)) in specs.iter().enumerate() {
                    let name = format!("conv{i}");
                    (oh, ow, ch) = ((oh - k) / s + 1, (ow - k) / s + 1, co);
                    let mut l = Layer::conv2d(&p.sub(name.as_str()), ci, co, k, s, lc);
                    if i == 0 && cfg.arch == Arch::Minatar && p.device() == tch::Device::Cpu {
                        l.use_patch_product([c, h, w]);
                    }
                    convs.push(hidden(l, &name, &[co, oh, ow]));
                }
                ch * oh * ow
            }
            Arch::Mlp => {
                let n = cfg.obs_shape.iter().product();
                dense.push(hidden(Layer::linear(&p.sub("fc0"), n, cfg.hidden, lc), "fc0", &[cfg.hidden]));
                cfg.hidden
            }
        };
        let width = match cfg.arch {
            Arch::Nature => 512,
            Arch::Minatar => 128,
            Arch::Mlp => cfg.hidden,
        };
        let pen = recipe.layer(&opts, true);
        let penultimate = |name: &str| hidden(Layer::linear(&p.sub(name), feat, width, pen), name, &[width]);
        let mut heads = Vec::new();
        if cfg.dueling {
            heads.push(penultimate("value_fc"));
            heads.push(Layer::linear(&p.sub("value"), width, 1, lc));
            heads.push(penultimate("adv_fc"));
            heads.push(Layer::linear(&p.sub("adv"), width, cfg.num_actions, lc));
        } else {
            heads.push(penultimate("fc1"));
            heads.push(Layer::linear(&p.sub("q"), width, cfg.num_actions, lc));
        }
        QNetwork { cfg: cfg.clone(), convs, dense, heads, compute: Compute::F32, explicit: false }
    }

    /// What it was built from.
    pub fn config(&self) -> &QNetConfig {
        &self.cfg
    }

    /// Compute the forward (and so the backward) passes as `compute` says (f32 by default).
    pub fn set_compute(&mut self, compute: Compute) {
        self.compute = compute;
    }

    /// The computation set by [`QNetwork::set_compute`].
    pub fn compute(&self) -> Compute {
        self.compute
    }

    /// Network input: `u8` frames become `x / 255`; float input is taken as already in that
    /// form (see `replay::BatchPrep`, which makes bf16 frames for a bf16 network), and is f32
    /// for an f32 computation.
    fn prep(obs: &Tensor, compute: Compute) -> Tensor {
        match obs.kind() {
            Kind::Uint8 => obs.to_kind(Kind::Float) / 255.0,
            Kind::BFloat16 if compute != Compute::F32 => obs.shallow_clone(),
            _ => obs.to_kind(Kind::Float),
        }
    }

    fn layers(&self) -> impl Iterator<Item = &Layer> {
        self.convs.iter().chain(&self.dense).chain(&self.heads)
    }

    /// Every layer's weight-norm output scale `g / ||v||` (None for plain layers), in layer
    /// order: compute once, use for several forward passes ([`QNetwork::forward_scaled`]).
    pub fn wn_scales(&self) -> Vec<Option<Tensor>> {
        self.layers().map(|l| l.wn_scale()).collect()
    }

    /// Bake weight and spectral norm into the weights, in place ([`Layer::fold`]): every `v`
    /// becomes its effective weight `g v / ||v||`, every spectral `W` becomes `W / sigma`; then
    /// a forward pass with no scales ([`QNetwork::plain_scales`]) runs the same function at a
    /// plain network's cost. For acting copies, which only run forward
    /// passes between weight loads.
    pub fn fold_weight_norm(&self) {
        self.layers().for_each(Layer::fold);
    }

    /// The forward pass for one observation on slices of this network's weights
    /// ([`crate::acting`]), for an acting copy after [`QNetwork::fold_weight_norm`]: it
    /// reads the weights where they are, so later loads and folds need no new one. None where a
    /// layer's tensors are not contiguous CPU f32, or the computation is not f32.
    pub fn acting(&self) -> Option<crate::acting::ActingNet> {
        if self.compute != Compute::F32 {
            return None;
        }
        let mut shape = self.cfg.obs_shape.clone();
        let mut body = Vec::new();
        for l in &self.convs {
            let step = l.acting_step(&shape, true)?;
            shape = match step.shape {
                crate::acting::Shape::Conv { oh, ow, .. } => vec![l.weight.size()[0], oh as i64, ow as i64],
                crate::acting::Shape::Dense => return None,
            };
            body.push(step);
        }
        shape = vec![shape.iter().product()];
        for l in &self.dense {
            body.push(l.acting_step(&shape, true)?);
            shape = vec![l.weight.size()[0]];
        }
        let h = &self.heads;
        let width = [h[0].weight.size()[0]];
        let mut heads = vec![h[0].acting_step(&shape, true)?, h[1].acting_step(&width, false)?];
        if self.cfg.dueling {
            let width = [h[2].weight.size()[0]];
            heads.extend([h[2].acting_step(&shape, true)?, h[3].acting_step(&width, false)?]);
        }
        let mut net = crate::acting::ActingNet { body, heads, dueling: self.cfg.dueling };
        net.refresh();
        Some(net)
    }

    /// No scale for any layer: [`QNetwork::forward_scaled`] then runs every layer as a plain
    /// one (after [`QNetwork::fold_weight_norm`]).
    pub fn plain_scales(&self) -> Vec<Option<Tensor>> {
        self.layers().map(|_| None).collect()
    }

    /// Compute the weight and spectral norms of the small layers around each training pass
    /// by loops on the CPU ([`Layer::materialize`], [`crate::reparam`]): for a learner's
    /// online network. Returns the names of the layers that do.
    pub fn materialize_small_layers(&mut self) -> Vec<String> {
        let names = self.layer_names();
        let layers = self.convs.iter_mut().chain(&mut self.dense).chain(&mut self.heads);
        layers.zip(names).filter_map(|(l, n)| l.materialize().then_some(n)).collect()
    }

    /// Prepare for the explicit training pass ([`crate::explicit`]): every layer a dense one
    /// or a first convolution over patches, every weight plain or materialized, f32 on the CPU.
    /// Returns whether the network takes it ([`QNetwork::explicit_ready`]). Call after
    /// [`QNetwork::materialize_small_layers`].
    pub fn prepare_explicit(&mut self) -> bool {
        let fits = self.compute == Compute::F32 && self.convs.len() <= 1;
        let layers = self.convs.iter_mut().chain(&mut self.dense).chain(&mut self.heads);
        self.explicit = fits && layers.into_iter().all(Layer::prepare_explicit);
        self.explicit
    }

    /// Whether gradient steps take the explicit training pass ([`QNetwork::prepare_explicit`],
    /// and still f32).
    pub fn explicit_ready(&self) -> bool {
        self.explicit && self.compute == Compute::F32
    }

    /// The explicit training pass's forward passes ([`crate::explicit`]): Q-values `[B, A]` on
    /// `obs` with the operands of [`QNetwork::train_pass`], and what the backward pass needs
    /// for the first `keep` samples (a gradient step's batch, with more samples after it that
    /// only need their Q-values: double DQN's next observations). Not for mean-only BN
    /// ([`QNetwork::uses_batch_statistics`]) with `keep` short of the batch: its batch mean
    /// would take in the other samples.
    pub fn explicit_forward(&self, obs: &Tensor, ops: &[Operands], keep: i64) -> (Tensor, NetTape) {
        tch::no_grad(|| self.explicit_forward_(obs, ops, keep))
    }

    /// Whether training passes normalize with statistics of the batch (mean-only BN).
    pub fn uses_batch_statistics(&self) -> bool {
        self.cfg.variant.recipe().uses_batch_statistics()
    }

    fn explicit_forward_(&self, obs: &Tensor, ops: &[Operands], keep: i64) -> (Tensor, NetTape) {
        let batch = obs.size()[0];
        let mut tape = NetTape { layers: Vec::new(), acts: Vec::new() };
        let mut step = |l: &Layer, x: &Tensor, relu: bool| {
            let (y, t) = l.explicit_forward(x, &ops[tape.layers.len()], keep, relu);
            tape.layers.push(t);
            tape.acts.push(relu.then(|| if keep == batch { y.shallow_clone() } else { y.narrow(0, 0, keep) }));
            y
        };
        let mut x = Self::prep(obs, Compute::F32);
        for l in &self.convs {
            x = step(l, &x, true);
        }
        x = x.flatten(1, -1);
        for l in &self.dense {
            x = step(l, &x, true);
        }
        let h = &self.heads;
        let q = if self.cfg.dueling {
            let v = step(&h[0], &x, true);
            let v = step(&h[1], &v, false);
            let a = step(&h[2], &x, true);
            let adv = step(&h[3], &a, false);
            let q = adv.empty_like();
            // SAFETY: contiguous f32 outputs of this pass and a new buffer.
            let (v, adv_s, qs) = unsafe { (f32s(&v), f32s(&adv), f32s_mut(&q)) };
            let n = adv.size()[1] as usize;
            for ((qr, ar), &vb) in qs.chunks_exact_mut(n).zip(adv_s.chunks_exact(n)).zip(v) {
                let mean = ar.iter().sum::<f32>() / n as f32;
                for (o, &e) in qr.iter_mut().zip(ar) {
                    *o = vb + e - mean;
                }
            }
            q
        } else {
            let x = step(&h[0], &x, true);
            step(&h[1], &x, false)
        };
        (q, tape)
    }

    /// The explicit training pass's backward pass for `dq = dL/dq` (`[B, A]`): every
    /// parameter's gradient set (materialized weights' through [`QNetwork::finish_grads`]).
    pub fn explicit_backward(&self, tape: NetTape, dq: Tensor, ops: &[Operands]) {
        tch::no_grad(|| self.explicit_backward_(tape, dq, ops))
    }

    fn explicit_backward_(&self, tape: NetTape, dq: Tensor, ops: &[Operands]) {
        let NetTape { layers, acts } = tape;
        let mut tapes: Vec<Option<LayerTape>> = layers.into_iter().map(Some).collect();
        let all: Vec<&Layer> = self.layers().collect();
        let back = |tapes: &mut Vec<Option<LayerTape>>, i: usize, d: Tensor| -> Option<Tensor> {
            let t = tapes[i].take().expect("one backward step per layer");
            let act = acts[i].as_ref();
            let d = match act {
                Some(y) => d.view(y.size().as_slice()),
                None => d,
            };
            all[i].explicit_backward(t, d, &ops[i], i > 0, act)
        };
        let first_head = self.convs.len() + self.dense.len();
        let mut dx = if self.cfg.dueling {
            let n = dq.size()[1] as usize;
            let dv = Tensor::zeros([dq.size()[0], 1], (tch::Kind::Float, tch::Device::Cpu));
            let da = dq.empty_like();
            // SAFETY: contiguous f32 tensors of this pass, distinct.
            let (dqs, dvs, das) = unsafe { (f32s(&dq), f32s_mut(&dv), f32s_mut(&da)) };
            for ((qr, ar), v) in dqs.chunks_exact(n).zip(das.chunks_exact_mut(n)).zip(dvs.iter_mut()) {
                *v = qr.iter().sum();
                let mean = *v / n as f32;
                for (a, &g) in ar.iter_mut().zip(qr) {
                    *a = g - mean;
                }
            }
            let dh_v = back(&mut tapes, first_head + 1, dv);
            let dx_v = dh_v.and_then(|d| back(&mut tapes, first_head, d));
            let dh_a = back(&mut tapes, first_head + 3, da);
            let dx_a = dh_a.and_then(|d| back(&mut tapes, first_head + 2, d));
            match (dx_v, dx_a) {
                (Some(a), Some(b)) => Some(a + b),
                _ => None,
            }
        } else {
            let dh = back(&mut tapes, first_head + 1, dq);
            dh.and_then(|d| back(&mut tapes, first_head, d))
        };
        for i in (0..first_head).rev() {
            dx = dx.and_then(|d| back(&mut tapes, i, d));
        }
    }

    /// Everything a gradient step's forward passes need ([`Layer::train_operands`], layer by
    /// layer): weight norm's norms held constant for autograd (see
    /// [`Layer::wn_scale_const_norm`]), spectral norm's power iteration made, materialized
    /// layers' effective weights written. `known_norm(v)` gives `||v||` row by row where the
    /// caller knows it (from the last optimizer step), else None. After `backward()`,
    /// [`QNetwork::finish_grads`].
    pub fn train_pass(&self, known_norm: &dyn Fn(&Tensor) -> Option<Tensor>) -> TrainPass {
        let mut pass = TrainPass { ops: Vec::new(), scales: Vec::new(), norms: Vec::new() };
        for l in self.layers() {
            let (ops, scale, norm) = l.train_operands(l.g.as_ref().and_then(|_| known_norm(&l.weight)), self.compute);
            pass.ops.push(ops);
            pass.scales.push(scale);
            pass.norms.push(norm);
        }
        pass
    }

    /// After the backward pass of [`QNetwork::train_pass`]: every layer's gradients finished
    /// ([`Layer::finish_grad`]) except weight norm's share of the tensor-op path's `v`
    /// gradients (paper eq. 3), returned as `(v, v.grad . v, ||v||)` row by row for the
    /// optimizer to remove (`Optimizer::project_rows`): `dL/dv` is `v.grad` without its
    /// component along each row of `v` ([`Layer::v_grad_dots`]).
    pub fn finish_grads(&self, pass: &TrainPass) -> Vec<(Tensor, Tensor, Tensor)> {
        let mut terms = Vec::new();
        for ((l, s), n) in self.layers().zip(&pass.scales).zip(&pass.norms) {
            l.finish_grad(s.as_ref());
            if let Some(n) = n {
                if let Some(d) = l.v_grad_dots() {
                    terms.push((l.weight.shallow_clone(), d, n.shallow_clone()));
                }
            }
        }
        terms
    }

    /// After an optimizer step: projected weight norm scales every `v` back to its initial
    /// norms (`known_norm` as for [`QNetwork::train_pass`]); nothing for other variants.
    pub fn project(&self, known_norm: &dyn Fn(&Tensor) -> Option<Tensor>) {
        for l in self.layers().filter(|l| l.initial_norms().is_some()) {
            l.project(known_norm(&l.weight));
        }
    }

    /// Every layer's [`Layer::folded_operands`]: for a network that runs forward passes only
    /// between weight changes (a target network).
    pub fn folded_operands(&self) -> Vec<Operands> {
        self.layers().map(|l| l.folded_operands(self.compute)).collect()
    }

    /// [`QNetwork::finish_grads`], with weight norm's share of the tensor-op path's `v`
    /// gradients added now (the tests' reference for the optimizer's path).
    #[cfg(test)]
    pub fn finish_grads_now(&self, pass: &TrainPass) {
        let _ = self.finish_grads(pass);
        for (l, n) in self.layers().zip(&pass.norms) {
            if let Some(n) = n {
                l.complete_v_grad(n);
            }
        }
    }

    /// Run the network on input `x` (from [`QNetwork::prep`]), a layer at a time by
    /// `how(index, layer, input, relu)`: plain forward, forward with given operands, or
    /// data-dependent init, rectified with `relu` (a hidden layer's).
    fn run(&self, x: Tensor, how: &dyn Fn(usize, &Layer, &Tensor, bool) -> Tensor) -> Tensor {
        let mut idx = 0;
        let mut step = |l: &Layer, x: &Tensor, relu: bool| {
            let y = how(idx, l, x, relu);
            idx += 1;
            y
        };
        let mut x = x;
        for l in &self.convs {
            x = step(l, &x, true);
        }
        x = x.flatten(1, -1);
        for l in &self.dense {
            x = step(l, &x, true);
        }
        if self.cfg.dueling {
            let h = &self.heads;
            let v = step(&h[0], &x, true);
            let v = step(&h[1], &v, false);
            let a = step(&h[2], &x, true);
            let adv = step(&h[3], &a, false);
            &v + &adv - adv.mean_dim([1i64].as_slice(), true, Kind::Float)
        } else {
            let h = step(&self.heads[0], &x, true);
            step(&self.heads[1], &h, false)
        }
    }

    /// Q-values `[B, A]`. `train` matters only for mean-only BN layers.
    pub fn forward_t(&self, obs: &Tensor, train: bool) -> Tensor {
        self.run(Self::prep(obs, Compute::F32), &|_, l, x, relu| rectified(l.forward_t(x, train), relu))
    }

    /// Q-values (f32) with precomputed [`QNetwork::wn_scales`], computed as
    /// [`QNetwork::set_compute`] said.
    pub fn forward_scaled(&self, obs: &Tensor, train: bool, scales: &[Option<Tensor>]) -> Tensor {
        self.forward_with(obs, train, &self.operands(scales))
    }

    /// Every layer's [`Operands`] for the given scales, in this network's computation: make
    /// once, use for every forward pass until the weights change.
    pub fn operands(&self, scales: &[Option<Tensor>]) -> Vec<Operands> {
        self.layers().zip(scales).map(|(l, s)| l.operands(s.as_ref(), self.compute)).collect()
    }

    /// Q-values (f32) with operands from [`QNetwork::operands`].
    pub fn forward_with(&self, obs: &Tensor, train: bool, ops: &[Operands]) -> Tensor {
        let q = self
            .run(Self::prep(obs, self.compute), &|i, l, x, relu| l.forward_act(x, train, &ops[i], self.compute, relu));
        if q.kind() == Kind::Float {
            q
        } else {
            q.to_kind(Kind::Float)
        }
    }

    /// Data-dependent init (paper Section 3) on a batch of real observations: every layer, in
    /// order, gets pre-activations of mean 0 and std `init_scale` on this batch.
    pub fn data_init(&self, obs: &Tensor, init_scale: f64) {
        tch::no_grad(|| {
            let _ =
                self.run(Self::prep(obs, Compute::F32), &|_, l, x, relu| rectified(l.data_init(x, init_scale), relu));
        });
    }

    /// `(layer name, g)` for every weight-normalized layer, for logging.
    pub fn scales(&self) -> Vec<(String, Tensor)> {
        let names = self.layer_names();
        self.layers().zip(names).filter_map(|(l, n)| l.g.as_ref().map(|g| (n, g.detach()))).collect()
    }

    /// Every layer with its name, in order.
    pub fn named_layers(&self) -> Vec<(String, &Layer)> {
        self.layer_names().into_iter().zip(self.layers()).collect()
    }

    /// The penultimate layer's features on `obs` (after its nonlinearity, outside autograd, no
    /// power iteration, running means for mean-only BN): `[B, width]`, both streams side by
    /// side for a dueling head.
    pub fn penultimate_features(&self, obs: &Tensor) -> Tensor {
        tch::no_grad(|| {
            let mut x = Self::prep(obs, Compute::F32);
            for l in &self.convs {
                x = l.forward_t(&x, false).relu();
            }
            x = x.flatten(1, -1);
            for l in &self.dense {
                x = l.forward_t(&x, false).relu();
            }
            if self.cfg.dueling {
                Tensor::cat(&[self.heads[0].forward_t(&x, false).relu(), self.heads[2].forward_t(&x, false).relu()], 1)
            } else {
                self.heads[0].forward_t(&x, false).relu()
            }
        })
    }

    fn layer_names(&self) -> Vec<String> {
        let mut v: Vec<String> = (0..self.convs.len()).map(|i| format!("conv{i}")).collect();
        v.extend((0..self.dense.len()).map(|i| format!("fc0{}", if i == 0 { "" } else { "x" })));
        if self.cfg.dueling {
            v.extend(["value_fc", "value", "adv_fc", "adv"].map(String::from));
        } else {
            v.extend(["fc1", "q"].map(String::from));
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::normalization::{LayerNormAxes, SpectralLayers};
    use tch::Device;

    fn nature(variant: Variant, dueling: bool) -> (nn::VarStore, QNetwork) {
        let vs = nn::VarStore::new(Device::Cpu);
        let net = QNetwork::new(&vs.root(), &QNetConfig::nature(variant, dueling));
        (vs, net)
    }

    #[test]
    fn nature_shapes_and_param_counts() {
        for v in Variant::ALL {
            let (vs, net) = nature(v, false);
            let obs = Tensor::zeros([3, 4, 84, 84], (Kind::Uint8, Device::Cpu));
            assert_eq!(net.forward_t(&obs, false).size(), vec![3, 6]);
            let n: i64 = vs.trainable_variables().iter().map(|t| t.numel() as i64).sum();
            // Nature CNN with 6 actions: 8,224 + 32,832 + 36,928 + 1,606,144 + 3,078 = 1,687,206 weights and biases; WN adds one g per unit.
            let units = 32 + 64 + 64 + 512 + 6;
            // Layer norm (over channels) adds a scale and a shift per hidden unit or channel;
            // spectral norm's u and v are not trainable.
            let expect = match v {
                Variant::Plain | Variant::SpectralNorm => 1_687_206,
                Variant::LayerNorm => 1_687_206 + 2 * (32 + 64 + 64 + 512),
                _ => 1_687_206 + units,
            };
            assert_eq!(n, expect, "{v:?}");
        }
        let (_vs, net) = nature(Variant::WeightNorm, true);
        let obs = Tensor::zeros([2, 4, 84, 84], (Kind::Uint8, Device::Cpu));
        assert_eq!(net.forward_t(&obs, false).size(), vec![2, 6]);
    }

    #[test]
    fn data_init_normalizes_q_outputs() {
        tch::manual_seed(0);
        let (_vs, net) = nature(Variant::WeightNorm, false);
        let obs = Tensor::randint(256, [64, 4, 84, 84], (Kind::Uint8, Device::Cpu));
        net.data_init(&obs, 1.0);
        let q = net.forward_t(&obs, false);
        let (std, mean) = q.std_mean_correction(Some([0i64].as_slice()), 0, false);
        assert!(f64::try_from(mean.abs().max()).unwrap() < 1e-3);
        assert!(f64::try_from((std - 1.0).abs().max()).unwrap() < 1e-3);
    }

    /// Every trainable variable's gradient (a copy), by name.
    fn trainable_grads(vs: &nn::VarStore) -> Vec<(String, Tensor)> {
        let mut g: Vec<(String, Tensor)> =
            vs.variables().into_iter().filter(|(_, t)| t.requires_grad()).map(|(n, t)| (n, t.grad().copy())).collect();
        g.sort_by(|a, b| a.0.cmp(&b.0));
        g
    }

    /// The training path (norms and sigma held constant, then the paper's eq. 3 and sigma's
    /// share added by hand; or the materialized layers' loops) gives the gradients autograd
    /// gives through the norm and through sigma, for every parameter of every variant.
    #[test]
    fn train_scales_give_autograd_gradients() {
        for (variant, dueling, materialize) in [
            (Variant::WeightNorm, false, false),
            (Variant::WeightNormMobn, true, false),
            (Variant::Plain, false, false),
            (Variant::SpectralNorm, false, false),
            (Variant::WeightNorm, false, true),
            (Variant::WeightNormMobn, true, true),
            (Variant::SpectralNorm, false, true),
            (Variant::WeightNormProjected, false, true),
        ] {
            tch::manual_seed(3);
            let (vs, mut net) = nature(variant, dueling);
            if materialize {
                // Every layer but the 1.6M-weight dense ones (fc1, or value_fc and adv_fc);
                // none with spectral norm, which is only on fc1 by default.
                let expect = if variant == Variant::SpectralNorm {
                    0
                } else if dueling {
                    5
                } else {
                    4
                };
                assert_eq!(net.materialize_small_layers().len(), expect, "{variant:?}");
            }
            let obs = Tensor::randint(256, [8, 4, 84, 84], (Kind::Uint8, Device::Cpu));
            net.data_init(&obs, 1.0);
            let target = Tensor::randn([8, 6], (Kind::Float, Device::Cpu));
            let grads = |fast: bool| {
                for mut t in vs.trainable_variables() {
                    t.zero_grad();
                }
                if fast {
                    let pass = net.train_pass(&|_| None);
                    (net.forward_with(&obs, true, &pass.ops) - &target).square().mean(Kind::Float).backward();
                    net.finish_grads_now(&pass);
                } else {
                    (net.forward_t(&obs, true) - &target).square().mean(Kind::Float).backward();
                }
                trainable_grads(&vs)
            };
            // The training path first: spectral norm's power iteration moves `u` and `v`, and
            // autograd's pass then uses the same ones.
            let fast = grads(true);
            let exact = grads(false);
            for ((name, a), (_, b)) in exact.iter().zip(&fast) {
                let scale = f64::try_from(a.abs().max()).unwrap().max(1e-12);
                let err = f64::try_from((a - b).abs().max()).unwrap() / scale;
                assert!(err < 1e-4, "{variant:?} (materialized: {materialize}) {name}: relative error {err}");
            }
        }
    }

    /// The explicit training pass (no autograd: `crate::explicit`) gives every parameter the
    /// gradient autograd gives through `forward_t`, for every variant of the MLP and MinAtar's
    /// network, with and without a dueling head, both layer-norm axes and both spectral-norm
    /// placements.
    #[test]
    fn explicit_pass_gives_autograd_gradients() {
        // One intra-op thread, as a small network's learner runs: the products are then the
        // crate's own kernels where the CPU has AVX-512F (`crate::gemm`).
        tch::set_num_threads(1);
        let mut cases = Vec::new();
        for arch in [Arch::Mlp, Arch::Minatar] {
            for variant in Variant::ALL {
                for dueling in [false, true] {
                    cases.push((arch, variant, dueling, NormOptions::default()));
                }
            }
            let chw = NormOptions { layer_norm_axes: LayerNormAxes::Chw, ..Default::default() };
            cases.push((arch, Variant::LayerNorm, false, chw));
            let all = NormOptions { spectral_layers: SpectralLayers::All, ..Default::default() };
            cases.push((arch, Variant::SpectralNorm, true, all));
        }
        for (arch, variant, dueling, norm) in cases {
            tch::manual_seed(4);
            let (obs_shape, actions) = if arch == Arch::Mlp { (vec![4i64], 3) } else { (vec![4i64, 10, 10], 5) };
            let cfg = QNetConfig {
                arch,
                variant,
                dueling,
                obs_shape: obs_shape.clone(),
                num_actions: actions,
                hidden: 24,
                norm,
            };
            let vs = nn::VarStore::new(Device::Cpu);
            let mut net = QNetwork::new(&vs.root(), &cfg);
            net.materialize_small_layers();
            let what = format!("{arch:?} {variant:?} dueling={dueling} {norm:?}");
            assert!(net.prepare_explicit(), "{what}: not ready");
            let shape: Vec<i64> = std::iter::once(16).chain(obs_shape).collect();
            let obs = Tensor::rand(shape.as_slice(), (Kind::Float, Device::Cpu));
            if variant.data_init() {
                net.data_init(&obs, 1.0);
            }
            // Nonzero layer-norm affine parameters and biases, as after training.
            tch::no_grad(|| {
                for (name, mut t) in vs.variables() {
                    if name.contains("ln") || name.ends_with("bias") {
                        let _ = t.g_add_(&(t.rand_like() - 0.5));
                    }
                }
            });
            let dq = Tensor::randn([16, actions], (Kind::Float, Device::Cpu));
            let grads = || trainable_grads(&vs);
            // The explicit pass first: spectral norm's power iteration moves `u` and `v`, and
            // autograd's pass then uses the same ones.
            let pass = net.train_pass(&|_| None);
            // With more samples than the loss uses (double DQN's next observations ride along),
            // but for mean-only BN, whose batch mean must be the loss's batch's.
            let input = if net.uses_batch_statistics() {
                obs.shallow_clone()
            } else {
                Tensor::cat(&[&obs, &obs.rand_like()], 0)
            };
            let (q_all, tape) = net.explicit_forward(&input, &pass.ops, 16);
            let q = q_all.narrow(0, 0, 16);
            net.explicit_backward(tape, dq.copy(), &pass.ops);
            net.finish_grads_now(&pass);
            let explicit = grads();
            for mut t in vs.trainable_variables() {
                t.zero_grad();
            }
            let q_ref = net.forward_t(&obs, true);
            (&q_ref * &dq).sum(Kind::Float).backward();
            let exact = grads();
            let err = f64::try_from((&q - &q_ref).abs().max()).unwrap() / f64::try_from(q_ref.abs().max()).unwrap();
            assert!(err < 1e-5, "{what}: Q-values differ by {err} (relative)");
            assert_eq!(exact.len(), explicit.len());
            for ((name, a), (_, b)) in exact.iter().zip(&explicit) {
                let scale = f64::try_from(a.abs().max()).unwrap().max(1e-12);
                let err = f64::try_from((a - b).abs().max()).unwrap() / scale;
                assert!(err < 1e-4, "{what} {name}: relative error {err}");
            }
        }
    }

    #[test]
    fn save_load_round_trips_bit_exactly() {
        tch::manual_seed(1);
        let (vs, net) = nature(Variant::WeightNormMobn, true);
        let dir = std::env::temp_dir().join(format!("wndqn-qnet-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("q.safetensors");
        vs.save(&path).unwrap();
        tch::manual_seed(99);
        let (mut vs2, net2) = nature(Variant::WeightNormMobn, true);
        vs2.load(&path).unwrap();
        for (name, t) in vs.variables() {
            assert!(t.equal(&vs2.variables()[&name]), "{name}");
        }
        let obs = Tensor::randint(256, [2, 4, 84, 84], (Kind::Uint8, Device::Cpu));
        assert!(net.forward_t(&obs, false).equal(&net2.forward_t(&obs, false)));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
