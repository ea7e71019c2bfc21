//! The `cc` settings for C++ built against the torch wheel's headers, shared by the build scripts
//! of the `wndqn` package (build.rs: csrc/cuda_graph.cpp) and of wndqn-agents (agents/build.rs:
//! agents/csrc/multi_tensor.cpp), which include this file with `#[path]`. Both objects link into
//! one binary against one libtorch, so they must agree on the standard and the C++ ABI.
use std::path::Path;

/// A C++17 build with libtorch's include folders; `torch` is the wheel's `torch/` folder.
pub fn torch_cpp(torch: &Path) -> cc::Build {
    let mut b = cc::Build::new();
    b.cpp(true)
        .std("c++17")
        .opt_level(2)
        .warnings(false)
        .define("_GLIBCXX_USE_CXX11_ABI", "1")
        .include(torch.join("include"))
        .include(torch.join("include/torch/csrc/api/include"));
    b
}
