//! The libtorch extensions of `wndqn-agents` (`src/ext/`), C++ compiled against the headers of
//! the libtorch that torch-sys links (the torch wheel's `torch/` folder):
//! - `csrc/multi_tensor.cpp`: ATen's multi-tensor optimizer kernels, always;
//! - `csrc/precision.cpp`: casts to a dtype and memory format in one copy, TF32 switches, always;
//! - `csrc/parallel.cpp`: `at::parallel_for` for Rust work, compiled with OpenMP and linked to
//!   the wheel's own `libgomp.so.1` (ATen's loop is serial without OpenMP; a second OpenMP
//!   runtime would bring a second thread pool), always;
//! - `csrc/cuda_graph.cpp`: CUDA-graph capture and replay and a copy stream, when the wheel is
//!   the CUDA build with its headers (plus `nvidia-cuda-crt` for the CUDA runtime headers, both
//!   from scripts/requirements.txt); it sets `cfg(wndqn_cuda_graph)`, else `src/ext/` uses its
//!   stub. Both objects link into one binary against one libtorch, so they share one `cc` set-up.
//!
//! Every binary of this package (its tests) also gets an rpath to libtorch's `lib/`, which
//! torch-sys exports as `DEP_TCH_LIBTORCH_LIB`; the root `build.rs` does the same for `wndqn`.
use std::path::Path;

/// A C++17 build with libtorch's include folders; `torch` is the wheel's `torch/` folder.
fn torch_cpp(torch: &Path) -> cc::Build {
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .opt_level(2)
        .warnings(false)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"))
        .include("csrc");
    b
}

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    for f in
        ["csrc/multi_tensor.cpp", "csrc/precision.cpp", "csrc/parallel.cpp", "csrc/cuda_graph.cpp", "csrc/c_abi.hpp"]
    {
        println!("cargo:rerun-if-changed={f}");
    }
    println!("cargo::rustc-check-cfg=cfg(wndqn_cuda_graph)");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let lib = Path::new(&lib);
    let torch = lib.parent().expect("libtorch's lib/ has a parent");
    torch_cpp(torch).file("csrc/multi_tensor.cpp").file("csrc/precision.cpp").compile("wndqn_torch_ext");
    torch_cpp(torch).flag("-fopenmp").file("csrc/parallel.cpp").compile("wndqn_parallel");
    println!("cargo:rustc-link-search=native={}", lib.display());
    println!("cargo:rustc-link-lib=dylib:+verbatim=libgomp.so.1");
    let nvidia = torch.join("../nvidia/cu13/include");
    let cuda_ready = lib.join("libtorch_cuda.so").exists()
        && torch.join("include/ATen/cuda/CUDAGraph.h").exists()
        && nvidia.join("crt/host_config.h").exists();
    if cuda_ready {
        torch_cpp(torch).include(&nvidia).file("csrc/cuda_graph.cpp").compile("wndqn_cuda_graph");
        // Its calls into libtorch's CUDA part (for this crate's tests and every binary above it).
        println!("cargo:rustc-link-search=native={}", lib.display());
        println!("cargo:rustc-link-lib=dylib=c10_cuda");
        println!("cargo:rustc-link-lib=dylib=torch_cuda");
        println!("cargo:rustc-cfg=wndqn_cuda_graph");
    } else {
        println!("cargo:warning=CUDA-graph extension not built: the torch wheel's CUDA headers are missing (run scripts/setup.sh)");
    }
}
