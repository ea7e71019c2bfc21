//! Gives every binary of this package (the CLI, tests, benches) an rpath to libtorch's `lib/`,
//! which torch-sys exports as `DEP_TCH_LIBTORCH_LIB`; without it the binary only runs with
//! `LD_LIBRARY_PATH` set (the root `build.rs` does the same for the `wndqn` package).
fn main() {
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
}
