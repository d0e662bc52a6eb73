// Small host-built tables (per-spec index maps, kernel work lists) moved to a tensor's device.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <cstring>
#include <vector>

namespace mor_ext {

// A host table as an int64 tensor on `device`; for a GPU, staged through pinned memory and copied
// without a host sync (the caching host allocator keeps the buffer until the copy has run).
inline at::Tensor to_device_async(const int64_t* data, int64_t rows, int64_t cols, const at::Device& device) {
  const bool gpu = !device.is_cpu();
  at::Tensor host = at::empty({rows, cols}, at::TensorOptions().dtype(at::kLong).pinned_memory(gpu));
  if (rows * cols > 0) std::memcpy(host.data_ptr<int64_t>(), data, rows * cols * sizeof(int64_t));
  return gpu ? host.to(device, /*non_blocking=*/true) : host;
}

inline at::Tensor to_device_async(const std::vector<int64_t>& v, const at::Device& device) {
  return to_device_async(v.data(), static_cast<int64_t>(v.size()), 1, device).view({-1});
}

}  // namespace mor_ext
