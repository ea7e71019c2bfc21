// The C ABI that agents/src/ext/precision.rs calls: what tch does not expose of libtorch for
// mixed precision. A cast to another dtype and memory format in one copy (channels-last is the
// layout oneDNN's bf16 convolutions run fastest in; tch has no memory formats), and the TF32
// switches of cuBLAS and cuDNN (libtorch's global context; no CUDA code here). Every entry point
// catches C++ exceptions and returns them as text. Compiled by agents/build.rs.

#include <ATen/ATen.h>
#include <ATen/Context.h>

#include "c_abi.hpp"

extern "C" {

// *out = t converted to dtype `kind` (a c10::ScalarType code) and, when `channels_last`, to the
// channels-last memory format (4-d tensors only), in one differentiable copy.
int wpr_to(at::Tensor* t, int kind, int channels_last, at::Tensor** out, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] {
    auto format = channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Preserve;
    *out = new at::Tensor(t->to(static_cast<at::ScalarType>(kind), false, false, format));
  });
}

// Let cuBLAS matrix products and cuDNN convolutions run in TF32 (or not).
int wpr_allow_tf32(int on, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] {
    at::globalContext().setAllowTF32CuBLAS(on != 0);
    at::globalContext().setAllowTF32CuDNN(on != 0);
  });
}

}  // extern "C"
