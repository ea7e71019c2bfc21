// The C ABI that agents/src/ext/cuda_graph.rs calls: what tch does not expose of libtorch's CUDA support,
// CUDA-graph capture and replay on a side stream (at::cuda::CUDAGraph, c10::cuda streams), and a
// copy stream with events that stages host batches into device buffers while the GPU computes.
// Every entry point catches C++ exceptions and returns them as text: unwinding into Rust is
// undefined behaviour. Compiled by agents/build.rs against the torch wheel's headers, only when the
// libtorch in use is the CUDA build; it runs only where a GPU is present.

#include <ATen/ATen.h>
#include <ATen/cuda/CUDAGraph.h>
#include <c10/core/Event.h>
#include <c10/cuda/CUDAFunctions.h>
#include <c10/cuda/CUDAStream.h>

#include <cstring>
#include <exception>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "c_abi.hpp"

namespace {

// Only out-of-line c10/ATen functions are called (no inline CUDA guards), so that this object
// needs nothing of the CUDA runtime but what libtorch_cuda and libc10_cuda bring.
struct Graph {
  at::cuda::CUDAGraph graph;
  c10::DeviceIndex device = 0;
  // The side stream that warm-up and capture run on (capture is not allowed on the default
  // stream, and warm-up must use the stream the capture will use, so that per-stream state such
  // as cuBLAS workspaces exists before the capture).
  std::optional<c10::cuda::CUDAStream> side;
  // The stream that was current before `enter` switched to the side stream.
  std::optional<c10::cuda::CUDAStream> previous;
};

// Make the side stream current, after all queued work on the device.
void enter(Graph* g) {
  c10::cuda::set_device(g->device);
  c10::cuda::device_synchronize();
  if (!g->side) g->side = c10::cuda::getStreamFromPool(false, g->device);
  g->previous = c10::cuda::getCurrentCUDAStream(g->device);
  c10::cuda::setCurrentCUDAStream(*g->side);
}

// Wait for the side stream's work and make the previous stream current again.
void leave(Graph* g) {
  if (g->previous) c10::cuda::setCurrentCUDAStream(*g->previous);
  g->previous.reset();
  c10::cuda::device_synchronize();
}

// A copy stream with two slots of device buffers: `wcs_stage` copies host tensors into a slot on
// the copy stream (after the compute stream has finished reading that slot), `wcs_wait_copied` makes the
// current stream wait for the slot's copies. Only out-of-line c10 calls (c10::Event goes through
// the CUDA backend's registered guard implementation).
struct Stager {
  c10::DeviceIndex device = 0;
  c10::cuda::CUDAStream stream;
  // Per slot: copied (recorded on the copy stream) and consumed (recorded on the compute stream).
  std::vector<c10::Event> copied, consumed;
  explicit Stager(c10::DeviceIndex d) : device(d), stream(c10::cuda::getStreamFromPool(false, d)) {
    for (int i = 0; i < 2; ++i) {
      copied.emplace_back(c10::DeviceType::CUDA);
      consumed.emplace_back(c10::DeviceType::CUDA);
    }
  }
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

// Run what follows (until wcg_leave) on the graph's side stream, eagerly: the warm-up.
int wcg_enter(void* p, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] { enter(static_cast<Graph*>(p)); });
}

int wcg_leave(void* p, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] { leave(static_cast<Graph*>(p)); });
}

// Make the side stream current and start capturing every kernel launched on it.
int wcg_capture_begin(void* p, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] {
    auto* g = static_cast<Graph*>(p);
    enter(g);
    try {
      // Thread-local: only this thread's unsafe CUDA calls (a synchronizing copy, say) break the
      // capture; other threads of the process (the replay thread pinning host memory) may go
      // on. The autograd engine's backward thread launches onto the captured stream all the same.
      g->graph.capture_begin({0, 0}, cudaStreamCaptureModeThreadLocal);
    } catch (...) {
      leave(g);
      throw;
    }
  });
}

// Stop capturing, instantiate the graph, restore the previous stream.
int wcg_capture_end(void* p, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] {
    auto* g = static_cast<Graph*>(p);
    try {
      g->graph.capture_end();
    } catch (...) {
      leave(g);
      throw;
    }
    leave(g);
  });
}

// Launch the captured work on the current stream.
int wcg_replay(void* p, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] { static_cast<Graph*>(p)->graph.replay(); });
}

void* wcs_new(int device, char* err, size_t cap) {
  Stager* s = nullptr;
  wndqn_guarded(err, cap, [&] { s = new Stager(static_cast<c10::DeviceIndex>(device)); });
  return s;
}

void wcs_delete(void* s) { delete static_cast<Stager*>(s); }

// Copy src[i] (pinned host) into dst[i] (device, slot `slot`'s buffers) on the copy stream, once
// the compute stream has consumed the slot's previous contents; then mark the slot copied.
int wcs_stage(void* p, int slot, at::Tensor* const* dst, at::Tensor* const* src, size_t n, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] {
    auto* s = static_cast<Stager*>(p);
    auto compute = c10::cuda::getCurrentCUDAStream(s->device);
    s->consumed.at(slot).block(s->stream.unwrap());
    c10::cuda::setCurrentCUDAStream(s->stream);
    try {
      for (size_t i = 0; i < n; ++i) dst[i]->copy_(*src[i], /*non_blocking=*/true);
    } catch (...) {
      c10::cuda::setCurrentCUDAStream(compute);
      throw;
    }
    c10::cuda::setCurrentCUDAStream(compute);
    s->copied.at(slot).record(s->stream.unwrap());
  });
}

// Make the current stream wait for slot `slot`'s copies.
int wcs_wait_copied(void* p, int slot, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] {
    auto* s = static_cast<Stager*>(p);
    s->copied.at(slot).block(c10::cuda::getCurrentCUDAStream(s->device).unwrap());
  });
}

// Mark slot `slot` consumed once the current stream's work so far is done.
int wcs_mark_consumed(void* p, int slot, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] {
    auto* s = static_cast<Stager*>(p);
    s->consumed.at(slot).record(c10::cuda::getCurrentCUDAStream(s->device).unwrap());
  });
}

}  // extern "C"
