// CPU kernels of mor_ext::orthogonal_loss_layers and its backward (docs/spec.md §4), and of the
// test-only ops that run the CUDA kernels' per-thread bodies in loops.
//
// Only r x r products per role (A_i A_j^T and the Gram matrices B_i^T B_i): a d_out x d_out or
// d_in x d_in matrix is never formed; the forward hands its products to the backward.
// orthogonal_products_cpu / orthogonal_grads_cpu (testing_orthogonal_products / _grads) run the
// CUDA kernels' per-thread bodies for the tests.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstring>
#include <tuple>
#include <vector>

#include "../orthogonal_plan.h"
#include "../spec_table.h"
#include "cpu_utils.h"
#include "gemm_avx512.h"
#include "path_counts.h"

namespace mor_ext::cpu {
namespace {

// The loss and its backward over all layers in one pass of direct loops: per layer and role with
// >= 2 routed LoRAs, the r x r products and the gradients are small GEMMs on the adapters' memory
// (no ATen op per layer: a model's 28-210 layers cost one op call, not hundreds of small ones),
// fp32 throughout (other dtypes are converted once per call), layers spread over threads when the
// call is large enough. Each layer's values are computed by one thread in a fixed order and the
// loss is summed in layer order, so results do not depend on the thread count.

// C = (accumulate ? C : 0) + A . B with A(i, k) = a[i * a_row + k * a_col], B(k, j) = b[k * ldb + j]
// (avx512::gemm_unpacked's contract): AVX-512 where the CPU has it, else plain loops that the
// compiler vectorises for the build's baseline ISA.
struct SmallGemm {
  bool avx512 = false;

  void operator()(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
                  int64_t ldb, float* c, int64_t ldc, bool accumulate) const {
    if (avx512) return avx512::gemm_unpacked(m, n, k, a, a_row, a_col, b, ldb, c, ldc, accumulate);
    for (int64_t i = 0; i < m; ++i) {
      float* ci = c + i * ldc;
      if (!accumulate) std::fill_n(ci, n, 0.0f);
      for (int64_t kk = 0; kk < k; ++kk) {
        const float aik = a[i * a_row + kk * a_col];
        const float* bk = b + kk * ldb;
        for (int64_t j = 0; j < n; ++j) ci[j] += aik * bk[j];
      }
    }
  }

