// CPU kernels of mor_ext::route and mor_ext::route_backward.
//
// Router logits for all E_total rows come from one GEMM (E_total is ~11, so computing the other
// roles' rows too costs less than gathering tokens by role); the per-token softmax, top-k and
// renormalisation then run in parallel over tokens with the shared bodies in kernels/routing.h.
#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../kernels/routing.h"
#include "../input_checks.h"
#include "../spec_table.h"
#include "cpu_utils.h"

namespace mor_ext::cpu {
namespace {

constexpr int64_t kTokenGrain = 256;

// fp32 logits [N, rows] = x @ w^T in x's dtype, then widened (the reference does the same).
at::Tensor logits_fp32(const at::Tensor& x, const at::Tensor& w) {
  return at::mm(x, w.t()).to(at::kFloat).contiguous();
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> route_cpu(const at::Tensor& x, const at::Tensor& router_weight,
                                                         const at::Tensor& shared_gate_weight,
                                                         const at::Tensor& role_ids, at::IntArrayRef num_experts,
                                                         at::IntArrayRef top_k, at::IntArrayRef has_shared,
                                                         bool sigmoid_gate) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, sigmoid_gate);
  check_route_inputs(x, router_weight, shared_gate_weight, role_ids, spec);
  const int64_t n = x.size(0), e_total = spec.num_experts_total, k_max = spec.k_max;

  // One GEMM for the router and the shared gates: both read all of x, and x is what costs.
  const bool gated = spec.any_gated_shared();
  const at::Tensor logits = logits_fp32(x, router_and_gate_rows(router_weight, shared_gate_weight, gated));  // [N, stride]
  const int64_t stride = logits.size(1);
  const at::Tensor roles = role_ids.contiguous();

  at::Tensor lora_index = new_output({n, k_max}, x.options().dtype(at::kInt));
  at::Tensor weight_fp32 = new_output({n, k_max}, x.options().dtype(at::kFloat));
  at::Tensor probs = new_output({n, e_total}, x.options().dtype(at::kFloat));

  const float* logit_p = logits.data_ptr<float>();
  const float* shared_p = logit_p + e_total;  // row t, role rho at shared_p[t * stride + rho]
  const int64_t* role_p = roles.data_ptr<int64_t>();
  int32_t* index_p = lora_index.data_ptr<int32_t>();
  float* weight_p = weight_fp32.data_ptr<float>();
  float* probs_p = probs.data_ptr<float>();

  const kernels::RoleTables tables = spec.tables();
  at::parallel_for(0, n, kTokenGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int rho = static_cast<int>(role_p[t]);
      const float shared_logit = (gated && rho >= 0) ? shared_p[t * stride + rho] : 0.0f;
      kernels::route_token(tables, rho, logit_p + t * stride, shared_logit, index_p + t * k_max,
                           weight_p + t * k_max, probs_p + t * e_total);
    }
  });
  return {lora_index, weight_fp32.to(x.scalar_type()), probs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> route_backward_cpu(
    const at::Tensor& grad_lora_weight, const at::Tensor& grad_router_probs, const at::Tensor& x,
    const at::Tensor& router_weight, const at::Tensor& shared_gate_weight, const at::Tensor& role_ids,
    const at::Tensor& lora_index, const at::Tensor& router_probs, at::IntArrayRef num_experts, at::IntArrayRef top_k,
    at::IntArrayRef has_shared, bool sigmoid_gate) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, sigmoid_gate);
  check_route_inputs(x, router_weight, shared_gate_weight, role_ids, spec);
  const int64_t n = x.size(0), e_total = spec.num_experts_total, k_max = spec.k_max, num_roles = spec.num_roles;
  check_route_backward_inputs(grad_lora_weight, grad_router_probs, lora_index, router_probs, x, spec);
  const bool gated = spec.any_gated_shared();
  const at::Tensor shared_logits = gated ? logits_fp32(x, shared_gate_weight) : at::Tensor();
  const at::Tensor grad_w = contiguous_as(grad_lora_weight, at::kFloat);
  const at::Tensor grad_p = contiguous_as(grad_router_probs, at::kFloat);
  const at::Tensor probs = contiguous_as(router_probs, at::kFloat);
  const at::Tensor index = contiguous_as(lora_index, at::kInt);
  const at::Tensor roles = role_ids.contiguous();
  check_saved_slots(index, roles, spec, "route_backward");

  // dL/d(logits) for the router columns, then the shared-gate columns: [N, stride].
  const int64_t stride = e_total + (gated ? num_roles : 0);
  at::Tensor grad_logits = at::zeros({n, stride}, x.options().dtype(at::kFloat));

  const float* grad_w_p = grad_w.data_ptr<float>();
  const float* grad_p_p = grad_p.data_ptr<float>();
  const float* probs_p = probs.data_ptr<float>();
  const int32_t* index_p = index.data_ptr<int32_t>();
  const int64_t* role_p = roles.data_ptr<int64_t>();
  const float* shared_p = gated ? shared_logits.data_ptr<float>() : nullptr;
  float* grad_logits_p = grad_logits.data_ptr<float>();
  float* grad_shared_p = grad_logits_p + e_total;

  const kernels::RoleTables tables = spec.tables();
  at::parallel_for(0, n, kTokenGrain, [&](int64_t begin, int64_t end) {
    for (int64_t t = begin; t < end; ++t) {
      const int rho = static_cast<int>(role_p[t]);
      const float shared_logit = (gated && rho >= 0) ? shared_p[t * num_roles + rho] : 0.0f;
      const float grad_shared = kernels::route_token_backward_all(
          tables, rho, probs_p + t * e_total, index_p + t * k_max, grad_w_p + t * k_max, grad_p_p + t * e_total,
          shared_logit, grad_logits_p + t * stride);
      if (gated && rho >= 0) grad_shared_p[t * stride + rho] = grad_shared;
    }
  });

  // The logits were x @ W^T in x's dtype: chain through that (one) GEMM in the same dtype.
  const at::Tensor g_logits = grad_logits.to(x.scalar_type());
  const at::Tensor grad_x = at::mm(g_logits, router_and_gate_rows(router_weight, shared_gate_weight, gated));
  const at::Tensor grad_rows = at::mm(g_logits.t(), x);  // [stride, d_in]
  // clone, not contiguous(): row blocks of grad_rows are already contiguous, and outputs of an op
  // must not alias each other.
  const at::Tensor grad_router = grad_rows.narrow(0, 0, e_total).clone();
  const at::Tensor grad_shared =
      gated ? grad_rows.narrow(0, e_total, num_roles).clone() : at::zeros_like(shared_gate_weight);
  return {grad_x, grad_router, grad_shared};
}

TORCH_LIBRARY_IMPL(mor_ext, CPU, m) {
  m.impl("route", &route_cpu);
  m.impl("route_backward", &route_backward_cpu);
}

}  // namespace mor_ext::cpu
