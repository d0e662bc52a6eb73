// CUDA decode path of mor_ext::mor_linear (and the test-only op testing_mor_linear_decode): for a
// few tokens, two kernels after the frozen layer's GEMM instead of the GEMM path's eight small launches.
//
//   decode_route_kernel   one block per token: its warps dot x with the role's router rows and
//                         shared-gate row (read in place, nothing stacked), one thread routes the
//                         token (kernels::token_route), the warps dot x with the selected LoRAs' A
//                         rows only, and one thread writes the slots (kernels::token_slots);
//   decode_expand_kernel  one thread per (token, output): y += sum over the token's slots of
//                         B[l, o, :] . gated (kernels::expand_output), reading the canonical B.
//
// Per-token and per-output bodies are kernels/decode.h, which csrc/cpu/decode.cpp runs in loops
// for the CPU tests. Everything is on the stream, no host sync: CUDA-graph capturable.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <tuple>

#include "../input_checks.h"
#include "../kernels/decode.h"
#include "../spec_table.h"
#include "decode.cuh"
#include "launch.cuh"

namespace mor_ext::cuda {
namespace {

// 16 warps per token: at T=1 one block reads the role's routing rows and its selected LoRAs' A
// rows (5 + 64 rows of d_in for MoRAgent), so it needs many loads in flight. The expand kernel uses 256 threads per block.
constexpr int kRouteBlock = 512;
constexpr int kDecodeThreads = 256;
constexpr int kWarp = 32;

template <typename acc_t>
__device__ __forceinline__ acc_t warp_sum(acc_t v) {
  for (int offset = kWarp / 2; offset > 0; offset /= 2) v += __shfl_down_sync(0xffffffffu, v, offset);
  return v;
}

// One lane's share of <x, row> over d_in: 16-byte vector loads where both pointers allow them, then
// the scalar tail; the caller sums the lanes.
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t lane_dot(const scalar_t* __restrict__ x, const scalar_t* __restrict__ row,
                                          int64_t d_in, int lane) {
  constexpr int kVec = 16 / sizeof(scalar_t);
  acc_t sum = acc_t(0);
  int64_t done = 0;
  if (reinterpret_cast<uintptr_t>(x) % 16 == 0 && reinterpret_cast<uintptr_t>(row) % 16 == 0) {
    const int64_t vecs = d_in / kVec;
    const uint4* xv = reinterpret_cast<const uint4*>(x);
    const uint4* rv = reinterpret_cast<const uint4*>(row);
    for (int64_t v = lane; v < vecs; v += kWarp) {
      const uint4 xa = xv[v], ra = rv[v];
      const scalar_t* xs = reinterpret_cast<const scalar_t*>(&xa);
      const scalar_t* rs = reinterpret_cast<const scalar_t*>(&ra);
#pragma unroll
      for (int e = 0; e < kVec; ++e) sum += static_cast<acc_t>(xs[e]) * static_cast<acc_t>(rs[e]);
    }
    done = vecs * kVec;
  }
  for (int64_t j = done + lane; j < d_in; j += kWarp) sum += static_cast<acc_t>(x[j]) * static_cast<acc_t>(row[j]);
  return sum;
}

// Dynamic shared memory: ext [max_rows], logits [e_total] and h [k_max * rank], all scalar_t.
template <typename scalar_t>
__global__ void decode_route_kernel(kernels::RoleTables spec, int64_t d_in, int64_t rank,
                                    at::opmath_type<scalar_t> scaling, int64_t max_rows,
                                    const scalar_t* __restrict__ x, const int64_t* __restrict__ roles,
                                    const scalar_t* __restrict__ lora_A, const scalar_t* __restrict__ router_weight,
                                    const scalar_t* __restrict__ shared_gate_weight, int32_t* __restrict__ index,
                                    scalar_t* __restrict__ weight, float* __restrict__ probs,
                                    float* __restrict__ shared_logit, scalar_t* __restrict__ slots,
                                    at::opmath_type<scalar_t>* __restrict__ slot_gated) {
  using acc_t = at::opmath_type<scalar_t>;
  extern __shared__ unsigned char smem_raw[];
  scalar_t* ext = reinterpret_cast<scalar_t*>(smem_raw);
  scalar_t* logits = ext + max_rows;
  scalar_t* h = logits + spec.e_total;
  const int64_t t = blockIdx.x, k = spec.k_max;
  const int rho = static_cast<int>(roles[t]);
  const kernels::RouteRows rows = kernels::route_rows(spec, rho);
  const scalar_t* xt = x + t * d_in;
  int32_t* index_t = index + t * k;
  scalar_t* weight_t = weight + t * k;
  const int warp = threadIdx.x / kWarp, lane = threadIdx.x % kWarp, warps = blockDim.x / kWarp;
  for (int64_t i = warp; i < rows.count(); i += warps) {  // routing rows first
    const scalar_t* row = kernels::route_row(spec, rho, d_in, rows, i, router_weight, shared_gate_weight);
    const acc_t sum = warp_sum(lane_dot<scalar_t, acc_t>(xt, row, d_in, lane));
    if (lane == 0) ext[i] = static_cast<scalar_t>(sum);  // rounded as a GEMM's output is
  }
  __syncthreads();
  if (threadIdx.x == 0) {
    float gate_tmp[kernels::kMaxExperts + 1];
    kernels::token_route(spec, rho, rows, ext, logits, index_t, weight_t, probs + t * spec.e_total, shared_logit + t,
                         gate_tmp);
  }
  __syncthreads();  // the slots are in global memory now, visible to the whole block
  for (int64_t i = warp; i < k * rank; i += warps) {  // then only the selected LoRAs' A rows
    const scalar_t* row = kernels::slot_row(index_t, static_cast<int>(i / rank), i % rank, rank, d_in, lora_A);
    const acc_t sum = row == nullptr ? acc_t(0) : warp_sum(lane_dot<scalar_t, acc_t>(xt, row, d_in, lane));
    if (lane == 0) h[i] = static_cast<scalar_t>(sum);
  }
  __syncthreads();
  if (threadIdx.x == 0)
    kernels::token_slots(static_cast<int>(k), rank, index_t, weight_t, h, scaling, slots + t * k * rank,
                         slot_gated + t * k * rank);
}

template <typename scalar_t>
__global__ void decode_expand_kernel(int64_t d_out, int64_t rank, int64_t k, const scalar_t* __restrict__ lora_B,
                                     const int32_t* __restrict__ index,
                                     const at::opmath_type<scalar_t>* __restrict__ slot_gated,
                                     scalar_t* __restrict__ y) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t t = blockIdx.y, o = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (o >= d_out) return;
  const acc_t delta = kernels::expand_output<acc_t>(lora_B, d_out, rank, index + t * k, slot_gated + t * k * rank, k, o);
  y[t * d_out + o] = static_cast<scalar_t>(static_cast<acc_t>(y[t * d_out + o]) + delta);
}

}  // namespace

