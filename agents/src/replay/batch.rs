//! A sampled minibatch on its way to the learner: host vectors ([`Batch`]), tensors
//! ([`TensorBatch`]), and [`BatchPrep`], the one place that decides how frames are scaled and
//! where the tensors go.

use tch::{Device, Kind, Tensor};

use super::Element;
use crate::layers::Compute;

/// A sampled minibatch, still in host memory.
#[derive(Debug, Clone)]
pub struct Batch<T> {
    /// `[B, stack * obs_len]` observations.
    pub obs: Vec<T>,
    /// Next observations, same layout.
    pub next_obs: Vec<T>,
    /// Actions taken.
    pub actions: Vec<i64>,
    /// Rewards received.
    pub rewards: Vec<f32>,
    /// 1.0 where the transition terminated (no bootstrap), else 0.0 (truncation bootstraps).
    pub terminated: Vec<f32>,
}

/// A minibatch as tensors (on the host until [`BatchPrep::to_learner`]).
#[derive(Debug)]
pub struct TensorBatch {
    /// Observations (`u8` frames, `f32` frames scaled to `x / 255`, or `f32` vectors).
    pub obs: Tensor,
    /// Next observations.
    pub next_obs: Tensor,
    /// Actions `[B]` (i64).
    pub actions: Tensor,
    /// Rewards `[B]`.
    pub rewards: Tensor,
    /// Termination flags `[B]` as floats.
    pub terminated: Tensor,
}

/// `u8` frames as the network's `f32` input, `x / 255`: bit-identical to the conversion the
/// network does on `u8` input ([`crate::qnet`]'s input contract), by a table lookup. The only
/// place frames are scaled outside the network.
fn scaled_frames(px: &[u8], shape: &[i64]) -> Tensor {
    let lut: [f32; 256] = std::array::from_fn(|i| i as f32 / 255.0);
    let f: Vec<f32> = px.iter().map(|&x| lut[x as usize]).collect();
    Tensor::from_slice(&f).view(shape)
}

/// The bits of `x` rounded to bf16, to nearest, ties to even (libtorch's rounding; no NaN here).
fn bf16_bits(x: f32) -> u16 {
    let b = x.to_bits();
    ((b + 0x7FFF + ((b >> 16) & 1)) >> 16) as u16
}

/// `u8` frames `[B, C, H, W]` as a bf16 network's input: `x / 255` rounded to bf16 (what the
/// network's own cast of the `f32` input gives, bit for bit), and in channels-last memory
/// format when `channels_last` (the layout its first convolution takes), so that the learner
/// casts and transposes nothing.
fn bf16_frames(px: &[u8], shape: &[i64], channels_last: bool) -> Tensor {
    let lut: [i16; 256] = std::array::from_fn(|i| bf16_bits(i as f32 / 255.0) as i16);
    if !channels_last || shape.len() != 4 {
        let f: Vec<i16> = px.iter().map(|&x| lut[x as usize]).collect();
        return Tensor::from_slice(&f).view_dtype(Kind::BFloat16).view(shape);
    }
    let [b, c, h, w] = [0, 1, 2, 3].map(|i| shape[i] as usize);
    let plane = h * w;
    let mut f = vec![0i16; px.len()];
    for (src, dst) in px.chunks_exact(c * plane).zip(f.chunks_exact_mut(c * plane)) {
        for ch in 0..c {
            for (p, &x) in src[ch * plane..(ch + 1) * plane].iter().enumerate() {
                dst[p * c + ch] = lut[x as usize];
            }
        }
    }
    let nhwc = [b, h, w, c].map(|d| d as i64);
    Tensor::from_slice(&f).view_dtype(Kind::BFloat16).view(nhwc).permute([0, 3, 1, 2])
}

impl<T: Element + tch::kind::Element> Batch<T> {
    /// The batch as tensors on `device`; `obs_shape` is one observation's shape (`[4, 84, 84]`).
    pub fn to_tensors(&self, obs_shape: &[i64], device: Device) -> TensorBatch {
        self.with_obs(obs_shape, device, |v, shape| Tensor::from_slice(v).view(shape))
    }

    fn with_obs(&self, obs_shape: &[i64], device: Device, obs: impl Fn(&[T], &[i64]) -> Tensor) -> TensorBatch {
        let b = self.actions.len() as i64;
        let shape: Vec<i64> = std::iter::once(b).chain(obs_shape.iter().copied()).collect();
        TensorBatch {
            obs: obs(&self.obs, &shape).to_device(device),
            next_obs: obs(&self.next_obs, &shape).to_device(device),
            actions: Tensor::from_slice(&self.actions).to_device(device),
            rewards: Tensor::from_slice(&self.rewards).to_device(device),
            terminated: Tensor::from_slice(&self.terminated).to_device(device).to_kind(Kind::Float),
        }
    }
}

/// How batches are prepared for a learner on a device. Two halves, one on each side of the
/// prefetch queue:
/// - [`BatchPrep::host_frames`] / [`BatchPrep::host`], on the sampling (replay) thread: for a
///   CPU learner, frames become the network's `f32` input `x/255` here, off the learner's path
///   (3 passes over 0.9M values per update otherwise); for CUDA, frames stay `u8` (4x less to
///   copy) and the batch is staged in pinned host memory, so that the copy can be asynchronous.
/// - [`BatchPrep::to_learner`], on the learner: nothing on the CPU; on CUDA a non-blocking copy
///   to the device, where the network scales `u8` frames itself. A graphed learner copies the
///   pinned host batch into its static inputs instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchPrep {
    device: Device,
    compute: Compute,
}

