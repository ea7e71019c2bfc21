//! Optimizers on tch tensors whose state can be saved and restored exactly.
//!
//! tch's own optimizers hide their state (no save/load) and have no Adamax (the paper's
//! optimizer), so these are written here, following PyTorch's update rules to the letter
//! (`torch.optim.Adam`, `RMSprop`, `Adamax`); `tests` check them against PyTorch trajectories
//! produced by `tests/oracles/optim_reference.py`.
//!
//! One type per rule ([`Adam`], [`Adamax`], [`RmsProp`]) behind `rules::Rule` says what the rule's
//! state is and how a step changes a parameter; one [`Optimizer`] drives any of them. A step
//! takes one of three ways, the first that applies:
//! - the rule's one-pass CPU kernel (`fused`: CPU, f32/f64, contiguous), which also folds in the
//!   clipping coefficient and weight norm's gradient projection as it reads the gradient;
//! - on the device, for a CUDA graph ([`Optimizer::step_on_device`]): the rule's multi-tensor
//!   kernel where it has one, else its tensor ops with the bias corrections computed there;
//! - the rule's tensor ops (`Rule::update`).

use std::collections::HashMap;
use std::path::Path;

use tch::{Kind, Tensor};

use crate::kernels::data;

pub(crate) mod fused;
mod rules;

pub use rules::{Adam, Adamax, RmsProp};
use rules::{Count, Factors, Rule};

/// Which optimizer rule, with its hyper-parameters: in a config, a table with the rule's name
/// under `rule` and its own settings (each with its default).
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "rule", rename_all = "snake_case")]
pub enum OptimizerKind {
    /// [`Adam`].
    Adam(Adam),
    /// [`Adamax`]: the paper's optimizer.
    Adamax(Adamax),
    /// [`RmsProp`].
    #[serde(rename = "rmsprop")]
    RmsProp(RmsProp),
}

impl Default for OptimizerKind {
    fn default() -> Self {
        OptimizerKind::Adam(Adam::default())
    }
}

impl OptimizerKind {
    /// Every rule's name in a config.
    pub const NAMES: [&'static str; 3] = ["adam", "adamax", "rmsprop"];
}

impl OptimizerKind {
    /// The rule.
    fn rule(&self) -> &dyn Rule {
        match self {
            OptimizerKind::Adam(r) => r,
            OptimizerKind::Adamax(r) => r,
            OptimizerKind::RmsProp(r) => r,
        }
    }
}

/// A gradient's component along each row of its parameter, to be removed: `g[r] - (dots[r] /
/// norms[r]^2) p[r]` with `dots[r] = g[r] . p[r]` and `norms[r] = ||p[r]||` (both `[rows]`,
/// contiguous, of the parameter's kind).
struct RowProjection {
    dots: Tensor,
    norms: Tensor,
}

impl RowProjection {
    /// Every row's coefficient `-dots[r] / norms[r]^2` and the sum of the removed components'
    /// squares, `sum_r dots[r]^2 / norms[r]^2`.
    ///
    /// # Safety
    /// `T` must be the element type of both (contiguous CPU) tensors.
    unsafe fn coefs<T: crate::kernels::Real>(&self) -> (Vec<f64>, f64) {
        // SAFETY: the caller's contract.
        let (d, n) = unsafe { (data::<T>(&self.dots), data::<T>(&self.norms)) };
        let coef = d.iter().zip(n).map(|(&d, &n)| -(d.to_f64() / (n.to_f64() * n.to_f64()))).collect();
        (coef, d.iter().zip(n).map(|(&d, &n)| (d.to_f64() / n.to_f64()).powi(2)).sum())
    }
}

/// One parameter's buffers as the fused CPU kernels see them: their addresses (tch's tensors
/// cannot be shared between threads), the parameter's length and element type, and its
/// projection's row coefficients with the row length.
struct Buffers {
    p: usize,
    g: usize,
    /// The rule's state buffers (up to three; None where it has fewer).
    state: [Option<usize>; 3],
    len: usize,
    double: bool,
    coef: Option<Vec<f64>>,
    row: usize,
}

/// Elements `start..end` of parameter `param`: a piece of the fused step's work (on row
/// boundaries where the parameter's gradient is projected).
struct Piece {
    param: usize,
    start: usize,
    end: usize,
}

/// `addr`'s elements `r`.
///
/// # Safety
/// `addr` is the start of a live buffer of at least `r.end` elements of `T`, and no one writes
/// elements `r` while the slice lives.
unsafe fn span<'a, T>(addr: usize, r: std::ops::Range<usize>) -> &'a [T] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts((addr as *const T).add(r.start), r.len()) }
}

/// [`span`], writable.
///
/// # Safety
/// As for [`span`], and no one else reads or writes elements `r` while the slice lives.
unsafe fn span_mut<'a, T>(addr: usize, r: std::ops::Range<usize>) -> &'a mut [T] {
    // SAFETY: the caller's contract.
    unsafe { std::slice::from_raw_parts_mut((addr as *mut T).add(r.start), r.len()) }
}

