//! `wndqn-agents`: everything that learns. No threads here.
//!
//! - [`normalization`]: the variants (`plain`, `weight_norm`, `layer_norm`, `spectral_norm`,
//!   ...) and the one breakdown of each into what its layers do.
//! - [`layers`]: linear/conv layers, plain, weight-normalized (+ mean-only batch norm, or with
//!   fixed norms) or spectrally normalized, optionally layer-normalized, with the paper's
//!   data-dependent initialization.
//! - [`qnet`]: the Nature CNN, MinAtar's network and an MLP in the named variants (`plain`,
//!   `weight_norm`, `layer_norm`, `spectral_norm`, ...).
//! - [`explicit`]: the training pass of a small network with its backward pass written out
//!   (CPU).
//! - [`diagnostics`]: weight norms, effective step sizes, dormant units and feature rank.
//! - [`acting`]: a Q-network's forward pass for one observation on slices of its weights.
//! - [`policy`]: a CPU copy of the Q-network acting epsilon-greedily (actors, evaluation).
//! - [`dqn`]: the DQN update (targets, double DQN, Huber/MSE, gradient clipping, target sync),
//!   eager and capturable.
//! - [`graphed`]: the DQN update captured once as a CUDA graph and replayed.
//! - [`optim`]: Adam, Adamax and (centered) RMSProp on tch tensors, one type per rule behind
//!   one trait, with saveable state and one-pass CPU kernels.
//! - [`replay`]: replay memory (frames stored once; vector observations) and the batches it
//!   hands a learner's device.
//! - [`gemm`]: the small networks' f32 matrix products by this crate's own AVX-512 kernels.
//! - `kernels`: the CPU loops' common parts (element types, AVX2 builds, slices of tensors).
//! - [`ext`]: only the FFI: what tch lacks of libtorch, in C++ (`csrc/`): multi-tensor
//!   optimizer kernels, CUDA graphs and a copy stream, bf16 casts, the intra-op parallel loop.
//! - [`schedule`]: exploration schedules.
#![deny(missing_docs)]

pub mod acting;
pub mod diagnostics;
pub mod dqn;
pub mod explicit;
pub mod ext;
pub mod gemm;
pub mod graphed;
mod kernels;
pub mod layers;
pub mod normalization;
pub mod optim;
pub mod policy;
pub mod qnet;
pub mod replay;
pub mod schedule;
