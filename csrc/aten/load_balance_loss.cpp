// mor_ext::load_balance_loss_layers and its backward, with ATen ops only and no host sync: the same
// code serves every device; registered here for CUDA (where built). The CPU runs direct loops
// (cpu/load_balance_loss.cpp), which call these under MOR_EXT_BENCH_LOSSES=aten.
//
// The loss counts and averages over tokens (docs/spec.md §4); its single-layer form is the same op
// with a list of one layer (mor_ext.ops.load_balance_loss).
#include "load_balance_loss.h"

#include <torch/library.h>

#include <utility>
#include <vector>

#include "../balance_checks.h"
#include "../device_tables.h"
#include "../spec_table.h"

namespace mor_ext::aten {
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

// The layers' lora_index stacked [Lg, N, K] (int64), after checking every layer's inputs.
at::Tensor checked_layer_index(at::TensorList router_probs, at::TensorList lora_index, const at::Tensor& role_ids,
                               const SpecTable& spec) {
  check_balance_layers(router_probs, lora_index, role_ids, spec, /*values=*/true);
  std::vector<at::Tensor> index;
  for (const at::Tensor& t : lora_index) index.push_back(t.to(at::kLong));
  return at::stack(index);
}

}  // namespace

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

#if MOR_EXT_WITH_CUDA
TORCH_LIBRARY_IMPL(mor_ext, CUDA, m) {
  m.impl("load_balance_loss_layers", &load_balance_loss_layers_aten);
  m.impl("load_balance_loss_layers_backward", &load_balance_loss_layers_backward_aten);
}
#endif

}  // namespace mor_ext::aten
