//! Every random stream of a run, derived from one seed in one place, so that a run is
//! determined by `run.seed` and no two streams share a seed by accident.
//!
//! A run's segment seed is `run.seed` for its first segment and a mix of it with the segment's
//! number after each resume (a resumed segment draws fresh streams). Each stream is that seed
//! mixed with the stream's own key by [`mix`] (SplitMix64's finalizer).

/// One random stream of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    /// The segment seed of segment `n` (> 0) of a resumed run.
    Segment(u64),
    /// libtorch's generator: network initialization.
    NetworkInit,
    /// The replay thread's batch sampling.
    ReplaySampling,
    /// The learner's data-dependent init batch.
    DataInit,
    /// The learner's diagnostics probe batch.
    DiagnosticsProbe,
    /// Actor `i`'s environment (no-ops, sticky actions).
    ActorEnv(usize),
    /// Actor `i`'s exploration.
    ActorExploration(usize),
    /// The greedy evaluation at env step `step`.
    Evaluation(u64),
}

impl Stream {
    fn key(self) -> u64 {
        match self {
            Stream::Segment(n) => 0x5E60_0000 + n,
            Stream::NetworkInit => 0xC0FFEE,
            Stream::ReplaySampling => 2,
            Stream::DataInit => 0xDA7A,
            Stream::DiagnosticsProbe => 0xD1A6_0000_0000,
            Stream::ActorEnv(i) => 100 + i as u64,
            Stream::ActorExploration(i) => 200 + i as u64,
            Stream::Evaluation(step) => 300 + step,
        }
    }
}

/// The seed of `stream` under `seed`.
pub fn derive(seed: u64, stream: Stream) -> u64 {
    mix(seed, stream.key())
}

/// The segment seed of a run: its own seed for the first segment, a fresh one for each resume.
pub fn segment(seed: u64, generation: u64) -> u64 {
    if generation == 0 {
        seed
    } else {
        derive(seed, Stream::Segment(generation))
    }
}

/// `seed` and `k` mixed into one well-spread seed.
fn mix(seed: u64, k: u64) -> u64 {
    let mut x = seed ^ k.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    x ^= x >> 31;
    x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x ^ (x >> 29)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn streams_of_a_run_are_distinct_and_stable() {
        let streams = [
            Stream::NetworkInit,
            Stream::ReplaySampling,
            Stream::DataInit,
            Stream::ActorEnv(0),
            Stream::ActorEnv(1),
            Stream::ActorExploration(0),
            Stream::Evaluation(0),
            Stream::Evaluation(250_000),
        ];
        let seeds: std::collections::BTreeSet<u64> = streams.iter().map(|&s| derive(1, s)).collect();
        assert_eq!(seeds.len(), streams.len());
        assert_eq!(segment(7, 0), 7);
        assert_ne!(segment(7, 1), segment(7, 2));
        assert_eq!(derive(1, Stream::ReplaySampling), derive(1, Stream::ReplaySampling));
    }
}
