//! Link settings for every binary of the `wndqn` package (the CLI, its tests): link arguments
//! of a dependency's build script do not reach them, so they are set here.
//! - an rpath to libtorch's `lib/` (torch-sys exports it as `DEP_TCH_LIBTORCH_LIB`), so the
//!   binary runs without `LD_LIBRARY_PATH`;
//! - libtorch's CUDA libraries linked for real. torch-sys asks for `-ltorch_cuda`, but no symbol
//!   of it is referenced, so the linker's `--as-needed` drops it and libtorch's CUDA backend never
//!   registers: `tch::Cuda::is_available()` is then false even on a GPU machine. Wrapping them in
//!   `--no-as-needed` keeps them in the binary's dynamic section; only when the libtorch in use
//!   has them (the CUDA wheel does, and runs fine without a GPU). `tests/cli.rs` checks the
//!   result with `readelf -d`.
//!
//! The C++ extensions over libtorch are compiled by `agents/build.rs`.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else { return };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let dir = std::path::Path::new(&lib);
    let cuda: Vec<&str> =
        ["torch_cuda", "c10_cuda"].into_iter().filter(|l| dir.join(format!("lib{l}.so")).exists()).collect();
    if !cuda.is_empty() {
        println!("cargo:rustc-link-arg=-L{lib}");
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
        for l in cuda {
            println!("cargo:rustc-link-arg=-l{l}");
        }
        println!("cargo:rustc-link-arg=-Wl,--as-needed");
    }
}
