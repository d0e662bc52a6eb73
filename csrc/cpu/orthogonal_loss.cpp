// CPU kernels of mor_ext::orthogonal_loss_layers and its backward (docs/spec.md §4), and of the
// test-only ops that run the CUDA kernels' per-thread bodies in loops.
//
// Only r x r products per role (A_blk A_blk^T and the Gram matrices B_i^T B_i): a d_out x d_out or
// d_in x d_in matrix is never formed; the forward hands its products to the backward.
// orthogonal_products_cpu / orthogonal_grads_cpu (testing_orthogonal_products / _grads) run the
// CUDA kernels' per-thread bodies for the tests.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "../orthogonal_plan.h"
#include "../spec_table.h"
#include "cpu_utils.h"

namespace mor_ext::cpu {
namespace {

// The orthogonal loss on the CPU, in two steps that the CUDA ops share: the r x r products of every
// layer (plan_orthogonal's order), then the loss from them; the backward takes the forward's
// products instead of computing them again. Per layer and role with >= 2 routed LoRAs: one GEMM for
// the [E*r, E*r] matrix A_blk A_blk^T (its blocks above the diagonal are the cross products) and one
// batched GEMM for the Gram matrices; layers spread over threads (the ops are small: a SmolLM2-sized
// model has 210 adapted layers).

// f(l) for every layer, layers spread over threads with the caller's thread-local state.
template <typename F>
void for_each_layer(int64_t layers, const F& f) {
  if (layers < 2 || at::in_parallel_region() || at::get_num_threads() < 2) {
    for (int64_t l = 0; l < layers; ++l) f(l);
    return;
  }
  const at::ThreadLocalState state;
  at::parallel_for(0, layers, 1, [&](int64_t begin, int64_t end) {
    at::ThreadLocalStateGuard guard(state);
    for (int64_t l = begin; l < end; ++l) f(l);
  });
}

// The products of one layer into out (products_per_layer(spec) x r x r floats).
void layer_products(const at::Tensor& lora_A, const at::Tensor& lora_B, const SpecTable& spec, float* out) {
  const int64_t r = lora_A.size(1), d_in = lora_A.size(2);
  for (int64_t rho = 0; rho < spec.num_roles; ++rho) {
    const int64_t e = spec.num_experts[rho], first = spec.lora_start[rho] + spec.shared[rho], er = e * r;
    if (e < 2) continue;
    const at::Tensor a = lora_A.narrow(0, first, e).reshape({er, d_in}).to(at::kFloat);
    const at::Tensor cross = at::mm(a, a.t()).contiguous();
    const float* c = cross.data_ptr<float>();
    for (int64_t i = 0; i < e; ++i)
      for (int64_t j = i + 1; j < e; ++j, out += r * r)  // block (i, j): A_i A_j^T
        for (int64_t p = 0; p < r; ++p) std::copy_n(c + (i * r + p) * er + j * r, r, out + p * r);
    const at::Tensor b = lora_B.narrow(0, first, e).to(at::kFloat);
    const at::Tensor gram = at::bmm(b.transpose(1, 2), b).contiguous();
    std::copy_n(gram.data_ptr<float>(), e * r * r, out);
    out += e * r * r;
  }
}

at::Tensor layers_products(at::TensorList lora_A, at::TensorList lora_B, const SpecTable& spec) {
  const int64_t layers = static_cast<int64_t>(lora_A.size()), per_layer = products_per_layer(spec),
                r = lora_A[0].size(1);
  at::Tensor products = new_output({layers * per_layer, r, r}, lora_A[0].options().dtype(at::kFloat));
  float* out = products.data_ptr<float>();
  for_each_layer(layers, [&](int64_t l) { layer_products(lora_A[l], lora_B[l], spec, out + l * per_layer * r * r); });
  return products;
}

// sum over cross products of ||P||^2 + sum over a role's Gram pairs i < j of <G_i, G_j>, per layer in
// double (layers over threads), then summed in layer order: the same value for any thread count.
at::Tensor loss_from_products(const at::Tensor& products, int64_t layers, const SpecTable& spec) {
  const int64_t rr = products.size(1) * products.size(2), per_layer = products_per_layer(spec);
  std::vector<double> losses(layers, 0.0);
  for_each_layer(layers, [&](int64_t l) {
    const float* p = products.data_ptr<float>() + l * per_layer * rr;
    double total = 0.0;
    for (int64_t rho = 0; rho < spec.num_roles; ++rho) {
      const int64_t e = spec.num_experts[rho];
      if (e < 2) continue;
      for (int64_t x = 0; x < e * (e - 1) / 2 * rr; ++x) total += static_cast<double>(p[x]) * p[x];
      p += e * (e - 1) / 2 * rr;
      for (int64_t i = 0; i < e; ++i)
        for (int64_t j = i + 1; j < e; ++j)
          for (int64_t x = 0; x < rr; ++x) total += static_cast<double>(p[i * rr + x]) * p[j * rr + x];
      p += e * rr;
    }
    losses[l] = total;
  });
  double total = 0.0;
  for (double v : losses) total += v;
  return at::scalar_tensor(total, products.options());
}

// grad_a, grad_b of one layer from its products (scale = 2 dL/dloss):
//   dL/dA_i = scale sum_{j != i} (A_i A_j^T) A_j    (one GEMM per role: [E*r, E*r] x [E*r, d_in])
//   dL/dB_i = scale B_i sum_{j != i} G_j            (one batched GEMM per role)
// LoRAs outside every role's routed ones (the shared LoRAs) get zeros.
void layer_grads(const float* prod, const at::Tensor& lora_A, const at::Tensor& lora_B, const SpecTable& spec,
                 float scale, at::Tensor& grad_a, at::Tensor& grad_b) {
  const int64_t r = lora_A.size(1), d_in = lora_A.size(2), rr = r * r;
  std::vector<bool> routed(lora_A.size(0), false);
  for (int64_t rho = 0; rho < spec.num_roles; ++rho) {
    const int64_t e = spec.num_experts[rho], first = spec.lora_start[rho] + spec.shared[rho], er = e * r;
    if (e < 2) continue;
    std::fill(routed.begin() + first, routed.begin() + first + e, true);
    at::Tensor coef = at::empty({er, er}, lora_A.options().dtype(at::kFloat));  // scale * the off-diagonal blocks
    float* c = coef.data_ptr<float>();
    for (int64_t i = 0; i < e; ++i)
      for (int64_t p = 0; p < r; ++p) std::fill_n(c + (i * r + p) * er + i * r, r, 0.0f);
    for (int64_t i = 0; i < e; ++i)
      for (int64_t j = i + 1; j < e; ++j, prod += rr)
        for (int64_t p = 0; p < r; ++p)
          for (int64_t q = 0; q < r; ++q) {
            c[(i * r + p) * er + j * r + q] = scale * prod[p * r + q];  // A_i A_j^T
            c[(j * r + q) * er + i * r + p] = scale * prod[p * r + q];  // A_j A_i^T: its transpose
          }
    const at::Tensor a = lora_A.narrow(0, first, e).reshape({er, d_in}).to(at::kFloat);
    grad_a.narrow(0, first, e).view({er, d_in}).copy_(at::mm(coef, a));
    // sum_{j != i} G_j summed directly (not sum - G_i, which cancels when the B_i are nearly orthogonal)
    at::Tensor others = at::zeros({e, r, r}, lora_A.options().dtype(at::kFloat));
    float* o = others.data_ptr<float>();
    for (int64_t i = 0; i < e; ++i)
      for (int64_t j = 0; j < e; ++j)
        if (j != i)
          for (int64_t x = 0; x < rr; ++x) o[i * rr + x] += scale * prod[j * rr + x];
    prod += e * rr;
    const at::Tensor b = lora_B.narrow(0, first, e).to(at::kFloat);
    grad_b.narrow(0, first, e).copy_(at::bmm(b, others));
  }
  for (int64_t i = 0; i < lora_A.size(0); ++i)
    if (!routed[i]) {
      grad_a[i].zero_();
      grad_b[i].zero_();
    }
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> layers_grads(const at::Tensor& grad,
                                                                         const at::Tensor& products,
                                                                         at::TensorList lora_A,
                                                                         at::TensorList lora_B, const SpecTable& spec) {
  const float scale = 2.0f * grad.to(at::kFloat).item<float>();
  const int64_t per_layer = products_per_layer(spec), r = lora_A[0].size(1);
  const float* prod = products.data_ptr<float>();
  std::vector<at::Tensor> grad_a(lora_A.size()), grad_b(lora_B.size());
  for_each_layer(static_cast<int64_t>(lora_A.size()), [&](int64_t l) {
    // Contiguous whatever the inputs' strides (layer_grads writes through views); every element written once.
    grad_a[l] = at::empty(lora_A[l].sizes(), lora_A[l].options());
    grad_b[l] = at::empty(lora_B[l].sizes(), lora_B[l].options());
    layer_grads(prod + l * per_layer * r * r, lora_A[l], lora_B[l], spec, scale, grad_a[l], grad_b[l]);
  });
  return {grad_a, grad_b};
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> orthogonal_loss_layers_cpu(at::TensorList lora_A, at::TensorList lora_B,
                                                               at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                                               at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_layer_lists(lora_A, lora_B, spec);
  at::Tensor products = layers_products(lora_A, lora_B, spec);
  at::Tensor loss = loss_from_products(products, static_cast<int64_t>(lora_A.size()), spec);
  return {loss, products};
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> orthogonal_loss_layers_backward_cpu(
    const at::Tensor& grad, const at::Tensor& products, at::TensorList lora_A, at::TensorList lora_B,
    at::IntArrayRef num_experts, at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_layer_lists(lora_A, lora_B, spec);
  check_products(products, lora_A, spec);
  return layers_grads(grad, products, lora_A, lora_B, spec);
}

// testing_orthogonal_products: the CUDA products kernel's steps (kernels/products.h) in loops.
at::Tensor orthogonal_products_cpu(at::TensorList lora_A, at::TensorList lora_B, at::IntArrayRef num_experts,
                                   at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  const OrthogonalPlan plan = plan_orthogonal(lora_A, lora_B, spec);
  check_kernel_shapes(lora_A, lora_B);
  const int r = static_cast<int>(plan.rank);
  const int64_t n = static_cast<int64_t>(plan.items.size());
  at::Tensor out = new_output({n, r, r}, lora_A[0].options().dtype(at::kFloat));
  float* o_ptr = out.data_ptr<float>();
  const kernels::ProductShape shape = kernels::product_shape(r);
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, lora_A[0].scalar_type(), "orthogonal_products_cpu", [&] {
    kernels::with_micro_tile(shape, [&]<int M>() {
      // The CUDA kernel's steps, in loops: per item (a block), per tile, fill every slot, then let
      // every thread take its k steps; then add the groups' partial sums in group order. Storage is
      // 16-byte aligned, as the kernel's shared memory is (accumulate_step reads four floats at once).
      std::vector<kernels::Float4> smem(2 * kernels::kMaxRank * kernels::kTileStride / 4);
      float* tile_u = reinterpret_cast<float*>(smem.data());
      struct MicroTile {
        float v[M][M];
      };
      std::vector<MicroTile> acc(shape.threads);
      for (int64_t i = 0; i < n; ++i) {
        const kernels::ProductItem& item = plan.items[i];
        const bool same = kernels::same_operands(item);
        float* tile_v = same ? tile_u : tile_u + kernels::kMaxRank * kernels::kTileStride;
        std::fill(acc.begin(), acc.end(), MicroTile{});
        const auto* u = reinterpret_cast<const scalar_t*>(item.u);
        const auto* v = reinterpret_cast<const scalar_t*>(item.v);
        const int u_row = static_cast<int>(item.u_row), u_col = static_cast<int>(item.u_col);
        const int v_row = static_cast<int>(item.v_row), v_col = static_cast<int>(item.v_col);
        for (int64_t k0 = 0; k0 < item.inner; k0 += kernels::kTile) {
          for (int idx = 0; idx < r * kernels::kTile; ++idx) {
            int p, k;
            kernels::tile_slot(idx, r, u_col == 1, &p, &k);
            tile_u[kernels::tile_offset(p, k)] =
                kernels::load_operand(u + k0 * u_col, u_row, u_col, item.inner - k0, p, k);
            if (same) continue;
            kernels::tile_slot(idx, r, v_col == 1, &p, &k);
            tile_v[kernels::tile_offset(p, k)] =
                kernels::load_operand(v + k0 * v_col, v_row, v_col, item.inner - k0, p, k);
          }
          for (int tid = 0; tid < shape.threads; ++tid) {
            const int g = tid / shape.per_group, s = tid % shape.per_group;
            for (int k4 = g; k4 < kernels::kTile / 4; k4 += shape.groups)
              kernels::accumulate_step<M>(tile_u, tile_v, shape.side, s / shape.side, s % shape.side, k4, acc[tid].v);
          }
        }
        float* partial = tile_u;
        for (int tid = 0; tid < shape.threads; ++tid) {
          const int g = tid / shape.per_group, s = tid % shape.per_group, pi = s / shape.side, qi = s % shape.side;
          for (int a = 0; a < M; ++a)
            for (int b = 0; b < M; ++b)
              partial[kernels::partial_offset(r, g, pi + shape.side * a, qi + shape.side * b)] = acc[tid].v[a][b];
        }
        for (int o = 0; o < r * r; ++o) {
          float sum = 0.0f;
          for (int g = 0; g < shape.groups; ++g) sum += partial[kernels::partial_offset(r, g, o / r, o % r)];
          o_ptr[i * r * r + o] = sum;
        }
      }
    });
  });
  return out;
}

// testing_orthogonal_grads: the CUDA gradient kernel's steps (kernels/orthogonal_grads.h) in loops,
// from the forward's products: what the tests check the CUDA backward's bodies with.
std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> orthogonal_grads_cpu(
    const at::Tensor& grad, const at::Tensor& products, at::TensorList lora_A, at::TensorList lora_B,
    at::IntArrayRef num_experts, at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_layer_lists(lora_A, lora_B, spec);
  check_kernel_shapes(lora_A, lora_B);
  check_products(products, lora_A, spec);
  std::vector<at::Tensor> grad_a, grad_b;
  for (size_t l = 0; l < lora_A.size(); ++l) {
    grad_a.push_back(new_output(lora_A[l].sizes(), lora_A[l].options()));
    grad_b.push_back(new_output(lora_B[l].sizes(), lora_B[l].options()));
  }
  const OrthogonalGradPlan plan = plan_orthogonal_grads(lora_A, lora_B, spec, grad_a, grad_b);
  const int r = static_cast<int>(lora_A[0].size(1));
  const float scale = 2.0f * grad.to(at::kFloat).item<float>();
  const float* prod = products.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, lora_A[0].scalar_type(), "orthogonal_grads_cpu", [&] {
    // The instantiation the CUDA kernel uses for this rank (compile-time rank for 4, 8, 16, 32).
    kernels::with_rank(r, [&]<int R>() {
      std::vector<float> coef(r * r);
      for (const kernels::GradItem& item : plan.items)
        for (int64_t k = 0; k < item.cols; ++k) {
          float acc[kernels::kMaxRank] = {};
          for (int64_t t = item.term_begin; t < item.term_begin + item.term_count; ++t) {
            const kernels::GradTerm& term = plan.terms[t];
            for (int idx = 0; idx < r * r; ++idx) coef[idx] = kernels::term_coef(prod, term, r, idx / r, idx % r);
            kernels::accumulate_term<scalar_t, R>(term, coef.data(), r, k, acc);
          }
          kernels::store_column<scalar_t, R>(item, r, k, scale, acc);
        }
    });
  });
  return {grad_a, grad_b};
}

TORCH_LIBRARY_IMPL(mor_ext, CPU, m) {
  m.impl("orthogonal_loss_layers", &orthogonal_loss_layers_cpu);
  m.impl("orthogonal_loss_layers_backward", &orthogonal_loss_layers_backward_cpu);
  m.impl("testing_orthogonal_products", &orthogonal_products_cpu);
  m.impl("testing_orthogonal_grads", &orthogonal_grads_cpu);
}

}  // namespace mor_ext::cpu
