//! Replay memory. Each observation frame is stored once; stacked observations (and the next
//! observation) are rebuilt at sampling time and never reach across an episode start: frames
//! before the start are replaced by the episode's first frame, exactly as the environment's
//! frame stack pads at reset.
//!
//! The memory is split into one shard per actor, each a ring of entries, so that an actor's
//! transitions stay in order whatever the other actors do. One thread writes it: the replay
//! thread, which receives every actor's transitions over a channel (no actor ever waits on the
//! memory) and also samples the learner's batches, uniformly over all stored transitions (a
//! shard is picked in proportion to its size). Each shard has a mutex because the memory is
//! shared with other threads for a few reads (the learner's data-init batch, the logged size, the
//! checkpoint of the replay memory); in steady state only the replay thread takes them, so they
//! are never contended. The same code stores 84x84 u8 frames (stack 4) and float vectors (stack 1).
//!
//! Entry `i` of a shard holds observation frame `f_i` and, once the actor acted from it, the
//! action, reward and end flags of the transition `s_i -> s_{i+1}`. The final observation of an
//! episode is stored too (so truncated transitions bootstrap from the true next state) but has no
//! action, so it is never sampled as a start.
//!
//! [`batch`]: what a sample becomes on its way to the learner's device.

mod batch;

pub use batch::{Batch, BatchPrep, TensorBatch};

use std::sync::Mutex;

use rand::Rng;
use tch::Device;

const FIRST: u8 = 1;
const ACTED: u8 = 2;
const TERMINATED: u8 = 4;
const TRUNCATED: u8 = 8;

/// Borrowed observation data, the one type the agents crate takes observations in: u8 frames
/// (the newest frame for the memory, the whole stack for the policy) or a float vector.
#[derive(Debug, Clone, Copy)]
pub enum ObsRef<'a> {
    /// u8 frames: one frame, or a stack of them, oldest first.
    Frame(&'a [u8]),
    /// A float vector.
    Vector(&'a [f32]),
}

/// One step of an actor, as the memory records it.
#[derive(Debug, Clone, Copy)]
pub struct Transition<'a> {
    /// Action index taken from the previous observation.
    pub action: usize,
    /// Reward for learning (clipped if configured).
    pub reward: f32,
    /// A true end: no bootstrapping from `next`.
    pub terminated: bool,
    /// Cut by a time limit: bootstrap from `next`.
    pub truncated: bool,
    /// The observation after the step.
    pub next: ObsRef<'a>,
}

/// Storage element (u8 frames or f32 vectors).
pub trait Element: Copy + Default + Send + bytemuck::Pod + 'static {
    /// Extract from an [`ObsRef`] of the matching kind.
    fn from_obs(o: ObsRef<'_>) -> &[Self];
}
impl Element for u8 {
    fn from_obs(o: ObsRef<'_>) -> &[u8] {
        match o {
            ObsRef::Frame(f) => f,
            ObsRef::Vector(_) => panic!("frame memory given a vector observation"),
        }
    }
}
impl Element for f32 {
    fn from_obs(o: ObsRef<'_>) -> &[f32] {
        match o {
            ObsRef::Vector(v) => v,
            ObsRef::Frame(_) => panic!("vector memory given a frame observation"),
        }
    }
}

struct Shard<T> {
    cap: usize,
    obs: Vec<T>,
    action: Vec<u8>,
    reward: Vec<f32>,
    flags: Vec<u8>,
    /// Entries ever written (the next entry's absolute index).
    next: u64,
}

impl<T: Element> Shard<T> {
    fn new(cap: usize, obs_len: usize) -> Self {
        // `vec![0; n]` is a calloc: pages become resident only when written.
        Shard {
            cap,
            obs: vec![T::default(); cap * obs_len],
            action: vec![0; cap],
            reward: vec![0.0; cap],
            flags: vec![0; cap],
            next: 0,
        }
    }

    fn oldest(&self) -> u64 {
        self.next.saturating_sub(self.cap as u64)
    }

