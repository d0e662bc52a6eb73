// Argument checks of the grouped-LoRA and fused-layer ops, shared by the CPU and CUDA kernels: shapes,
// dtypes and devices only (nothing that reads tensor data, which would sync a GPU). Every message
// names the tensor and the shape it should have.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "cpu/cpu_utils.h"
#include "spec_table.h"

namespace mor_ext {

using cpu::check_float_tensor;
using cpu::check_on_device;
using cpu::check_same;

// The route op's inputs: x [N, d_in], router_weight [E_total, d_in], shared_gate_weight [R, d_in],
// role_ids [N] (values checked on CPU only: on a GPU that would need a sync; functional.py checks them).
inline void check_route_inputs(const at::Tensor& x, const at::Tensor& router_weight, const at::Tensor& shared_gate_weight,
                        const at::Tensor& role_ids, const SpecTable& spec) {
  check_float_tensor(x, "x", 2);
  check_float_tensor(router_weight, "router_weight", 2);
  check_float_tensor(shared_gate_weight, "shared_gate_weight", 2);
  check_same(router_weight, "router_weight", x);
  check_same(shared_gate_weight, "shared_gate_weight", x);
  const int64_t d_in = x.size(1);
  TORCH_CHECK_VALUE(router_weight.size(0) == spec.num_experts_total && router_weight.size(1) == d_in,
                    "router_weight must have shape [", spec.num_experts_total, ", ", d_in, "], got ",
                    router_weight.sizes());
  TORCH_CHECK_VALUE(shared_gate_weight.size(0) == spec.num_roles && shared_gate_weight.size(1) == d_in,
                    "shared_gate_weight must have shape [", spec.num_roles, ", ", d_in, "], got ",
                    shared_gate_weight.sizes());
  check_role_ids(role_ids, x.size(0), spec.num_roles, x);
}

// route_backward's incoming gradients and the forward's outputs it gets back: shapes and devices.
inline void check_route_backward_inputs(const at::Tensor& grad_lora_weight, const at::Tensor& grad_router_probs,
                                        const at::Tensor& lora_index, const at::Tensor& router_probs,
                                        const at::Tensor& x, const SpecTable& spec) {
  const int64_t n = x.size(0), e_total = spec.num_experts_total, k_max = spec.k_max;
  for (const auto& [t, name, cols] : {std::tuple{&grad_lora_weight, "grad_lora_weight", k_max},
                                      {&grad_router_probs, "grad_router_probs", e_total},
                                      {&lora_index, "lora_index", k_max}, {&router_probs, "router_probs", e_total}}) {
    TORCH_CHECK_VALUE(t->dim() == 2 && t->size(0) == n && t->size(1) == cols, name, " must be [", n, ", ", cols,
                      "], got ", t->sizes());
    check_on_device(*t, name, x);
  }
}

inline void check_grouped_inputs(const at::Tensor& x, const at::Tensor& lora_A, const at::Tensor& lora_B,
                          const at::Tensor& lora_index, const at::Tensor& lora_weight) {
  check_float_tensor(x, "x", 2);
  check_float_tensor(lora_A, "lora_A", 3);
  check_float_tensor(lora_B, "lora_B", 3);
  check_float_tensor(lora_weight, "lora_weight", 2);
  check_same(lora_A, "lora_A", x);
  check_same(lora_B, "lora_B", x);
  check_same(lora_weight, "lora_weight", x);
  const int64_t n = x.size(0), d_in = x.size(1), num_loras = lora_A.size(0), rank = lora_A.size(1);
  TORCH_CHECK_VALUE(rank >= 1, "lora_A must be [L, r, d_in] with a rank r >= 1, got ", lora_A.sizes());
  TORCH_CHECK_VALUE(lora_A.size(2) == d_in, "lora_A must be [L, r, d_in] with d_in=", d_in, ", got ", lora_A.sizes());
  TORCH_CHECK_VALUE(lora_B.size(0) == num_loras && lora_B.size(2) == rank, "lora_B must be [L=", num_loras,
                    ", d_out, r=", rank, "], got ", lora_B.sizes());
  TORCH_CHECK_TYPE(lora_index.scalar_type() == at::kInt || lora_index.scalar_type() == at::kLong,
                   "lora_index must be int32 or int64, got ", lora_index.scalar_type());
  TORCH_CHECK_VALUE(lora_index.dim() == 2 && lora_index.size(0) == n, "lora_index must be [N=", n, ", K], got ",
                    lora_index.sizes());
  TORCH_CHECK_VALUE(lora_weight.sizes() == lora_index.sizes(), "lora_weight ", lora_weight.sizes(),
                    " must match lora_index ", lora_index.sizes());
  check_on_device(lora_index, "lora_index", x);
}

inline void check_layer_inputs(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                        const at::Tensor& lora_A, const at::Tensor& lora_B, const at::Tensor& router_weight,
                        const at::Tensor& shared_gate_weight, const at::Tensor& role_ids, const SpecTable& spec) {
  check_float_tensor(x, "x", 2);
  for (auto [t, name, dim] : {std::tuple{&weight, "weight", 2}, {&lora_A, "lora_A", 3}, {&lora_B, "lora_B", 3},
                              {&router_weight, "router_weight", 2}, {&shared_gate_weight, "shared_gate_weight", 2}}) {
    check_float_tensor(*t, name, dim);
    check_same(*t, name, x);
  }
  const int64_t d_in = x.size(1), d_out = weight.size(0);
  TORCH_CHECK_VALUE(weight.size(1) == d_in, "weight must be [d_out, d_in=", d_in, "], got ", weight.sizes());
  if (bias.has_value() && bias->defined()) {
    check_same(*bias, "bias", x);
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == d_out, "bias must be [", d_out, "], got ", bias->sizes());
  }
  TORCH_CHECK_VALUE(lora_A.size(1) >= 1, "lora_A must be [L, r, d_in] with a rank r >= 1, got ", lora_A.sizes());
  TORCH_CHECK_VALUE(lora_A.size(0) == spec.num_loras && lora_A.size(2) == d_in, "lora_A must be [L=",
                    spec.num_loras, ", r, d_in=", d_in, "], got ", lora_A.sizes());
  TORCH_CHECK_VALUE(lora_B.size(0) == spec.num_loras && lora_B.size(1) == d_out && lora_B.size(2) == lora_A.size(1),
                    "lora_B must be [L=", spec.num_loras, ", d_out=", d_out, ", r=", lora_A.size(1), "], got ",
                    lora_B.sizes());
  TORCH_CHECK_VALUE(router_weight.size(0) == spec.num_experts_total && router_weight.size(1) == d_in,
                    "router_weight must be [", spec.num_experts_total, ", ", d_in, "], got ", router_weight.sizes());
  TORCH_CHECK_VALUE(shared_gate_weight.size(0) == spec.num_roles && shared_gate_weight.size(1) == d_in,
                    "shared_gate_weight must be [", spec.num_roles, ", ", d_in, "], got ", shared_gate_weight.sizes());
  check_role_ids(role_ids, x.size(0), spec.num_roles, x);
}

