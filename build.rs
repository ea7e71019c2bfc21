//! Link settings for every binary of this package (the CLI, tests, benches):
//! - an rpath to libtorch's `lib/` (torch-sys exports it as `DEP_TCH_LIBTORCH_LIB`), so the
//!   binary runs without `LD_LIBRARY_PATH`;
//! - libtorch's CUDA libraries linked for real. torch-sys asks for `-ltorch_cuda`, but no symbol
//!   of it is referenced, so the linker's `--as-needed` drops it and libtorch's CUDA backend never
//!   registers: `tch::Cuda::is_available()` is then false even on a GPU machine. Wrapping them in
//!   `--no-as-needed` keeps them in the binary's dynamic section; only when the libtorch in use
//!   has them (the CUDA wheel does, and runs fine without a GPU). `tests/cli.rs` checks the
//!   result with `readelf -d`.
//! - `csrc/cuda_graph.cpp` (CUDA-graph capture and replay, which tch lacks) compiled against the
//!   torch wheel's headers, when they are there (the CUDA wheel, plus `nvidia-cuda-crt` for the
//!   CUDA runtime headers, both from scripts/requirements.txt); it sets `cfg(wndqn_cuda_graph)`.
use std::path::Path;

#[path = "csrc/torch_cc.rs"]
mod torch_cc;

fn cuda_graph_shim(lib: &Path) {
    println!("cargo::rustc-check-cfg=cfg(wndqn_cuda_graph)");
    println!("cargo:rerun-if-changed=csrc/cuda_graph.cpp");
    println!("cargo:rerun-if-changed=csrc/c_abi.hpp");
    println!("cargo:rerun-if-changed=csrc/torch_cc.rs");
    let torch = lib.parent().unwrap_or(lib);
    let nvidia = torch.join("../nvidia/cu13/include");
    let ready = lib.join("libtorch_cuda.so").exists()
        && torch.join("include/ATen/cuda/CUDAGraph.h").exists()
        && nvidia.join("crt/host_config.h").exists();
    if !ready {
        println!("cargo:warning=CUDA-graph shim not built: the torch wheel's CUDA headers are missing (run scripts/setup.sh)");
        return;
    }
    torch_cc::torch_cpp(torch).include(&nvidia).file("csrc/cuda_graph.cpp").compile("wndqn_cuda_graph");
    println!("cargo:rustc-cfg=wndqn_cuda_graph");
}

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let dir = std::path::Path::new(&lib);
    let cuda: Vec<&str> =
        ["torch_cuda", "c10_cuda"].into_iter().filter(|l| dir.join(format!("lib{l}.so")).exists()).collect();
    cuda_graph_shim(dir);
    if !cuda.is_empty() {
        println!("cargo:rustc-link-arg=-L{lib}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        for l in cuda {
            println!("cargo:rustc-link-arg=-l{l}");
        }
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
