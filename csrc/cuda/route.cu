// CUDA kernels of mor_ext::route and mor_ext::route_backward.
//
// The router and shared-gate logits come from one GEMM through ATen (cuBLAS underneath; this file
// includes no cuBLAS header, which the toolkit on the build machines lacks). The per-token work, a
// softmax and top-k over E <= a handful of experts, is one thread per token running the same
// __host__ __device__ bodies as the CPU kernels (kernels/routing.h), which the CPU tests cover.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../cpu/cpu_utils.h"
#include "../kernels/routing.h"
#include "../input_checks.h"
#include "../spec_table.h"
#include "route_kernels.cuh"

namespace mor_ext::cuda {
std::tuple<at::Tensor, at::Tensor, at::Tensor> route_cuda(const at::Tensor& x, const at::Tensor& router_weight,
                                                          const at::Tensor& shared_gate_weight,
                                                          const at::Tensor& role_ids, at::IntArrayRef num_experts,
                                                          at::IntArrayRef top_k, at::IntArrayRef has_shared,
                                                          bool sigmoid_gate) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, sigmoid_gate);
  check_route_inputs(x, router_weight, shared_gate_weight, role_ids, spec);
  const c10::cuda::CUDAGuard guard(x.device());
  const int64_t n = x.size(0);
  // One GEMM (width padded for cuBLAS) for router and shared-gate logits in x's dtype; the kernel
  // reads them in place and routes in fp32, as the reference does.
  const at::Tensor rows = spec.any_gated_shared() ? stack_rows_padded({router_weight, shared_gate_weight})
                                                  : stack_rows_padded({router_weight});
  const at::Tensor logits = at::mm(x.contiguous(), rows.t());
  const at::Tensor roles = role_ids.contiguous();
  at::Tensor index = cpu::new_output({n, spec.k_max}, x.options().dtype(at::kInt));
  at::Tensor weight = cpu::new_output({n, spec.k_max}, x.options());
  at::Tensor probs = cpu::new_output({n, spec.num_experts_total}, x.options().dtype(at::kFloat));
  if (n > 0) {
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
  const int64_t n = x.size(0), e_total = spec.num_experts_total, k_max = spec.k_max;
  for (const auto& [t, name, cols] : {std::tuple{&grad_lora_weight, "grad_lora_weight", k_max},
                                      {&grad_router_probs, "grad_router_probs", e_total},
                                      {&lora_index, "lora_index", k_max}, {&router_probs, "router_probs", e_total}})
    TORCH_CHECK_VALUE(t->dim() == 2 && t->size(0) == n && t->size(1) == cols, name, " must be [", n, ", ", cols,
                      "], got ", t->sizes());
  const bool gated = spec.any_gated_shared();
  const at::Tensor xc = x.contiguous();
  const at::Tensor rows =
      gated ? stack_rows_padded({router_weight, shared_gate_weight}) : stack_rows_padded({router_weight});
  const int64_t width = rows.size(0);
  const at::Tensor shared_logits =
      gated ? at::mm(xc, shared_gate_weight.t()).to(at::kFloat).contiguous() : at::empty({0}, x.options().dtype(at::kFloat));
  const at::Tensor grad_gate = grad_lora_weight.to(x.scalar_type()).contiguous();
  const at::Tensor grad_probs = grad_router_probs.to(at::kFloat).contiguous();
  const at::Tensor probs = router_probs.to(at::kFloat).contiguous();
  const at::Tensor index = lora_index.to(at::kInt).contiguous();
  const at::Tensor roles = role_ids.contiguous();
  at::Tensor grad_logits = cpu::new_output({n, width}, x.options());  // every column written, padding included
  if (n > 0 && width > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "route_backward_cuda", [&] {
      route_backward_kernel<scalar_t, scalar_t><<<blocks_for(n, kRouteThreads), kRouteThreads, 0,
                                                  c10::cuda::getCurrentCUDAStream()>>>(
          spec.tables(), n, probs.data_ptr<float>(), index.data_ptr<int32_t>(), grad_gate.data_ptr<scalar_t>(),
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