// grouped_lora_backward's gradient and saved shrink.
inline void check_grouped_backward(const at::Tensor& grad_out, const at::Tensor& shrink, int64_t n, int64_t d_out,
                                   int64_t k, int64_t rank, const at::Tensor& x) {
  check_on_device(grad_out, "grad_out", x);
  check_on_device(shrink, "shrink", x);
  TORCH_CHECK_VALUE(grad_out.sizes() == at::IntArrayRef({n, d_out}), "grad_out must be [", n, ", ", d_out, "], got ",
                    grad_out.sizes());
  TORCH_CHECK_VALUE(shrink.sizes() == at::IntArrayRef({n, k, rank}), "shrink must be [", n, ", ", k, ", ", rank,
                    "], got ", shrink.sizes());
}

// The frozen linear of a fused op: weight [d_out, d_in] and optional bias [d_out], like x.
inline void check_frozen_linear(const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias,
                                int64_t d_out) {
  check_float_tensor(weight, "weight", 2);
  check_same(weight, "weight", x);
  TORCH_CHECK_VALUE(weight.size(0) == d_out && weight.size(1) == x.size(1), "weight must be [", d_out, ", ",
                    x.size(1), "], got ", weight.sizes());
  if (bias.has_value() && bias->defined()) {
    check_same(*bias, "bias", x);
    TORCH_CHECK_VALUE(bias->dim() == 1 && bias->size(0) == d_out, "bias must be [", d_out, "], got ", bias->sizes());
  }
}

// What mor_linear_backward gets back from the forward (and the incoming gradients): shapes and devices.
inline void check_saved_routing(const at::Tensor& grad_y, const at::Tensor& grad_lora_weight,
                                const at::Tensor& grad_router_probs, const at::Tensor& lora_index,
                                const at::Tensor& lora_weight, const at::Tensor& router_probs,
                                const at::Tensor& shrink, const at::Tensor& shared_gate_logit, int64_t n,
                                int64_t d_out, int64_t k_max, int64_t e_total, int64_t rank, const at::Tensor& x) {
  auto expect = [&x](const at::Tensor& t, const char* name, at::IntArrayRef sizes) {
    TORCH_CHECK_VALUE(t.sizes() == sizes, name, " must be ", sizes, ", got ", t.sizes());
    check_on_device(t, name, x);
  };
  expect(grad_y, "grad_y", {n, d_out});
  expect(grad_lora_weight, "grad_lora_weight", {n, k_max});
  expect(grad_router_probs, "grad_router_probs", {n, e_total});
  expect(lora_index, "lora_index", {n, k_max});
  expect(lora_weight, "lora_weight", {n, k_max});
  expect(router_probs, "router_probs", {n, e_total});
  expect(shrink, "shrink", {n, k_max, rank});
  expect(shared_gate_logit, "shared_gate_logit", {n});
}

// `t` as a contiguous tensor of dtype `dt`; itself when it already is, without the dispatcher
// round trips of a no-op .to() (eight a layer's backward, 28-210 layers a training step).
inline at::Tensor contiguous_as(const at::Tensor& t, at::ScalarType dt) {
  return t.scalar_type() == dt && t.is_contiguous() ? t : t.to(dt).contiguous();
}

// mor_linear_backward's incoming gradients and saved forward outputs in the layouts the kernels
// read: x's dtype for the data the LoRA path multiplies, int32 slots, fp32 for the routing.
struct LayerBackwardInputs {
  at::Tensor grad_y, index, lora_weight, shrink, extra_grad_weight, grad_probs, probs, shared_logit;

  static LayerBackwardInputs from(const at::Tensor& x, const at::Tensor& grad_y, const at::Tensor& grad_lora_weight,
                                  const at::Tensor& grad_router_probs, const at::Tensor& lora_index,
                                  const at::Tensor& lora_weight, const at::Tensor& router_probs,
                                  const at::Tensor& shrink, const at::Tensor& shared_gate_logit) {
    const auto dt = x.scalar_type();
    return {contiguous_as(grad_y, dt),
            contiguous_as(lora_index, at::kInt),
            contiguous_as(lora_weight, dt),
            contiguous_as(shrink, dt),
            contiguous_as(grad_lora_weight, at::kFloat),
            contiguous_as(grad_router_probs, at::kFloat),
            contiguous_as(router_probs, at::kFloat),
            contiguous_as(shared_gate_logit, at::kFloat)};
  }
};

}  // namespace mor_ext
