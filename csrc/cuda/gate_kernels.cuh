// The gate kernels of grouped_lora.cu and mor_linear.cu, and the GEMM helpers both ops share.
//
// Per token, the gated matrix G [N, L*r] = scaling * (token's weight for LoRA l) * shrink (zero for
// LoRAs a token did not pick) and the per-slot shrink [N, K, r] saved for backward; in backward,
// G rebuilt from the saved slots, dL/dshrink and dL/dw. The per-element math is kernels/gating.h,
// which the CPU kernels run too. Each .cu file that includes this gets its own copy (internal
// linkage), so no relocatable device code is needed.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <optional>

#include "../kernels/gating.h"
#include "launch.cuh"

namespace mor_ext::cuda {
namespace {

// The gate kernels run on a 2-D grid: x over a token's columns, y (grid-stride) over tokens, so
// neighbouring threads touch neighbouring columns (coalesced) and no thread divides a 64-bit flat
// index (per element, that cost more than the memory traffic).
// Blocks of 128 threads: a MoRAgent token has (14 + 4) * 16 = 288 gate columns, which 256-thread
// blocks cover at 56% (two blocks, the second mostly idle) and 128-thread ones at 75%.
constexpr int kGateThreads = 128;

inline dim3 gate_grid(int64_t n, int64_t per_token) {
  return dim3(static_cast<unsigned>((per_token + kGateThreads - 1) / kGateThreads),
              static_cast<unsigned>(std::min(n, kMaxGridY)));
}

// Forward gate. Per token, columns [0, L*r) write G, columns [L*r, L*r + K*r) the saved slots.
//   shrink_all: [n, >= L*r] with row stride `src_stride` (mor_linear's GEMM has routing columns after).
template <typename scalar_t, typename index_t>
__global__ void gate_forward_kernel(int64_t n, int num_loras, int rank, int k, const index_t* __restrict__ index,
                                    const scalar_t* __restrict__ weight, at::opmath_type<scalar_t> scaling,
                                    const scalar_t* __restrict__ shrink_all, int64_t src_stride,
                                    scalar_t* __restrict__ gated, scalar_t* __restrict__ slots) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lr = num_loras * rank, per_token = lr + k * rank;
  const int c = static_cast<int>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= per_token) return;
  for (int64_t t = blockIdx.y; t < n; t += gridDim.y) {
    const index_t* idx = index + t * k;
    const scalar_t* row = shrink_all + t * src_stride;
    if (c < lr) {
      const acc_t gate = scaling * kernels::lora_gate<acc_t>(idx, weight + t * k, k, c / rank);
      gated[t * lr + c] = static_cast<scalar_t>(gate * static_cast<acc_t>(row[c]));
    } else {
      const int s = (c - lr) / rank, j = (c - lr) % rank;
      const index_t l = idx[s];
      slots[(t * k + s) * rank + j] = kernels::valid_lora(l, num_loras) ? row[static_cast<int64_t>(l) * rank + j]
                                                                         : scalar_t(0);
    }
  }
}

// Backward gate. Per token, columns [0, L*r) rebuild G and write dL/dshrink (row stride
// `grad_stride`: mor_linear writes into the first columns of its [dshrink | dlogits] matrix),
// columns [L*r, L*r + K) write dL/dw in acc_t: the slot's value rounded to x's dtype (as the op's
// lora_weight output carries it) plus `extra_grad_weight` (fp32 [n, K], may be null: the gradient
// that reaches lora_weight from outside, e.g. the load-balance loss; mor_linear only).
template <typename scalar_t, typename index_t>
__global__ void gate_backward_kernel(int64_t n, int num_loras, int rank, int k, const index_t* __restrict__ index,
                                     const scalar_t* __restrict__ weight, at::opmath_type<scalar_t> scaling,
                                     const scalar_t* __restrict__ slots, const scalar_t* __restrict__ grad_gated,
                                     scalar_t* __restrict__ gated, scalar_t* __restrict__ grad_shrink,
                                     int64_t grad_stride, at::opmath_type<scalar_t>* __restrict__ grad_weight,
                                     const float* __restrict__ extra_grad_weight) {
  using acc_t = at::opmath_type<scalar_t>;
  const int lr = num_loras * rank, per_token = lr + k;
  const int c = static_cast<int>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (c >= per_token) return;
  for (int64_t t = blockIdx.y; t < n; t += gridDim.y) {
    const index_t* idx = index + t * k;
    const scalar_t* w = weight + t * k;
    const scalar_t* tok_slots = slots + t * k * rank;
    if (c < lr) {
      const int l = c / rank, j = c % rank;
      const acc_t gate = scaling * kernels::lora_gate<acc_t>(idx, w, k, l);
      gated[t * lr + c] = static_cast<scalar_t>(kernels::gated_from_slots(idx, w, tok_slots, k, rank, l, j, scaling));
      grad_shrink[t * grad_stride + c] = static_cast<scalar_t>(gate * static_cast<acc_t>(grad_gated[t * lr + c]));
    } else {
      const int s = c - lr;
      const index_t l = idx[s];
      acc_t g = kernels::valid_lora(l, num_loras)
                    ? static_cast<acc_t>(static_cast<scalar_t>(kernels::slot_weight_grad(
                          grad_gated + t * lr + static_cast<int64_t>(l) * rank, tok_slots + s * rank, rank, scaling)))
                    : acc_t(0);
      if (extra_grad_weight != nullptr) g += static_cast<acc_t>(extra_grad_weight[t * k + s]);
      grad_weight[t * k + s] = g;
    }
  }
}