/// Run `f` on every piece `0..n`, spread over libtorch's intra-op threads, each taking the next
/// piece not yet taken (pieces are of about equal size, but threads are not equally fast on a
/// shared machine); on this thread alone where those cannot be had.
fn for_pieces(n: usize, f: &(dyn Fn(usize) + Sync)) {
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = |_: usize| loop {
        let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    };
    let threads = (tch::get_num_threads().max(1) as usize).min(n);
    if threads < 2 || crate::ext::parallel::parallel_for(threads, &work).is_err() {
        work(0);
    }
}

/// An optimizer over a fixed, named list of parameters.
pub struct Optimizer {
    kind: OptimizerKind,
    /// Learning rate.
    pub lr: f64,
    names: Vec<String>,
    params: Vec<Tensor>,
    /// Per parameter, its rule's state buffers ([`Rule::state_names`]).
    state: Vec<Vec<Tensor>>,
    step: i64,
    /// The step counter on the parameters' device (f32, as PyTorch keeps it; exact to 2^24
    /// steps, and the bias corrections are 1 long before), once [`Optimizer::make_capturable`]
    /// made it: [`Optimizer::step_on_device`] reads and advances it there, so that a step needs
    /// no value from the host and can be captured in a CUDA graph. `step` stays the host's count.
    step_t: Option<Tensor>,
    /// In the on-device path, use ATen's multi-tensor kernels ([`crate::ext::multi_tensor`]:
    /// fused Adam, foreach clipping) instead of per-tensor ops. Always on; the tests switch it
    /// off to hold both paths against each other.
    pub(crate) multi_tensor: bool,
    /// Use the rule's one-pass CPU kernel (`fused`) where it applies (CPU, f32/f64,
    /// contiguous). Always on; the tests switch it off to hold the kernels
    /// against the tensor-op path.
    pub(crate) fused: bool,
    /// Per parameter, a projection of its gradient not yet made ([`Optimizer::project_rows`]).
    /// The fused CPU step makes it as it reads the gradient; every other path makes it first
    /// ([`Optimizer::settle`]).
    pending: Vec<Option<RowProjection>>,
    /// Per parameter, `||param[r]||` of every row as the last fused step left it, summed in
    /// that step's pass for the parameters it projected (weight norm's `v`), with the
    /// parameter's version counter then ([`Optimizer::row_norms`]).
    row_norms: Vec<Option<(Tensor, i64)>>,
}

impl Optimizer {
    /// An optimizer for `params` (name, tensor). Names key the saved state.
    pub fn new(kind: OptimizerKind, lr: f64, mut params: Vec<(String, Tensor)>) -> Self {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let buffers = kind.rule().state_names().len();
        let state = params.iter().map(|(_, p)| (0..buffers).map(|_| p.zeros_like().detach()).collect()).collect();
        let (names, params): (Vec<String>, Vec<Tensor>) = params.into_iter().unzip();
        let pending = params.iter().map(|_| None).collect();
        let row_norms = params.iter().map(|_| None).collect();
        Optimizer {
            kind,
            lr,
            names,
            params,
            state,
            step: 0,
            step_t: None,
            multi_tensor: true,
            fused: true,
            pending,
            row_norms,
        }
    }

    /// Updates taken so far.
    pub fn steps(&self) -> i64 {
        self.step
    }

    /// Keep the step counter on the device too, for [`Optimizer::step_on_device`] (call before
    /// capturing; allocating it during a capture would copy from the host).
    pub fn make_capturable(&mut self) {
        if self.step_t.is_none() {
            let device = self.params.first().map_or(tch::Device::Cpu, |p| p.device());
            self.step_t = Some(Tensor::from(self.step as f32).to_device(device));
        }
    }

    /// Count, on the host, a step that [`Optimizer::step_on_device`] took (directly or replayed
    /// from a CUDA graph, where no host code runs).
    pub fn count_step(&mut self) {
        self.step += 1;
    }

    fn advance_device_step(&self) {
        if let Some(t) = &self.step_t {
            let _ = t.shallow_clone().g_add_scalar_(1.0);
        }
    }