impl BatchPrep {
    /// Batches for an f32 learner on `device`.
    pub fn for_device(device: Device) -> BatchPrep {
        BatchPrep { device, compute: Compute::F32 }
    }

    /// Batches for a learner computing as `compute` says: on the CPU, bf16 frames for a bf16
    /// network.
    pub fn computing(self, compute: Compute) -> BatchPrep {
        BatchPrep { compute, ..self }
    }

    /// Scale `u8` frames for a CPU learner.
    fn cpu_frames(&self, px: &[u8], shape: &[i64]) -> Tensor {
        match self.compute {
            Compute::F32 => scaled_frames(px, shape),
            Compute::Bf16 { channels_last } => bf16_frames(px, shape, channels_last),
        }
    }

    /// A sampled frame batch as host tensors, ready for the learner's side.
    pub fn host_frames(&self, b: &Batch<u8>, obs_shape: &[i64]) -> TensorBatch {
        match self.device {
            Device::Cpu => b.with_obs(obs_shape, Device::Cpu, |px, shape| self.cpu_frames(px, shape)),
            _ => self.host(b.to_tensors(obs_shape, Device::Cpu)),
        }
    }

    /// Host tensors made ready for the learner's side: `u8` frames scaled for a CPU learner (as
    /// [`BatchPrep::host_frames`] does), pinned for a GPU.
    pub fn host(&self, b: TensorBatch) -> TensorBatch {
        let scale = |t: Tensor| {
            let px = Vec::<u8>::try_from(t.contiguous().view(-1)).expect("u8 frames");
            self.cpu_frames(&px, &t.size())
        };
        match self.device {
            Device::Cpu if b.obs.kind() == Kind::Uint8 => {
                TensorBatch { obs: scale(b.obs), next_obs: scale(b.next_obs), ..b }
            }
            Device::Cpu => b,
            d => b.map(|t| t.pin_memory(d)),
        }
    }

    /// The batch on the learner's device.
    pub fn to_learner(&self, b: TensorBatch) -> TensorBatch {
        match self.device {
            Device::Cpu => b,
            d => b.map(|t| t.to_device_(d, t.kind(), true, false)),
        }
    }
}

impl TensorBatch {
    /// The five tensors, in field order.
    pub fn tensors(&self) -> [&Tensor; 5] {
        [&self.obs, &self.next_obs, &self.actions, &self.rewards, &self.terminated]
    }

    /// Another handle on the same tensors (no copy).
    pub fn shallow_clone(&self) -> TensorBatch {
        TensorBatch {
            obs: self.obs.shallow_clone(),
            next_obs: self.next_obs.shallow_clone(),
            actions: self.actions.shallow_clone(),
            rewards: self.rewards.shallow_clone(),
            terminated: self.terminated.shallow_clone(),
        }
    }

    /// Apply `f` to every tensor.
    pub fn map(self, f: impl Fn(Tensor) -> Tensor) -> TensorBatch {
        TensorBatch {
            obs: f(self.obs),
            next_obs: f(self.next_obs),
            actions: f(self.actions),
            rewards: f(self.rewards),
            terminated: f(self.terminated),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every byte value, as a sampled batch and as a `u8` tensor batch: the CPU learner's input
    /// is exactly what the network computes from `u8` frames (`x.to_kind(Float) / 255`).
    #[test]
    fn cpu_frames_are_the_networks_own_input_bit_for_bit() {
        let px: Vec<u8> = (0..=255u8).chain((0..=255u8).rev()).collect();
        let b = Batch {
            obs: px.clone(),
            next_obs: px,
            actions: vec![0, 1],
            rewards: vec![0.0; 2],
            terminated: vec![0.0; 2],
        };
        let shape = [2i64, 16, 8];
        let prep = BatchPrep::for_device(Device::Cpu);
        let sampled = prep.host_frames(&b, &shape);
        let tensor = prep.host(b.to_tensors(&shape, Device::Cpu));
        let network = b.to_tensors(&shape, Device::Cpu).obs.to_kind(Kind::Float) / 255.0;
        assert_eq!(sampled.obs.kind(), Kind::Float);
        assert!(sampled.obs.equal(&network) && tensor.obs.equal(&network) && tensor.next_obs.equal(&network));
        assert_eq!(sampled.obs.max().double_value(&[]), 1.0);
    }

    /// bf16 frames, channels-last or not: the values of the network's own cast of its `f32`
    /// input, bit for bit, in the layout a channels-last cast gives.
    #[test]
    fn bf16_frames_are_the_networks_own_cast_bit_for_bit() {
        let px: Vec<u8> = (0..2 * 3 * 5 * 7).map(|i| (i * 37 % 256) as u8).collect();
        let shape = [2i64, 3, 5, 7];
        let expect = Tensor::from_slice(&px).view(shape).to_kind(Kind::Float) / 255.0;
        let expect = expect.to_kind(Kind::BFloat16);
        for channels_last in [false, true] {
            let t = bf16_frames(&px, &shape, channels_last);
            assert_eq!((t.kind(), t.size()), (Kind::BFloat16, shape.to_vec()));
            assert!(t.equal(&expect), "channels_last={channels_last}");
            let cl = crate::ext::precision::to(&expect, Kind::BFloat16, true).unwrap();
            assert_eq!(t.stride() == cl.stride(), channels_last);
        }
        let all: Vec<u8> = (0..=255).collect();
        let t = bf16_frames(&all, &[256], false);
        assert!(t.equal(&((Tensor::from_slice(&all).to_kind(Kind::Float) / 255.0).to_kind(Kind::BFloat16))));
    }
}
