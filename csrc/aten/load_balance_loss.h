// The device-generic ATen kernels of mor_ext::load_balance_loss_layers and its backward
// (load_balance_loss.cpp): CUDA's, and the CPU's under MOR_EXT_BENCH_LOSSES=aten.
#pragma once

#include <ATen/ATen.h>

#include <vector>

namespace mor_ext::aten {

at::Tensor load_balance_loss_layers_aten(at::TensorList router_probs, at::TensorList lora_index,
                                        const at::Tensor& role_ids, at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                        at::IntArrayRef has_shared);

std::vector<at::Tensor> load_balance_loss_layers_backward_aten(const at::Tensor& grad, at::TensorList router_probs,
                                                               at::TensorList lora_index, const at::Tensor& role_ids,
                                                               at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                                               at::IntArrayRef has_shared);

}  // namespace mor_ext::aten
