// The C ABI that agents/src/ext/multi_tensor.rs calls: ATen's multi-tensor optimizer kernels, which
// tch does not expose. One launch (or a few) covers every parameter instead of several per
// parameter, which matters when an update is replayed as a CUDA graph and each launch is a graph
// node. Tensors arrive as tch's handles (`torch::Tensor*`, the type torch-sys uses), a new
// tensor leaves as one (tch frees it). Every entry point catches C++ exceptions and returns them
// as text: unwinding into Rust is undefined behaviour. Compiled by agents/build.rs against the
// torch wheel's headers; CPU and CUDA tensors alike.

#include <ATen/ATen.h>

#include <vector>

#include "c_abi.hpp"

namespace {

std::vector<at::Tensor> list(at::Tensor* const* ts, size_t n) {
  std::vector<at::Tensor> v;
  v.reserve(n);
  for (size_t i = 0; i < n; ++i) v.push_back(*ts[i]);
  return v;
}

}  // namespace

extern "C" {

// The global L2 norm of `grads` into *out (a new 0-dim tensor); when max_norm > 0, scale every
// gradient by min(1, max_norm / (norm + 1e-6)) in place, as torch.nn.utils.clip_grad_norm_
// does with foreach kernels. No value is read back to the host.
int wmt_clip_grad_norm(at::Tensor* const* grads, size_t n, double max_norm, at::Tensor** out, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] {
    auto g = list(grads, n);
    auto norms = at::_foreach_norm(g, 2);
    auto total = at::linalg_vector_norm(at::stack(norms), 2);
    if (max_norm > 0) {
      auto coef = at::clamp_max(at::reciprocal(total + 1e-6) * max_norm, 1.0);
      at::_foreach_mul_(g, coef);
    }
    *out = new at::Tensor(std::move(total));
  });
}

// One Adam step over all parameters with at::_fused_adam_ (torch.optim.Adam(fused=True)'s
// kernel): `steps` holds each parameter's step counter (float32 on the parameters' device,
// already advanced for this step); the bias corrections are computed from it on the device.
int wmt_fused_adam(at::Tensor* const* params, at::Tensor* const* grads, at::Tensor* const* exp_avg,
                   at::Tensor* const* exp_avg_sq, at::Tensor* const* steps, size_t n, double lr, double beta1,
                   double beta2, double eps, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] {
    auto p = list(params, n), g = list(grads, n), m = list(exp_avg, n), v = list(exp_avg_sq, n),
         s = list(steps, n);
    at::_fused_adam_(p, g, m, v, {}, s, lr, beta1, beta2, /*weight_decay=*/0.0, eps, /*amsgrad=*/false,
                     /*maximize=*/false, std::nullopt, std::nullopt);
  });
}

// *out = t's version counter, which every in-place op on t (or on a view of it) advances: a
// value kept alongside the tensor stays valid while the counter has not moved.
int wmt_version(at::Tensor* t, int64_t* out, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] { *out = static_cast<int64_t>(t->_version()); });
}

// t's gradient becomes `grad` (no copy), or undefined when `grad` is null: for a gradient that
// is computed outside autograd and written into a buffer of its own.
int wmt_set_grad(at::Tensor* t, at::Tensor* grad, char* err, size_t cap) {
  return wndqn_guarded(err, cap, [&] {
    if (grad == nullptr) {
      t->mutable_grad().reset();
    } else {
      t->mutable_grad() = *grad;
    }
  });
}

}  // extern "C"