// B of all LoRAs as [d_out, L*r] columns (a small copy: L*r*d_out elements), so G @ b_cols^T is one GEMM.
at::Tensor b_columns(const at::Tensor& lora_B) {
  return lora_B.permute({1, 0, 2}).reshape({lora_B.size(1), lora_B.size(0) * lora_B.size(2)}).contiguous();
}

at::Tensor grad_b_from_columns(const at::Tensor& grad_cols, const at::Tensor& lora_B) {  // [d_out, L*r] -> [L, d_out, r]
  return grad_cols.view({lora_B.size(1), lora_B.size(0), lora_B.size(2)}).permute({1, 0, 2}).contiguous();
}

// out = lora (+ bias) then out += x @ weight^T: the frozen GEMM goes last, with beta = 1. Adding the
// thin LoRA GEMM onto the frozen layer's output instead (addmm_ after the frozen GEMM) is a
// memory-bound kernel that reads and writes all of out; the frozen GEMM is compute-bound, so the
// read of out in its epilogue hides under its math. Same sum, one pass over out fewer.
at::Tensor lora_then_frozen(const at::Tensor& lhs, const at::Tensor& rhs, const at::Tensor& x,
                            const at::Tensor& weight, const std::optional<at::Tensor>& bias) {
  at::Tensor out = (bias.has_value() && bias->defined()) ? at::addmm(*bias, lhs, rhs) : at::mm(lhs, rhs);
  return out.addmm_(x, weight);
}

template <typename scalar_t, typename index_t>
void launch_gate_forward(int64_t n, int64_t num_loras, int64_t rank, int64_t k, const at::Tensor& index,
                         const at::Tensor& weight, double scaling, const at::Tensor& shrink_all, at::Tensor& gated,
                         at::Tensor& slots) {
  if (n == 0) return;
  gate_forward_kernel<scalar_t, index_t><<<gate_grid(n, (num_loras + k) * rank), kGateThreads, 0,
                                           c10::cuda::getCurrentCUDAStream()>>>(
      n, static_cast<int>(num_loras), static_cast<int>(rank), static_cast<int>(k), index.data_ptr<index_t>(),
      weight.data_ptr<scalar_t>(),
      static_cast<at::opmath_type<scalar_t>>(scaling), shrink_all.data_ptr<scalar_t>(), shrink_all.stride(0),
      gated.data_ptr<scalar_t>(), slots.data_ptr<scalar_t>());
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

template <typename scalar_t, typename index_t>
void launch_gate_backward(int64_t n, int64_t num_loras, int64_t rank, int64_t k, const at::Tensor& index,
                          const at::Tensor& weight, double scaling, const at::Tensor& slots,
                          const at::Tensor& grad_gated, at::Tensor& gated, at::Tensor& grad_shrink,
                          at::Tensor& grad_weight, const float* extra_grad_weight) {
  if (n == 0) return;
  gate_backward_kernel<scalar_t, index_t><<<gate_grid(n, num_loras * rank + k), kGateThreads, 0,
                                            c10::cuda::getCurrentCUDAStream()>>>(
      n, static_cast<int>(num_loras), static_cast<int>(rank), static_cast<int>(k), index.data_ptr<index_t>(),
      weight.data_ptr<scalar_t>(),
      static_cast<at::opmath_type<scalar_t>>(scaling), slots.data_ptr<scalar_t>(), grad_gated.data_ptr<scalar_t>(),
      gated.data_ptr<scalar_t>(), grad_shrink.data_ptr<scalar_t>(), grad_shrink.stride(0),
      grad_weight.data_ptr<at::opmath_type<scalar_t>>(), extra_grad_weight);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// Calls fn.template operator()<scalar_t, index_t>() for x's float type and the index's int type.
template <typename Fn>
void dispatch_types(const at::Tensor& x, const at::Tensor& index, Fn&& fn) {
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "mor_ext_grouped_lora_cuda", [&] {
    if (index.scalar_type() == at::kInt)
      fn.template operator()<scalar_t, int32_t>();
    else
      fn.template operator()<scalar_t, int64_t>();
  });
}

}  // namespace
}  // namespace mor_ext::cuda
