// CPU kernels of the two auxiliary losses and their backward passes.
//
// load_balance_loss: counting and averaging over tokens with ATen ops and no host sync, so the same
// code serves CPU and CUDA tensors.
// orthogonal_loss: only r x r products per role (A_blk A_blk^T and the Gram matrices B_i^T B_i);
// a d_out x d_out or d_in x d_in matrix is never formed; *_layers sum over many layers and hand
// their products to the backward, and orthogonal_products_cpu / orthogonal_grads_cpu run the CUDA
// kernels' per-thread bodies for the tests.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../device_tables.h"
#include "../orthogonal_plan.h"
#include "../spec_table.h"
#include "losses.h"
#include "cpu_utils.h"

namespace mor_ext::cpu {
namespace {

// Per router column: its role, and that role's expert count (float, for the arithmetic below).
struct ColumnTables {
  at::Tensor role;     // [E_total] int64
  at::Tensor experts;  // [E_total] float
  at::Tensor of_lora;  // [L + 1] int64: router column of LoRA index - 1 (E_total for shared LoRAs and -1)
};

ColumnTables column_tables(const SpecTable& spec, const at::Device& device) {
  // One int64 table [role | experts | of_lora], one host-to-device copy without a sync.
  const int64_t e_total = spec.num_experts_total;
  std::vector<int64_t> table(2 * e_total + spec.num_loras + 1, e_total);
  for (int64_t rho = 0; rho < spec.num_roles; ++rho)
    for (int64_t i = 0; i < spec.num_experts[rho]; ++i) {
      const int64_t col = spec.router_start[rho] + i;
      table[col] = rho;
      table[e_total + col] = spec.num_experts[rho];
      table[2 * e_total + spec.lora_start[rho] + spec.shared[rho] + i + 1] = col;
    }
  const at::Tensor t = to_device_async(table, device);
  return {t.narrow(0, 0, e_total), t.narrow(0, e_total, e_total).to(at::kFloat),
          t.narrow(0, 2 * e_total, spec.num_loras + 1)};
}

// For layers sharing one set of tokens (role ids [N]) and lora_index [Lg, N, K]: coef [Lg, E_total],
// coef[l, col] = E_rho * f_col / |T_rho| (the gradient of layer l's aux w.r.t. each token's p[col]) for
// roles with >= 2 experts and some tokens, else 0; and in_role [N, E_total], the mask of each token's
// own role's columns. ATen ops only, no host sync: the same code serves CPU and CUDA tensors.
std::pair<at::Tensor, at::Tensor> balance_terms(const at::Tensor& lora_index, const at::Tensor& role_ids,
                                                const SpecTable& spec) {
  const int64_t n = role_ids.size(0), e_total = spec.num_experts_total;
  const ColumnTables cols = column_tables(spec, lora_index.device());
  const auto i64 = lora_index.options().dtype(at::kLong);
  const at::Tensor in_role = cols.role.unsqueeze(0) == role_ids.unsqueeze(1);  // [N, E_total]
  // Counts as sums of comparisons, not index_add: on a GPU, thousands of atomic adds into three
  // bins serialise.
  const at::Tensor tokens = (role_ids.unsqueeze(1) == at::arange(spec.num_roles, i64)).sum(0).to(at::kFloat);  // |T_rho|
  // A slot counts for column c when its LoRA is column c's expert and the token has c's role. An
  // index outside [-1, L) counts as no LoRA (the CPU checks values first and raises; on a GPU that
  // check would be a sync, and an out-of-range index_select a device-side assert).
  const at::Tensor wide = lora_index.to(at::kLong);
  const at::Tensor slot = at::where((wide >= -1) & (wide < spec.num_loras), wide + 1, at::zeros_like(wide));
  const at::Tensor slot_col = cols.of_lora.index_select(0, slot.reshape(-1))
                                  .view(lora_index.sizes());  // [Lg, N, K], E_total = no column
  const at::Tensor slot_role = at::cat({cols.role, cols.role.new_full({1}, -2)}).index_select(0, slot_col.reshape(-1))
                                   .view_as(slot_col);
  const at::Tensor counted = slot_role == role_ids.view({1, n, 1});  // [Lg, N, K]
  const at::Tensor dispatched = ((slot_col.unsqueeze(3) == at::arange(e_total, i64)) & counted.unsqueeze(3))
                                    .sum(at::IntArrayRef{1, 2})
                                    .to(at::kFloat);  // [Lg, E_total]
  const at::Tensor n_col = tokens.index_select(0, cols.role);
  const at::Tensor active = (cols.experts >= 2) & (n_col > 0);
  const at::Tensor coef = at::where(active, cols.experts * dispatched / n_col.clamp_min(1).square(),
                                    at::zeros_like(n_col));
  return {coef, in_role};
}

void check_balance_inputs(const at::Tensor& router_probs, const at::Tensor& lora_index, const at::Tensor& role_ids,
                          const SpecTable& spec) {
  const int64_t n = role_ids.size(0), e_total = spec.num_experts_total;
  TORCH_CHECK_VALUE(router_probs.dim() == 2 && router_probs.size(0) == n && router_probs.size(1) == e_total,
                    "router_probs must be [", n, ", ", e_total, "], got ", router_probs.sizes());
  TORCH_CHECK_VALUE(lora_index.dim() == 2 && lora_index.size(0) == n, "lora_index must be [", n, ", K], got ",
                    lora_index.sizes());
  TORCH_CHECK_VALUE(lora_index.device() == router_probs.device(), "lora_index is on ", lora_index.device(),
                    " but router_probs is on ", router_probs.device());
  TORCH_CHECK_TYPE(at::isIntegralType(lora_index.scalar_type(), /*includeBool=*/false),
                   "lora_index must be an integer tensor, got ", lora_index.scalar_type());
  TORCH_CHECK_TYPE(at::isFloatingType(router_probs.scalar_type()), "router_probs must be a floating-point tensor, got ",
                   router_probs.scalar_type());
  if (lora_index.is_cpu()) checked_index(lora_index, spec.num_loras);  // values: CPU only (a sync on a GPU)
  check_role_ids(role_ids, n, spec.num_roles, router_probs);
}

// The layers' lora_index stacked [Lg, N, K] (int64), after checking every layer's inputs.
at::Tensor checked_layer_index(at::TensorList router_probs, at::TensorList lora_index, const at::Tensor& role_ids,
                               const SpecTable& spec) {
  TORCH_CHECK_VALUE(!router_probs.empty() && router_probs.size() == lora_index.size(),
                    "load_balance_loss_layers needs one lora_index per router_probs and at least one layer, got ",
                    router_probs.size(), " and ", lora_index.size());
  for (size_t l = 0; l < router_probs.size(); ++l) {
    check_balance_inputs(router_probs[l], lora_index[l], role_ids, spec);
    TORCH_CHECK_VALUE(lora_index[l].size(1) == lora_index[0].size(1), "layer ", l, ": lora_index has ",
                      lora_index[l].size(1), " slots, layer 0 has ", lora_index[0].size(1));
  }
  std::vector<at::Tensor> index;
  for (const at::Tensor& t : lora_index) index.push_back(t.to(at::kLong));
  return at::stack(index);
}

}  // namespace

at::Tensor load_balance_loss_aten(const at::Tensor& router_probs, const at::Tensor& lora_index,
                                  const at::Tensor& role_ids, at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                  at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_balance_inputs(router_probs, lora_index, role_ids, spec);
  const auto [coef, in_role] = balance_terms(lora_index.unsqueeze(0), role_ids, spec);
  // aux = sum_rho E_rho sum_i f_i P_i = sum_col coef[col] * (sum of p[t, col] over the column's tokens)
  const at::Tensor prob_sum = (router_probs.to(at::kFloat) * in_role).sum(0);
  return (coef[0] * prob_sum).sum();
}

at::Tensor load_balance_loss_backward_aten(const at::Tensor& grad, const at::Tensor& router_probs,
                                           const at::Tensor& lora_index, const at::Tensor& role_ids,
                                           at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                           at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_balance_inputs(router_probs, lora_index, role_ids, spec);
  const auto [coef, in_role] = balance_terms(lora_index.unsqueeze(0), role_ids, spec);
  return (grad.to(at::kFloat) * coef[0]).unsqueeze(0) * in_role;
}

// Sum over layers that share one call's tokens: every layer's terms in one set of ops (a patched
// model computes its aux loss with one call instead of one per adapted layer).
at::Tensor load_balance_loss_layers_aten(at::TensorList router_probs, at::TensorList lora_index,
                                        const at::Tensor& role_ids, at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                        at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  const auto [coef, in_role] = balance_terms(checked_layer_index(router_probs, lora_index, role_ids, spec), role_ids, spec);
  const at::Tensor probs = at::stack(router_probs).to(at::kFloat);  // [Lg, N, E_total]
  return (coef * (probs * in_role.unsqueeze(0)).sum(1)).sum();
}

std::vector<at::Tensor> load_balance_loss_layers_backward_aten(const at::Tensor& grad, at::TensorList router_probs,
                                                               at::TensorList lora_index, const at::Tensor& role_ids,
                                                               at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                                               at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  // Only the index and role ids matter here: the gradient is linear in the probabilities.
  const auto [coef, in_role] = balance_terms(checked_layer_index(router_probs, lora_index, role_ids, spec), role_ids, spec);
  const at::Tensor scaled = coef * grad.to(at::kFloat);  // [Lg, E_total]
  const at::Tensor mask = in_role.to(at::kFloat);
  std::vector<at::Tensor> grads;
  for (int64_t l = 0; l < scaled.size(0); ++l) grads.push_back(mask * scaled[l]);
  return grads;
}

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

at::Tensor orthogonal_loss_aten(const at::Tensor& lora_A, const at::Tensor& lora_B, at::IntArrayRef num_experts,
                               at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_lora_pair(lora_A, lora_B, spec);
  return loss_from_products(layers_products({lora_A}, {lora_B}, spec), 1, spec);
}

std::tuple<at::Tensor, at::Tensor> orthogonal_loss_backward_aten(const at::Tensor& grad, const at::Tensor& lora_A,
                                                               const at::Tensor& lora_B, at::IntArrayRef num_experts,
                                                               at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_lora_pair(lora_A, lora_B, spec);
  auto [grad_a, grad_b] = layers_grads(grad, layers_products({lora_A}, {lora_B}, spec), {lora_A}, {lora_B}, spec);
  return {grad_a[0], grad_b[0]};
}

std::tuple<at::Tensor, at::Tensor> orthogonal_loss_layers_aten(at::TensorList lora_A, at::TensorList lora_B,
                                                               at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                                               at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_layer_lists(lora_A, lora_B, spec);
  at::Tensor products = layers_products(lora_A, lora_B, spec);
  at::Tensor loss = loss_from_products(products, static_cast<int64_t>(lora_A.size()), spec);
  return {loss, products};
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> orthogonal_loss_layers_backward_aten(
    const at::Tensor& grad, const at::Tensor& products, at::TensorList lora_A, at::TensorList lora_B,
    at::IntArrayRef num_experts, at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_layer_lists(lora_A, lora_B, spec);
  check_products(products, lora_A, spec);
  return layers_grads(grad, products, lora_A, lora_B, spec);
}

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

// The CUDA gradient kernel's steps (kernels/orthogonal_grads.h) in loops, from the forward's
// products: what the tests check the CUDA backward's bodies with.
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
  m.impl("orthogonal_loss_layers", &orthogonal_loss_layers_aten);
  m.impl("orthogonal_loss_layers_backward", &orthogonal_loss_layers_backward_aten);
  m.impl("orthogonal_products", &orthogonal_products_cpu);
  m.impl("orthogonal_grads", &orthogonal_grads_cpu);
  m.impl("load_balance_loss", &load_balance_loss_aten);
  m.impl("load_balance_loss_backward", &load_balance_loss_backward_aten);
  m.impl("load_balance_loss_layers", &load_balance_loss_layers_aten);
  m.impl("load_balance_loss_layers_backward", &load_balance_loss_layers_backward_aten);
  m.impl("orthogonal_loss", &orthogonal_loss_aten);
  m.impl("orthogonal_loss_backward", &orthogonal_loss_backward_aten);
}

}  // namespace mor_ext::cpu
