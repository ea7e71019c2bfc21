// The C ABI that agents/src/ext/parallel.rs calls: libtorch's intra-op parallel loop
// (at::parallel_for) for work written in Rust, the fused CPU optimizer kernels. On libtorch's
// own OpenMP threads, which spin between libtorch's kernels: a thread of our own would wait for
// a core behind them. ATen runs at::parallel_for serially in code compiled without OpenMP, so
// agents/build.rs compiles this file with -fopenmp and links the wheel's libgomp, the one
// OpenMP runtime of the process.

#include <ATen/Parallel.h>

#include "c_abi.hpp"

extern "C" {

// fn(ctx, i) for every i in [0, n), spread over the intra-op threads; fn must not throw.
int wpl_parallel_for(int64_t n, void (*fn)(void*, int64_t), void* ctx, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] {
    at::parallel_for(0, n, 1, [&](int64_t begin, int64_t end) {
      for (int64_t i = begin; i < end; ++i) fn(ctx, i);
    });
  });
}

}  // extern "C"
