// The flat description of a MoRSpec that every op receives (schemas carry no dataclasses), turned
// into per-role offset tables once per call, with the checks that make bad specs a clear error.
#pragma once

#include <ATen/ATen.h>

#include <vector>

#include "kernels/routing.h"

namespace mor_ext {

struct SpecTable {
  int64_t num_roles = 0;
  std::vector<int64_t> num_experts, top_k, shared;  // per role
  std::vector<int64_t> router_start;                // first router row of the role
  std::vector<int64_t> lora_start;                  // first LoRA (its shared one, if any)
  int64_t num_loras = 0, num_experts_total = 0, k_max = 0;
  bool sigmoid_gate = true;

  static SpecTable from(at::IntArrayRef num_experts, at::IntArrayRef top_k, at::IntArrayRef has_shared,
                        bool sigmoid_gate) {
    TORCH_CHECK_VALUE(!num_experts.empty(), "MoR spec: at least one role is required");
    TORCH_CHECK_VALUE(num_experts.size() == top_k.size() && top_k.size() == has_shared.size(),
                      "MoR spec: num_experts, top_k and has_shared must have one entry per role, got ",
                      num_experts.size(), ", ", top_k.size(), " and ", has_shared.size());
    TORCH_CHECK_VALUE(num_experts.size() <= static_cast<size_t>(kernels::kMaxRoles), "MoR spec: at most ",
                      kernels::kMaxRoles, " roles, got ", num_experts.size());
    SpecTable t;
    t.num_roles = static_cast<int64_t>(num_experts.size());
    t.sigmoid_gate = sigmoid_gate;
    for (int64_t r = 0; r < t.num_roles; ++r) {
      const int64_t e = num_experts[r], k = top_k[r], s = has_shared[r];
      TORCH_CHECK_VALUE(e >= 0 && k >= 0, "MoR spec: role ", r, " has num_experts=", e, ", top_k=", k,
                        "; both must be >= 0");
      TORCH_CHECK_VALUE(k <= e, "MoR spec: role ", r, " has top_k=", k, " > num_experts=", e);
      TORCH_CHECK_VALUE(e <= kernels::kMaxExperts, "MoR spec: role ", r, " has ", e,
                        " experts; the kernels support at most ", kernels::kMaxExperts);
      TORCH_CHECK_VALUE(s == 0 || s == 1, "MoR spec: has_shared[", r, "] must be 0 or 1, got ", s);
      TORCH_CHECK_VALUE(e + s > 0, "MoR spec: role ", r, " has no LoRA (no shared, no experts)");
      t.num_experts.push_back(e);
      t.top_k.push_back(k);
      t.shared.push_back(s);
      t.router_start.push_back(t.num_experts_total);
      t.lora_start.push_back(t.num_loras);
      t.num_experts_total += e;
      t.num_loras += e + s;
      t.k_max = std::max(t.k_max, k + s);
    }
    return t;
  }

  // Whether any role's shared LoRA has a sigmoid gate (then the shared-gate logits are needed).
  bool any_gated_shared() const {
    if (!sigmoid_gate) return false;
    for (int64_t s : shared)
      if (s) return true;
    return false;
  }

  // The same tables, flat, for kernels::route_token and friends (host loops and CUDA launches).
  kernels::RoleTables tables() const {  // from() keeps the counts within the tables' sizes
    kernels::RoleTables t;
    t.num_roles = static_cast<int>(num_roles);
    t.k_max = static_cast<int>(k_max);
    t.e_total = static_cast<int>(num_experts_total);
    t.sigmoid_gate = sigmoid_gate;
    for (int64_t r = 0; r < num_roles; ++r) {
      t.num_experts[r] = static_cast<int>(num_experts[r]);
      t.top_k[r] = static_cast<int>(top_k[r]);
      t.shared[r] = static_cast<int>(shared[r]);
      t.router_start[r] = static_cast<int>(router_start[r]);
      t.lora_start[r] = static_cast<int>(lora_start[r]);
    }
    return t;
  }
};

// [E_total (+ R), d_in]: the router rows, then the shared-gate rows where they are used. One GEMM
// with it gives both kinds of logits (route reads x once instead of twice).
inline at::Tensor router_and_gate_rows(const at::Tensor& router_weight, const at::Tensor& shared_gate_weight,
                                       bool gated) {
  return gated ? at::cat({router_weight, shared_gate_weight}) : router_weight;
}

// role_ids must be a 1-D int64 tensor of n entries in [-1, num_roles); names the first bad entry.
inline void check_role_ids(const at::Tensor& role_ids, int64_t n, int64_t num_roles, const at::Tensor& like) {
  TORCH_CHECK_TYPE(role_ids.scalar_type() == at::kLong, "role_ids must be int64, got ", role_ids.scalar_type());
  TORCH_CHECK_VALUE(role_ids.dim() == 1 && role_ids.size(0) == n, "role_ids must have shape [", n,
                    "] (one per token), got ", role_ids.sizes());
  TORCH_CHECK_VALUE(role_ids.device() == like.device(), "role_ids is on ", role_ids.device(),
                    " but x is on ", like.device());
  if (role_ids.device().is_cpu()) {
    auto r = role_ids.contiguous();
    const int64_t* p = r.data_ptr<int64_t>();
    for (int64_t t = 0; t < n; ++t)
      TORCH_CHECK_VALUE(p[t] >= -1 && p[t] < num_roles, "role_ids[", t, "] = ", p[t], ", but the spec has ",
                        num_roles, " roles (valid ids: -1 .. ", num_roles - 1, ")");
  }
}

}  // namespace mor_ext
