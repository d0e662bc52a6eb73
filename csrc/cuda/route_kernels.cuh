// The per-token routing kernels, shared by route.cu (the route op) and mor_linear.cu (the fused
// layer op). One thread per token runs the __host__ __device__ bodies of kernels/routing.h,
// which the CPU kernels run too. Each .cu file that includes this gets its own copy (internal
// linkage), so no relocatable device code is needed.
#pragma once

#include <ATen/ATen.h>

#include <cstdint>
#include <vector>

#include "../kernels/routing.h"

namespace mor_ext::cuda {
namespace {

constexpr int kThreads = 256;
// Routing is a few dozen flops per token: small blocks spread T=8192 tokens over more SMs.
constexpr int kRouteThreads = 64;

inline int blocks_for(int64_t n, int threads = kThreads) { return static_cast<int>((n + threads - 1) / threads); }

// Columns of a GEMM output or operand padded to a multiple of this (16 elements = 32 bytes of
// bf16): an odd leading dimension such as 224 + 14 = 238 pushes cuBLAS off its tensor-core kernels.
constexpr int64_t kColumnAlign = 16;
inline int64_t padded(int64_t columns) { return (columns + kColumnAlign - 1) / kColumnAlign * kColumnAlign; }

// The row blocks stacked into one matrix [padded(m), d] (zero rows at the end), in one copy, so that
// GEMMs with it have an aligned width.
inline at::Tensor stack_rows_padded(std::vector<at::Tensor> parts) {
  int64_t m = 0;
  for (const at::Tensor& p : parts) m += p.size(0);
  if (padded(m) > m) parts.push_back(at::zeros({padded(m) - m, parts[0].size(1)}, parts[0].options()));
  return parts.size() == 1 ? parts[0] : at::cat(parts);
}

// logits: [n, stride] in x's dtype (the GEMM's output, read in place): the E_total router logits,
// then (when any role has a gated shared LoRA) one shared-gate logit per role. Writes lora_index,
// lora_weight (in x's dtype), router_probs (fp32) and, when shared_out is not null, the token's own
// shared-gate logit (fp32, for backward).
template <typename T>
__global__ void route_forward_kernel(kernels::RoleTables spec, int64_t n, const T* __restrict__ logits, int64_t stride,
                                     const int64_t* __restrict__ roles, int32_t* __restrict__ index,
                                     T* __restrict__ weight, float* __restrict__ probs,
                                     float* __restrict__ shared_out) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n) return;
  const int rho = static_cast<int>(roles[t]);
  const T* row = logits + t * stride;
  const float shared_logit = kernels::gated_shared(spec, rho) ? static_cast<float>(row[spec.e_total + rho]) : 0.0f;
  float gate[kernels::kMaxExperts + 1];
  kernels::route_token(spec, rho, row, shared_logit, index + t * spec.k_max, gate, probs + t * spec.e_total);
  for (int q = 0; q < spec.k_max; ++q) weight[t * spec.k_max + q] = static_cast<T>(gate[q]);
  if (shared_out != nullptr) shared_out[t] = shared_logit;
}

// dL/dlogits of each token into grad_logits [n, out_stride] (any type): the E_total router columns,
// then out_cols - E_total more (the per-role shared-gate columns, zero but the token's own role's,
// then zero padding). shared_logits: the token's shared-gate logit at
// [t * shared_stride + (per_role ? rho : 0)] (route passes all roles' [n, R]; mor_linear its own [n]).
template <typename G, typename Out>
__global__ void route_backward_kernel(kernels::RoleTables spec, int64_t n, const float* __restrict__ probs,
                                      const int32_t* __restrict__ index, const G* __restrict__ grad_gate,
                                      const float* __restrict__ grad_probs, const float* __restrict__ shared_logits,
                                      int64_t shared_stride, bool per_role, const int64_t* __restrict__ roles,
                                      Out* __restrict__ grad_logits, int64_t out_stride, int64_t out_cols) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n) return;
  const int rho = static_cast<int>(roles[t]);
  const bool gated = kernels::gated_shared(spec, rho);
  const float shared_logit = gated ? shared_logits[t * shared_stride + (per_role ? rho : 0)] : 0.0f;
  Out* out = grad_logits + t * out_stride;
  const float g = kernels::route_token_backward_all(spec, rho, probs + t * spec.e_total, index + t * spec.k_max,
                                                    grad_gate + t * spec.k_max, grad_probs + t * spec.e_total,
                                                    shared_logit, out);
  for (int64_t c = spec.e_total; c < out_cols; ++c) out[c] = static_cast<Out>((gated && c - spec.e_total == rho) ? g : 0.0f);
}

}  // namespace
}  // namespace mor_ext::cuda
