// CUDA kernels of mor_ext::orthogonal_loss_layers and its backward (docs/spec.md §4).
//
// The products (also the test-only op testing_orthogonal_products): every r x r product the loss
// needs, for all layers at once, in one launch: one block per product (A_i A_j^T or B_i^T B_i), the
// inner dimension (d_in or d_out) streamed through shared memory in tiles, register tiles of M x M
// outputs per thread (kernels/products.h holds the per-thread steps, which the CPU build runs in
// loops for the tests).
// orthogonal_loss_layers = those products + a few ATen reductions; it returns the products too, and
// its backward writes every gradient of every layer from them in one more launch
// (kernels/orthogonal_grads.h: one block per LoRA matrix and column tile; also the test-only op
// testing_orthogonal_grads). One layer is a list of one (mor_ext.ops.orthogonal_loss). The
// load-balance loss has no CUDA kernel of its own: csrc/aten/load_balance_loss.cpp serves every
// device.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../cpu/cpu_utils.h"
#include "../kernels/orthogonal_grads.h"
#include "../kernels/products.h"
#include "../orthogonal_plan.h"
#include "../spec_table.h"
#include "launch.cuh"

namespace mor_ext::cuda {
namespace {

// Shared memory of the products kernel: the U and V tiles, later the groups' partial sums.
constexpr int kProductSmem = 2 * kernels::kMaxRank * kernels::kTileStride;

// M x M register tiles never need more than kProductThreads threads (only odd ranks above 16 do).
template <typename T, int M>
__global__ void __launch_bounds__(M == 1 ? 1024 : kernels::kProductThreads)
    products_kernel(const kernels::ProductItem* __restrict__ items, kernels::ProductShape shape, float* __restrict__ out) {
  __shared__ alignas(16) float smem[kProductSmem];
  const kernels::ProductItem item = items[blockIdx.x];
  const bool same = kernels::same_operands(item);
  float* tile_u = smem;
  float* tile_v = same ? smem : smem + kernels::kMaxRank * kernels::kTileStride;
  const int tid = threadIdx.x, r = shape.r, slots = r * kernels::kTile;
  const int g = tid / shape.per_group, s = tid % shape.per_group, pi = s / shape.side, qi = s % shape.side;
  const int u_row = static_cast<int>(item.u_row), u_col = static_cast<int>(item.u_col);
  const int v_row = static_cast<int>(item.v_row), v_col = static_cast<int>(item.v_col);
  const T* u = reinterpret_cast<const T*>(item.u);
  const T* v = reinterpret_cast<const T*>(item.v);
  float acc[M][M] = {};
  for (int64_t k0 = 0; k0 < item.inner; k0 += kernels::kTile) {
    const T* u_tile = u + k0 * u_col;
    const T* v_tile = v + k0 * v_col;
    const int64_t left = item.inner - k0;
    for (int idx = tid; idx < slots; idx += shape.threads) {
      int p, k;
      kernels::tile_slot(idx, r, u_col == 1, &p, &k);
      tile_u[kernels::tile_offset(p, k)] = kernels::load_operand(u_tile, u_row, u_col, left, p, k);
      if (same) continue;
      kernels::tile_slot(idx, r, v_col == 1, &p, &k);
      tile_v[kernels::tile_offset(p, k)] = kernels::load_operand(v_tile, v_row, v_col, left, p, k);
    }
    __syncthreads();
    for (int k4 = g; k4 < kernels::kTile / 4; k4 += shape.groups)
      kernels::accumulate_step<M>(tile_u, tile_v, shape.side, pi, qi, k4, acc);
    __syncthreads();  // every thread is done with the tiles (and, after the last one, with smem)
  }
  float* partial = smem;
#pragma unroll
  for (int i = 0; i < M; ++i)
#pragma unroll
    for (int j = 0; j < M; ++j) partial[kernels::partial_offset(r, g, pi + shape.side * i, qi + shape.side * j)] = acc[i][j];
  __syncthreads();
  for (int o = tid; o < r * r; o += shape.threads) {
    float sum = 0.0f;
    for (int gg = 0; gg < shape.groups; ++gg) sum += partial[kernels::partial_offset(r, gg, o / r, o % r)];
    out[static_cast<int64_t>(blockIdx.x) * r * r + o] = sum;
  }
}

at::Tensor run_products(at::TensorList lora_A, at::TensorList lora_B, const OrthogonalPlan& plan) {
  check_kernel_shapes(lora_A, lora_B);
  const int r = static_cast<int>(plan.rank);
  const at::Tensor& like = lora_A[0];
  const int64_t n = static_cast<int64_t>(plan.items.size());
  at::Tensor out = at::empty({n, r, r}, like.options().dtype(at::kFloat));
  if (n == 0) return out;
  // The item table travels as int64 [n, kItemFields]; the kernel reads it as ProductItem structs.
  const at::Tensor table = to_device_async(reinterpret_cast<const int64_t*>(plan.items.data()), n,
                                           kernels::kItemFields, like.device());
  const kernels::ProductShape shape = kernels::product_shape(r);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, like.scalar_type(), "orthogonal_products_cuda", [&] {
    kernels::with_micro_tile(shape, [&]<int M>() {
      products_kernel<scalar_t, M><<<static_cast<unsigned>(n), shape.threads, 0, c10::cuda::getCurrentCUDAStream()>>>(
          reinterpret_cast<const kernels::ProductItem*>(table.data_ptr<int64_t>()), shape, out.data_ptr<float>());
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return out;
}

template <typename T, int R>
__global__ void grads_kernel(const kernels::GradItem* __restrict__ items, const kernels::GradTerm* __restrict__ terms,
                             const float* __restrict__ products, int r, const float* __restrict__ grad, float factor) {
  __shared__ float coef[kernels::kMaxRank * kernels::kMaxRank];
  const kernels::GradItem item = items[blockIdx.x];
  // Column tiles grid-stride in y (gridDim.y is capped at 65535). The loop condition is the same for
  // the whole block, so no thread skips a barrier.
  for (int64_t col0 = static_cast<int64_t>(blockIdx.y) * kernels::kGradCols; col0 < item.cols;
       col0 += static_cast<int64_t>(gridDim.y) * kernels::kGradCols) {
    const int64_t k = col0 + threadIdx.x;
    float acc[kernels::kMaxRank] = {};
    for (int64_t t = item.term_begin; t < item.term_begin + item.term_count; ++t) {
      const kernels::GradTerm term = terms[t];
      for (int idx = threadIdx.x; idx < r * r; idx += blockDim.x)
        coef[idx] = kernels::term_coef(products, term, r, idx / r, idx % r);
      __syncthreads();
      if (k < item.cols) kernels::accumulate_term<T, R>(term, coef, r, k, acc);
      __syncthreads();
    }
    if (k < item.cols) kernels::store_column<T, R>(item, r, k, factor * grad[0], acc);
  }
}

// Gradients of sum over layers of the loss from its products, scaled by `grad` (a device scalar:
// read in the kernel, so no host sync).
std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> run_grads(const at::Tensor& grad, const at::Tensor& products,
                                                                       at::TensorList lora_A, at::TensorList lora_B,
                                                                       const SpecTable& spec) {
  check_kernel_shapes(lora_A, lora_B);
  const int rank = static_cast<int>(lora_A[0].size(1));
  std::vector<at::Tensor> grad_a, grad_b;
  for (size_t l = 0; l < lora_A.size(); ++l) {  // every element is written by the kernel
    grad_a.push_back(cpu::new_output(lora_A[l].sizes(), lora_A[l].options()));
    grad_b.push_back(cpu::new_output(lora_B[l].sizes(), lora_B[l].options()));
  }
  const OrthogonalGradPlan gplan = plan_orthogonal_grads(lora_A, lora_B, spec, grad_a, grad_b);
  const int64_t n = static_cast<int64_t>(gplan.items.size());
  if (n == 0 || gplan.max_cols == 0) return {grad_a, grad_b};  // nothing to write (and no empty grid)
  const at::Device device = lora_A[0].device();
  const at::Tensor items = to_device_async(reinterpret_cast<const int64_t*>(gplan.items.data()), n,
                                           kernels::kGradItemFields, device);
  const at::Tensor terms = to_device_async(reinterpret_cast<const int64_t*>(gplan.terms.data()),
                                           static_cast<int64_t>(gplan.terms.size()), kernels::kGradTermFields, device);
  const at::Tensor g = grad.to(device, at::kFloat).contiguous();
  const dim3 grid(static_cast<unsigned>(n),
                  static_cast<unsigned>(std::min<int64_t>((gplan.max_cols + kernels::kGradCols - 1) / kernels::kGradCols,
                                                          kMaxGridY)));
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, lora_A[0].scalar_type(), "orthogonal_grads_cuda", [&] {
    kernels::with_rank(rank, [&]<int R>() {
      grads_kernel<scalar_t, R><<<grid, kernels::kGradCols, 0, c10::cuda::getCurrentCUDAStream()>>>(
          reinterpret_cast<const kernels::GradItem*>(items.data_ptr<int64_t>()),
          reinterpret_cast<const kernels::GradTerm*>(terms.data_ptr<int64_t>()), products.data_ptr<float>(),
          rank, g.data_ptr<float>(), 2.0f);
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
  });
  return {grad_a, grad_b};
}

}  // namespace

at::Tensor orthogonal_products_cuda(at::TensorList lora_A, at::TensorList lora_B, at::IntArrayRef num_experts,
                                    at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  const OrthogonalPlan plan = plan_orthogonal(lora_A, lora_B, spec);
  const c10::cuda::CUDAGuard guard(lora_A[0].device());
  return run_products(lora_A, lora_B, plan);
}

std::tuple<at::Tensor, at::Tensor> orthogonal_loss_layers_cuda(at::TensorList lora_A, at::TensorList lora_B,
                                                                at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                                                at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  const OrthogonalPlan plan = plan_orthogonal(lora_A, lora_B, spec);
  const c10::cuda::CUDAGuard guard(lora_A[0].device());
  at::Tensor products = run_products(lora_A, lora_B, plan);
  at::Tensor loss = combine_orthogonal(products, plan);
  return {loss, products};
}

// The backward (and testing_orthogonal_grads, the op its CPU emulation is checked against): one launch
// from the forward's products.
std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> orthogonal_grads_cuda(
    const at::Tensor& grad, const at::Tensor& products, at::TensorList lora_A, at::TensorList lora_B,
    at::IntArrayRef num_experts, at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_layer_lists(lora_A, lora_B, spec);
  check_products(products, lora_A, spec);
  const c10::cuda::CUDAGuard guard(lora_A[0].device());
  return run_grads(grad, products, lora_A, lora_B, spec);
}

TORCH_LIBRARY_IMPL(mor_ext, CUDA, m) {
  m.impl("orthogonal_loss_layers", &orthogonal_loss_layers_cuda);
  m.impl("orthogonal_loss_layers_backward", &orthogonal_grads_cuda);
  m.impl("testing_orthogonal_products", &orthogonal_products_cuda);
  m.impl("testing_orthogonal_grads", &orthogonal_grads_cuda);
}

}  // namespace mor_ext::cuda
