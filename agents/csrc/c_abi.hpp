// How a C++ failure of the libtorch extensions (multi_tensor.cpp, cuda_graph.cpp) crosses the C
// ABI to Rust (its Rust side: src/ext/ffi.rs); envs/csrc has its own copy for the ALE shim. Unwinding a C++ exception into Rust is undefined behaviour,
// so every entry point runs its body through `wndqn_guarded`, which returns 0, or -1 with the
// exception's message in the caller's buffer.
#pragma once

#include <cstddef>
#include <cstring>
#include <exception>
#include <string>

// Copy `msg` into `err` (capacity `cap`, always NUL-terminated, truncated if needed).
inline void wndqn_set_err(char* err, size_t cap, const std::string& msg) {
  if (err == nullptr || cap == 0) return;
  size_t n = msg.size() < cap - 1 ? msg.size() : cap - 1;
  std::memcpy(err, msg.data(), n);
  err[n] = '\0';
}

// Run `f`; 0 on success, -1 with the message in `err` when it throws.
template <typename F>
int wndqn_guarded(char* err, size_t cap, F f) {
  try {
    f();
    return 0;
  } catch (const std::exception& e) {
    wndqn_set_err(err, cap, e.what());
  } catch (...) {
    wndqn_set_err(err, cap, "unknown C++ exception");
  }
  return -1;
}
