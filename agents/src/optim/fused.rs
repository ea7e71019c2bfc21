//! One-pass CPU kernels for the optimizer rules (Adam, Adamax, RMSProp) and the gradient norm.
//!
//! Why: written with tensor ops, an Adam step makes about ten passes over memory (lerp, square,
//! lerp, sqrt, div, add, mul, addcdiv, and two more for gradient clipping), each a separate
//! libtorch kernel with its own temporaries; libtorch's fused Adam is not reachable from `tch`.
//! These loops read each element once, keep it in registers, and fold the clipping coefficient
//! into the gradient read (docs/BENCHMARKS.md has what that buys).
//!
//! The arithmetic follows `torch.optim` element by element (f32 and f64); the optimizer tests
//! check the trajectories against PyTorch. They run through [`crate::kernels::dispatch`]: an
//! AVX2 build where the CPU has one, denormals flushed to zero.

use crate::kernels::{dispatch, Real};

/// Adam hyper-parameters for one step (`torch.optim.Adam`, `foreach=False`).
#[derive(Clone, Copy)]
pub(crate) struct AdamStep {
    /// Multiplies every gradient as it is read (the clipping coefficient, or 1).
    pub gscale: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// `lr / (1 - beta1^t)`.
    pub step_size: f64,
    /// `sqrt(1 - beta2^t)`.
    pub bc2_sqrt: f64,
    pub eps: f64,
}

/// Adamax hyper-parameters for one step (`torch.optim.Adamax`).
#[derive(Clone, Copy)]
pub(crate) struct AdamaxStep {
    pub gscale: f64,
    pub beta1: f64,
    pub beta2: f64,
    /// `lr / (1 - beta1^t)`.
    pub clr: f64,
    pub eps: f64,
}

/// RMSProp hyper-parameters for one step (`torch.optim.RMSprop`).
#[derive(Clone, Copy)]
pub(crate) struct RmsPropStep {
    pub gscale: f64,
    pub alpha: f64,
    pub eps: f64,
    pub lr: f64,
    /// Subtract the squared mean gradient (the second state buffer holds the mean).
    pub centered: bool,
    /// Momentum (the third state buffer holds it; 0 = none).
    pub momentum: f64,
}

/// One step of a rule that has a one-pass kernel: what [`super::Rule::fused`] gives.
#[derive(Clone, Copy)]
pub(crate) enum Pass {
    Adam(AdamStep),
    Adamax(AdamaxStep),
    RmsProp(RmsPropStep),
}

impl Pass {
    /// The same step with its gradients multiplied by `gscale` as they are read.
    pub(crate) fn scaled(self, gscale: f64) -> Pass {
        match self {
            Pass::Adam(s) => Pass::Adam(AdamStep { gscale, ..s }),
            Pass::Adamax(s) => Pass::Adamax(AdamaxStep { gscale, ..s }),
            Pass::RmsProp(s) => Pass::RmsProp(RmsPropStep { gscale, ..s }),
        }
    }

    /// Run the step over one span (see [`rows_generic`]) with the rule's state buffers
    /// (`state[k]` empty where the rule has no buffer `k`).
    pub(crate) fn run<T: Real>(
        self,
        p: &mut [T],
        g: &[T],
        state: [&mut [T]; 3],
        term: Option<&[T]>,
        row_sq: &mut [f64],
    ) {
        match self {
            Pass::Adam(s) => adam(p, g, state, s, term, row_sq),
            Pass::Adamax(s) => adamax(p, g, state, s, term, row_sq),
            Pass::RmsProp(s) => rmsprop(p, g, state, s, term, row_sq),
        }
    }
}

#[inline(always)]
fn sum_sq_generic<T: Real>(g: &[T]) -> f64 {
    // Eight partial sums so the loop vectorizes without reassociating one long chain.
    let mut acc = [T::of(0.0); 8];
    let chunks = g.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for k in 0..8 {
            acc[k] = acc[k] + c[k] * c[k];
        }
    }
    let mut total: f64 = acc.iter().map(|a| a.to_f64()).sum();
    for &x in rest {
        total += (x * x).to_f64();
    }
    total
}

/// Centered RMSProp's variance `E[g^2] - E[g]^2`, clamped at 0. Exactly it is never negative,
/// but rounded it can be (two nearly equal averages), and with denormals flushed it can be
/// below 0 by a normal number: a dead unit's `E[g^2]` is flushed to 0 while its `E[g]`, near the
/// square root of it, is not, and a gradient of 1e-19 then gives `0 - 1.2e-38` (the test below),
/// whose square root is a NaN: without the clamp, a weight-norm MinAtar training run with the
/// flush ended in a NaN loss. torch.optim takes the square root unclamped; the two agree
/// wherever it is finite.
#[inline(always)]
fn variance<T: Real>(sq: T, mean: T) -> T {
    let d = sq - mean * mean;
    if d > T::of(0.0) {
        d
    } else {
        T::of(0.0)
    }
}

