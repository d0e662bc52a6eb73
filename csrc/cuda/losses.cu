// CUDA kernels of the losses.
//
// orthogonal_products: every r x r product the loss needs, for all layers at once, in one launch:
// one block per product (A_i A_j^T or B_i^T B_i), r*r threads, the inner dimension (d_in or d_out)
// streamed through shared memory in tiles (kernels/products.h holds the per-thread steps, which
// the CPU build runs in loops for the tests). orthogonal_loss_layers = those products + a few ATen
// reductions. The backward, and the per-layer op, reuse the ATen implementation (csrc/cpu/losses.cpp),
// which is device-generic: a dedicated backward kernel is future work. The load-balance loss uses
// the device-generic ATen implementation too (a few reductions, no host sync).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include "../cpu/losses.h"
#include "../kernels/products.h"
#include "../orthogonal_plan.h"
#include "../spec_table.h"

namespace mor_ext::cuda {
namespace {

template <typename T>
__global__ void products_kernel(const kernels::ProductItem* __restrict__ items, int r, float* __restrict__ out) {
  __shared__ float tile_u[kernels::kMaxRank * kernels::kTile];
  __shared__ float tile_v[kernels::kMaxRank * kernels::kTile];
  const kernels::ProductItem item = items[blockIdx.x];
  const int tid = threadIdx.x, p = tid / r, q = tid % r;
  float acc = 0.0f;
  for (int64_t k0 = 0; k0 < item.inner; k0 += kernels::kTile) {
    for (int idx = tid; idx < r * kernels::kTile; idx += blockDim.x) {
      int row, k;
      bool inside;
      kernels::tile_slot(idx, k0, item.inner, &row, &k, &inside);
      tile_u[idx] = inside ? kernels::load_u<T>(item, row, k0 + k) : 0.0f;
      tile_v[idx] = inside ? kernels::load_v<T>(item, row, k0 + k) : 0.0f;
    }
    __syncthreads();
    acc = kernels::accumulate_tile(tile_u, tile_v, p, q, acc);
    __syncthreads();
  }
  out[static_cast<int64_t>(blockIdx.x) * r * r + tid] = acc;
}

at::Tensor run_products(at::TensorList lora_A, const OrthogonalPlan& plan) {
  const int r = static_cast<int>(plan.rank);
  TORCH_CHECK_VALUE(r <= kernels::kMaxRank, "rank ", r, " > ", kernels::kMaxRank, " is not supported");
  const at::Tensor& like = lora_A[0];
  const int64_t n = static_cast<int64_t>(plan.items.size());
  at::Tensor out = at::empty({n, r, r}, like.options().dtype(at::kFloat));
  if (n == 0) return out;
  // The item table travels as int64 [n, kItemFields]; the kernel reads it as ProductItem structs.
  at::Tensor table = at::from_blob(const_cast<kernels::ProductItem*>(plan.items.data()), {n, kernels::kItemFields},
                                   at::TensorOptions().dtype(at::kLong))
                         .to(like.device(), /*non_blocking=*/false, /*copy=*/true);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, like.scalar_type(), "orthogonal_products_cuda", [&] {
    products_kernel<scalar_t><<<static_cast<unsigned>(n), r * r, 0, c10::cuda::getCurrentCUDAStream()>>>(
        reinterpret_cast<const kernels::ProductItem*>(table.data_ptr<int64_t>()), r, out.data_ptr<float>());
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return out;
}

}  // namespace

at::Tensor orthogonal_products_cuda(at::TensorList lora_A, at::TensorList lora_B, at::IntArrayRef num_experts,
                                    at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  const OrthogonalPlan plan = plan_orthogonal(lora_A, lora_B, spec);
  const c10::cuda::CUDAGuard guard(lora_A[0].device());
  return run_products(lora_A, plan);
}

at::Tensor orthogonal_loss_layers_cuda(at::TensorList lora_A, at::TensorList lora_B, at::IntArrayRef num_experts,
                                       at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  const OrthogonalPlan plan = plan_orthogonal(lora_A, lora_B, spec);
  const c10::cuda::CUDAGuard guard(lora_A[0].device());
  return combine_orthogonal(run_products(lora_A, plan), plan);
}

TORCH_LIBRARY_IMPL(mor_ext, CUDA, m) {
  m.impl("orthogonal_products", &orthogonal_products_cuda);
  m.impl("orthogonal_loss_layers", &orthogonal_loss_layers_cuda);
  m.impl("orthogonal_loss_layers_backward", &cpu::orthogonal_loss_layers_backward_aten);
  m.impl("orthogonal_loss", &cpu::orthogonal_loss_aten);
  m.impl("orthogonal_loss_backward", &cpu::orthogonal_loss_backward_aten);
  m.impl("load_balance_loss", &cpu::load_balance_loss_aten);
  m.impl("load_balance_loss_backward", &cpu::load_balance_loss_backward_aten);
}

}  // namespace mor_ext::cuda
