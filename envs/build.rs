//! ale-sys builds ALE as a static C++ library but does not link its runtime dependencies.
fn main() {
    println!("cargo:rustc-link-lib=dylib=stdc++");
    println!("cargo:rustc-link-lib=dylib=z");
}