    fn push(&mut self, obs: &[T], flags: u8) {
        let slot = (self.next % self.cap as u64) as usize;
        let n = obs.len();
        self.obs[slot * n..(slot + 1) * n].copy_from_slice(obs);
        self.flags[slot] = flags;
        self.action[slot] = 0;
        self.reward[slot] = 0.0;
        self.next += 1;
    }

    fn slot(&self, i: u64) -> usize {
        (i % self.cap as u64) as usize
    }

    /// Absolute indices of the `k` frames of the stack ending at `i`, oldest first, padded with
    /// the episode's first frame; `None` if they are no longer (or not yet) in the ring.
    fn stack_indices(&self, i: u64, k: usize, out: &mut [u64]) -> bool {
        let oldest = self.oldest();
        let mut cur = i;
        for pos in (0..k).rev() {
            out[pos] = cur;
            if pos > 0 {
                if self.flags[self.slot(cur)] & FIRST != 0 {
                    continue; // pad with the first frame
                }
                if cur == 0 || cur - 1 < oldest {
                    return false;
                }
                cur -= 1;
            }
        }
        true
    }

    /// Whether entry `i` starts a sampleable transition.
    fn valid(&self, i: u64, k: usize, idx: &mut [u64]) -> bool {
        i >= self.oldest()
            && i + 1 < self.next
            && self.flags[self.slot(i)] & ACTED != 0
            && self.stack_indices(i, k, idx)
    }

    fn transitions(&self) -> usize {
        (self.next - self.oldest()) as usize
    }
}

/// Replay memory over element type `T`.
pub struct Memory<T> {
    shards: Vec<Mutex<Shard<T>>>,
    obs_len: usize,
    stack: usize,
}

/// The two memories wndqn uses.
pub type FrameMemory = Memory<u8>;
/// Vector-observation memory.
pub type VectorMemory = Memory<f32>;

impl<T: Element> Memory<T> {
    /// `capacity` entries split over `shards` rings; each entry holds `obs_len` elements and
    /// observations stack `stack` entries.
    pub fn new(capacity: usize, shards: usize, obs_len: usize, stack: usize) -> Self {
        assert!(shards > 0 && capacity >= shards * (stack + 2), "replay capacity too small for {shards} shards");
        let per = capacity / shards;
        Memory { shards: (0..shards).map(|_| Mutex::new(Shard::new(per, obs_len))).collect(), obs_len, stack }
    }

    fn lock(&self, shard: usize) -> std::sync::MutexGuard<'_, Shard<T>> {
        // A panicking actor already stops the run; the data itself stays consistent.
        self.shards[shard].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// First observation of an episode.
    pub fn start_episode(&self, shard: usize, obs: ObsRef<'_>) {
        self.lock(shard).push(T::from_obs(obs), FIRST);
    }

    /// The actor took `t.action` from the last stored observation and saw `t.next`.
    pub fn record_step(&self, shard: usize, t: Transition<'_>) {
        let Transition { action, reward, terminated, truncated, next } = t;
        let mut s = self.lock(shard);
        assert!(s.next > 0, "record_step before start_episode");
        let last = s.slot(s.next - 1);
        s.action[last] = action as u8;
        s.reward[last] = reward;
        s.flags[last] |= ACTED | if terminated { TERMINATED } else { 0 } | if truncated { TRUNCATED } else { 0 };
        s.push(T::from_obs(next), 0);
    }

