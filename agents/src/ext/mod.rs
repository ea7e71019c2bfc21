//! The libtorch extensions tch lacks, in C++ over libtorch (`agents/csrc/`, compiled by
//! `agents/build.rs` against the headers of the libtorch that torch-sys links), each behind a
//! safe wrapper:
//! - [`multi_tensor`]: ATen's multi-tensor optimizer kernels (fused Adam, foreach clipping);
//! - [`cuda_graph`]: CUDA-graph capture and replay and a copy stream (`CudaGraph`, `Stager`),
//!   built only with the CUDA wheel's headers (`cfg(wndqn_cuda_graph)`); elsewhere a stub with
//!   the same API whose constructors are errors;
//! - [`precision`]: casts to bf16 and channels-last in one copy, TF32 switches, the CPU's bf16;
//! - [`parallel`]: libtorch's intra-op parallel loop for Rust work (the fused optimizer).
//!
//! Why here: tch binds libtorch's C API, which has neither; PyTorch reaches the same C++.

mod ffi;
pub mod multi_tensor;
pub mod parallel;
pub mod precision;

#[cfg(wndqn_cuda_graph)]
pub mod cuda_graph;
#[cfg(not(wndqn_cuda_graph))]
mod cuda_graph_stub;
#[cfg(not(wndqn_cuda_graph))]
pub use cuda_graph_stub as cuda_graph;

pub use cuda_graph::{CudaGraph, Stager, BUILT as CUDA_GRAPH_BUILT};

#[cfg(test)]
mod tests {
    use super::cuda_graph::*;
    use tch::{Device, Kind, Tensor};

    #[test]
    fn the_extension_is_built_with_the_cuda_wheel() {
        let wheel = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/libtorch/lib/libtorch_cuda.so");
        assert_eq!(BUILT, wheel.exists(), "csrc/cuda_graph.cpp must compile against the CUDA wheel's headers");
    }

    #[test]
    fn captured_work_replays_on_new_inputs() {
        if !tch::Cuda::is_available() {
            eprintln!("SKIPPED captured_work_replays_on_new_inputs: no CUDA device");
            assert!(CudaGraph::new(0).is_err(), "a graph without a GPU must be an error");
            return;
        }
        let d = Device::Cuda(0);
        let x = Tensor::zeros([1024], (Kind::Float, d));
        let y = Tensor::zeros([1024], (Kind::Float, d));
        let work = || {
            let mut out = y.shallow_clone();
            out.copy_(&(&x * 2.0 + 1.0));
        };
        let mut g = CudaGraph::new(0).unwrap();
        g.warm_up(work).unwrap();
        g.capture(work).unwrap();
        for v in [3.0, -1.5] {
            let mut xin = x.shallow_clone();
            let _ = xin.fill_(v);
            g.replay().unwrap();
            let got = y.mean(Kind::Float).double_value(&[]);
            assert!((got - (2.0 * v + 1.0)).abs() < 1e-6, "replay with x = {v} gave {got}");
        }
        // A host read inside a capture is an error, not a crash, and the device goes on working.
        let mut bad = CudaGraph::new(0).unwrap();
        let err = bad.capture(|| {
            let _ = x.sum(Kind::Float).double_value(&[]);
        });
        assert!(err.is_err(), "a host read was captured");
        assert!(bad.replay().is_err());
        let _ = x.shallow_clone().fill_(1.0);
        assert_eq!(x.sum(Kind::Float).double_value(&[]), 1024.0);
    }

    #[test]
    fn staged_copies_land_in_their_slot() {
        if !tch::Cuda::is_available() {
            eprintln!("SKIPPED staged_copies_land_in_their_slot: no CUDA device");
            assert!(Stager::new(0).is_err(), "a copy stream without a GPU must be an error");
            return;
        }
        let d = Device::Cuda(0);
        let n = 1i64 << 20;
        let st = Stager::new(0).unwrap();
        let slots = [Tensor::zeros([n], (Kind::Float, d)), Tensor::zeros([n], (Kind::Float, d))];
        for i in 0..6 {
            let k = i % 2;
            let src = Tensor::full([n], i as f64, (Kind::Float, Device::Cpu)).pin_memory(d);
            st.stage(k, &[&slots[k]], &[&src]).unwrap();
            st.wait_copied(k).unwrap();
            let got = slots[k].mean(Kind::Float).double_value(&[]);
            assert_eq!(got, i as f64, "slot {k} after copy {i}");
            st.mark_consumed(k).unwrap();
        }
    }
}
