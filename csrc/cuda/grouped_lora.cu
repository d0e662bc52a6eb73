// CUDA kernels of mor_ext::grouped_lora and its backward (the fused layer, mor_linear, is in
// mor_linear.cu; both share the gate kernels of gate_kernels.cuh).
//
// Algorithm ("dense over LoRAs, sparse over tokens"), chosen by the roofline: with all L LoRAs of a
// layer stacked, the shrink GEMM x [N, d_in] x A^T [d_in, L*r] has L*r ~ 224 columns for MoRAgent at
// r=16, so its arithmetic intensity (~L*r FLOP per byte of x) is below an H100's ridge point
// (~300): it costs what reading x once costs, whether it computes one role's LoRAs or all of them.
// Computing every LoRA's shrink for every token is therefore as fast as a gather by role, needs no
// sort, no host sync (CUDA-graph friendly, decode included) and no [N, d_in] gather copy. Then:
//
//   1. shrink_all = x @ A_all^T (cuBLAS through ATen, tensor cores; for mor_linear the router and
//      shared-gate rows ride along in the same GEMM, so x is read once for the LoRAs and routing);
//   2. one elementwise kernel (mor_linear: after the per-token routing kernel) writes the gated
//      matrix G [N, L*r] = scaling * (token's weight for LoRA l) * shrink, zero for LoRAs a token did
//      not pick, and the per-slot shrink [N, K, r] saved for backward;
//   3. y = G @ B_all (+ bias), then the frozen GEMM adds x @ W^T onto it with beta = 1, so the add
//      rides in the epilogue of the compute-bound GEMM (lora_then_frozen).
//
// Backward mirrors it: dG = dy @ B_all (one GEMM), one elementwise kernel writes dL/dshrink, dL/dw
// and rebuilds G from the saved slots, then grad_x = dshrink @ A_all + dy @ W, grad_A = dshrink^T @ x,
// grad_B = dy^T @ G. Never materialised: [N, L, d_out], or anything [N, d_in]-sized beyond grad_x.
// The per-element math is kernels/gating.h and kernels/routing.h, which the CPU kernels run too.
// No cuBLAS header is included (the build machines' toolkit lacks them): GEMMs go through ATen.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>

#include "../cpu/cpu_utils.h"
#include "../input_checks.h"
#include "gate_kernels.cuh"

namespace mor_ext::cuda {

using cpu::new_output;

std::tuple<at::Tensor, at::Tensor> grouped_lora_cuda(const at::Tensor& x, const at::Tensor& lora_A,
                                                     const at::Tensor& lora_B, const at::Tensor& lora_index,
                                                     const at::Tensor& lora_weight, double scaling,
                                                     const std::optional<at::Tensor>& weight,
                                                     const std::optional<at::Tensor>& bias) {
  check_grouped_inputs(x, lora_A, lora_B, lora_index, lora_weight);
  const bool has_weight = weight.has_value() && weight->defined();
  if (has_weight) check_frozen_linear(x, *weight, bias, lora_B.size(1));
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0), num_loras = lora_A.size(0), rank = lora_A.size(1), d_in = x.size(1),
                k = lora_index.size(1);
  const at::Tensor xc = x.contiguous(), index = lora_index.contiguous(), w = lora_weight.contiguous();
  const at::Tensor a_rows = lora_A.contiguous().view({num_loras * rank, d_in});
  const at::Tensor shrink_all = at::mm(xc, a_rows.t());  // [n, L*r]
  at::Tensor gated = new_output({n, num_loras * rank}, x.options());
  at::Tensor slots = new_output({n, k, rank}, x.options());
  dispatch_types(x, index, [&]<typename scalar_t, typename index_t>() {
    launch_gate_forward<scalar_t, index_t>(n, num_loras, rank, k, index, w, scaling, shrink_all, gated, slots);
  });
  const at::Tensor b_cols = b_columns(lora_B);
  at::Tensor out = has_weight ? lora_then_frozen(gated, b_cols.t(), xc, weight->t(), bias) : at::mm(gated, b_cols.t());
  return {out, slots};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> grouped_lora_backward_cuda(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& lora_A, const at::Tensor& lora_B,
    const at::Tensor& lora_index, const at::Tensor& lora_weight, const at::Tensor& shrink, double scaling,
    const std::optional<at::Tensor>& weight) {
  check_grouped_inputs(x, lora_A, lora_B, lora_index, lora_weight);
  const int64_t n = x.size(0), num_loras = lora_A.size(0), rank = lora_A.size(1), d_in = x.size(1),
                d_out = lora_B.size(1), k = lora_index.size(1);
  check_grouped_backward(grad_out, shrink, n, d_out, k, rank, x);
  const bool has_weight = weight.has_value() && weight->defined();
  if (has_weight) check_frozen_linear(x, *weight, std::nullopt, d_out);
  const c10::cuda::CUDAGuard guard(x.device());
  const at::Tensor xc = x.contiguous(), gy = grad_out.to(x.scalar_type()).contiguous(), index = lora_index.contiguous(),
                   w = lora_weight.contiguous(), saved = shrink.to(x.scalar_type()).contiguous();
  const at::Tensor a_rows = lora_A.contiguous().view({num_loras * rank, d_in});
  const at::Tensor b_cols = b_columns(lora_B);
  const at::Tensor grad_gated = at::mm(gy, b_cols);  // [n, L*r]
  at::Tensor gated = new_output({n, num_loras * rank}, x.options());
  at::Tensor grad_shrink = new_output({n, num_loras * rank}, x.options());
  at::Tensor grad_w = new_output({n, k}, x.options().dtype(at::toOpMathType(x.scalar_type())));
  dispatch_types(x, index, [&]<typename scalar_t, typename index_t>() {
    launch_gate_backward<scalar_t, index_t>(n, num_loras, rank, k, index, w, scaling, saved, grad_gated, gated,
                                            grad_shrink, grad_w, nullptr);
  });
  at::Tensor grad_x = has_weight ? lora_then_frozen(grad_shrink, a_rows, gy, *weight, std::nullopt)
                                 : at::mm(grad_shrink, a_rows);
  at::Tensor grad_a = at::mm(grad_shrink.t(), xc).view({num_loras, rank, d_in});
  at::Tensor grad_b = grad_b_from_columns(at::mm(gy.t(), gated), lora_B);
  return {grad_x, grad_a, grad_b, grad_w.to(x.scalar_type())};
}

TORCH_LIBRARY_IMPL(mor_ext, CUDA, m) {
  m.impl("grouped_lora", &grouped_lora_cuda);
  m.impl("grouped_lora_backward", &grouped_lora_backward_cuda);
}

}  // namespace mor_ext::cuda
