// The work list of the orthogonal loss over many layers at once (docs/spec.md §4): for every layer
// and every role with two or more routed LoRAs, the cross products A_i A_j^T (i < j) and the Gram
// matrices B_i^T B_i, each an r x r product (kernels/products.h), and which Gram pairs to dot.
//   loss = sum_cross ||P||_F^2 + sum_{(i, j) gram pairs} <P_i, P_j>_F
// Never a d x d matrix.
#pragma once

#include <ATen/ATen.h>

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "device_tables.h"
#include "kernels/orthogonal_grads.h"
#include "kernels/products.h"
#include "spec_table.h"

namespace mor_ext {

struct OrthogonalPlan {
  std::vector<kernels::ProductItem> items;
  std::vector<int64_t> cross;                // items that are cross products of A
  std::vector<int64_t> gram_first, gram_second;  // pairs of Gram items of one role, first < second
  int64_t rank = 0;
};

inline void check_layer_lists(at::TensorList lora_A, at::TensorList lora_B, const SpecTable& spec) {
  TORCH_CHECK_VALUE(lora_A.size() == lora_B.size(), "lora_A and lora_B must list the same layers, got ",
                    lora_A.size(), " and ", lora_B.size());
  TORCH_CHECK_VALUE(!lora_A.empty(), "orthogonal loss over layers: no layers given");
  for (size_t l = 0; l < lora_A.size(); ++l) {
    const at::Tensor &a = lora_A[l], &b = lora_B[l];
    TORCH_CHECK_VALUE(a.dim() == 3 && b.dim() == 3 && a.size(0) == spec.num_loras && b.size(0) == spec.num_loras,
                      "layer ", l, ": lora_A and lora_B must be [L=", spec.num_loras, ", ...], got ", a.sizes(),
                      " and ", b.sizes());
    TORCH_CHECK_VALUE(a.size(1) == lora_A[0].size(1) && b.size(2) == a.size(1), "layer ", l,
                      ": every layer needs the same rank, got lora_A ", a.sizes(), " and lora_B ", b.sizes());
    TORCH_CHECK_TYPE(a.scalar_type() == lora_A[0].scalar_type() && b.scalar_type() == a.scalar_type(), "layer ", l,
                     ": every tensor needs one dtype, got ", a.scalar_type(), " and ", b.scalar_type());
    TORCH_CHECK_TYPE(at::isFloatingType(a.scalar_type()), "layer ", l,
                     ": lora_A and lora_B must be floating-point tensors, got ", a.scalar_type());
    TORCH_CHECK_VALUE(a.device() == lora_A[0].device() && b.device() == a.device(), "layer ", l,
                      ": every tensor needs one device");
    TORCH_CHECK_VALUE(a.is_contiguous() && b.is_contiguous(), "layer ", l, ": lora_A and lora_B must be contiguous");
  }
}

// What the products and gradient kernels (CUDA, and their CPU emulation) take: a rank of 1 to
// kMaxRank (register tiles and per-thread accumulators are sized by it) and 32-bit element offsets
// within one LoRA matrix. mor_ext.ops sends larger ranks on CUDA to the reference path; the CPU
// orthogonal_loss_layers (its own small GEMMs, cpu/orthogonal_loss.cpp) takes any rank.
inline void check_kernel_shapes(at::TensorList lora_A, at::TensorList lora_B) {
  const int64_t r = lora_A[0].size(1);
  TORCH_CHECK_VALUE(r >= 1, "orthogonal loss: the rank must be >= 1, got lora_A ", lora_A[0].sizes());
  TORCH_CHECK_VALUE(r <= kernels::kMaxRank, "orthogonal loss kernels: rank ", r, " is not supported (1 to ",
                    kernels::kMaxRank, "); mor_ext.ops.orthogonal_loss[_layers] use the reference path for larger ranks");
  for (size_t l = 0; l < lora_A.size(); ++l)
    TORCH_CHECK_VALUE(r * std::max(lora_A[l].size(2), lora_B[l].size(1)) <= std::numeric_limits<int32_t>::max(),
                      "orthogonal loss kernels: layer ", l, " is too large (", lora_A[l].sizes(), ", ",
                      lora_B[l].sizes(), "): one LoRA matrix must have fewer than 2^31 elements");
}

// Products per layer, in plan_orthogonal's order: per role with >= 2 routed LoRAs its E(E-1)/2
// cross products A_i A_j^T (i < j, i outer) and then its E Gram matrices B_i^T B_i.
inline int64_t products_per_layer(const SpecTable& spec) {
  int64_t n = 0;
  for (int64_t rho = 0; rho < spec.num_roles; ++rho) {
    const int64_t e = spec.num_experts[rho];
    if (e >= 2) n += e * (e - 1) / 2 + e;
  }
  return n;
}

// The products a backward gets from its forward: fp32 [layers * products_per_layer, r, r], contiguous,
// on the adapters' device.
inline void check_products(const at::Tensor& products, at::TensorList lora_A, const SpecTable& spec) {
  const int64_t n = static_cast<int64_t>(lora_A.size()) * products_per_layer(spec), r = lora_A[0].size(1);
  TORCH_CHECK_VALUE(products.scalar_type() == at::kFloat && products.sizes() == at::IntArrayRef({n, r, r}) &&
                        products.is_contiguous() && products.device() == lora_A[0].device(),
                    "products must be the forward's contiguous float32 [", n, ", ", r, ", ", r, "] on ",
                    lora_A[0].device(), ", got ", products.scalar_type(), " ", products.sizes(), " on ",
                    products.device());
}

inline OrthogonalPlan plan_orthogonal(at::TensorList lora_A, at::TensorList lora_B, const SpecTable& spec) {
  check_layer_lists(lora_A, lora_B, spec);
  OrthogonalPlan plan;
  plan.rank = lora_A[0].size(1);
  const int64_t r = plan.rank, elem = lora_A[0].element_size();
  for (size_t l = 0; l < lora_A.size(); ++l) {
    const int64_t d_in = lora_A[l].size(2), d_out = lora_B[l].size(1);
    const auto a0 = reinterpret_cast<int64_t>(lora_A[l].data_ptr());
    const auto b0 = reinterpret_cast<int64_t>(lora_B[l].data_ptr());
    for (int64_t rho = 0; rho < spec.num_roles; ++rho) {
      const int64_t e = spec.num_experts[rho], first = spec.lora_start[rho] + spec.shared[rho];
      if (e < 2) continue;
      for (int64_t i = 0; i < e; ++i)
        for (int64_t j = i + 1; j < e; ++j) {  // A_i A_j^T: rows of A are contiguous along d_in
          plan.cross.push_back(static_cast<int64_t>(plan.items.size()));
          plan.items.push_back({a0 + (first + i) * r * d_in * elem, a0 + (first + j) * r * d_in * elem, d_in, 1, d_in,
                                1, d_in});
        }
      const int64_t gram0 = static_cast<int64_t>(plan.items.size());
      for (int64_t i = 0; i < e; ++i) {  // B_i^T B_i: element (p, k) of B_i^T is B_i[k, p]
        const int64_t b = b0 + (first + i) * d_out * r * elem;
        plan.items.push_back({b, b, 1, r, 1, r, d_out});
      }
      for (int64_t i = 0; i < e; ++i)
        for (int64_t j = i + 1; j < e; ++j) plan.gram_first.push_back(gram0 + i), plan.gram_second.push_back(gram0 + j);
    }
  }
  return plan;
}

// The gradient work list (kernels/orthogonal_grads.h) for outputs grad_a / grad_b (one per layer,
// contiguous, shaped like lora_A / lora_B): one item per LoRA and matrix, with the terms that
// reference the products of `plan` (same layer/role/pair order as plan_orthogonal). LoRAs outside
// every role with two or more routed LoRAs get items without terms: zero gradients.
struct OrthogonalGradPlan {
  std::vector<kernels::GradItem> items;
  std::vector<kernels::GradTerm> terms;
  int64_t max_cols = 0;
};

inline OrthogonalGradPlan plan_orthogonal_grads(at::TensorList lora_A, at::TensorList lora_B, const SpecTable& spec,
                                                const std::vector<at::Tensor>& grad_a,
                                                const std::vector<at::Tensor>& grad_b) {
  OrthogonalGradPlan g;
  const int64_t r = lora_A[0].size(1), elem = lora_A[0].element_size();
  int64_t product = 0;  // index of the next product, in plan_orthogonal's order
  for (size_t l = 0; l < lora_A.size(); ++l) {
    const int64_t num_loras = lora_A[l].size(0), d_in = lora_A[l].size(2), d_out = lora_B[l].size(1);
    const auto a0 = reinterpret_cast<int64_t>(lora_A[l].data_ptr());
    const auto b0 = reinterpret_cast<int64_t>(lora_B[l].data_ptr());
    const auto ga0 = reinterpret_cast<int64_t>(grad_a[l].data_ptr());
    const auto gb0 = reinterpret_cast<int64_t>(grad_b[l].data_ptr());
    auto a_item = [&](int64_t lora) {  // grad A_lora: r x d_in, row-major
      return kernels::GradItem{ga0 + lora * r * d_in * elem, d_in, 1, d_in, static_cast<int64_t>(g.terms.size()), 0};
    };
    auto b_item = [&](int64_t lora) {  // (grad B_lora)^T: element (p, k) = grad B_lora[k, p]
      return kernels::GradItem{gb0 + lora * d_out * r * elem, 1, r, d_out, static_cast<int64_t>(g.terms.size()), 0};
    };
    std::vector<bool> covered(num_loras, false);
    for (int64_t rho = 0; rho < spec.num_roles; ++rho) {
      const int64_t e = spec.num_experts[rho], first = spec.lora_start[rho] + spec.shared[rho];
      if (e < 2) continue;
      const int64_t cross0 = product, gram0 = product + e * (e - 1) / 2;
      auto cross = [&](int64_t i, int64_t j) {  // product index of A_i A_j^T, i < j
        return cross0 + i * e - i * (i + 1) / 2 + (j - i - 1);
      };
      for (int64_t i = 0; i < e; ++i) {
        kernels::GradItem item = a_item(first + i);
        for (int64_t j = 0; j < e; ++j) {
          if (j == i) continue;
          g.terms.push_back({cross(std::min(i, j), std::max(i, j)), 1, -1, j < i ? 1 : 0,
                             a0 + (first + j) * r * d_in * elem, d_in, 1});
        }
        item.term_count = static_cast<int64_t>(g.terms.size()) - item.term_begin;
        g.items.push_back(item);
        item = b_item(first + i);
        g.terms.push_back({gram0, e, i, 0, b0 + (first + i) * d_out * r * elem, 1, r});  // sum_{j != i} G_j
        item.term_count = static_cast<int64_t>(g.terms.size()) - item.term_begin;
        g.items.push_back(item);
        covered[first + i] = true;
      }
      product = gram0 + e;
    }
    for (int64_t lora = 0; lora < num_loras; ++lora) {
      if (covered[lora]) continue;
      g.items.push_back(a_item(lora));
      g.items.push_back(b_item(lora));
    }
    g.max_cols = std::max({g.max_cols, d_in, d_out});
  }
  return g;
}

// loss from the products [n_items, r, r] (fp32), on the products' device.
inline at::Tensor combine_orthogonal(const at::Tensor& products, const OrthogonalPlan& plan) {
  const auto index = [&](const std::vector<int64_t>& v) { return to_device_async(v, products.device()); };
  at::Tensor loss = at::zeros({}, products.options());
  if (products.size(0) == 0) return loss;  // no role with two or more routed LoRAs
  const at::Tensor flat = products.reshape({products.size(0), -1});
  if (!plan.cross.empty()) loss = loss + flat.index_select(0, index(plan.cross)).square().sum();
  if (!plan.gram_first.empty())
    loss = loss + (flat.index_select(0, index(plan.gram_first)) * flat.index_select(0, index(plan.gram_second))).sum();
  return loss;
}

}  // namespace mor_ext
