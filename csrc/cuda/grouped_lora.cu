// CUDA kernels of mor_ext::grouped_lora, mor_ext::mor_linear and their backward ops.
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

#include <algorithm>
#include <optional>
#include <tuple>
#include <type_traits>

#include "../input_checks.h"
#include "../kernels/gating.h"
#include "../spec_table.h"
#include "decode.cuh"
#include "route_kernels.cuh"

namespace mor_ext::cuda {
namespace {

using cpu::new_output;


// The gate kernels run on a 2-D grid: x over a token's columns, y (grid-stride) over tokens, so
// neighbouring threads touch neighbouring columns (coalesced) and no thread divides a 64-bit flat
// index (per element, that cost more than the memory traffic).
// Blocks of 128 threads: a MoRAgent token has (14 + 4) * 16 = 288 gate columns, which 256-thread
// blocks cover at 56% (two blocks, the second mostly idle) and 128-thread ones at 75%.
constexpr int64_t kMaxGridY = 65535;
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

namespace {

// All rows of the layer's one shrink GEMM: the L*r LoRA A rows, the E_total router rows, when any
// role has a gated shared LoRA the R shared-gate rows, then zero rows up to an aligned width
// ([padded(L*r + E_total (+ R)), d_in]; one small copy).
at::Tensor layer_rows(const at::Tensor& lora_A, const at::Tensor& router_weight, const at::Tensor& shared_gate_weight,
                      bool gated) {
  const at::Tensor a_rows = lora_A.reshape({lora_A.size(0) * lora_A.size(1), lora_A.size(2)});
  return gated ? stack_rows_padded({a_rows, router_weight, shared_gate_weight})
               : stack_rows_padded({a_rows, router_weight});
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mor_linear_cuda(
    const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias, const at::Tensor& lora_A,
    const at::Tensor& lora_B, const at::Tensor& router_weight, const at::Tensor& shared_gate_weight,
    const at::Tensor& role_ids, at::IntArrayRef num_experts, at::IntArrayRef top_k, at::IntArrayRef has_shared,
    bool sigmoid_gate, double scaling) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, sigmoid_gate);
  check_layer_inputs(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, spec);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0), k_max = spec.k_max, e_total = spec.num_experts_total, num_loras = spec.num_loras,
                rank = lora_A.size(1), lr = num_loras * rank;
  if (n > 0 && n <= kDecodeMaxTokens && decode_fits(spec, rank, x.element_size()))
    return mor_linear_decode_path(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, spec,
                                  scaling);
  const bool gated_any = spec.any_gated_shared();
  const at::Tensor xc = x.contiguous(), roles = role_ids.contiguous();