    /// Stored entries (≈ transitions) over all shards.
    pub fn len(&self) -> usize {
        (0..self.shards.len()).map(|i| self.lock(i).transitions()).sum()
    }

    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Write the whole memory (every shard's ring and counters) to `w`.
    pub fn save(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        w.write_all(&(self.shards.len() as u64).to_le_bytes())?;
        w.write_all(&(self.obs_len as u64).to_le_bytes())?;
        w.write_all(&(self.stack as u64).to_le_bytes())?;
        for i in 0..self.shards.len() {
            let s = self.lock(i);
            w.write_all(&(s.cap as u64).to_le_bytes())?;
            w.write_all(&s.next.to_le_bytes())?;
            w.write_all(bytemuck::cast_slice(&s.obs[..]))?;
            w.write_all(&s.action)?;
            w.write_all(bytemuck::cast_slice(&s.reward[..]))?;
            w.write_all(&s.flags)?;
        }
        Ok(())
    }

    /// Read what [`Memory::save`] wrote into this (same-shaped) memory.
    pub fn load(&self, r: &mut impl std::io::Read) -> std::io::Result<()> {
        let mut u = [0u8; 8];
        let mut read_u64 = |r: &mut dyn std::io::Read| -> std::io::Result<u64> {
            r.read_exact(&mut u)?;
            Ok(u64::from_le_bytes(u))
        };
        let bad = |m: String| std::io::Error::new(std::io::ErrorKind::InvalidData, m);
        let (n, obs_len, stack) = (read_u64(r)?, read_u64(r)?, read_u64(r)?);
        if n as usize != self.shards.len() || obs_len as usize != self.obs_len || stack as usize != self.stack {
            return Err(bad(format!(
                "saved replay has {n} shards of {obs_len}x{stack}, this run needs {} of {}x{}",
                self.shards.len(),
                self.obs_len,
                self.stack
            )));
        }
        for i in 0..self.shards.len() {
            let mut s = self.lock(i);
            let (cap, next) = (read_u64(r)?, read_u64(r)?);
            if cap as usize != s.cap {
                return Err(bad(format!("saved replay shard holds {cap} entries, this run's holds {}", s.cap)));
            }
            s.next = next;
            r.read_exact(bytemuck::cast_slice_mut(&mut s.obs[..]))?;
            r.read_exact(&mut s.action)?;
            r.read_exact(bytemuck::cast_slice_mut(&mut s.reward[..]))?;
            r.read_exact(&mut s.flags)?;
        }
        Ok(())
    }

    /// Sample `batch` transitions uniformly (with replacement); `None` until a few are stored.
    pub fn sample<R: Rng>(&self, batch: usize, rng: &mut R) -> Option<Batch<T>> {
        let sizes: Vec<usize> = (0..self.shards.len()).map(|i| self.lock(i).transitions()).collect();
        let total: usize = sizes.iter().sum();
        if total < self.stack + 2 {
            return None;
        }
        let mut picks = vec![0usize; self.shards.len()];
        for _ in 0..batch {
            let mut r = rng.gen_range(0..total);
            let mut s = 0;
            while r >= sizes[s] {
                r -= sizes[s];
                s += 1;
            }
            picks[s] += 1;
        }
        let row = self.stack * self.obs_len;
        let mut out = Batch {
            obs: vec![T::default(); batch * row],
            next_obs: vec![T::default(); batch * row],
            actions: Vec::with_capacity(batch),
            rewards: Vec::with_capacity(batch),
            terminated: Vec::with_capacity(batch),
        };
        let k = self.stack;
        let n = self.obs_len;
        let mut idx = vec![0u64; k];
        let mut nidx = vec![0u64; k];
        let mut b = 0;
        for (si, &count) in picks.iter().enumerate() {
            if count == 0 {
                continue;
            }
            let s = self.lock(si);
            let mut got = 0;
            let mut tries = 0;
            while got < count {
                tries += 1;
                if tries > 1000 * count {
                    return None;
                }
                let i = rng.gen_range(s.oldest()..s.next);
                if !s.valid(i, k, &mut idx) {
                    continue;
                }
                // Next stack: shift by one, the new frame is i + 1.
                nidx[..k - 1].copy_from_slice(&idx[1..]);
                nidx[k - 1] = i + 1;
                for (dst, &j) in out.obs[b * row..(b + 1) * row].chunks_exact_mut(n).zip(idx.iter()) {
                    let sl = s.slot(j);
                    dst.copy_from_slice(&s.obs[sl * n..(sl + 1) * n]);
                }
                for (dst, &j) in out.next_obs[b * row..(b + 1) * row].chunks_exact_mut(n).zip(nidx.iter()) {
                    let sl = s.slot(j);
                    dst.copy_from_slice(&s.obs[sl * n..(sl + 1) * n]);
                }
                let sl = s.slot(i);
                out.actions.push(s.action[sl] as i64);
                out.rewards.push(s.reward[sl]);
                out.terminated.push(if s.flags[sl] & TERMINATED != 0 { 1.0 } else { 0.0 });
                b += 1;
                got += 1;
            }
        }
        Some(out)
    }
}

/// A frame or a vector memory, chosen by the environment's observation kind.
pub enum AnyMemory {
    /// u8 frames, stacked at sampling.
    Frames(FrameMemory),
    /// f32 vectors.
    Vectors(VectorMemory),
}

impl AnyMemory {
    /// A memory of u8 items (`bytes`) or f32 vectors, `obs_len` values an item, `stack` items an
    /// observation (84x84 frames stacked 4, MinAtar grids and vectors 1).
    pub fn new(capacity: usize, shards: usize, bytes: bool, obs_len: usize, stack: usize) -> AnyMemory {
        if bytes {
            AnyMemory::Frames(FrameMemory::new(capacity, shards, obs_len, stack))
        } else {
            AnyMemory::Vectors(VectorMemory::new(capacity, shards, obs_len, stack))
        }
    }
    /// See [`Memory::start_episode`].
    pub fn start_episode(&self, shard: usize, obs: ObsRef<'_>) {
        match self {
            AnyMemory::Frames(m) => m.start_episode(shard, obs),
            AnyMemory::Vectors(m) => m.start_episode(shard, obs),
        }
    }
    /// See [`Memory::record_step`].
    pub fn record_step(&self, shard: usize, t: Transition<'_>) {
        match self {
            AnyMemory::Frames(m) => m.record_step(shard, t),
            AnyMemory::Vectors(m) => m.record_step(shard, t),
        }
    }
    /// Stored transitions.
    pub fn len(&self) -> usize {
        match self {
            AnyMemory::Frames(m) => m.len(),
            AnyMemory::Vectors(m) => m.len(),
        }
    }
    /// Whether nothing is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// See [`Memory::save`].
    pub fn save(&self, w: &mut impl std::io::Write) -> std::io::Result<()> {
        match self {
            AnyMemory::Frames(m) => m.save(w),
            AnyMemory::Vectors(m) => m.save(w),
        }
    }
    /// See [`Memory::load`].
    pub fn load(&self, r: &mut impl std::io::Read) -> std::io::Result<()> {
        match self {
            AnyMemory::Frames(m) => m.load(r),
            AnyMemory::Vectors(m) => m.load(r),
        }
    }
    /// Sample a batch as host tensors prepared by `prep` (`obs_shape` is one observation's
    /// shape); the learner finishes it with [`BatchPrep::to_learner`].
    pub fn sample_tensors<R: Rng>(
        &self,
        batch: usize,
        rng: &mut R,
        obs_shape: &[i64],
        prep: &BatchPrep,
    ) -> Option<TensorBatch> {
        match self {
            AnyMemory::Frames(m) => m.sample(batch, rng).map(|b| prep.host_frames(&b, obs_shape)),
            AnyMemory::Vectors(m) => m.sample(batch, rng).map(|b| prep.host(b.to_tensors(obs_shape, Device::Cpu))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::StdRng;
    use rand::SeedableRng;

    #[test]
    fn stacks_never_mix_episodes() {
        let mem = FrameMemory::new(200, 2, 2, 4);
        let mut rng = StdRng::seed_from_u64(0);
        for (shard, first_id) in [0u8, 100u8].into_iter().enumerate() {
            for id in first_id..first_id + 12 {
                let len = rng.gen_range(1..9u8);
                mem.start_episode(shard, ObsRef::Frame(&[id, 0]));
                for t in 1..=len {
                    let term = t == len;
                    mem.record_step(
                        shard,
                        Transition {
                            action: t as usize,
                            reward: t as f32,
                            terminated: term,
                            truncated: false,
                            next: ObsRef::Frame(&[id, t]),
                        },
                    );
                }
            }
        }
        for _ in 0..50 {
            let b = mem.sample(32, &mut rng).unwrap();
            for r in 0..32 {
                let s = &b.obs[r * 8..(r + 1) * 8];
                let ns = &b.next_obs[r * 8..(r + 1) * 8];
                let e = s[6];
                let t = s[7];
                for f in 0..4 {
                    assert_eq!(s[2 * f], e, "stack mixes episodes: {s:?}");
                    assert_eq!(ns[2 * f], e, "next stack mixes episodes: {ns:?}");
                    let want = t.saturating_sub(3 - f as u8);
                    assert_eq!(s[2 * f + 1], want, "{s:?}");
                    assert_eq!(ns[2 * f + 1], (t + 1).saturating_sub(3 - f as u8), "{ns:?}");
                }
                assert_eq!(b.actions[r], t as i64 + 1);
                assert_eq!(b.rewards[r], t as f32 + 1.0);
            }
        }
    }

    #[test]
    fn wrapping_ring_drops_old_and_keeps_consistency() {
        let mem = FrameMemory::new(20, 1, 1, 4);
        mem.start_episode(0, ObsRef::Frame(&[0]));
        for t in 1..=100u8 {
            mem.record_step(
                0,
                Transition {
                    action: 0,
                    reward: 0.0,
                    terminated: false,
                    truncated: t % 50 == 0,
                    next: ObsRef::Frame(&[t]),
                },
            );
            if t % 50 == 0 {
                mem.start_episode(0, ObsRef::Frame(&[t]));
            }
        }
        assert_eq!(mem.len(), 20);
        let mut rng = StdRng::seed_from_u64(1);
        let b = mem.sample(64, &mut rng).unwrap();
        for r in 0..64 {
            let s = &b.obs[r * 4..r * 4 + 4];
            assert!(s[0] >= 100 - 20, "stale frame sampled: {s:?}");
            assert!(s.windows(2).all(|w| w[1] == w[0] + 1 || w[1] == w[0]), "{s:?}");
        }
    }

    #[test]
    fn save_load_round_trips_the_memory() {
        let mem = FrameMemory::new(100, 2, 3, 4);
        for sh in 0..2 {
            mem.start_episode(sh, ObsRef::Frame(&[sh as u8, 0, 0]));
            for t in 1..70u8 {
                mem.record_step(
                    sh,
                    Transition {
                        action: t as usize % 5,
                        reward: t as f32 * 0.5,
                        terminated: t % 20 == 0,
                        truncated: false,
                        next: ObsRef::Frame(&[sh as u8, t, 1]),
                    },
                );
                if t % 20 == 0 {
                    mem.start_episode(sh, ObsRef::Frame(&[sh as u8, t, 2]));
                }
            }
        }
        let mut bytes = Vec::new();
        mem.save(&mut bytes).unwrap();
        let copy = FrameMemory::new(100, 2, 3, 4);
        copy.load(&mut bytes.as_slice()).unwrap();
        assert_eq!(copy.len(), mem.len());
        let (a, b) = (
            mem.sample(64, &mut StdRng::seed_from_u64(5)).unwrap(),
            copy.sample(64, &mut StdRng::seed_from_u64(5)).unwrap(),
        );
        assert_eq!(
            (a.obs, a.next_obs, a.actions, a.rewards, a.terminated),
            (b.obs, b.next_obs, b.actions, b.rewards, b.terminated)
        );
        let other = FrameMemory::new(100, 4, 3, 4);
        assert!(other.load(&mut bytes.as_slice()).is_err());
    }

    #[test]
    fn truncation_bootstraps_but_termination_does_not() {
        let mem = VectorMemory::new(100, 1, 1, 1);
        mem.start_episode(0, ObsRef::Vector(&[0.0]));
        mem.record_step(
            0,
            Transition { action: 1, reward: 1.0, terminated: false, truncated: true, next: ObsRef::Vector(&[1.0]) },
        );
        mem.start_episode(0, ObsRef::Vector(&[10.0]));
        mem.record_step(
            0,
            Transition { action: 0, reward: 1.0, terminated: true, truncated: false, next: ObsRef::Vector(&[11.0]) },
        );
        let mut rng = StdRng::seed_from_u64(2);
        let b = mem.sample(40, &mut rng).unwrap();
        for r in 0..40 {
            match b.obs[r] as i32 {
                0 => assert_eq!((b.next_obs[r], b.terminated[r]), (1.0, 0.0)),
                10 => assert_eq!((b.next_obs[r], b.terminated[r]), (11.0, 1.0)),
                other => panic!("final observations are not transition starts: {other}"),
            }
        }
    }
}
