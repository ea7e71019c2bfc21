//! - Gives every binary of this package (the CLI, tests, benches) an rpath to libtorch's `lib/`,
//!   which torch-sys exports as `DEP_TCH_LIBTORCH_LIB`; without it the binary only runs with
//!   `LD_LIBRARY_PATH` set (the root `build.rs` does the same for the `wndqn` package).
//! - Compiles `csrc/multi_tensor.cpp` (ATen's multi-tensor optimizer kernels, which tch does not
//!   expose; see `src/multi_tensor.rs`) against the headers of the same libtorch.
use std::path::Path;

#[path = "../csrc/torch_cc.rs"]
mod torch_cc;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=csrc/multi_tensor.cpp");
    println!("cargo:rerun-if-changed=../csrc/c_abi.hpp");
    println!("cargo:rerun-if-changed=../csrc/torch_cc.rs");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys exports DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let torch = Path::new(&lib).parent().expect("libtorch's lib/ has a parent");
    torch_cc::torch_cpp(torch).file("csrc/multi_tensor.cpp").compile("wndqn_multi_tensor");
}