/// One optimizer rule's pass over a span: `p` the weights, `g` the gradient, `s` its state
/// buffers (up to three; an empty one where the rule has fewer). With `TERM`, the gradient read
/// is `g + c p` (before `p` moves).
pub(crate) trait SpanStep: Copy {
    fn span<T: Real, const TERM: bool>(self, p: &mut [T], g: &[T], s: [&mut [T]; 3], c: T);
}

/// The gradient as a rule reads it: `(g + c p) * gscale` with `TERM`, `g * gscale` without (a
/// function, not a closure, so that it inlines into the AVX2 loop).
#[inline(always)]
fn read<T: Real, const TERM: bool>(g: T, p: T, c: T, gscale: T) -> T {
    if TERM {
        (g + p * c) * gscale
    } else {
        g * gscale
    }
}

/// Elements `r` of a state buffer, or the empty buffer of a rule without it.
#[inline(always)]
fn part<T>(x: &mut [T], r: std::ops::Range<usize>) -> &mut [T] {
    if x.is_empty() {
        x
    } else {
        &mut x[r]
    }
}

/// The optimizers' row driver. `term` is a per-row term of the gradient, `coef[r] * p[r]` for
/// every row `r` of a parameter (rows of equal length, the leading axis): weight norm's share of
/// `dL/dv` (paper eq. 3), added as the gradient is read instead of in a pass of its own (see
/// `Optimizer::project_rows`); with it, `row_sq[r]` receives the sum of squares of row `r` of
/// the updated `p` (weight norm's `||v||^2` for the next forward pass), summed while the row is
/// in cache. Trait methods inlined into this loop, no closures: a closure is a function of its
/// own, compiled without the AVX2 of the `dispatch!` wrapper (it cost a 4x slower update pass).
#[inline(always)]
fn rows_generic<T: Real, S: SpanStep>(
    p: &mut [T],
    g: &[T],
    state: [&mut [T]; 3],
    s: S,
    term: Option<&[T]>,
    row_sq: &mut [f64],
) {
    let Some(coef) = term else {
        return s.span::<T, false>(p, g, state, T::of(0.0));
    };
    let row = p.len() / coef.len().max(1);
    let [a, b, m] = state;
    for (r, &c) in coef.iter().enumerate() {
        let span = r * row..(r + 1) * row;
        let st = [part(a, span.clone()), part(b, span.clone()), part(m, span.clone())];
        s.span::<T, true>(&mut p[span.clone()], &g[span.clone()], st, c);
        if let Some(out) = row_sq.get_mut(r) {
            *out = sum_sq_generic(&p[span]);
        }
    }
}

impl SpanStep for AdamStep {
    /// `a` is Adam's `exp_avg`, `b` its `exp_avg_sq`.
    #[inline(always)]
    fn span<T: Real, const TERM: bool>(self, p: &mut [T], g: &[T], [m, v, _]: [&mut [T]; 3], c: T) {
        let n = p.len();
        let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
        let s = self;
        let (gs, w1, b2, w2) = (T::of(s.gscale), T::of(1.0 - s.beta1), T::of(s.beta2), T::of(1.0 - s.beta2));
        let (neg_step, bc2, eps) = (T::of(-s.step_size), T::of(s.bc2_sqrt), T::of(s.eps));
        for i in 0..n {
            let gi = read::<T, TERM>(g[i], p[i], c, gs);
            // exp_avg.lerp_(grad, 1 - beta1)
            let mi = m[i] + w1 * (gi - m[i]);
            // exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
            let vi = v[i] * b2 + w2 * gi * gi;
            // param.addcdiv_(exp_avg, exp_avg_sq.sqrt() / bc2_sqrt + eps, value=-step_size)
            let denom = vi.sqrt() / bc2 + eps;
            p[i] = p[i] + neg_step * mi / denom;
            m[i] = mi;
            v[i] = vi;
        }
    }
}

impl SpanStep for AdamaxStep {
    /// `a` is Adamax's `exp_avg`, `b` its `exp_inf`.
    #[inline(always)]
    fn span<T: Real, const TERM: bool>(self, p: &mut [T], g: &[T], [m, u, _]: [&mut [T]; 3], c: T) {
        let n = p.len();
        let (g, m, u) = (&g[..n], &mut m[..n], &mut u[..n]);
        let s = self;
        let (gs, w1, b2) = (T::of(s.gscale), T::of(1.0 - s.beta1), T::of(s.beta2));
        let (neg_clr, eps) = (T::of(-s.clr), T::of(s.eps));
        for i in 0..n {
            let gi = read::<T, TERM>(g[i], p[i], c, gs);
            let mi = m[i] + w1 * (gi - m[i]);
            // exp_inf = max(beta2 * exp_inf, |grad| + eps)
            let a = gi.abs() + eps;
            let b = u[i] * b2;
            let ui = if b > a { b } else { a };
            p[i] = p[i] + neg_clr * mi / ui;
            m[i] = mi;
            u[i] = ui;
        }
    }
}

