//! Compiles ALE 0.12.1 (the C++ emulator of ale-py 0.12.1) and our C shim over it
//! (`csrc/ale_shim.cpp`) into a static library, with the `cc` crate.
//!
//! The source comes from `scripts/fetch_ale.sh` (run by `scripts/setup.sh`), which puts the
//! hash-checked ale-py sdist in `.ale/`; `WNDQN_ALE_SRC` can point at another copy of the same
//! release. ALE's own CMake build is not used: it turns on GCC LTO for its objects, which a
//! Rust link does not run, and it needs nothing but these sources, zlib and a C++17 compiler.
//! The build reruns only when the shim, this script or the source folder changes.
use std::path::{Path, PathBuf};

const ALE_VERSION: &str = "0.12.1";

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let mut entries: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .collect();
    entries.sort();
    for p in entries {
        if p.is_dir() {
            sources(&p, out);
        } else if matches!(p.extension().and_then(|e| e.to_str()), Some("cpp" | "cxx")) {
            out.push(p);
        }
    }
}

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    println!("cargo:rerun-if-changed=csrc/ale_shim.cpp");
    println!("cargo:rerun-if-changed=csrc/c_abi.hpp");
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=WNDQN_ALE_SRC");
    let root = match std::env::var_os("WNDQN_ALE_SRC") {
        Some(p) => PathBuf::from(p),
        None => manifest.join(format!("../.ale/ale_py-{ALE_VERSION}")),
    };
    let src = root.join("src");
    if !src.join("ale/ale_interface.hpp").is_file() {
        panic!(
            "\n\nThe ALE {ALE_VERSION} source is not in {}.\nRun `bash scripts/fetch_ale.sh` (part of `make setup`), or set WNDQN_ALE_SRC.\n",
            root.display()
        );
    }
    println!("cargo:rerun-if-changed={}", root.join(".wndqn-ok").display());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    let (major, rest) = ALE_VERSION.split_once('.').unwrap();
    let (minor, patch) = rest.split_once('.').unwrap();
    std::fs::write(
        out.join("version.hpp"),
        format!(
            "#ifndef __VERSION_HPP__\n#define __VERSION_HPP__\n#define ALE_VERSION \"{ALE_VERSION}\"\n#define ALE_VERSION_MAJOR \"{major}\"\n#define ALE_VERSION_MINOR \"{minor}\"\n#define ALE_VERSION_PATCH \"{patch}\"\n#define ALE_VERSION_GIT_SHA \"\"\n#define STELLA_VERSION \"2.4.2\"\n#endif\n"
        ),
    )
    .unwrap();
    let ale = src.join("ale");
    let mut files = vec![ale.join("ale_interface.cpp")];
    for sub in ["common", "emucore", "environment", "games"] {
        sources(&ale.join(sub), &mut files);
    }
    cc::Build::new()
        .cpp(true)
        .std("c++17")
        .opt_level(3)
        .debug(false)
        .warnings(false)
        .include(&src)
        .include(&out)
        .include(manifest.join("csrc"))
        .files(&files)
        .file(manifest.join("csrc/ale_shim.cpp"))
        .compile("wndqn_ale");
    println!("cargo:rustc-link-lib=dylib=z");
    println!("cargo:rustc-link-lib=dylib=stdc++");
}
