// CPU kernels of the two auxiliary losses and their backward passes.
//
// load_balance_loss: counting and averaging over tokens, O(N * (K + E)), done in one serial pass
// in double precision (deterministic, and far cheaper than the GEMMs around it).
// orthogonal_loss: only r x r products per role (A_blk A_blk^T and the Gram matrices B_i^T B_i);
// a d_out x d_out or d_in x d_in matrix is never formed. Written with ATen ops only, so the same
// functions serve CUDA tensors (registered in csrc/cuda/orthogonal_loss.cu); *_layers sum over many
// layers, and orthogonal_products_cpu runs the CUDA kernel's per-thread bodies for the tests.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <torch/library.h>

#include <vector>

#include "../orthogonal_plan.h"
#include "../spec_table.h"
#include "losses.h"
#include "cpu_utils.h"

namespace mor_ext::cpu {
namespace {

struct RoleCounts {
  std::vector<double> tokens;      // |T_rho| per role
  std::vector<double> dispatched;  // per router column: tokens that picked the expert
  std::vector<double> prob_sum;    // per router column: sum of p over the role's tokens
};

RoleCounts count_roles(const at::Tensor& router_probs, const at::Tensor& lora_index, const at::Tensor& role_ids,
                       const SpecTable& spec) {
  const int64_t n = role_ids.size(0), e_total = spec.num_experts_total;
  TORCH_CHECK_VALUE(router_probs.dim() == 2 && router_probs.size(0) == n && router_probs.size(1) == e_total,
                    "router_probs must be [", n, ", ", e_total, "], got ", router_probs.sizes());
  TORCH_CHECK_VALUE(lora_index.dim() == 2 && lora_index.size(0) == n, "lora_index must be [", n, ", K], got ",
                    lora_index.sizes());
  check_role_ids(role_ids, n, spec.num_roles, router_probs);
  const at::Tensor probs = router_probs.to(at::kFloat).contiguous();
  const at::Tensor index = lora_index.to(at::kLong).contiguous();
  const float* p = probs.data_ptr<float>();
  const int64_t* ip = index.data_ptr<int64_t>();
  const int64_t* rp = role_ids.contiguous().data_ptr<int64_t>();
  const int64_t k = index.size(1);

  RoleCounts c{std::vector<double>(spec.num_roles), std::vector<double>(e_total), std::vector<double>(e_total)};
  for (int64_t t = 0; t < n; ++t) {
    const int64_t rho = rp[t];
    if (rho < 0) continue;
    c.tokens[rho] += 1.0;
    const int64_t col0 = spec.router_start[rho], e = spec.num_experts[rho];
    for (int64_t i = 0; i < e; ++i) c.prob_sum[col0 + i] += p[t * e_total + col0 + i];
    const int64_t first_routed = spec.lora_start[rho] + spec.shared[rho];
    for (int64_t s = 0; s < k; ++s) {
      const int64_t expert = ip[t * k + s] - first_routed;
      if (expert >= 0 && expert < e) c.dispatched[col0 + expert] += 1.0;
    }
  }
  return c;
}

bool balances(const SpecTable& spec, const RoleCounts& c, int64_t rho) {
  return spec.num_experts[rho] >= 2 && c.tokens[rho] > 0;
}

}  // namespace

at::Tensor load_balance_loss_cpu(const at::Tensor& router_probs, const at::Tensor& lora_index,
                                 const at::Tensor& role_ids, at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                 at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  const RoleCounts c = count_roles(router_probs, lora_index, role_ids, spec);
  double total = 0.0;
  for (int64_t rho = 0; rho < spec.num_roles; ++rho) {
    if (!balances(spec, c, rho)) continue;
    const double n_rho = c.tokens[rho];
    double sum = 0.0;
    for (int64_t i = 0; i < spec.num_experts[rho]; ++i) {
      const int64_t col = spec.router_start[rho] + i;
      sum += (c.dispatched[col] / n_rho) * (c.prob_sum[col] / n_rho);
    }
    total += static_cast<double>(spec.num_experts[rho]) * sum;
  }
  return at::scalar_tensor(total, router_probs.options().dtype(at::kFloat));
}

at::Tensor load_balance_loss_backward_cpu(const at::Tensor& grad, const at::Tensor& router_probs,
                                          const at::Tensor& lora_index, const at::Tensor& role_ids,
                                          at::IntArrayRef num_experts, at::IntArrayRef top_k,
                                          at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  const RoleCounts c = count_roles(router_probs, lora_index, role_ids, spec);
  const int64_t n = role_ids.size(0), e_total = spec.num_experts_total;
  const double g = grad.item<double>();
  // d aux / d p[t, col] = E_rho * f_col / |T_rho| for every token t of role rho: one row per role.
  std::vector<float> row_of_role(spec.num_roles * e_total, 0.0f);
  for (int64_t rho = 0; rho < spec.num_roles; ++rho) {
    if (!balances(spec, c, rho)) continue;
    const double n_rho = c.tokens[rho];
    for (int64_t i = 0; i < spec.num_experts[rho]; ++i) {
      const int64_t col = spec.router_start[rho] + i;
      row_of_role[rho * e_total + col] =
          static_cast<float>(g * spec.num_experts[rho] * (c.dispatched[col] / n_rho) / n_rho);
    }
  }
  at::Tensor out = new_output({n, e_total}, router_probs.options().dtype(at::kFloat));
  float* op = out.data_ptr<float>();
  const int64_t* rp = role_ids.contiguous().data_ptr<int64_t>();
  for (int64_t t = 0; t < n; ++t) {
    const int64_t rho = rp[t];
    for (int64_t col = 0; col < e_total; ++col) op[t * e_total + col] = rho < 0 ? 0.0f : row_of_role[rho * e_total + col];
  }
  return out;
}

namespace {

void check_lora_pair(const at::Tensor& lora_A, const at::Tensor& lora_B, const SpecTable& spec) {
  check_float_tensor(lora_A, "lora_A", 3);
  check_float_tensor(lora_B, "lora_B", 3);
  check_same(lora_B, "lora_B", lora_A);
  TORCH_CHECK_VALUE(lora_A.size(0) == spec.num_loras && lora_B.size(0) == spec.num_loras, "lora_A and lora_B need ",
                    spec.num_loras, " LoRAs for this spec, got ", lora_A.sizes(), " and ", lora_B.sizes());
  TORCH_CHECK_VALUE(lora_B.size(2) == lora_A.size(1), "lora_B rank ", lora_B.size(2), " != lora_A rank ",
                    lora_A.size(1));
}

// Per role with >= 2 routed LoRAs, the fp32 blocks the loss is built from.
struct OrthBlock {
  int64_t first, experts;
  at::Tensor a_rows;  // [E*r, d_in]
  at::Tensor cross;   // [E*r, E*r] = a_rows a_rows^T, its diagonal r x r blocks zeroed
  at::Tensor b;       // [E, d_out, r]
  at::Tensor gram;    // [E, r, r] = B_i^T B_i
};

std::vector<OrthBlock> orth_blocks(const at::Tensor& lora_A, const at::Tensor& lora_B, const SpecTable& spec) {
  std::vector<OrthBlock> blocks;
  const int64_t rank = lora_A.size(1), d_in = lora_A.size(2);
  for (int64_t rho = 0; rho < spec.num_roles; ++rho) {
    const int64_t e = spec.num_experts[rho];
    if (e < 2) continue;
    OrthBlock blk;
    blk.first = spec.lora_start[rho] + spec.shared[rho];
    blk.experts = e;
    blk.a_rows = lora_A.narrow(0, blk.first, e).to(at::kFloat).reshape({e * rank, d_in});
    blk.cross = at::mm(blk.a_rows, blk.a_rows.t());
    // Zero the diagonal blocks A_i A_i^T: only pairs i != j count.
    auto blocks4 = blk.cross.view({e, rank, e, rank});
    for (int64_t i = 0; i < e; ++i) blocks4.select(0, i).select(1, i).zero_();
    blk.b = lora_B.narrow(0, blk.first, e).to(at::kFloat);
    blk.gram = at::bmm(blk.b.transpose(1, 2), blk.b);
    blocks.push_back(std::move(blk));
  }
  return blocks;
}

}  // namespace

at::Tensor orthogonal_loss_aten(const at::Tensor& lora_A, const at::Tensor& lora_B, at::IntArrayRef num_experts,
                               at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_lora_pair(lora_A, lora_B, spec);
  at::Tensor total = at::zeros({}, lora_A.options().dtype(at::kFloat));
  for (const OrthBlock& blk : orth_blocks(lora_A, lora_B, spec)) {
    // sum_{i<j} ||A_i A_j^T||^2 = (sum over off-diagonal blocks) / 2
    total += blk.cross.square().sum() * 0.5;
    // sum_{i<j} <G_i, G_j> from the E x E matrix of pairwise products: the shorter
    // (||sum G||^2 - sum ||G_i||^2) / 2 cancels catastrophically when the B_i are nearly orthogonal.
    const at::Tensor g = blk.gram.reshape({blk.experts, -1});
    total += at::mm(g, g.t()).triu(1).sum();
  }
  return total;
}

std::tuple<at::Tensor, at::Tensor> orthogonal_loss_backward_aten(const at::Tensor& grad, const at::Tensor& lora_A,
                                                               const at::Tensor& lora_B, at::IntArrayRef num_experts,
                                                               at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  check_lora_pair(lora_A, lora_B, spec);
  const at::Tensor g = grad.to(at::kFloat);
  at::Tensor grad_a = at::zeros_like(lora_A);
  at::Tensor grad_b = at::zeros_like(lora_B);
  const int64_t rank = lora_A.size(1), d_in = lora_A.size(2);
  for (const OrthBlock& blk : orth_blocks(lora_A, lora_B, spec)) {
    // d/dA_i = 2 sum_{j != i} (A_i A_j^T) A_j ;  d/dB_i = 2 B_i (sum_{j != i} G_j)
    const at::Tensor ga = at::mm(blk.cross, blk.a_rows).mul_(g * 2.0);
    grad_a.narrow(0, blk.first, blk.experts).copy_(ga.view({blk.experts, rank, d_in}));
    // sum_{j != i} G_j as a product with (1 - I), not sum - G_i, for the same reason as above.
    const at::Tensor off_diagonal = at::ones({blk.experts, blk.experts}, blk.gram.options()) -
                                    at::eye(blk.experts, blk.gram.options());
    const at::Tensor others = at::mm(off_diagonal, blk.gram.reshape({blk.experts, -1})).view_as(blk.gram);
    grad_b.narrow(0, blk.first, blk.experts).copy_(at::bmm(blk.b, others).mul_(g * 2.0));
  }
  return {grad_a, grad_b};
}

at::Tensor orthogonal_loss_layers_aten(at::TensorList lora_A, at::TensorList lora_B, at::IntArrayRef num_experts,
                                      at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  check_layer_lists(lora_A, lora_B, SpecTable::from(num_experts, top_k, has_shared, true));
  at::Tensor total = at::zeros({}, lora_A[0].options().dtype(at::kFloat));
  for (size_t l = 0; l < lora_A.size(); ++l)
    total += orthogonal_loss_aten(lora_A[l], lora_B[l], num_experts, top_k, has_shared);
  return total;
}

std::tuple<std::vector<at::Tensor>, std::vector<at::Tensor>> orthogonal_loss_layers_backward_aten(
    const at::Tensor& grad, at::TensorList lora_A, at::TensorList lora_B, at::IntArrayRef num_experts,
    at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  check_layer_lists(lora_A, lora_B, SpecTable::from(num_experts, top_k, has_shared, true));
  std::vector<at::Tensor> grad_a, grad_b;
  for (size_t l = 0; l < lora_A.size(); ++l) {
    auto [ga, gb] = orthogonal_loss_backward_aten(grad, lora_A[l], lora_B[l], num_experts, top_k, has_shared);
    grad_a.push_back(std::move(ga));
    grad_b.push_back(std::move(gb));
  }
  return {grad_a, grad_b};
}

at::Tensor orthogonal_products_cpu(at::TensorList lora_A, at::TensorList lora_B, at::IntArrayRef num_experts,
                                   at::IntArrayRef top_k, at::IntArrayRef has_shared) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, true);
  const OrthogonalPlan plan = plan_orthogonal(lora_A, lora_B, spec);
  const int r = static_cast<int>(plan.rank);
  TORCH_CHECK_VALUE(r <= kernels::kMaxRank, "rank ", r, " > ", kernels::kMaxRank, " is not supported");
  const int64_t n = static_cast<int64_t>(plan.items.size());
  at::Tensor out = new_output({n, r, r}, lora_A[0].options().dtype(at::kFloat));
  float* o = out.data_ptr<float>();
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, lora_A[0].scalar_type(), "orthogonal_products_cpu", [&] {
    // The CUDA kernel's steps, in loops: per item (a block), per tile, load every slot, then let
    // every (p, q) thread accumulate.
    std::vector<float> tile_u(r * kernels::kTile), tile_v(r * kernels::kTile), acc(r * r);
    for (int64_t i = 0; i < n; ++i) {
      const kernels::ProductItem& item = plan.items[i];
      std::fill(acc.begin(), acc.end(), 0.0f);
      for (int64_t k0 = 0; k0 < item.inner; k0 += kernels::kTile) {
        for (int idx = 0; idx < r * kernels::kTile; ++idx) {
          int p, k;
          bool inside;
          kernels::tile_slot(idx, k0, item.inner, &p, &k, &inside);
          tile_u[idx] = inside ? kernels::load_u<scalar_t>(item, p, k0 + k) : 0.0f;
          tile_v[idx] = inside ? kernels::load_v<scalar_t>(item, p, k0 + k) : 0.0f;
        }
        for (int p = 0; p < r; ++p)
          for (int q = 0; q < r; ++q) acc[p * r + q] = kernels::accumulate_tile(tile_u.data(), tile_v.data(), p, q, acc[p * r + q]);
      }
      std::copy(acc.begin(), acc.end(), o + i * r * r);
    }
  });
  return out;
}

TORCH_LIBRARY_IMPL(mor_ext, CPU, m) {
  m.impl("orthogonal_loss_layers", &orthogonal_loss_layers_aten);
  m.impl("orthogonal_loss_layers_backward", &orthogonal_loss_layers_backward_aten);
  m.impl("orthogonal_products", &orthogonal_products_cpu);
  m.impl("load_balance_loss", &load_balance_loss_cpu);
  m.impl("load_balance_loss_backward", &load_balance_loss_backward_cpu);
  m.impl("orthogonal_loss", &orthogonal_loss_aten);
  m.impl("orthogonal_loss_backward", &orthogonal_loss_backward_aten);
}

}  // namespace mor_ext::cpu
