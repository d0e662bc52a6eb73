// The decode path of mor_linear on CUDA (csrc/cuda/decode.cu), which mor_linear_cuda takes for
// decode-sized calls.
#pragma once

#include <ATen/ATen.h>

#include <optional>
#include <tuple>

#include "../spec_table.h"

namespace mor_ext::cuda {

// mor_linear calls with at most this many tokens take the decode path: at T=1..64, d=4096 the GEMM
// path's eight launches cost 3.4-4.1x the frozen GEMV on an H100 (CUDA graph); the decode path is
// two kernels after it. Above ~64 tokens re-reading each role's rows per token stops paying.
constexpr int64_t kDecodeMaxTokens = 64;

using MorLinearOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Inputs already checked (check_layer_inputs); at most 65535 tokens (the expand kernel's grid).
MorLinearOutputs mor_linear_decode_path(const at::Tensor& x, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, const at::Tensor& lora_A,
                                        const at::Tensor& lora_B, const at::Tensor& router_weight,
                                        const at::Tensor& shared_gate_weight, const at::Tensor& role_ids,
                                        const SpecTable& spec, double scaling);

}  // namespace mor_ext::cuda