MorLinearOutputs mor_linear_decode_path(const at::Tensor& x, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, const at::Tensor& lora_A,
                                        const at::Tensor& lora_B, const at::Tensor& router_weight,
                                        const at::Tensor& shared_gate_weight, const at::Tensor& role_ids,
                                        const SpecTable& spec, double scaling) {
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0), d_in = x.size(1), d_out = weight.size(0), k = spec.k_max,
                e_total = spec.num_experts_total, rank = lora_A.size(1);
  const at::Tensor xc = x.contiguous(), roles = role_ids.contiguous(), a = lora_A.contiguous(),
                   b = lora_B.contiguous(), rw = router_weight.contiguous(), gw = shared_gate_weight.contiguous();
  at::Tensor y = cpu::frozen_linear(xc, weight, bias);
  cpu::LayerRouting out = cpu::LayerRouting::fresh(x, k, e_total, rank);
  auto& [lora_index, lora_weight, router_probs, slots, shared_gate_logit] = out;
  if (n == 0) return out.with(y);
  at::Tensor slot_gated = at::empty({n, k, rank}, x.options().dtype(at::toOpMathType(x.scalar_type())));

  const int64_t max_rows = decode_max_rows(spec);
  const auto stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "mor_linear_decode_cuda", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const size_t smem = decode_smem_bytes(spec, rank, sizeof(scalar_t));
    decode_route_kernel<scalar_t><<<static_cast<unsigned>(n), kRouteBlock, smem, stream>>>(
        spec.tables(), d_in, rank, static_cast<acc_t>(scaling), max_rows, xc.data_ptr<scalar_t>(),
        roles.data_ptr<int64_t>(), a.data_ptr<scalar_t>(), rw.data_ptr<scalar_t>(), gw.data_ptr<scalar_t>(),
        lora_index.data_ptr<int32_t>(), lora_weight.data_ptr<scalar_t>(), router_probs.data_ptr<float>(),
        shared_gate_logit.data_ptr<float>(), slots.data_ptr<scalar_t>(), slot_gated.data_ptr<acc_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    if (d_out == 0) return;  // nothing to expand into (and a grid of 0 blocks would not launch)
    const dim3 grid(static_cast<unsigned>((d_out + kDecodeThreads - 1) / kDecodeThreads), static_cast<unsigned>(n));
    decode_expand_kernel<scalar_t><<<grid, kDecodeThreads, 0, stream>>>(
        d_out, rank, k, b.data_ptr<scalar_t>(), lora_index.data_ptr<int32_t>(), slot_gated.data_ptr<acc_t>(),
        y.data_ptr<scalar_t>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out.with(y);
}

namespace {

MorLinearOutputs mor_linear_decode_cuda(const at::Tensor& x, const at::Tensor& weight,
                                        const std::optional<at::Tensor>& bias, const at::Tensor& lora_A,
                                        const at::Tensor& lora_B, const at::Tensor& router_weight,
                                        const at::Tensor& shared_gate_weight, const at::Tensor& role_ids,
                                        at::IntArrayRef num_experts, at::IntArrayRef top_k, at::IntArrayRef has_shared,
                                        bool sigmoid_gate, double scaling) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, sigmoid_gate);
  check_layer_inputs(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, spec);
  TORCH_CHECK_VALUE(x.size(0) <= kMaxGridY, "testing_mor_linear_decode is for decode-sized calls (at most ",
                    kMaxGridY, " tokens), got ", x.size(0));
  TORCH_CHECK_VALUE(decode_fits(spec, lora_A.size(1), x.element_size()), "testing_mor_linear_decode: this spec at rank ",
                    lora_A.size(1), " needs ", decode_smem_bytes(spec, lora_A.size(1), x.element_size()),
                    " bytes of shared memory per token, more than the decode kernel's ", kDecodeMaxSmem,
                    "; use mor_linear (its GEMM path) instead");
  return mor_linear_decode_path(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, spec,
                                scaling);
}

}  // namespace

TORCH_LIBRARY_IMPL(mor_ext, CUDA, m) { m.impl("testing_mor_linear_decode", &mor_linear_decode_cuda); }

}  // namespace mor_ext::cuda
