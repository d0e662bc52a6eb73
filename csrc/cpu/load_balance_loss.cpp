// CPU kernels of mor_ext::load_balance_loss_layers and its backward (docs/spec.md §4): direct loops
// over every layer's slots and router probabilities, a handful of allocations per call instead of
// ~20 ATen ops per layer. The device-generic ATen kernels (aten/load_balance_loss.cpp) serve CUDA,
// and the CPU too under MOR_EXT_BENCH_LOSSES=aten (A/B benchmarks, and the tests compare the two).
#include <ATen/ATen.h>
#include <torch/library.h>

#include <vector>

#include "../aten/load_balance_loss.h"
#include "../balance_checks.h"
#include "../input_checks.h"
#include "../spec_table.h"
#include "cpu_utils.h"

namespace mor_ext::cpu {
namespace {

// Per router column: its role and that role's expert count; per LoRA: its router column (-1 for
// shared LoRAs). And the call's tokens per role, |T_rho|.
struct BalanceTables {
  std::vector<int64_t> col_role, col_experts, lora_col, tokens;

  static BalanceTables from(const SpecTable& spec, const int64_t* roles, int64_t n) {
    BalanceTables t;
    t.col_role.assign(spec.num_experts_total, 0);
    t.col_experts.assign(spec.num_experts_total, 0);
    t.lora_col.assign(spec.num_loras, -1);
    t.tokens.assign(spec.num_roles, 0);
    for (int64_t rho = 0; rho < spec.num_roles; ++rho)
      for (int64_t i = 0; i < spec.num_experts[rho]; ++i) {
        const int64_t col = spec.router_start[rho] + i;
        t.col_role[col] = rho;
        t.col_experts[col] = spec.num_experts[rho];
        t.lora_col[spec.lora_start[rho] + spec.shared[rho] + i] = col;
      }
    for (int64_t i = 0; i < n; ++i)
      if (roles[i] >= 0) ++t.tokens[roles[i]];
    return t;
  }
};

// Slots of each column dispatched within the token's own role (a slot of a shared LoRA, an empty
// slot or one naming another role's LoRA counts for nothing), with every index value checked.
template <typename index_t>
void count_dispatched(const index_t* index, int64_t n, int64_t k, const int64_t* roles, const BalanceTables& t,
                      int64_t num_loras, std::vector<int64_t>& counts) {
  for (int64_t i = 0; i < n; ++i)
    for (int64_t q = 0; q < k; ++q) {
      const int64_t v = index[i * k + q];
      TORCH_CHECK_VALUE(v >= -1 && v < num_loras, "lora_index[", i, ", ", q, "] = ", v, ", but there are ",
                        num_loras, " LoRAs (valid: -1 .. ", num_loras - 1, ")");
      const int64_t col = v < 0 ? -1 : t.lora_col[v];
      if (col >= 0 && roles[i] >= 0 && t.col_role[col] == roles[i]) ++counts[col];
    }
}

// coef[col] = E_rho f_col / |T_rho| = E_rho * dispatched / |T_rho|^2, the gradient of the layer's aux
// w.r.t. each of the role's tokens' p[col] (the ATen kernels' float arithmetic); 0 for roles with
// fewer than 2 experts or no tokens.
std::vector<float> layer_coefs(const at::Tensor& lora_index, const int64_t* roles, const BalanceTables& t,
                               const SpecTable& spec) {
  const at::Tensor index = lora_index.scalar_type() == at::kInt || lora_index.scalar_type() == at::kLong
                               ? lora_index.contiguous()
                               : lora_index.to(at::kLong).contiguous();  // narrower integers: rare
  const int64_t n = index.size(0), k = index.size(1);
  std::vector<int64_t> counts(spec.num_experts_total, 0);
  if (index.scalar_type() == at::kInt)
    count_dispatched(index.const_data_ptr<int32_t>(), n, k, roles, t, spec.num_loras, counts);
  else
    count_dispatched(index.const_data_ptr<int64_t>(), n, k, roles, t, spec.num_loras, counts);
  std::vector<float> coef(spec.num_experts_total, 0.0f);
  for (int64_t col = 0; col < spec.num_experts_total; ++col) {
    const float tokens = static_cast<float>(t.tokens[t.col_role[col]]);
    if (t.col_experts[col] >= 2 && tokens > 0)
      coef[col] = static_cast<float>(t.col_experts[col]) * static_cast<float>(counts[col]) / (tokens * tokens);
  }
  return coef;
}

}  // namespace

// Sum over layers of sum_col coef[col] * (sum over the role's tokens of p[token, col]), each layer in
// double, the layers added in order.
at::Tensor load_balance_loss_layers_cpu(at::TensorList router_probs, at::TensorList lora_index,
                                        const at::Tensor& role_ids, at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                        at::IntArrayRef has_shared) {
  if (bench_losses_mode_is("aten"))
    return aten::load_balance_loss_layers_aten(router_probs, lora_index, role_ids, num_experts, top_k, has_shared);
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_balance_layers(router_probs, lora_index, role_ids, spec, /*values=*/false);  // values: in the loops
  const at::Tensor roles_c = role_ids.contiguous();
  const int64_t* roles = roles_c.const_data_ptr<int64_t>();
  const int64_t n = roles_c.size(0), e_total = spec.num_experts_total;
  const BalanceTables t = BalanceTables::from(spec, roles, n);
  double total = 0.0;
  for (size_t l = 0; l < router_probs.size(); ++l) {
    const std::vector<float> coef = layer_coefs(lora_index[l], roles, t, spec);
    const at::Tensor probs_c = contiguous_as(router_probs[l], at::kFloat);
    const float* probs = probs_c.const_data_ptr<float>();
    std::vector<double> sums(e_total, 0.0);  // per column: sum of p over the role's tokens
    for (int64_t i = 0; i < n; ++i) {
      const int64_t rho = roles[i];
      if (rho < 0) continue;
      for (int64_t col = spec.router_start[rho]; col < spec.router_start[rho] + spec.num_experts[rho]; ++col)
        sums[col] += probs[i * e_total + col];
    }
    double layer = 0.0;
    for (int64_t col = 0; col < e_total; ++col) layer += static_cast<double>(coef[col]) * sums[col];
    total += layer;
  }
  return at::scalar_tensor(total, router_probs[0].options().dtype(at::kFloat));
}

// grad[l][token, col] = dL * coef_l[col] for the columns of the token's role, else 0 (fp32, linear
// in the probabilities: only the slots and role ids matter).
std::vector<at::Tensor> load_balance_loss_layers_backward_cpu(const at::Tensor& grad, at::TensorList router_probs,
                                                              at::TensorList lora_index, const at::Tensor& role_ids,
                                                              at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                                              at::IntArrayRef has_shared) {
  if (bench_losses_mode_is("aten"))
    return aten::load_balance_loss_layers_backward_aten(grad, router_probs, lora_index, role_ids, num_experts, top_k,
                                                        has_shared);
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_balance_layers(router_probs, lora_index, role_ids, spec, /*values=*/false);
  const at::Tensor roles_c = role_ids.contiguous();
  const int64_t* roles = roles_c.const_data_ptr<int64_t>();
  const int64_t n = roles_c.size(0), e_total = spec.num_experts_total;
  const BalanceTables t = BalanceTables::from(spec, roles, n);
  const float g = grad.scalar_type() == at::kFloat ? *grad.const_data_ptr<float>() : grad.item<float>();
  std::vector<at::Tensor> grads;
  grads.reserve(router_probs.size());
  for (size_t l = 0; l < router_probs.size(); ++l) {
    std::vector<float> scaled = layer_coefs(lora_index[l], roles, t, spec);
    for (float& c : scaled) c *= g;
    at::Tensor out = new_output({n, e_total}, router_probs[l].options().dtype(at::kFloat));
    float* o = out.data_ptr<float>();
    for (int64_t i = 0; i < n; ++i) {
      const int64_t rho = roles[i];
      float* row = o + i * e_total;
      std::fill_n(row, e_total, 0.0f);
      if (rho < 0) continue;
      const int64_t begin = spec.router_start[rho];
      std::copy_n(scaled.data() + begin, spec.num_experts[rho], row + begin);
    }
    grads.push_back(out);
  }
  return grads;
}

TORCH_LIBRARY_IMPL(mor_ext, CPU, m) {
  m.impl("load_balance_loss_layers", &load_balance_loss_layers_cpu);
  m.impl("load_balance_loss_layers_backward", &load_balance_loss_layers_backward_cpu);
}

}  // namespace mor_ext::cpu
