// The C ABI that src/cuda_graph.rs calls: what tch does not expose of libtorch's CUDA support,
// CUDA-graph capture and replay on a side stream (at::cuda::CUDAGraph, c10::cuda streams).
// Every entry point catches C++ exceptions and returns them as text: unwinding into Rust is
// undefined behaviour. Compiled by build.rs against the torch wheel's headers, only when the
// libtorch in use is the CUDA build; it runs only where a GPU is present.

#include <ATen/cuda/CUDAGraph.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>

#include "c_abi.hpp"

namespace {

// Only out-of-line c10/ATen functions are called (no inline CUDA guards), so that this object
// needs nothing of the CUDA runtime but what libtorch_cuda and libc10_cuda bring.
struct Graph {
  at::cuda::CUDAGraph graph;
  c10::DeviceIndex device = 0;
  // The stream that was current before the capture switched to a side stream (capture is not
  // allowed on the default stream).
  std::optional<c10::cuda::CUDAStream> previous;
};

}  // namespace

extern "C" {

// A new, empty graph for `device`.
void* wcg_new(int device) {
  auto* g = new (std::nothrow) Graph();
  if (g) g->device = static_cast<c10::DeviceIndex>(device);
  return g;
}

void wcg_delete(void* g) { delete static_cast<Graph*>(g); }

// Make a side stream current and start capturing every kernel launched on it.
int wcg_capture_begin(void* p, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] {
    auto* g = static_cast<Graph*>(p);
    c10::cuda::set_device(g->device);
    c10::cuda::device_synchronize();
    g->previous = c10::cuda::getCurrentCUDAStream(g->device);
    c10::cuda::setCurrentCUDAStream(c10::cuda::getStreamFromPool(false, g->device));
    try {
      g->graph.capture_begin();
    } catch (...) {
      c10::cuda::setCurrentCUDAStream(*g->previous);
      throw;
    }
  });
}

// Stop capturing, instantiate the graph, restore the previous stream.
int wcg_capture_end(void* p, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] {
    auto* g = static_cast<Graph*>(p);
    auto restore = [g] {
      if (g->previous) c10::cuda::setCurrentCUDAStream(*g->previous);
      g->previous.reset();
    };
    try {
      g->graph.capture_end();
    } catch (...) {
      restore();
      throw;
    }
    restore();
  });
}

// Launch the captured work on the current stream.
int wcg_replay(void* p, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] { static_cast<Graph*>(p)->graph.replay(); });
}

// Wait for all work on `device`.
int wcg_synchronize(int device, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] {
    c10::cuda::set_device(static_cast<c10::DeviceIndex>(device));
    c10::cuda::device_synchronize();
  });
}

}  // extern "C"
