// The loss functions written with ATen ops only: the CPU kernels, and the CUDA ones where no
// dedicated kernel exists (csrc/cuda/losses.cu registers them for CUDA).
#pragma once

#include <ATen/ATen.h>

#include <tuple>
#include <vector>

namespace mor_ext::cpu {

at::Tensor load_balance_loss_aten(const at::Tensor& router_probs, const at::Tensor& lora_index,
                                  const at::Tensor& role_ids, at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                  at::IntArrayRef has_shared);
at::Tensor load_balance_loss_backward_aten(const at::Tensor& grad, const at::Tensor& router_probs,
                                           const at::Tensor& lora_index, const at::Tensor& role_ids,
                                           at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                           at::IntArrayRef has_shared);

at::Tensor orthogonal_loss_aten(const at::Tensor& lora_A, const at::Tensor& lora_B, at::IntArrayRef num_experts,
                                at::IntArrayRef top_k, at::IntArrayRef has_shared);
std::tuple<at::Tensor, at::Tensor> orthogonal_loss_backward_aten(const at::Tensor& grad, const at::Tensor& lora_A,
                                                                 const at::Tensor& lora_B, at::IntArrayRef num_experts,
                                                                 at::IntArrayRef top_k, at::IntArrayRef has_shared);
at::Tensor orthogonal_loss_layers_aten(at::TensorList lora_A, at::TensorList lora_B, at::IntArrayRef num_experts,
                                      at::IntArrayRef top_k, at::IntArrayRef has_shared);
std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> orthogonal_loss_layers_backward_aten(
    const at::Tensor& grad, at::TensorList lora_A, at::TensorList lora_B, at::IntArrayRef num_experts,
    at::IntArrayRef top_k, at::IntArrayRef has_shared);

}  // namespace mor_ext::cpu