  // The path of this call (counted for the tests): MOR_EXT_BENCH_LOSSES=generic takes the loops.
  static SmallGemm for_call() {
    const SmallGemm gemm{avx512::available() && !bench_losses_mode_is("generic")};
    count_path(gemm.avx512 ? CpuPath::kAvx512Losses : CpuPath::kGenericLosses);
    return gemm;
  }
};

// fp32 contiguous copies where the adapters are in another dtype (the tensors themselves if fp32).
std::vector<at::Tensor> as_float(at::TensorList tensors) {
  std::vector<at::Tensor> out;
  out.reserve(tensors.size());
  for (const at::Tensor& t : tensors) out.push_back(t.scalar_type() == at::kFloat ? t : t.to(at::kFloat));
  return out;
}

// Runs f(begin, end) over layer ranges: over threads when the call's work (`fmas`, multiply-adds
// of all layers) is large enough to pay for a parallel region, else inline.
template <typename F>
void over_layers(int64_t layers, int64_t fmas, const F& f) {
  constexpr int64_t kMinFmasPerTask = int64_t{1} << 20;  // ~50 us of one core's work
  const int64_t per_layer = std::max<int64_t>(1, fmas / std::max<int64_t>(1, layers));
  const int64_t grain = std::max<int64_t>(1, kMinFmasPerTask / per_layer);
  if (layers <= grain || at::in_parallel_region() || at::get_num_threads() < 2)
    f(0, layers);
  else
    at::parallel_for(0, layers, grain, f);
}

// Multiply-adds of the forward (cross products and Gram matrices) of a layer; the backward's are about the same.
int64_t layer_fmas(int64_t d_in, int64_t d_out, int64_t r, const SpecTable& spec) {
  int64_t n = 0;
  for (int64_t rho = 0; rho < spec.num_roles; ++rho) {
    const int64_t e = spec.num_experts[rho];
    if (e >= 2) n += (e * (e - 1) / 2 * d_in + e * d_out) * r * r;
  }
  return n;
}

int64_t call_fmas(at::TensorList lora_A, at::TensorList lora_B, const SpecTable& spec) {
  int64_t n = 0;
  for (size_t l = 0; l < lora_A.size(); ++l) n += layer_fmas(lora_A[l].size(2), lora_B[l].size(1), lora_A[l].size(1), spec);
  return n;
}

// One thread's scratch, reused across its layers.
struct Scratch {
  std::vector<float> a_t;   // a role's A_blk^T [d_in, E*r]: the cross products' B operand, rows contiguous
  std::vector<float> band;  // A_i [A_{i+1} .. A_{E-1}]^T [r, (E-1-i)*r]; in backward the coefficients [E*r, E*r]
  std::vector<float> others;  // scale * sum_{j != i} G_j [r, r]
};

// sum_x p[x] q[x] in double, in 8 lanes: one running sum would wait an add's latency per element.
double dot_double(const float* p, const float* q, int64_t n) {
  double lanes[8] = {};
  int64_t x = 0;
  for (; x + 8 <= n; x += 8)
    for (int j = 0; j < 8; ++j) lanes[j] += static_cast<double>(p[x + j]) * q[x + j];
  double total = 0.0;
  for (; x < n; ++x) total += static_cast<double>(p[x]) * q[x];
  for (double v : lanes) total += v;
  return total;
}

// out [cols, rows] = in [rows, cols]^T, in 16 x 16 blocks (2x faster than row by row at d_in = 1536).
void transpose(const float* in, int64_t rows, int64_t cols, float* out) {
  constexpr int64_t kBlock = 16;
  for (int64_t r0 = 0; r0 < rows; r0 += kBlock)
    for (int64_t c0 = 0; c0 < cols; c0 += kBlock) {
      const int64_t r1 = std::min(rows, r0 + kBlock), c1 = std::min(cols, c0 + kBlock);
      for (int64_t c = c0; c < c1; ++c)
        for (int64_t r = r0; r < r1; ++r) out[c * rows + r] = in[r * cols + c];
    }
}

// The products of one layer into out (products_per_layer(spec) x r x r floats, plan_orthogonal's
// order) from its fp32 adapters a [L, r, d_in], b [L, d_out, r]; returns the layer's loss,
//   sum over cross products of ||P||^2 + sum over a role's Gram pairs i < j of <G_i, G_j>,
// accumulated in double.
double layer_products(const float* a, const float* b, int64_t r, int64_t d_in, int64_t d_out, const SpecTable& spec,
                      const SmallGemm& gemm, Scratch& s, float* out) {
  const int64_t rr = r * r;
  double loss = 0.0;
  for (int64_t rho = 0; rho < spec.num_roles; ++rho) {
    const int64_t e = spec.num_experts[rho], first = spec.lora_start[rho] + spec.shared[rho], er = e * r;
    if (e < 2) continue;
    const float* a_blk = a + first * r * d_in;  // [E*r, d_in]: the role's routed A_i, stacked
    s.a_t.resize(d_in * er);
    transpose(a_blk, er, d_in, s.a_t.data());
    for (int64_t i = 0; i + 1 < e; ++i) {  // blocks (i, j > i) of A_blk A_blk^T, one GEMM per row band
      const int64_t n = (e - 1 - i) * r;
      s.band.resize(r * n);
      gemm(r, n, d_in, a_blk + i * r * d_in, d_in, 1, s.a_t.data() + (i + 1) * r, er, s.band.data(), n, false);
      for (int64_t j = i + 1; j < e; ++j, out += rr)
        for (int64_t p = 0; p < r; ++p) std::copy_n(s.band.data() + p * n + (j - i - 1) * r, r, out + p * r);
    }
    const float* cross = out - e * (e - 1) / 2 * rr;
    loss += dot_double(cross, cross, e * (e - 1) / 2 * rr);
    for (int64_t i = 0; i < e; ++i) {  // G_i = B_i^T B_i: A(p, k) = B_i[k, p]
      const float* b_i = b + (first + i) * d_out * r;
      gemm(r, r, d_out, b_i, 1, r, b_i, r, out + i * rr, r, false);
    }
    for (int64_t i = 0; i < e; ++i)
      for (int64_t j = i + 1; j < e; ++j) loss += dot_double(out + i * rr, out + j * rr, rr);
    out += e * rr;
  }
  return loss;
}

// grad_a, grad_b of one layer (fp32, shaped like its adapters) from its products (scale = 2 dL/dloss):
//   dL/dA_i = scale sum_{j != i} (A_i A_j^T) A_j    (per row band of the role: [r, E*r] x [E*r, d_in])
//   dL/dB_i = scale B_i sum_{j != i} G_j            ([d_out, r] x [r, r])
// LoRAs outside every role's routed ones (the shared LoRAs) get zeros.
void layer_grads(const float* prod, const float* a, const float* b, int64_t num_loras, int64_t r, int64_t d_in,
                 int64_t d_out, const SpecTable& spec, float scale, const SmallGemm& gemm, Scratch& s, float* grad_a,
                 float* grad_b) {
  const int64_t rr = r * r;
  std::vector<bool> routed(num_loras, false);
  for (int64_t rho = 0; rho < spec.num_roles; ++rho) {
    const int64_t e = spec.num_experts[rho], first = spec.lora_start[rho] + spec.shared[rho], er = e * r;
    if (e < 2) continue;
    std::fill(routed.begin() + first, routed.begin() + first + e, true);
    // coef = scale * A_blk A_blk^T off the diagonal blocks (those are never read)
    s.band.resize(er * er);
    float* coef = s.band.data();
    for (int64_t i = 0; i < e; ++i)
      for (int64_t j = i + 1; j < e; ++j, prod += rr)
        for (int64_t p = 0; p < r; ++p)
          for (int64_t q = 0; q < r; ++q) {
            coef[(i * r + p) * er + j * r + q] = scale * prod[p * r + q];  // A_i A_j^T
            coef[(j * r + q) * er + i * r + p] = scale * prod[p * r + q];  // A_j A_i^T: its transpose
          }
    const float* a_blk = a + first * r * d_in;
    for (int64_t i = 0; i < e; ++i) {  // the band's LoRAs j < i, then j > i
      float* g = grad_a + (first + i) * r * d_in;
      const float* band = coef + i * r * er;
      if (i > 0) gemm(r, d_in, i * r, band, er, 1, a_blk, d_in, g, d_in, false);
      if (i + 1 < e)
        gemm(r, d_in, (e - 1 - i) * r, band + (i + 1) * r, er, 1, a_blk + (i + 1) * r * d_in, d_in, g, d_in, i > 0);
    }
    s.others.resize(rr);
    for (int64_t i = 0; i < e; ++i) {
      // sum_{j != i} G_j summed directly (not sum - G_i, which cancels when the B_i are nearly orthogonal)
      std::fill(s.others.begin(), s.others.end(), 0.0f);
      for (int64_t j = 0; j < e; ++j)
        if (j != i)
          for (int64_t x = 0; x < rr; ++x) s.others[x] += scale * prod[j * rr + x];
      const int64_t lora = first + i;
      gemm(d_out, r, r, b + lora * d_out * r, r, 1, s.others.data(), r, grad_b + lora * d_out * r, r, false);
    }
    prod += e * rr;
  }
  for (int64_t lora = 0; lora < num_loras; ++lora)
    if (!routed[lora]) {
      std::memset(grad_a + lora * r * d_in, 0, sizeof(float) * r * d_in);
      std::memset(grad_b + lora * d_out * r, 0, sizeof(float) * d_out * r);
    }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> orthogonal_loss_layers_cpu(at::TensorList lora_A, at::TensorList lora_B,
                                                               at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                                               at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_layer_lists(lora_A, lora_B, spec);
  const int64_t layers = static_cast<int64_t>(lora_A.size()), per_layer = products_per_layer(spec),
                r = lora_A[0].size(1), rr = r * r;
  const std::vector<at::Tensor> a = as_float(lora_A), b = as_float(lora_B);
  at::Tensor products = new_output({layers * per_layer, r, r}, lora_A[0].options().dtype(at::kFloat));
  float* out = products.data_ptr<float>();
  std::vector<double> losses(layers, 0.0);
  const SmallGemm gemm = SmallGemm::for_call();
  over_layers(layers, call_fmas(lora_A, lora_B, spec), [&](int64_t begin, int64_t end) {
    Scratch s;
    for (int64_t l = begin; l < end; ++l)
      losses[l] = layer_products(a[l].const_data_ptr<float>(), b[l].const_data_ptr<float>(), r, a[l].size(2),
                                 b[l].size(1), spec, gemm, s, out + l * per_layer * rr);
  });
  double total = 0.0;
  for (double v : losses) total += v;  // in layer order: the same value for any thread count
  return {at::scalar_tensor(total, products.options()), products};
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> orthogonal_loss_layers_backward_cpu(
    const at::Tensor& grad, const at::Tensor& products, at::TensorList lora_A, at::TensorList lora_B,
    at::IntArrayRef num_experts, at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_layer_lists(lora_A, lora_B, spec);
  check_products(products, lora_A, spec);
  const int64_t layers = static_cast<int64_t>(lora_A.size()), per_layer = products_per_layer(spec),
                r = lora_A[0].size(1);
  const float scale = 2.0f * (grad.scalar_type() == at::kFloat ? *grad.const_data_ptr<float>() : grad.item<float>());
  const bool fp32 = lora_A[0].scalar_type() == at::kFloat;
  const std::vector<at::Tensor> a = as_float(lora_A), b = as_float(lora_B);
  // Every element is written (zeros for the shared LoRAs); fp32 gradients are the outputs themselves.
  const auto float_options = lora_A[0].options().dtype(at::kFloat);
  std::vector<at::Tensor> grad_a(layers), grad_b(layers);
  for (int64_t l = 0; l < layers; ++l) {
    grad_a[l] = new_output(lora_A[l].sizes(), float_options);
    grad_b[l] = new_output(lora_B[l].sizes(), float_options);
  }
  const float* prod = products.const_data_ptr<float>();
  const SmallGemm gemm = SmallGemm::for_call();
  over_layers(layers, call_fmas(lora_A, lora_B, spec), [&](int64_t begin, int64_t end) {
    Scratch s;
    for (int64_t l = begin; l < end; ++l)
      layer_grads(prod + l * per_layer * r * r, a[l].const_data_ptr<float>(), b[l].const_data_ptr<float>(),
                  spec.num_loras, r, a[l].size(2), b[l].size(1), spec, scale, gemm, s, grad_a[l].data_ptr<float>(),
                  grad_b[l].data_ptr<float>());
  });
  if (!fp32)
    for (int64_t l = 0; l < layers; ++l) {
      grad_a[l] = grad_a[l].to(lora_A[l].scalar_type());
      grad_b[l] = grad_b[l].to(lora_B[l].scalar_type());
    }
  return {grad_a, grad_b};
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
