// Argument checks of mor_ext::load_balance_loss_layers and its backward, shared by the CPU loops
// (cpu/load_balance_loss.cpp) and the device-generic ATen kernels (aten/load_balance_loss.cpp).
#pragma once

#include <ATen/ATen.h>

#include "cpu/cpu_utils.h"
#include "spec_table.h"

namespace mor_ext {

// One layer's router_probs [N, E_total] and lora_index [N, K] against the call's N tokens; the
// index values only where `values` (a read of the data: CPU only, else a sync).
inline void check_balance_layer(const at::Tensor& router_probs, const at::Tensor& lora_index, int64_t n,
                                const SpecTable& spec, bool values) {
  const int64_t e_total = spec.num_experts_total;
  TORCH_CHECK_VALUE(router_probs.dim() == 2 && router_probs.size(0) == n && router_probs.size(1) == e_total,
                    "router_probs must be [", n, ", ", e_total, "], got ", router_probs.sizes());
  TORCH_CHECK_VALUE(lora_index.dim() == 2 && lora_index.size(0) == n, "lora_index must be [", n, ", K], got ",
                    lora_index.sizes());
  TORCH_CHECK_VALUE(lora_index.device() == router_probs.device(), "lora_index is on ", lora_index.device(),
                    " but router_probs is on ", router_probs.device());
  TORCH_CHECK_TYPE(at::isIntegralType(lora_index.scalar_type(), /*includeBool=*/false),
                   "lora_index must be an integer tensor, got ", lora_index.scalar_type());
  TORCH_CHECK_TYPE(at::isFloatingType(router_probs.scalar_type()), "router_probs must be a floating-point tensor, got ",
                   router_probs.scalar_type());
  if (values && lora_index.is_cpu()) cpu::checked_index(lora_index, spec.num_loras);
}

// Every layer's inputs, one K for all, and the call's role ids (checked once: the layers share them).
inline void check_balance_layers(at::TensorList router_probs, at::TensorList lora_index, const at::Tensor& role_ids,
                                 const SpecTable& spec, bool values) {
  TORCH_CHECK_VALUE(!router_probs.empty() && router_probs.size() == lora_index.size(),
                    "load_balance_loss_layers needs one lora_index per router_probs and at least one layer, got ",
                    router_probs.size(), " and ", lora_index.size());
  const int64_t n = role_ids.size(0);
  for (size_t l = 0; l < router_probs.size(); ++l) {
    check_balance_layer(router_probs[l], lora_index[l], n, spec, values);
    if (l == 0) check_role_ids(role_ids, n, spec.num_roles, router_probs[0]);
    TORCH_CHECK_VALUE(router_probs[l].device() == router_probs[0].device(), "router_probs[", l, "] is on ",
                      router_probs[l].device(), " but router_probs[0] is on ", router_probs[0].device());
    TORCH_CHECK_VALUE(lora_index[l].size(1) == lora_index[0].size(1), "layer ", l, ": lora_index has ",
                      lora_index[l].size(1), " slots, layer 0 has ", lora_index[0].size(1));
  }
}

}  // namespace mor_ext
