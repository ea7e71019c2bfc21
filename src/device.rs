//! `--device auto|cpu|cuda`, resolved once to a `tch::Device`.

use anyhow::{bail, Result};
use clap::ValueEnum;

/// The device the learner uses (actors always act on the CPU).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceArg {
    /// CUDA when a GPU is visible, else CPU.
    Auto,
    /// Always the CPU.
    Cpu,
    /// The first CUDA GPU; an error when there is none.
    Cuda,
}

impl DeviceArg {
    /// The concrete device, or a clear error when CUDA was asked for and is missing.
    pub fn resolve(self) -> Result<tch::Device> {
        let cuda = tch::Cuda::is_available();
        Ok(match self {
            DeviceArg::Cpu => tch::Device::Cpu,
            DeviceArg::Auto if cuda => tch::Device::Cuda(0),
            DeviceArg::Auto => tch::Device::Cpu,
            DeviceArg::Cuda if cuda => tch::Device::Cuda(0),
            DeviceArg::Cuda => bail!(
                "--device cuda was asked for, but libtorch sees no CUDA device \
                 (no NVIDIA GPU or driver on this machine). Use --device cpu or --device auto."
            ),
        })
    }
}

/// A short name for logs and JSON (`cpu`, `cuda:0`).
pub fn name(d: tch::Device) -> String {
    match d {
        tch::Device::Cpu => "cpu".into(),
        tch::Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_lowercase(),
    }
}

/// What the learner computes in on `device` for `precision`
/// ([`Precision::compute`](crate::config::Precision::compute)), with the process's CUDA matrix
/// units set for it: TF32 on for `tf32`, off otherwise (a global libtorch switch; the one place
/// that sets it).
pub fn enable_precision(
    precision: crate::config::Precision,
    device: tch::Device,
) -> Result<wndqn_agents::layers::Compute> {
    let compute = precision.compute(device)?;
    if device.is_cuda() {
        wndqn_agents::ext::precision::allow_tf32(precision == crate::config::Precision::Tf32)?;
    }
    Ok(compute)
}
