// CUDA kernels of mor_ext::mor_linear and its backward: the whole adapted layer (frozen GEMM +
// routing + grouped LoRA) in one op, as grouped_lora.cu computes the LoRA part (the algorithm is
// described there) with the router and shared-gate rows riding along in the shrink GEMM and the
// per-token routing kernel (route_kernels.cuh) between the GEMM and the gate kernel. Decode-sized
// calls take the decode path (decode.cu).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <optional>
#include <tuple>
#include <type_traits>

#include "../cpu/cpu_utils.h"
#include "../input_checks.h"
#include "../spec_table.h"
#include "decode.cuh"
#include "gate_kernels.cuh"
#include "route_kernels.cuh"

namespace mor_ext::cuda {

using cpu::new_output;

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
  m.impl("mor_linear", &mor_linear_cuda);
  m.impl("mor_linear_backward", &mor_linear_backward_cuda);
}

}  // namespace mor_ext::cuda
