// The decode path of mor_linear on CUDA (csrc/cuda/decode.cu), which mor_linear_cuda takes for
// decode-sized calls.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <optional>
#include <tuple>

#include "../spec_table.h"

namespace mor_ext::cuda {

// mor_linear calls with at most this many tokens take the decode path: at T=1..64, d=4096 the GEMM
// path's eight launches cost 3.4-4.1x the frozen GEMV on an H100 (CUDA graph); the decode path is
// two kernels after it. Above ~64 tokens re-reading each role's rows per token stops paying.
constexpr int64_t kDecodeMaxTokens = 64;

// The decode route kernel keeps a token's dot products in dynamic shared memory, within the 48 KB
// a launch gets without opting in: the most routing rows any role dots with x (its router rows and
// shared-gate row), E_total logits and the K_max x r slot products. MoRAgent at r=16 needs 320
// bytes in fp32; larger specs take the GEMM path.
inline int64_t decode_max_rows(const SpecTable& spec) {
  int64_t rows = 0;
  for (int64_t rho = 0; rho < spec.num_roles; ++rho) rows = std::max<int64_t>(rows, spec.num_experts[rho] + 1);
  return rows;
}
inline size_t decode_smem_bytes(const SpecTable& spec, int64_t rank, int64_t element_size) {
  return static_cast<size_t>(decode_max_rows(spec) + spec.num_experts_total + spec.k_max * rank) * element_size;
}
constexpr size_t kDecodeMaxSmem = 48 * 1024;
inline bool decode_fits(const SpecTable& spec, int64_t rank, int64_t element_size) {
  return decode_smem_bytes(spec, rank, element_size) <= kDecodeMaxSmem;
}

using MorLinearOutputs = std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>;

// Inputs already checked (check_layer_inputs); at most kMaxGridY tokens (the expand kernel's grid y).
MorLinearOutputs mor_linear_decode_path(const at::Tensor& x, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, const at::Tensor& lora_A,
                                        const at::Tensor& lora_B, const at::Tensor& router_weight,
                                        const at::Tensor& shared_gate_weight, const at::Tensor& role_ids,
                                        const SpecTable& spec, double scaling);

}  // namespace mor_ext::cuda
