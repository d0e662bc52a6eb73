// The per-token routing kernels, shared by route.cu (the route op) and grouped_lora.cu (the fused
// mor_linear op). One thread per token runs the __host__ __device__ bodies of kernels/routing.h,
// which the CPU kernels run too. Each .cu file that includes this gets its own copy (internal
// linkage), so no relocatable device code is needed.
#pragma once

#include <cstdint>

#include "../kernels/routing.h"

namespace mor_ext::cuda {
namespace {

constexpr int kThreads = 256;

inline int blocks_for(int64_t n) { return static_cast<int>((n + kThreads - 1) / kThreads); }

// logits: [n, stride] fp32, the E_total router logits then (when any role has a gated shared LoRA)
// one shared-gate logit per role. shared_out (may be null): [n], the token's own shared-gate logit.
__global__ void route_forward_kernel(kernels::RoleTables spec, int64_t n, const float* __restrict__ logits,
                                     int64_t stride, const int64_t* __restrict__ roles, int32_t* __restrict__ index,
                                     float* __restrict__ gate, float* __restrict__ probs,
                                     float* __restrict__ shared_out) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n) return;
  const int rho = static_cast<int>(roles[t]);
  const float* row = logits + t * stride;
  const float shared_logit = kernels::gated_shared(spec, rho) ? row[spec.e_total + rho] : 0.0f;
  kernels::route_token(spec, rho, row, shared_logit, index + t * spec.k_max, gate + t * spec.k_max,
                       probs + t * spec.e_total);
  if (shared_out != nullptr) shared_out[t] = shared_logit;
}

// shared_logits: the token's shared-gate logit at [t * shared_stride + (per_role ? rho : 0)]
// (route passes all roles' logits [n, R]; mor_linear its saved own-role logit [n]).
__global__ void route_backward_kernel(kernels::RoleTables spec, int64_t n, const float* __restrict__ probs,
                                      const int32_t* __restrict__ index, const float* __restrict__ grad_gate,
                                      const float* __restrict__ grad_probs, const float* __restrict__ shared_logits,
                                      int64_t shared_stride, bool per_role, const int64_t* __restrict__ roles,
                                      float* __restrict__ grad_logits, int64_t stride) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= n) return;
  const int rho = static_cast<int>(roles[t]);
  const bool gated = kernels::gated_shared(spec, rho);
  const float shared_logit = gated ? shared_logits[t * shared_stride + (per_role ? rho : 0)] : 0.0f;
  const float g = kernels::route_token_backward_all(spec, rho, probs + t * spec.e_total, index + t * spec.k_max,
                                                    grad_gate + t * spec.k_max, grad_probs + t * spec.e_total,
                                                    shared_logit, grad_logits + t * stride);
  if (stride > spec.e_total) {  // the shared-gate columns: zero but the token's own role
    for (int r = 0; r < spec.num_roles; ++r) grad_logits[t * stride + spec.e_total + r] = (gated && r == rho) ? g : 0.0f;
  }
}

}  // namespace
}  // namespace mor_ext::cuda
