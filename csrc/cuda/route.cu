// CUDA kernels of mor_ext::route and mor_ext::route_backward.
//
// Forward: one fused kernel (logits and routing) when the logit rows fit it, else the router and
// shared-gate logits from one GEMM through ATen (cuBLAS underneath; this file includes no cuBLAS
// header, which the toolkit on the build machines lacks) and a routing kernel. The per-token work,
// a softmax and top-k over E <= a handful of experts, runs the same __host__ __device__ bodies as
// the CPU kernels (kernels/routing.h), which the CPU tests cover.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>

#include "../cpu/cpu_utils.h"
#include "../kernels/routing.h"
#include "../input_checks.h"
#include "../spec_table.h"
#include "route_kernels.cuh"

namespace mor_ext::cuda {
namespace {

// The fused route forward: router and shared-gate logits and routing in one kernel, for up to
// kFusedRows logit rows (E_total + R: 14 for MoRAgent). The GEMM path (stack the rows, a cuBLAS GEMM
// of width 16, the routing kernel) reads x once too, but a GEMM of width 16 runs far from the copy
// bandwidth and costs two more launches. Here each block stages a 32-vector chunk of every row in
// shared memory, its 8 warps take 4 tokens each, every lane accumulates 4 x 16 partial dot products
// from 16-byte loads of x, and after a butterfly sum lane j routes token j (kernels::route_token,
// as the CPU kernels do). x is read once, the rows once per 32 tokens.
constexpr int kFusedRows = 16;
constexpr int kFusedTokensPerWarp = 4;
constexpr int kFusedWarps = 8;
constexpr int kFusedChunk = 32;  // 16-byte vectors of each row per chunk: one per lane

template <typename scalar_t>
__global__ void __launch_bounds__(kFusedWarps * 32)
    route_fused_kernel(kernels::RoleTables spec, int64_t n, int64_t d_in, int rows_count,
                       const scalar_t* __restrict__ x, const scalar_t* __restrict__ router_weight,
                       const scalar_t* __restrict__ shared_gate_weight, const int64_t* __restrict__ roles,
                       int32_t* __restrict__ index, scalar_t* __restrict__ weight, float* __restrict__ probs) {
  using acc_t = at::opmath_type<scalar_t>;
  constexpr int kVec = 16 / sizeof(scalar_t);
  __shared__ uint4 rows_s[kFusedRows][kFusedChunk];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  const int64_t vecs = d_in / kVec;
  const int64_t per_block = kFusedWarps * kFusedTokensPerWarp;
  for (int64_t base = static_cast<int64_t>(blockIdx.x) * per_block; base < n; base += gridDim.x * per_block) {
    const int64_t t0 = base + warp * kFusedTokensPerWarp;
    acc_t acc[kFusedTokensPerWarp][kFusedRows];
#pragma unroll
    for (int tk = 0; tk < kFusedTokensPerWarp; ++tk)
#pragma unroll
      for (int r = 0; r < kFusedRows; ++r) acc[tk][r] = acc_t(0);
    for (int64_t c0 = 0; c0 < vecs; c0 += kFusedChunk) {
      // x first: its loads (from DRAM) are in flight while the block stages the rows (from L2).
      const int64_t v = c0 + lane;
      uint4 xv[kFusedTokensPerWarp];
#pragma unroll
      for (int tk = 0; tk < kFusedTokensPerWarp; ++tk)
        xv[tk] = t0 + tk < n && v < vecs ? __ldcs(reinterpret_cast<const uint4*>(x + (t0 + tk) * d_in) + v)
                                         : make_uint4(0u, 0u, 0u, 0u);  // read once: streaming loads
      __syncthreads();  // every warp is done with the previous chunk
      for (int i = threadIdx.x; i < kFusedRows * kFusedChunk; i += blockDim.x) {
        const int r = i / kFusedChunk, v = i % kFusedChunk;
        uint4 value = make_uint4(0u, 0u, 0u, 0u);
        if (r < rows_count && c0 + v < vecs) {
          const scalar_t* src = r < spec.e_total ? router_weight + r * d_in : shared_gate_weight + (r - spec.e_total) * d_in;
          value = reinterpret_cast<const uint4*>(src)[c0 + v];
        }
        rows_s[r][v] = value;
      }
      __syncthreads();
      if (v >= vecs) continue;  // no barrier until the next chunk's first one
#pragma unroll
      for (int r = 0; r < kFusedRows; ++r) {
        const uint4 rv = rows_s[r][lane];
        const scalar_t* rs = reinterpret_cast<const scalar_t*>(&rv);
#pragma unroll
        for (int tk = 0; tk < kFusedTokensPerWarp; ++tk) {
          const scalar_t* xs = reinterpret_cast<const scalar_t*>(&xv[tk]);
#pragma unroll
          for (int e = 0; e < kVec; ++e) acc[tk][r] += static_cast<acc_t>(xs[e]) * static_cast<acc_t>(rs[e]);
        }
      }
    }
    // Butterfly sums: every lane ends with every token's logits.
#pragma unroll
    for (int tk = 0; tk < kFusedTokensPerWarp; ++tk)
#pragma unroll
      for (int r = 0; r < kFusedRows; ++r)
#pragma unroll
        for (int offset = 16; offset > 0; offset /= 2) acc[tk][r] += __shfl_xor_sync(0xffffffffu, acc[tk][r], offset);
    scalar_t logits[kFusedRows];  // lane tk's token, rounded to x's dtype as the GEMM's output is
#pragma unroll
    for (int tk = 0; tk < kFusedTokensPerWarp; ++tk)
      if (lane == tk)
#pragma unroll
        for (int r = 0; r < kFusedRows; ++r) logits[r] = static_cast<scalar_t>(acc[tk][r]);
    const int64_t t = t0 + lane;
    if (lane < kFusedTokensPerWarp && t < n) {
      const int rho = static_cast<int>(roles[t]);
      const float shared_logit =
          kernels::gated_shared(spec, rho) ? static_cast<float>(logits[spec.e_total + rho]) : 0.0f;
      float gate[kernels::kMaxExperts + 1];
      kernels::route_token(spec, rho, logits, shared_logit, index + t * spec.k_max, gate, probs + t * spec.e_total);
      for (int q = 0; q < spec.k_max; ++q) weight[t * spec.k_max + q] = static_cast<scalar_t>(gate[q]);
    }
  }
}

bool aligned16(const at::Tensor& t) { return reinterpret_cast<uintptr_t>(t.data_ptr()) % 16 == 0; }

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor> route_cuda(const at::Tensor& x, const at::Tensor& router_weight,
                                                          const at::Tensor& shared_gate_weight,
                                                          const at::Tensor& role_ids, at::IntArrayRef num_experts,
                                                          at::IntArrayRef top_k, at::IntArrayRef has_shared,
                                                          bool sigmoid_gate) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, sigmoid_gate);
  check_route_inputs(x, router_weight, shared_gate_weight, role_ids, spec);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0);
  const at::Tensor roles = role_ids.contiguous();
  at::Tensor index = cpu::new_output({n, spec.k_max}, x.options().dtype(at::kInt));
  at::Tensor weight = cpu::new_output({n, spec.k_max}, x.options());
  at::Tensor probs = cpu::new_output({n, spec.num_experts_total}, x.options().dtype(at::kFloat));
  if (n == 0) return {index, weight, probs};
  const at::Tensor xc = x.contiguous(), rw = router_weight.contiguous(), sg = shared_gate_weight.contiguous();
  const int rows_count = static_cast<int>(spec.num_experts_total + (spec.any_gated_shared() ? spec.num_roles : 0));
  const int64_t vec = 16 / static_cast<int64_t>(x.element_size());
  if (rows_count <= kFusedRows && x.size(1) % vec == 0 && aligned16(xc) && aligned16(rw) &&
      (sg.numel() == 0 || aligned16(sg))) {
    const int64_t per_block = kFusedWarps * kFusedTokensPerWarp;
    const unsigned blocks = static_cast<unsigned>(std::min<int64_t>((n + per_block - 1) / per_block, int64_t(1) << 16));
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "route_fused_cuda", [&] {
      route_fused_kernel<scalar_t><<<blocks, kFusedWarps * 32, 0, c10::cuda::getCurrentCUDAStream()>>>(
          spec.tables(), n, x.size(1), rows_count, xc.data_ptr<scalar_t>(), rw.data_ptr<scalar_t>(),
          sg.numel() ? sg.data_ptr<scalar_t>() : rw.data_ptr<scalar_t>(), roles.data_ptr<int64_t>(),
          index.data_ptr<int32_t>(), weight.data_ptr<scalar_t>(), probs.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return {index, weight, probs};
  }
  // Otherwise one GEMM (width padded for cuBLAS) for router and shared-gate logits in x's dtype; the
  // kernel reads them in place and routes in fp32, as the reference does.
  const at::Tensor rows = spec.any_gated_shared() ? stack_rows_padded({router_weight, shared_gate_weight})
                                                  : stack_rows_padded({router_weight});
  const at::Tensor logits = at::mm(xc, rows.t());
  {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "route_cuda", [&] {
      route_forward_kernel<scalar_t><<<blocks_for(n, kRouteThreads), kRouteThreads, 0,
                                       c10::cuda::getCurrentCUDAStream()>>>(
          spec.tables(), n, logits.data_ptr<scalar_t>(), logits.size(1), roles.data_ptr<int64_t>(),
          index.data_ptr<int32_t>(), weight.data_ptr<scalar_t>(), probs.data_ptr<float>(), nullptr);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  return {index, weight, probs};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> route_backward_cuda(
    const at::Tensor& grad_lora_weight, const at::Tensor& grad_router_probs, const at::Tensor& x,
    const at::Tensor& router_weight, const at::Tensor& shared_gate_weight, const at::Tensor& role_ids,
    const at::Tensor& lora_index, const at::Tensor& router_probs, at::IntArrayRef num_experts, at::IntArrayRef top_k,
    at::IntArrayRef has_shared, bool sigmoid_gate) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, sigmoid_gate);
  check_route_inputs(x, router_weight, shared_gate_weight, role_ids, spec);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0), e_total = spec.num_experts_total;
  check_route_backward_inputs(grad_lora_weight, grad_router_probs, lora_index, router_probs, x, spec);
  const bool gated = spec.any_gated_shared();
  const at::Tensor xc = x.contiguous();
  const at::Tensor rows =
      gated ? stack_rows_padded({router_weight, shared_gate_weight}) : stack_rows_padded({router_weight});
  const int64_t width = rows.size(0);
  const at::Tensor shared_logits =
      gated ? at::mm(xc, shared_gate_weight.t()).to(at::kFloat).contiguous() : at::empty({0}, x.options().dtype(at::kFloat));
  const at::Tensor grad_gate = grad_lora_weight.to(at::kFloat).contiguous();  // fp32, as on the CPU
  const at::Tensor grad_probs = grad_router_probs.to(at::kFloat).contiguous();
  const at::Tensor probs = router_probs.to(at::kFloat).contiguous();
  const at::Tensor index = lora_index.to(at::kInt).contiguous();
  const at::Tensor roles = role_ids.contiguous();
  at::Tensor grad_logits = cpu::new_output({n, width}, x.options());  // every column written, padding included
  if (n > 0 && width > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "route_backward_cuda", [&] {
      route_backward_kernel<float, scalar_t><<<blocks_for(n, kRouteThreads), kRouteThreads, 0,
                                               c10::cuda::getCurrentCUDAStream()>>>(
          spec.tables(), n, probs.data_ptr<float>(), index.data_ptr<int32_t>(), grad_gate.data_ptr<float>(),
          grad_probs.data_ptr<float>(), shared_logits.data_ptr<float>(), spec.num_roles, /*per_role=*/true,
          roles.data_ptr<int64_t>(), grad_logits.data_ptr<scalar_t>(), width, width);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  }
  const at::Tensor grad_x = at::mm(grad_logits, rows);
  const at::Tensor grad_rows = at::mm(grad_logits.t(), xc);
  const at::Tensor grad_router = grad_rows.narrow(0, 0, e_total).clone();
  const at::Tensor grad_shared = gated ? grad_rows.narrow(0, e_total, spec.num_roles).clone()
                                       : at::zeros_like(shared_gate_weight);
  return {grad_x, grad_router, grad_shared};
}

TORCH_LIBRARY_IMPL(mor_ext, CUDA, m) {
  m.impl("route", &route_cuda);
  m.impl("route_backward", &route_backward_cuda);
}

}  // namespace mor_ext::cuda