    /// Zero every parameter's gradient.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.zero_grad();
        }
        self.pending.iter_mut().for_each(|t| *t = None);
    }

    /// Remove from `param`'s gradient its component along each row `r` of `param` (the leading
    /// axis): `g[r] - (dots[r] / norms[r]^2) param[r]`, where the caller gives `dots[r] = g[r] .
    /// param[r]` and `norms[r] = ||param[r]||`, which it knows without a pass over the weights.
    /// This is weight norm's share of `dL/dv` (paper eq. 3: `dL/dv` is orthogonal to `v`;
    /// [`crate::layers::Layer::v_grad_dots`]).
    ///
    /// Where the fused CPU step runs, the projection costs no pass of its own (a pass over every
    /// `v` reading and writing its gradient cost weight norm 5% of a bf16 update): the update
    /// pass adds the term as it reads the gradient, and the clipping norm is Pythagoras',
    /// `||g'||^2 = ||g||^2 - sum_r dots[r]^2 / norms[r]^2`, from the plain gradient's pass.
    /// Every other path makes the projection before it reads the gradient. A `param` this
    /// optimizer does not hold is an error.
    pub fn project_rows(&mut self, param: &Tensor, dots: &Tensor, norms: &Tensor) -> anyhow::Result<()> {
        let i = self
            .params
            .iter()
            .position(|p| p.data_ptr() == param.data_ptr() && p.size() == param.size())
            .ok_or_else(|| anyhow::anyhow!("project_rows: not a parameter of this optimizer"))?;
        let rows = |t: &Tensor| t.detach().to_kind(param.kind()).contiguous();
        let (dots, norms) = (rows(dots), rows(norms));
        anyhow::ensure!(
            dots.numel() as i64 == param.size()[0] && norms.numel() == dots.numel(),
            "project_rows: one product and one norm per row"
        );
        anyhow::ensure!(self.pending[i].is_none(), "project_rows: this gradient is projected already");
        self.pending[i] = Some(RowProjection { dots, norms });
        Ok(())
    }

    /// `||param[r]||` for every row (shape `[rows]`), as the last step left `param`: known when
    /// that step was a fused CPU step that projected `param`'s gradient
    /// ([`Optimizer::project_rows`]), which sums the rows' squares as it writes them, and
    /// nothing has written `param` since (its version counter has not moved); None otherwise.
    /// Weight norm's next forward pass needs exactly these norms, and would read every `v`
    /// again for them.
    pub fn row_norms(&self, param: &Tensor) -> Option<Tensor> {
        let i = self.params.iter().position(|p| p.data_ptr() == param.data_ptr() && p.size() == param.size())?;
        let (norms, version) = self.row_norms[i].as_ref()?;
        (crate::ext::multi_tensor::version(param).ok()? == *version).then(|| norms.shallow_clone())
    }

    /// Make every pending projection in its gradient, for the paths that read gradients as
    /// they are.
    fn settle(&mut self) {
        tch::no_grad(|| {
            for (p, c) in self.params.iter().zip(self.pending.iter_mut()) {
                if let Some(RowProjection { dots, norms }) = c.take() {
                    let shape: Vec<i64> = std::iter::once(-1).chain(std::iter::repeat_n(1, p.dim() - 1)).collect();
                    let coef = -(dots / norms.square());
                    let _ = p.grad().addcmul_(p, &coef.view(shape.as_slice()));
                }
            }
        });
    }

    /// The defined gradients, in parameter order, with their pending projections made.
    fn grads(&mut self) -> Vec<Tensor> {
        self.settle();
        self.params.iter().map(|p| p.grad()).filter(|g| g.defined()).collect()
    }

    /// Global L2 norm of the gradients; if `max_norm` is given and exceeded, scale them down to
    /// it (as `torch.nn.utils.clip_grad_norm_`). Returns the norm before clipping.
    pub fn clip_grad_norm(&mut self, max_norm: Option<f64>) -> f64 {
        tch::no_grad(|| {
            let grads = self.grads();
            let sq: Vec<Tensor> = grads.iter().map(|g| g.square().sum(Kind::Float)).collect();
            let total = f64::try_from(Tensor::stack(&sq, 0).sum(Kind::Float).sqrt()).unwrap_or(0.0);
            if let Some(m) = max_norm {
                let coef = m / (total + 1e-6);
                if coef < 1.0 {
                    for mut g in grads {
                        let _ = g.g_mul_scalar_(coef);
                    }
                }
            }
            total
        })
    }

    /// [`Optimizer::clip_grad_norm`] without reading anything back: the norm stays a device
    /// scalar and the gradients are always multiplied by `min(1, max_norm / (norm + 1e-6))`, as
    /// `torch.nn.utils.clip_grad_norm_` does (the same values: a factor of 1 is exact).
    pub fn clip_grad_norm_on_device(&mut self, max_norm: Option<f64>) -> anyhow::Result<Tensor> {
        tch::no_grad(|| {
            let grads = self.grads();
            if self.multi_tensor {
                return crate::ext::multi_tensor::clip_grad_norm(&grads, max_norm);
            }
            let sq: Vec<Tensor> = grads.iter().map(|g| g.square().sum(Kind::Float)).collect();
            let norm = Tensor::stack(&sq, 0).sum(Kind::Float).sqrt();
            if let Some(m) = max_norm {
                let coef = ((&norm + 1e-6).reciprocal() * m).clamp_max(1.0);
                for mut g in grads {
                    let _ = g.g_mul_(&coef);
                }
            }
            Ok(norm)
        })
    }

    /// One update whose step-dependent factors (the bias corrections) are computed on the
    /// device from the device step counter: no host value changes between calls, so the launch
    /// sequence can be captured once and replayed. Same rules as [`Optimizer::step`] to float
    /// rounding. Needs [`Optimizer::make_capturable`]; the host count is the caller's
    /// ([`Optimizer::count_step`]).
    pub fn step_on_device(&mut self) -> anyhow::Result<()> {
        self.settle();
        self.row_norms.iter_mut().for_each(|n| *n = None);
        let t = self.step_t.as_ref().ok_or_else(|| anyhow::anyhow!("make_capturable() before step_on_device()"))?;
        self.advance_device_step();
        let (rule, lr) = (self.kind.rule(), self.lr);
        if self.multi_tensor {
            let with_grad: Vec<usize> = (0..self.params.len()).filter(|&i| self.params[i].grad().defined()).collect();
            let params: Vec<Tensor> = with_grad.iter().map(|&i| self.params[i].shallow_clone()).collect();
            let grads: Vec<Tensor> = params.iter().map(Tensor::grad).collect();
            let state: Vec<&[Tensor]> = with_grad.iter().map(|&i| self.state[i].as_slice()).collect();
            if let Some(done) = tch::no_grad(|| rule.multi_tensor(lr, &params, &grads, &state, t)) {
                return done;
            }
        }
        let f = rule.factors(lr, Count::Device(t));
        self.step_ops(&f);
        Ok(())
    }

    /// The tensor-op update of every parameter with a gradient.
    fn step_ops(&mut self, f: &Factors) {
        let (rule, lr) = (self.kind.rule(), self.lr);
        tch::no_grad(|| {
            for (p, st) in self.params.iter_mut().zip(self.state.iter_mut()) {
                let g = p.grad();
                if g.defined() {
                    rule.update(lr, p, &g, st, f);
                }
            }
        });
    }

    /// Clip the gradients' global norm to `max_norm` and apply one update: the same result as
    /// [`Optimizer::clip_grad_norm`] then [`Optimizer::step`], with the clipping folded into
    /// the update's gradient read where the fused kernels apply. Returns the norm before
    /// clipping.
    pub fn clip_and_step(&mut self, max_norm: Option<f64>) -> f64 {
        if !self.fusable() {
            self.settle();
            let norm = self.clip_grad_norm(max_norm);
            self.step();
            return norm;
        }
        let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).collect();
        let (bufs, pieces) = self.pieces(&grads);
        let sums: Vec<std::sync::atomic::AtomicU64> = pieces.iter().map(|_| Default::default()).collect();
        for_pieces(pieces.len(), &|i| {
            let (pc, b) = (&pieces[i], &bufs[pieces[i].param]);
            // SAFETY: `fusable` checked that every gradient is a contiguous CPU tensor of f32 or
            // f64 (`b.double` says which); nothing writes them while their squares are summed.
            let sq = unsafe {
                if b.double {
                    fused::sum_sq(span::<f64>(b.g, pc.start..pc.end))
                } else {
                    fused::sum_sq(span::<f32>(b.g, pc.start..pc.end))
                }
            };
            sums[i].store(sq.to_bits(), std::sync::atomic::Ordering::Relaxed);
        });
        let plain: f64 = sums.iter().map(|s| f64::from_bits(s.load(std::sync::atomic::Ordering::Relaxed))).sum();
        // Each projection removes its rows' radial parts, `dots^2 / ||p||^2` (Pythagoras); never
        // below zero where rounding would take it there.
        // SAFETY: as above, for the projections' rows (`fusable` checked them too).
        let radial: f64 = self
            .pending
            .iter()
            .flatten()
            .map(|r| unsafe {
                match r.dots.kind() {
                    Kind::Float => r.coefs::<f32>().1,
                    _ => r.coefs::<f64>().1,
                }
            })
            .sum();
        let sq = (plain - radial).max(0.0);
        let norm = sq.sqrt();
        let coef = max_norm.map_or(1.0, |m| (m / (norm + 1e-6)).min(1.0));
        self.step_fused(&bufs, &pieces, coef);
        norm
    }

    /// Whether the rule's one-pass kernel (`fused`) can run this step: every parameter, gradient and state tensor
    /// on the CPU, contiguous, one float kind.
    fn fusable(&self) -> bool {
        if !self.fused || self.kind.rule().fused(self.lr, 1.0).is_none() {
            return false;
        }
        let ok = |t: &Tensor, kind: Kind| {
            t.defined() && t.device() == tch::Device::Cpu && t.kind() == kind && t.is_contiguous()
        };
        self.params.iter().zip(&self.state).zip(&self.pending).all(|((p, st), c)| {
            let kind = p.kind();
            matches!(kind, Kind::Float | Kind::Double)
                && ok(p, kind)
                && ok(&p.grad(), kind)
                && st.iter().all(|t| ok(t, kind))
                && c.as_ref().is_none_or(|r| ok(&r.dots, kind) && ok(&r.norms, kind))
        })
    }

    /// The fused kernels' view of every parameter (with its gradient `grads[i]`, state and
    /// pending projection), and the pieces of work they split into: pieces of about
    /// `len / (8 threads)` elements, on row boundaries where a projection needs whole rows.
    /// Needs [`Optimizer::fusable`].
    fn pieces(&self, grads: &[Tensor]) -> (Vec<Buffers>, Vec<Piece>) {
        let bufs: Vec<Buffers> = self
            .params
            .iter()
            .zip(grads)
            .zip(&self.state)
            .zip(&self.pending)
            .map(|(((p, g), st), c)| {
                let double = p.kind() == Kind::Double;
                // SAFETY: `fusable` checked the projection's tensors are of the parameter's kind.
                let coef = c.as_ref().map(|r| unsafe {
                    if double {
                        r.coefs::<f64>().0
                    } else {
                        r.coefs::<f32>().0
                    }
                });
                let len = p.numel();
                let row = coef.as_ref().map_or(1, |c| len / c.len().max(1));
                let addr = |t: &Tensor| t.data_ptr() as usize;
                let state = [0, 1, 2].map(|k| st.get(k).map(addr));
                Buffers { p: addr(p), g: addr(g), state, len, double, coef, row }
            })
            .collect();
        let total: usize = bufs.iter().map(|b| b.len).sum();
        let target = (total / (8 * tch::get_num_threads().max(1) as usize)).max(1 << 14);
        let mut pieces = Vec::new();
        for (param, b) in bufs.iter().enumerate() {
            let unit = if b.coef.is_some() { b.row.max(1) } else { 64 };
            let per = target.div_ceil(unit) * unit;
            let mut start = 0;
            while start < b.len {
                let end = (start + per).min(b.len);
                pieces.push(Piece { param, start, end });
                start = end;
            }
        }
        (bufs, pieces)
    }

    /// The one-pass CPU update of every parameter, its gradients scaled by `gscale` as read,
    /// its pieces spread over the intra-op threads.
    fn step_fused(&mut self, bufs: &[Buffers], pieces: &[Piece], gscale: f64) {
        use crate::kernels::Real;
        use fused::Pass;
        self.step += 1;
        self.advance_device_step();
        let pass =
            self.kind.rule().fused(self.lr, self.step as f64).expect("fusable: the rule has a kernel").scaled(gscale);
        fn piece<T: Real>(b: &Buffers, pc: &Piece, pass: Pass) -> Vec<f64> {
            let r = pc.start..pc.end;
            // SAFETY: `fusable` checked that every buffer is a contiguous CPU tensor of `T`; a
            // parameter, its gradient and its state buffers are distinct storages; pieces do not
            // overlap, and nothing else touches the buffers during the step.
            let (p, g, state) = unsafe {
                (
                    span_mut::<T>(b.p, r.clone()),
                    span::<T>(b.g, r.clone()),
                    b.state.map(|s| s.map_or(&mut [][..], |s| span_mut::<T>(s, r.clone()))),
                )
            };
            let coef: Option<Vec<T>> =
                b.coef.as_ref().map(|c| c[pc.start / b.row..pc.end / b.row].iter().map(|&x| T::of(x)).collect());
            let mut row_sq = vec![0f64; coef.as_ref().map_or(0, Vec::len)];
            pass.run::<T>(p, g, state, coef.as_deref(), &mut row_sq);
            row_sq
        }
        let row_sq: Vec<std::sync::Mutex<Vec<f64>>> = pieces.iter().map(|_| Default::default()).collect();
        for_pieces(pieces.len(), &|i| {
            let (pc, b) = (&pieces[i], &bufs[pieces[i].param]);
            let sums = if b.double { piece::<f64>(b, pc, pass) } else { piece::<f32>(b, pc, pass) };
            *row_sq[i].lock().unwrap_or_else(|e| e.into_inner()) = sums;
        });
        // The projected parameters' row norms, from their pieces in order.
        let mut norms: Vec<Vec<f64>> = vec![Vec::new(); self.params.len()];
        for (pc, sq) in pieces.iter().zip(row_sq) {
            norms[pc.param].extend(sq.into_inner().unwrap_or_else(|e| e.into_inner()).into_iter().map(f64::sqrt));
        }
        self.row_norms = self
            .params
            .iter()
            .zip(&self.pending)
            .zip(norms)
            .map(|((p, c), n)| {
                c.as_ref()?;
                let version = crate::ext::multi_tensor::version(p).ok()?;
                Some((Tensor::from_slice(&n).to_kind(p.kind()), version))
            })
            .collect();
        self.pending.iter_mut().for_each(|t| *t = None);
    }

    /// Apply one update with the current gradients.
    pub fn step(&mut self) {
        if self.fusable() {
            let grads: Vec<Tensor> = self.params.iter().map(|p| p.grad()).collect();
            let (bufs, pieces) = self.pieces(&grads);
            self.step_fused(&bufs, &pieces, 1.0);
            return;
        }
        self.settle();
        self.row_norms.iter_mut().for_each(|n| *n = None);
        self.step += 1;
        self.advance_device_step();
        let f = self.kind.rule().factors(self.lr, Count::Host(self.step as f64));
        self.step_ops(&f);
    }

    /// Every state tensor by `param/state` name, plus the step counter as `__step`.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = vec![("__step".to_string(), Tensor::from_slice(&[self.step]))];
        let names = self.kind.rule().state_names();
        for (name, st) in self.names.iter().zip(&self.state) {
            for (sn, t) in names.iter().zip(st) {
                out.push((format!("{name}/{sn}"), t.shallow_clone()));
            }
        }
        out
    }

    /// Save the state (safetensors).
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        let cpu: Vec<(String, Tensor)> =
            self.state_tensors().into_iter().map(|(n, t)| (n, t.to_device(tch::Device::Cpu))).collect();
        Tensor::write_safetensors(&cpu, path)?;
        Ok(())
    }

    /// Restore the state saved by [`Optimizer::save`]; every tensor must be present.
    pub fn load(&mut self, path: &Path) -> anyhow::Result<()> {
        let loaded: HashMap<String, Tensor> = Tensor::read_safetensors(path)?.into_iter().collect();
        self.restore(&loaded).map_err(|e| anyhow::anyhow!("optimizer state {}: {e}", path.display()))
    }

    /// Take the state [`Optimizer::state_tensors`] gave (copies of it), in place: every state
    /// tensor keeps its address (a captured CUDA graph reads them there).
    pub fn restore(&mut self, state: &HashMap<String, Tensor>) -> anyhow::Result<()> {
        let step = state.get("__step").ok_or_else(|| anyhow::anyhow!("it has no step counter"))?;
        self.step = step.int64_value(&[0]);
        if let Some(t) = &self.step_t {
            let _ = t.shallow_clone().fill_(self.step as f64);
        }
        self.row_norms.iter_mut().for_each(|n| *n = None);
        tch::no_grad(|| -> anyhow::Result<()> {
            let names = self.kind.rule().state_names();
            for (name, st) in self.names.iter().zip(&self.state) {
                for (sn, t) in names.iter().zip(st) {
                    let key = format!("{name}/{sn}");
                    let src = state.get(&key).ok_or_else(|| anyhow::anyhow!("it lacks {key}"))?;
                    t.shallow_clone().copy_(src);
                }
            }
            Ok(())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    /// The ways to take a step: one-pass CPU kernels, eager tensor ops, and the capturable
    /// step with the step counter on the device, as tensor ops or ATen's multi-tensor kernels.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Path3 {
        Fused,
        Ops,
        OnDevice,
        OnDeviceMultiTensor,
    }

    /// The same deterministic problem as tests/oracles/optim_reference.py: 2 parameters, gradients
    /// `sin(0.37 * i + t) * (1 + 0.1 * p)` (depends on the parameter, so trajectories diverge
    /// if an update rule is off).
    fn run(kind: OptimizerKind, lr: f64, steps: usize, path: Path3) -> Vec<f64> {
        let a = Tensor::from_slice(&[0.5f64, -1.0, 2.0]).set_requires_grad(true);
        let b = Tensor::from_slice(&[0.1f64, 0.3]).set_requires_grad(true);
        let mut opt = Optimizer::new(kind, lr, vec![("a".into(), a.shallow_clone()), ("b".into(), b.shallow_clone())]);
        opt.fused = path == Path3::Fused;
        opt.multi_tensor = path == Path3::OnDeviceMultiTensor;
        let on_device = matches!(path, Path3::OnDevice | Path3::OnDeviceMultiTensor);
        if on_device {
            opt.make_capturable();
        }
        for t in 0..steps {
            opt.zero_grad();
            for p in [&a, &b] {
                let n = p.size()[0];
                let i = Tensor::arange(n, (Kind::Double, Device::Cpu));
                let coef = (i * 0.37 + t as f64).sin();
                // loss = sum(coef * (p + 0.05 p^2)) -> grad = coef * (1 + 0.1 p)
                (coef * (p + p.square() * 0.05)).sum(Kind::Double).backward();
            }
            if on_device {
                opt.step_on_device().unwrap();
                opt.count_step();
            } else {
                opt.step();
            }
        }
        let mut v = Vec::<f64>::try_from(a.detach()).unwrap();
        v.extend(Vec::<f64>::try_from(b.detach()).unwrap());
        v
    }

    fn kinds() -> Vec<(&'static str, OptimizerKind, f64)> {
        vec![
            ("adam", OptimizerKind::Adam(Adam { beta1: 0.9, beta2: 0.999, eps: 1e-8 }), 0.01),
            ("adamax", OptimizerKind::Adamax(Adamax { beta1: 0.5, beta2: 0.999, eps: 1e-8 }), 0.01),
            (
                "rmsprop_centered",
                OptimizerKind::RmsProp(RmsProp { alpha: 0.95, eps: 0.01, centered: true, momentum: 0.0 }),
                0.01,
            ),
            (
                "rmsprop_momentum",
                OptimizerKind::RmsProp(RmsProp { alpha: 0.99, eps: 1e-8, centered: false, momentum: 0.9 }),
                0.001,
            ),
        ]
    }

    /// A row projection given to the optimizer (weight norm's share of `dL/dv`) gives the step
    /// the projected gradient, on every path, as if it had been made beforehand: the fused CPU
    /// kernels add the term as they read and take the norm by Pythagoras, the others project
    /// first; the norm is the projected gradient's.
    #[test]
    fn row_projections_equal_projections_made_beforehand() {
        // [64, 1024]: the fused step splits it into pieces of whole rows, over two threads.
        tch::set_num_threads(2);
        for (shape, (name, kind, lr)) in
            [[5i64, 7], [64, 1024]].into_iter().flat_map(|s| kinds().into_iter().map(move |k| (s, k)))
        {
            for max_norm in [None, Some(0.5)] {
                tch::manual_seed(8);
                let init = Tensor::randn(shape, (Kind::Float, Device::Cpu));
                // (deferred, fused, path): path 0 clip_and_step, 1 clip then step, 2 on the device.
                let runs: Vec<(Tensor, f64)> =
                    [(false, false, 0), (true, true, 0), (true, false, 0), (true, true, 1), (true, true, 2)]
                        .into_iter()
                        .map(|(deferred, fused, how)| {
                            let p = init.copy().set_requires_grad(true);
                            let bias = Tensor::ones([3], (Kind::Float, Device::Cpu)).set_requires_grad(true);
                            let params = vec![("p".into(), p.shallow_clone()), ("q".into(), bias.shallow_clone())];
                            let mut opt = Optimizer::new(kind, lr, params);
                            (opt.fused, opt.multi_tensor) = (fused, fused);
                            opt.make_capturable();
                            let mut norm = 0.0;
                            for t in 0..6 {
                                opt.zero_grad();
                                (((&p * (t as f64 + 1.0)).sin() * 3.0).sum(Kind::Float)
                                    + bias.square().sum(Kind::Float))
                                .backward();
                                // g . p and ||p|| per row, as weight norm knows them.
                                let norms = p.detach().norm_scalaropt_dim(2.0, [1i64].as_slice(), false);
                                let dots =
                                    (p.grad() * p.detach()).sum_dim_intlist([1i64].as_slice(), false, Kind::Float);
                                let coef = -(&dots / norms.square());
                                if deferred {
                                    opt.project_rows(&p, &dots, &norms).unwrap();
                                } else {
                                    let _ = tch::no_grad(|| p.grad().addcmul_(&p, &coef.view([-1, 1])));
                                }
                                norm = match how {
                                    0 => opt.clip_and_step(max_norm),
                                    1 => {
                                        let n = opt.clip_grad_norm(max_norm);
                                        opt.step();
                                        n
                                    }
                                    _ => {
                                        let n = opt.clip_grad_norm_on_device(max_norm).unwrap().double_value(&[]);
                                        opt.step_on_device().unwrap();
                                        opt.count_step();
                                        n
                                    }
                                };
                            }
                            (p.detach(), norm)
                        })
                        .collect();
                for (i, (p, n)) in runs.iter().enumerate().skip(1) {
                    let diff = f64::try_from((p - &runs[0].0).abs().max()).unwrap();
                    assert!(diff < 1e-5, "{name} {shape:?} {max_norm:?} run {i}: params differ by {diff}");
                    assert!(
                        (n - runs[0].1).abs() < 1e-4 * runs[0].1,
                        "{name} {shape:?} {max_norm:?} run {i}: norm {n} vs {}",
                        runs[0].1
                    );
                }
            }
        }
        // The rows' norms after a fused step that projected the gradient are the parameter's,
        // until something else writes it; none without a projection or after an unfused step.
        for (name, kind, lr) in kinds() {
            let p = Tensor::randn([4, 9], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            let mut opt = Optimizer::new(kind, lr, vec![("p".into(), p.shallow_clone())]);
            let rows = || Tensor::from_slice(&[0.1f32, 0.2, 0.3, 0.4]);
            let grad = |opt: &mut Optimizer| {
                opt.zero_grad();
                (&p * &p).sum(Kind::Float).backward();
            };
            grad(&mut opt);
            opt.project_rows(&p, &rows(), &(rows() + 1.0)).unwrap();
            opt.clip_and_step(Some(1.0));
            let norms = opt.row_norms(&p).unwrap_or_else(|| panic!("{name}: no norms after a fused step"));
            let expect = p.detach().norm_scalaropt_dim(2.0, [1i64].as_slice(), false);
            assert!(f64::try_from((&norms - &expect).abs().max()).unwrap() < 1e-6, "{name}");
            let _ = tch::no_grad(|| p.detach().g_mul_scalar_(2.0));
            assert!(opt.row_norms(&p).is_none(), "{name}: norms kept after the parameter was written");
            grad(&mut opt);
            opt.clip_and_step(Some(1.0));
            assert!(opt.row_norms(&p).is_none(), "{name}: norms without a projection");
            grad(&mut opt);
            opt.project_rows(&p, &rows(), &(rows() + 1.0)).unwrap();
            opt.fused = false;
            opt.clip_and_step(Some(1.0));
            assert!(opt.row_norms(&p).is_none(), "{name}: norms from an unfused step");
        }
        let p = Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)).set_requires_grad(true);
        let mut opt = Optimizer::new(kinds()[0].1, 0.1, vec![("p".into(), p.shallow_clone())]);
        let (stranger, rows) =
            (Tensor::zeros([2, 2], (Kind::Float, Device::Cpu)), Tensor::ones([2], (Kind::Float, Device::Cpu)));
        assert!(opt.project_rows(&stranger, &rows, &rows).is_err(), "not a parameter");
        assert!(opt.project_rows(&p, &Tensor::ones([3], (Kind::Float, Device::Cpu)), &rows).is_err(), "one per row");
    }

    #[test]
    fn trajectories_match_pytorch() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let py = root.join(".venv/bin/python");
        let out = std::process::Command::new(&py)
            .arg(root.join("tests/oracles/optim_reference.py"))
            .output()
            .expect("the project venv (make setup) provides torch for the reference script");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let reference: HashMap<String, Vec<f64>> = serde_json::from_slice(&out.stdout).unwrap();
        // Every path: the one-pass kernels, the tensor ops, and the
        // capturable ops with bias corrections computed on the device (everything).
        for path in [Path3::Fused, Path3::Ops, Path3::OnDevice, Path3::OnDeviceMultiTensor] {
            for (name, kind, lr) in kinds() {
                let ours = run(kind, lr, 25, path);
                let theirs = &reference[name];
                for (a, b) in ours.iter().zip(theirs) {
                    assert!(
                        (a - b).abs() < 1e-10 * (1.0 + b.abs()),
                        "{name} ({path:?}): ours {ours:?} torch {theirs:?}"
                    );
                }
                // And the problem really moves the parameters.
                assert!((ours[0] - 0.5).abs() > 1e-3, "{name}");
            }
        }
    }

    /// `clip_and_step` = `clip_grad_norm` + `step`, fused or not, clipping or not; in f32,
    /// the kernels' AVX2 loops agree with libtorch's ops to rounding.
    #[test]
    fn clip_and_step_equals_clip_then_step() {
        for (name, kind, lr) in kinds() {
            for max_norm in [None, Some(0.5), Some(1e6)] {
                tch::manual_seed(7);
                let init = Tensor::randn([1000], (Kind::Float, Device::Cpu));
                // clip_and_step fused and not, clip then step, and the same on the device (per-tensor
                // ops, then multi-tensor kernels).
                let runs: Vec<(Tensor, f64)> = [(0, true), (0, false), (1, false), (2, false), (2, true)]
                    .into_iter()
                    .map(|(how, fused)| {
                        let p = init.copy().set_requires_grad(true);
                        let mut opt = Optimizer::new(kind, lr, vec![("p".into(), p.shallow_clone())]);
                        opt.fused = fused;
                        opt.multi_tensor = fused;
                        opt.make_capturable();
                        let mut norm = 0.0;
                        for t in 0..10 {
                            opt.zero_grad();
                            ((&p * (t as f64 + 1.0)).sin() * 3.0).sum(Kind::Float).backward();
                            norm = match how {
                                0 => opt.clip_and_step(max_norm),
                                2 => {
                                    let n = opt.clip_grad_norm_on_device(max_norm).unwrap();
                                    opt.step_on_device().unwrap();
                                    opt.count_step();
                                    n.double_value(&[])
                                }
                                _ => {
                                    let n = opt.clip_grad_norm(max_norm);
                                    opt.step();
                                    n
                                }
                            };
                        }
                        let t = opt.step_t.as_ref().unwrap().double_value(&[]);
                        assert_eq!(t, opt.steps() as f64, "{name}: device and host step counts");
                        (p.detach(), norm)
                    })
                    .collect();
                for (p, n) in &runs[1..] {
                    let diff = f64::try_from((p - &runs[0].0).abs().max()).unwrap();
                    assert!(diff < 1e-5, "{name} {max_norm:?}: params differ by {diff}");
                    assert!((n - runs[0].1).abs() < 1e-4 * runs[0].1, "{name} {max_norm:?}: norm {n} vs {}", runs[0].1);
                }
                assert!(f64::try_from((&runs[0].0 - &init).abs().max()).unwrap() > 1e-4, "{name}: nothing moved");
            }
        }
    }

    #[test]
    fn state_round_trips_and_continues_identically() {
        let dir = std::env::temp_dir().join(format!("wndqn-opt-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        for (name, kind, lr) in kinds() {
            let p = Tensor::from_slice(&[1.0f32, -2.0, 3.0]).set_requires_grad(true);
            let mut opt = Optimizer::new(kind, lr, vec![("p".into(), p.shallow_clone())]);
            let grad_step = |opt: &mut Optimizer, p: &Tensor, t: f64| {
                opt.zero_grad();
                (p.square() * t.sin()).sum(Kind::Float).backward();
                opt.step();
            };
            for t in 0..5 {
                grad_step(&mut opt, &p, t as f64);
            }
            let path = dir.join(format!("{name}.safetensors"));
            opt.save(&path).unwrap();
            let p2 = p.detach().copy().set_requires_grad(true);
            let mut opt2 = Optimizer::new(kind, lr, vec![("p".into(), p2.shallow_clone())]);
            opt2.load(&path).unwrap();
            assert_eq!(opt2.steps(), 5);
            for ((n1, a), (_, b)) in opt.state_tensors().iter().zip(opt2.state_tensors().iter()) {
                assert!(a.equal(b), "{name} {n1}");
            }
            for t in 5..10 {
                grad_step(&mut opt, &p, t as f64);
                grad_step(&mut opt2, &p2, t as f64);
            }
            assert!(p.equal(&p2), "{name}: resumed trajectory differs");
        }
        std::fs::remove_dir_all(dir).unwrap();
    }
}
