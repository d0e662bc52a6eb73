// mor_linear's CPU decode path (a few fp32 tokens, as in generation), in AVX-512.
//
// BLAS is at its worst on these shapes (a [1, 16] x [16, d_out] expand per LoRA, a [1, d_in] x
// [d_in, 85] shrink), and stacking the role's rows to make them one GEMM copies more than the math
// reads. This path runs the per-token bodies the CUDA decode kernels run (kernels/decode.h) with
// AVX-512 dot products: routing first, then only the selected LoRAs' A rows and B columns, each read
// once for all the call's tokens of a role that use it (a batch-8 decode step), the larger phases
// spread over the threads. Decoding a whole model, the adapter is not in cache (SmolLM2's is 282
// MB), so bytes read are what this path saves. It lives in its own file, built for AVX-512F, and is
// called only where the CPU has AVX-512 and ATEN_CPU_CAPABILITY does not ask torch to stay below it.
#pragma once

#include <ATen/ATen.h>

#include "../spec_table.h"

namespace mor_ext::cpu {

// Calls with at most this many tokens take the path (a batch-8 decode step too): on the dev CPU
// (d=576 x 1536, one thread, 2026-12-05, since the expand sums 16 outputs at a time) it added 21 us
// to the frozen GEMV at T=1 where the generic path added 46, 50 vs 67 at T=4, 108 vs 117 at T=8 and
// broke even at T=16.
constexpr int64_t kDecodeMaxTokens = 8;

// Writes y (the frozen layer's output, contiguous fp32, updated in place) and the routing outputs of
// every token; inputs fp32 and contiguous, role ids int64, already checked.
void decode_avx512_f32(const SpecTable& spec, const at::Tensor& x, const at::Tensor& roles, const at::Tensor& lora_A,
                       const at::Tensor& lora_B, const at::Tensor& router_weight,
                       const at::Tensor& shared_gate_weight, double scaling, at::Tensor& y, at::Tensor& lora_index,
                       at::Tensor& lora_weight, at::Tensor& router_probs, at::Tensor& shrink,
                       at::Tensor& shared_gate_logit);

}  // namespace mor_ext::cpu
