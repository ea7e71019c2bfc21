//! Exploration schedules.

use serde::{Deserialize, Serialize};

/// Epsilon decays linearly from `start` to `end` over `decay_steps` env steps, then stays.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LinearSchedule {
    /// Value at step 0.
    pub start: f64,
    /// Final value.
    pub end: f64,
    /// Env steps over which it decays.
    pub decay_steps: u64,
}

impl LinearSchedule {
    /// Value at `step`.
    pub fn value(&self, step: u64) -> f64 {
        if self.decay_steps == 0 || step >= self.decay_steps {
            return self.end;
        }
        let f = step as f64 / self.decay_steps as f64;
        self.start + f * (self.end - self.start)
    }
}

/// Ape-X per-actor epsilon: actor `i` of `n` explores with `base^(1 + alpha * i / (n - 1))`
/// (Horgan et al. 2018 use base 0.4, alpha 7).
pub fn apex_epsilon(i: usize, n: usize, base: f64, alpha: f64) -> f64 {
    if n <= 1 {
        return base;
    }
    base.powf(1.0 + alpha * i as f64 / (n - 1) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_decay() {
        let s = LinearSchedule { start: 1.0, end: 0.1, decay_steps: 100 };
        assert_eq!(s.value(0), 1.0);
        assert!((s.value(50) - 0.55).abs() < 1e-12);
        assert_eq!(s.value(100), 0.1);
        assert_eq!(s.value(10_000), 0.1);
    }

    #[test]
    fn apex_spans_greedy_to_exploratory() {
        assert_eq!(apex_epsilon(0, 8, 0.4, 7.0), 0.4);
        assert!((apex_epsilon(7, 8, 0.4, 7.0) - 0.4f64.powi(8)).abs() < 1e-12);
    }
}
