// The loss functions written with ATen ops only: the CPU kernels, and the CUDA ones where no
// dedicated kernel exists (csrc/cuda/losses.cu registers them for CUDA).
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

#include "../spec_table.h"
#include "cpu_utils.h"

namespace mor_ext::cpu {

// lora_A [L, r, d_in] and lora_B [L, d_out, r] of one layer, L matching the spec.
inline void check_lora_pair(const at::Tensor& lora_A, const at::Tensor& lora_B, const SpecTable& spec) {
  check_float_tensor(lora_A, "lora_A", 3);
  check_float_tensor(lora_B, "lora_B", 3);
  check_same(lora_B, "lora_B", lora_A, "lora_A");
  TORCH_CHECK_VALUE(lora_A.size(0) == spec.num_loras && lora_B.size(0) == spec.num_loras, "lora_A and lora_B need ",
                    spec.num_loras, " LoRAs for this spec, got ", lora_A.sizes(), " and ", lora_B.sizes());
  TORCH_CHECK_VALUE(lora_B.size(2) == lora_A.size(1), "lora_B rank ", lora_B.size(2), " != lora_A rank ",
                    lora_A.size(1));
}

at::Tensor load_balance_loss_aten(const at::Tensor& router_probs, const at::Tensor& lora_index,
                                  const at::Tensor& role_ids, at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                  at::IntArrayRef has_shared);
at::Tensor load_balance_loss_backward_aten(const at::Tensor& grad, const at::Tensor& router_probs,
                                           const at::Tensor& lora_index, const at::Tensor& role_ids,
                                           at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                           at::IntArrayRef has_shared);

at::Tensor load_balance_loss_layers_aten(at::TensorList router_probs, at::TensorList lora_index,
                                        const at::Tensor& role_ids, at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                        at::IntArrayRef has_shared);
std::vector<at::Tensor> load_balance_loss_layers_backward_aten(const at::Tensor& grad, at::TensorList router_probs,
                                                               at::TensorList lora_index, const at::Tensor& role_ids,
                                                               at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                                               at::IntArrayRef has_shared);

at::Tensor orthogonal_loss_aten(const at::Tensor& lora_A, const at::Tensor& lora_B, at::IntArrayRef num_experts,
                                at::IntArrayRef top_k, at::IntArrayRef has_shared);
std::tuple<at::Tensor, at::Tensor> orthogonal_loss_backward_aten(const at::Tensor& grad, const at::Tensor& lora_A,
                                                                 const at::Tensor& lora_B, at::IntArrayRef num_experts,
                                                                 at::IntArrayRef top_k, at::IntArrayRef has_shared);
std::tuple<at::Tensor, at::Tensor> orthogonal_loss_layers_aten(at::TensorList lora_A, at::TensorList lora_B,
                                                               at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                                               at::IntArrayRef has_shared);
std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> orthogonal_loss_layers_backward_aten(
    const at::Tensor& grad, const at::Tensor& products, at::TensorList lora_A, at::TensorList lora_B,
    at::IntArrayRef num_experts, at::IntArrayRef top_k, at::IntArrayRef has_shared);

}  // namespace mor_ext::cpu