  // [shrink of every LoRA | router logits | shared-gate logits | zero padding] in one GEMM.
  const at::Tensor ext = at::mm(xc, layer_rows(lora_A, router_weight, shared_gate_weight, gated_any).t());
  cpu::LayerRouting out = cpu::LayerRouting::fresh(x, k_max, e_total, rank);
  auto& [lora_index, lora_weight, router_probs, slots, shared_gate_logit] = out;
  at::Tensor gated = new_output({n, lr}, x.options());
  dispatch_types(x, lora_index, [&]<typename scalar_t, typename index_t>() {
    if constexpr (std::is_same_v<index_t, int32_t>) {
      if (n > 0) {  // routing in fp32 from the logits as x's dtype holds them, as the route op does
        route_forward_kernel<scalar_t><<<blocks_for(n, kRouteThreads), kRouteThreads, 0,
                                         c10::cuda::getCurrentCUDAStream()>>>(
            spec.tables(), n, ext.data_ptr<scalar_t>() + lr, ext.size(1), roles.data_ptr<int64_t>(),
            lora_index.data_ptr<int32_t>(), lora_weight.data_ptr<scalar_t>(), router_probs.data_ptr<float>(),
            shared_gate_logit.data_ptr<float>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
      launch_gate_forward<scalar_t, int32_t>(n, num_loras, rank, k_max, lora_index, lora_weight, scaling, ext, gated,
                                             slots);
    }
  });
  return out.with(lora_then_frozen(gated, b_columns(lora_B).t(), xc, weight.t(), bias));
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mor_linear_backward_cuda(
    const at::Tensor& grad_y, const at::Tensor& grad_lora_weight, const at::Tensor& grad_router_probs,
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& lora_A, const at::Tensor& lora_B,
    const at::Tensor& router_weight, const at::Tensor& shared_gate_weight, const at::Tensor& role_ids,
    const at::Tensor& lora_index, const at::Tensor& lora_weight, const at::Tensor& router_probs,
    const at::Tensor& shrink, const at::Tensor& shared_gate_logit, at::IntArrayRef num_experts, at::IntArrayRef top_k,
    at::IntArrayRef has_shared, bool sigmoid_gate, double scaling) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, sigmoid_gate);
  check_layer_inputs(x, weight, std::nullopt, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, spec);
  const int64_t n = x.size(0), k_max = spec.k_max, e_total = spec.num_experts_total, num_loras = spec.num_loras,
                rank = lora_A.size(1), lr = num_loras * rank, d_in = x.size(1), d_out = weight.size(0);
  check_saved_routing(grad_y, grad_lora_weight, grad_router_probs, lora_index, lora_weight, router_probs, shrink,
                      shared_gate_logit, n, d_out, k_max, e_total, rank, x);
  const c10::cuda::CUDAGuard guard(x.device());
  const bool gated_any = spec.any_gated_shared();
  const at::Tensor xc = x.contiguous(), roles = role_ids.contiguous();
  const auto& [gy, index, w, saved, extra_gw, gp, probs, shared_logit] = LayerBackwardInputs::from(
      x, grad_y, grad_lora_weight, grad_router_probs, lora_index, lora_weight, router_probs, shrink, shared_gate_logit);
  const at::Tensor rows = layer_rows(lora_A, router_weight, shared_gate_weight, gated_any);
  const int64_t width = rows.size(0);
  const at::Tensor b_cols = b_columns(lora_B);

  const at::Tensor grad_gated = at::mm(gy, b_cols);  // [n, L*r]
  at::Tensor gated = new_output({n, lr}, x.options());
  // [dL/dshrink | dL/dlogits | zero padding]: every column written by the two kernels below.
  at::Tensor grad_ext = new_output({n, width}, x.options());
  at::Tensor grad_w = new_output({n, k_max}, x.options().dtype(at::toOpMathType(x.scalar_type())));
  dispatch_types(x, index, [&]<typename scalar_t, typename index_t>() {
    if constexpr (std::is_same_v<index_t, int32_t>) {
      using acc_t = at::opmath_type<scalar_t>;
      launch_gate_backward<scalar_t, int32_t>(n, num_loras, rank, k_max, index, w, scaling, saved, grad_gated, gated,
                                              grad_ext, grad_w, extra_gw.data_ptr<float>());
      if (n > 0 && width > lr) {  // routing path: gates and probabilities back to the logits
        route_backward_kernel<acc_t, scalar_t><<<blocks_for(n, kRouteThreads), kRouteThreads, 0,
                                                 c10::cuda::getCurrentCUDAStream()>>>(
            spec.tables(), n, probs.data_ptr<float>(), index.data_ptr<int32_t>(), grad_w.data_ptr<acc_t>(),
            gp.data_ptr<float>(), shared_logit.data_ptr<float>(), 1, /*per_role=*/false, roles.data_ptr<int64_t>(),
            grad_ext.data_ptr<scalar_t>() + lr, width, width - lr);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      }
    }
  });
  // The LoRAs' and the router's grad_x, then the frozen layer's added onto it in its GEMM; one GEMM
  // gives the grads of all A, router and shared-gate rows.
  at::Tensor grad_x = lora_then_frozen(grad_ext, rows, gy, weight, std::nullopt);
  const at::Tensor grad_rows = at::mm(grad_ext.t(), xc);  // [width, d_in]
  at::Tensor grad_a = grad_rows.narrow(0, 0, lr).reshape({num_loras, rank, d_in}).clone();
  at::Tensor grad_router = grad_rows.narrow(0, lr, e_total).clone();
  at::Tensor grad_shared =
      gated_any ? grad_rows.narrow(0, lr + e_total, spec.num_roles).clone() : at::zeros_like(shared_gate_weight);
  at::Tensor grad_b = grad_b_from_columns(at::mm(gy.t(), gated), lora_B);
  return {grad_x, grad_a, grad_b, grad_router, grad_shared};
}

TORCH_LIBRARY_IMPL(mor_ext, CUDA, m) {
  m.impl("grouped_lora", &grouped_lora_cuda);
  m.impl("grouped_lora_backward", &grouped_lora_backward_cuda);
  m.impl("mor_linear", &mor_linear_cuda);
  m.impl("mor_linear_backward", &mor_linear_backward_cuda);
}

}  // namespace mor_ext::cuda
