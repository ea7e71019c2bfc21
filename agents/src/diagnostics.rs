//! What explains a normalization: per layer, the norm of the weight the optimizer moves (`W`, or
//! weight norm's `v`), its relative change since the last measurement (the effective step size:
//! Salimans & Kingma 2016, section 2.1, predict it shrinks as `1 / ||v||^2` under weight norm),
//! weight norm's mean scale `g` and spectral norm's `sigma`; and of the penultimate layer's
//! features on a fixed probe batch, the fraction of dormant units (Sokar et al. 2023) and the
//! effective rank (Kumar et al. 2021).

use tch::{Kind, Tensor};

use crate::qnet::QNetwork;

/// Sokar et al. (2023)'s threshold: a unit is dormant when its mean |activation| is at most
/// this fraction of the layer's average.
pub const DORMANT_TAU: f64 = 0.025;
/// Kumar et al. (2021)'s `delta`: srank keeps the singular values that make `1 - delta` of
/// their sum.
pub const SRANK_DELTA: f64 = 0.01;

/// One layer's measurements.
#[derive(Debug, Clone, PartialEq)]
pub struct LayerStats {
    /// The layer's name (`conv0`, `fc1`, `q`, ...).
    pub name: String,
    /// `||W||` (Frobenius) of the weight the optimizer moves: `W`, or weight norm's `v`.
    pub weight_norm: f64,
    /// `||W - W_prev|| / ||W_prev||` since the previous measurement (None at the first).
    pub relative_update: Option<f64>,
    /// Mean of weight norm's `g` (weight-norm layers).
    pub g_mean: Option<f64>,
    /// Spectral norm's `sigma = u . W v` (spectral layers).
    pub sigma: Option<f64>,
}

/// One measurement of a network.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// Per layer, in order.
    pub layers: Vec<LayerStats>,
    /// Fraction of the penultimate layer's units that are dormant on the probe batch.
    pub dormant_fraction: f64,
    /// Effective rank (srank) of the penultimate features on the probe batch.
    pub feature_rank: i64,
}

/// The fraction of dormant units of `features` (`[batch, units]`, after the nonlinearity):
/// unit `i` scores `mean_x |h_i(x)| / (1/N sum_j mean_x |h_j(x)|)`, dormant if `<= tau`.
pub fn dormant_fraction(features: &Tensor, tau: f64) -> f64 {
    tch::no_grad(|| {
        let per_unit = features.abs().mean_dim([0i64].as_slice(), false, Kind::Float);
        let avg = per_unit.mean(Kind::Float);
        let score = per_unit / avg.clamp_min(1e-12);
        f64::try_from(score.le(tau).to_kind(Kind::Float).mean(Kind::Float)).unwrap_or(f64::NAN)
    })
}

/// srank (Kumar et al. 2021): the least `k` whose `k` largest singular values of `features`
/// (`[batch, units]`) make at least `1 - delta` of their sum; 0 for features that are all zero.
pub fn srank(features: &Tensor, delta: f64) -> i64 {
    tch::no_grad(|| {
        let s = Vec::<f64>::try_from(features.to_kind(Kind::Double).svd(true, false).1).unwrap_or_default();
        let total: f64 = s.iter().sum();
        if total <= 0.0 {
            return 0;
        }
        let mut acc = 0.0;
        for (k, v) in s.iter().enumerate() {
            acc += v;
            if acc >= (1.0 - delta) * total {
                return k as i64 + 1;
            }
        }
        s.len() as i64
    })
}

/// Measurements of one network over a run: keeps each layer's weight from the last one.
#[derive(Debug, Default)]
pub struct Diagnostics {
    prev: Vec<Tensor>,
}

impl Diagnostics {
    /// Measure `net`, its features on `probe` (observations as the network takes them).
    pub fn measure(&mut self, net: &QNetwork, probe: &Tensor) -> Report {
        tch::no_grad(|| {
            let scalar = |t: Tensor| f64::try_from(t.to_kind(Kind::Double)).unwrap_or(f64::NAN);
            let named = net.named_layers();
            let first = self.prev.len() != named.len();
            let mut layers = Vec::with_capacity(named.len());
            for (i, (name, l)) in named.iter().enumerate() {
                let w = l.weight.detach();
                let norm = scalar(w.norm());
                let relative_update =
                    (!first).then(|| scalar((&w - &self.prev[i]).norm()) / scalar(self.prev[i].norm()));
                layers.push(LayerStats {
                    name: name.clone(),
                    weight_norm: norm,
                    relative_update,
                    g_mean: l.g.as_ref().map(|g| scalar(g.mean(Kind::Float))),
                    sigma: l.sigma().map(scalar),
                });
            }
            self.prev = named.iter().map(|(_, l)| l.weight.detach().copy()).collect();
            let features = net.penultimate_features(probe);
            Report {
                layers,
                dormant_fraction: dormant_fraction(&features, DORMANT_TAU),
                feature_rank: srank(&features, SRANK_DELTA),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::Device;

    #[test]
    fn srank_counts_the_directions_that_carry_the_features() {
        tch::manual_seed(0);
        let opts = (Kind::Float, Device::Cpu);
        // Rank 5 exactly: 256 samples of 5 random directions in 64 dimensions.
        let low = Tensor::randn([256, 5], opts).matmul(&Tensor::randn([5, 64], opts));
        assert_eq!(srank(&low, SRANK_DELTA), 5);
        // Full rank, but one direction 1000x the others: srank sees 1 of 64.
        let mut scales = vec![1e-3f32; 64];
        scales[0] = 1.0;
        let skew = Tensor::randn([256, 64], opts) * Tensor::from_slice(&scales);
        assert_eq!(srank(&skew, 0.1), 1);
        assert!(srank(&Tensor::randn([256, 64], opts), SRANK_DELTA) > 50);
        assert_eq!(srank(&Tensor::zeros([8, 4], opts), SRANK_DELTA), 0);
    }

    #[test]
    fn dormant_units_are_those_far_below_the_average() {
        let opts = (Kind::Float, Device::Cpu);
        // 10 units: 3 dead (always 0), 1 at 1% of the others' activity, 6 active.
        let mut cols = vec![0f32, 0.0, 0.0, 0.01];
        cols.extend([1.0f32; 6]);
        let h = Tensor::ones([32, 10], opts) * Tensor::from_slice(&cols);
        // Average activity (6.01 / 10) -> the 1% unit scores 0.0166 <= 0.025: dormant too.
        assert!((dormant_fraction(&h, DORMANT_TAU) - 0.4).abs() < 1e-6);
        assert_eq!(dormant_fraction(&Tensor::ones([4, 3], opts), DORMANT_TAU), 0.0);
    }
}
