//! The replay ratio: how many updates the learner owes for the env steps the actors played, and
//! how far the actors may run ahead of the learner. Both threads use this one accounting.

/// The replay ratio's accounting of one run segment.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pace {
    /// Updates per env step.
    pub ratio: f64,
    /// Env steps stored before the first update.
    pub warmup: u64,
    /// Env steps and updates at which this segment's accounting starts: 0, 0 for a fresh run or
    /// a resume with its replay memory; the checkpoint's counters otherwise, so that the emptied
    /// memory is refilled with `warmup` steps first.
    pub step_origin: u64,
    pub update_origin: u64,
}

impl Pace {
    /// Env steps in the memory at which the learner may start.
    pub fn warm_at(&self) -> u64 {
        self.step_origin + self.warmup
    }

    /// Updates the learner owes once `inserted` env steps are in the memory: one per 1/ratio
    /// steps after the warm-up.
    pub fn updates_due(&self, inserted: u64) -> u64 {
        self.update_origin + (inserted.saturating_sub(self.warm_at()) as f64 * self.ratio) as u64
    }

    /// The env steps the actors may have claimed once the learner has made `updates`: those
    /// that make its next update due, plus `slack` (the steps in flight between the threads).
    pub fn steps_allowed(&self, updates: u64, slack: u64) -> u64 {
        let done = updates.saturating_sub(self.update_origin) as f64;
        self.warm_at() + ((done + 1.0) / self.ratio) as u64 + slack
    }

    /// The env steps of one update (at least 1).
    pub fn steps_per_update(&self) -> u64 {
        (1.0 / self.ratio).ceil() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actors_never_wait_for_an_update_that_is_not_due() {
        for ratio in [0.25, 1.0, 0.1, 2.0, 1.0 / 3.0, 0.3] {
            let p = Pace { ratio, warmup: 1000, step_origin: 500, update_origin: 40 };
            for updates in 40..2000 {
                // Where the actors stop (one update's steps of slack), the learner has an update due:
                // no deadlock. Without slack they stop no more than one update's steps ahead of it.
                let allowed = p.steps_allowed(updates, p.steps_per_update());
                assert!(p.updates_due(allowed) > updates, "ratio {ratio}, updates {updates}");
                let tight = p.steps_allowed(updates, 0);
                assert!(p.updates_due(tight.saturating_sub(p.steps_per_update())) <= updates + 1, "ratio {ratio}");
            }
            assert_eq!(p.updates_due(p.warm_at()), 40);
            assert_eq!(p.updates_due(0), 40);
        }
    }
}
