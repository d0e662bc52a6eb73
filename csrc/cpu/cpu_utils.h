// Helpers shared by the CPU kernels: argument checks with messages that name the tensor, and
// output allocation that can poison fresh buffers so tests catch any element a kernel forgets.
#pragma once

#include <ATen/ATen.h>

#include <cstdlib>
#include <cstring>
#include <limits>
#include <optional>
#include <tuple>

#include "../spec_table.h"

namespace mor_ext::cpu {

inline void check_float_tensor(const at::Tensor& t, const char* name, int64_t dim) {
  TORCH_CHECK_VALUE(t.defined(), name, " is required");
  TORCH_CHECK_TYPE(at::isFloatingType(t.scalar_type()), name, " must be a floating-point tensor, got ",
                   t.scalar_type());
  TORCH_CHECK_VALUE(t.dim() == dim, name, " must be ", dim, "-D, got shape ", t.sizes());
}

// A kernel handed a tensor from another device would read a foreign pointer.
inline void check_on_device(const at::Tensor& t, const char* name, const at::Tensor& x, const char* x_name = "x") {
  TORCH_CHECK_VALUE(t.device() == x.device(), name, " is on ", t.device(), " but ", x_name, " is on ", x.device());
}

inline void check_same(const at::Tensor& t, const char* name, const at::Tensor& x, const char* x_name = "x") {
  TORCH_CHECK_TYPE(t.scalar_type() == x.scalar_type(), name, " has dtype ", t.scalar_type(), " but ", x_name,
                   " has dtype ", x.scalar_type());
  check_on_device(t, name, x, x_name);
}

// lora_index [N, K] (CPU) as contiguous int32, with every entry checked to lie in [-1, L).
inline at::Tensor checked_index(const at::Tensor& lora_index, int64_t num_loras) {
  TORCH_CHECK_TYPE(at::isIntegralType(lora_index.scalar_type(), /*includeBool=*/false),
                   "lora_index must be an integer tensor, got ", lora_index.scalar_type());
  // Check in int64 before narrowing, so that e.g. 2**32 + 1 cannot wrap to a valid index.
  const at::Tensor wide = lora_index.to(at::kLong).contiguous();
  const int64_t* p = wide.data_ptr<int64_t>();
  const int64_t k = wide.dim() == 2 ? wide.size(1) : 1;
  for (int64_t i = 0; i < wide.numel(); ++i)
    TORCH_CHECK_VALUE(p[i] >= -1 && p[i] < num_loras, "lora_index[", i / k, ", ", i % k, "] = ", p[i],
                      ", but there are ", num_loras, " LoRAs (valid: -1 .. ", num_loras - 1, ")");
  return wide.to(at::kInt);
}

// The slots a backward gets back from its forward must name LoRAs of each token's own role, its
// shared LoRA first (if it has one), then routed ones: they do when they come from route or
// mor_linear with the same role_ids, and the CPU backward kernels index the role's block by them.
// Reads the data, so CPU only (the CUDA kernels skip a slot outside the role instead: no sync).
//   index: contiguous int32 [n, K]; roles: contiguous int64 [n], values already range-checked.
inline void check_saved_slots(const at::Tensor& index, const at::Tensor& roles, const SpecTable& spec,
                              const char* op) {
  const int32_t* ip = index.data_ptr<int32_t>();
  const int64_t* rp = roles.data_ptr<int64_t>();
  const int64_t n = index.size(0), k = index.size(1);
  for (int64_t t = 0; t < n; ++t) {
    const int64_t rho = rp[t];
    if (rho < 0) continue;
    const int64_t shared = spec.shared[rho], first_routed = spec.lora_start[rho] + shared;
    for (int64_t q = 0; q < shared + spec.top_k[rho]; ++q) {
      const int64_t l = ip[t * k + q];
      const bool ok = q < shared ? l == spec.lora_start[rho]
                                 : l >= first_routed && l < first_routed + spec.num_experts[rho];
      TORCH_CHECK_VALUE(ok, "lora_index[", t, ", ", q, "] = ", l, " is not ", q < shared ? "the shared" : "a routed",
                        " LoRA of role ", rho, "; ", op,
                        " needs the lora_index that its forward returned for the same role_ids");
    }
  }
}

// MOR_EXT_POISON=1 fills every fresh output with NaN (or -7 for integers) before the kernel runs,
// so an element a kernel forgets to write shows up in the comparison with the reference.
// Read on every call (getenv is cheap next to any kernel) so tests can switch it per test.
inline bool poison_outputs() {
  const char* v = std::getenv("MOR_EXT_POISON");
  return v != nullptr && v[0] != '\0' && v[0] != '0';
}

// MOR_EXT_BENCH_LOSSES, for A/B benchmarks and the tests only (read per call, like MOR_EXT_POISON):
// "generic" runs the loss ops' CPU loops without AVX-512 where the CPU has it; "aten" runs the
// load-balance loss on the CPU through its device-generic ATen version (what CUDA runs).
inline bool bench_losses_mode_is(const char* mode) {
  const char* v = std::getenv("MOR_EXT_BENCH_LOSSES");
  return v != nullptr && std::strcmp(v, mode) == 0;
}

inline at::Tensor new_output(at::IntArrayRef sizes, const at::TensorOptions& options) {
  at::Tensor t = at::empty(sizes, options);
  if (poison_outputs()) {
    if (at::isFloatingType(t.scalar_type()))
      t.fill_(std::numeric_limits<double>::quiet_NaN());
    else
      t.fill_(-7);
  }
  return t;
}

// The outputs of mor_linear beside y, fresh for x's n tokens (poisoned under MOR_EXT_POISON):
// lora_index [n, K] int32, lora_weight [n, K] in x's dtype, router_probs [n, E_total] fp32, the
// saved per-slot shrink [n, K, r] in x's dtype and the shared-gate logit [n] fp32. Every kernel of
// the op (CPU, CUDA, both decode paths) allocates them here.
struct LayerRouting {
  at::Tensor lora_index, lora_weight, router_probs, shrink, shared_gate_logit;

  static LayerRouting fresh(const at::Tensor& x, int64_t k, int64_t e_total, int64_t rank) {
    const int64_t n = x.size(0);
    return {new_output({n, k}, x.options().dtype(at::kInt)), new_output({n, k}, x.options()),
            new_output({n, e_total}, x.options().dtype(at::kFloat)), new_output({n, k, rank}, x.options()),
            new_output({n}, x.options().dtype(at::kFloat))};
  }

  // The op's six outputs.
  std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> with(const at::Tensor& y) const {
    return {y, lora_index, lora_weight, router_probs, shrink, shared_gate_logit};
  }
};

// The frozen layer: x @ weight^T (+ bias), contiguous.
inline at::Tensor frozen_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  return (bias.has_value() && bias->defined()) ? at::addmm(*bias, x, weight.t()) : at::mm(x, weight.t());
}

}  // namespace mor_ext::cpu
