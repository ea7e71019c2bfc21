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

/// How the actors explore: every actor on one schedule of the run's env steps, or Ape-X's fixed
/// per-actor epsilons.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Exploration {
    /// Every actor's epsilon follows this schedule of the run's env steps.
    Schedule(LinearSchedule),
    /// Actor `i` of `actors` keeps `base^(1 + alpha * i / (actors - 1))` ([`apex_epsilon`]).
    ApeX {
        /// The largest epsilon (actor 0's).
        base: f64,
        /// How fast the epsilons fall over the actors.
        alpha: f64,
        /// The number of actors.
        actors: usize,
    },
}

impl Exploration {
    /// The epsilon of actor `i` at the run's env step `step`.
    pub fn epsilon(&self, i: usize, step: u64) -> f64 {
        match *self {
            Exploration::Schedule(s) => s.value(step),
            Exploration::ApeX { base, alpha, actors } => apex_epsilon(i, actors, base, alpha),
        }
    }
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

    #[test]
    fn exploration_picks_the_schedule_or_the_actor() {
        let s = LinearSchedule { start: 1.0, end: 0.1, decay_steps: 100 };
        assert_eq!(Exploration::Schedule(s).epsilon(3, 50), s.value(50));
        let a = Exploration::ApeX { base: 0.4, alpha: 7.0, actors: 8 };
        assert_eq!((a.epsilon(0, 0), a.epsilon(7, 10_000)), (0.4, apex_epsilon(7, 8, 0.4, 7.0)));
    }
}