impl SpanStep for RmsPropStep {
    /// `s` is RMSProp's `square_avg`, `grad_avg` (read and written when centered) and
    /// `momentum_buffer` (with momentum).
    #[inline(always)]
    fn span<T: Real, const TERM: bool>(self, p: &mut [T], g: &[T], [sq, ga, mb]: [&mut [T]; 3], c: T) {
        let n = p.len();
        let (g, sq) = (&g[..n], &mut sq[..n]);
        let s = self;
        let (gs, a, w, eps, neg_lr) =
            (T::of(s.gscale), T::of(s.alpha), T::of(1.0 - s.alpha), T::of(s.eps), T::of(-s.lr));
        // One loop per case, so that none branches per element.
        match (s.centered, s.momentum > 0.0) {
            (true, true) => {
                let (ga, mb, mom) = (&mut ga[..n], &mut mb[..n], T::of(s.momentum));
                for i in 0..n {
                    let gi = read::<T, TERM>(g[i], p[i], c, gs);
                    // square_avg.mul_(alpha).addcmul_(grad, grad, value=1 - alpha)
                    let si = sq[i] * a + w * gi * gi;
                    // grad_avg.lerp_(grad, 1 - alpha)
                    let mi = ga[i] + w * (gi - ga[i]);
                    // avg = square_avg.addcmul(grad_avg, grad_avg, value=-1).sqrt_().add_(eps),
                    // the variance clamped at 0 (see `variance`)
                    let avg = variance(si, mi).sqrt() + eps;
                    // buf.mul_(momentum).addcdiv_(grad, avg); param.add_(buf, alpha=-lr)
                    let bi = mb[i] * mom + gi / avg;
                    p[i] = p[i] + neg_lr * bi;
                    (sq[i], ga[i], mb[i]) = (si, mi, bi);
                }
            }
            (true, false) => {
                let ga = &mut ga[..n];
                for i in 0..n {
                    let gi = read::<T, TERM>(g[i], p[i], c, gs);
                    let si = sq[i] * a + w * gi * gi;
                    let mi = ga[i] + w * (gi - ga[i]);
                    // param.addcdiv_(grad, avg, value=-lr)
                    p[i] = p[i] + neg_lr * (gi / (variance(si, mi).sqrt() + eps));
                    (sq[i], ga[i]) = (si, mi);
                }
            }
            (false, true) => {
                let (mb, mom) = (&mut mb[..n], T::of(s.momentum));
                for i in 0..n {
                    let gi = read::<T, TERM>(g[i], p[i], c, gs);
                    let si = sq[i] * a + w * gi * gi;
                    let bi = mb[i] * mom + gi / (si.sqrt() + eps);
                    p[i] = p[i] + neg_lr * bi;
                    (sq[i], mb[i]) = (si, bi);
                }
            }
            (false, false) => {
                for i in 0..n {
                    let gi = read::<T, TERM>(g[i], p[i], c, gs);
                    let si = sq[i] * a + w * gi * gi;
                    p[i] = p[i] + neg_lr * (gi / (si.sqrt() + eps));
                    sq[i] = si;
                }
            }
        }
    }
}

dispatch!(sum_sq, sum_sq_generic, (g: &[T]) -> f64);
dispatch!(adam, rows_generic, (p: &mut [T], g: &[T], state: [&mut [T]; 3], s: AdamStep, term: Option<&[T]>, row_sq: &mut [f64]) -> ());
dispatch!(adamax, rows_generic, (p: &mut [T], g: &[T], state: [&mut [T]; 3], s: AdamaxStep, term: Option<&[T]>, row_sq: &mut [f64]) -> ());
dispatch!(rmsprop, rows_generic, (p: &mut [T], g: &[T], state: [&mut [T]; 3], s: RmsPropStep, term: Option<&[T]>, row_sq: &mut [f64]) -> ());

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn centered_rmsprop_stays_finite_when_the_squared_average_was_flushed() {
        // A dead unit's state after its squared average decayed below f32's normal range (and
        // was flushed) while its mean gradient did not; then a tiny gradient: unclamped, the
        // variance is 0 - 1.21e-38 (the new squared average, 4.5e-39, is flushed too).
        let step = RmsPropStep { gscale: 1.0, alpha: 0.95, eps: 0.01, lr: 2.5e-4, centered: true, momentum: 0.95 };
        for momentum in [0.95, 0.0] {
            let (mut p, g) = (vec![0.5f32; 8], vec![3e-19f32; 8]);
            let (mut sq, mut ga, mut mb) = (vec![0.0f32; 8], vec![1e-19f32; 8], vec![0.0f32; 8]);
            rmsprop(&mut p, &g, [&mut sq, &mut ga, &mut mb], RmsPropStep { momentum, ..step }, None, &mut []);
            assert!(p.iter().all(|x| x.is_finite() && (x - 0.5).abs() < 1e-6), "momentum {momentum}: {p:?}");
        }
    }
}
