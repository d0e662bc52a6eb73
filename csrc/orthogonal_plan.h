// The work list of the orthogonal loss over many layers at once (spec section 4): for every layer
// and every role with two or more routed LoRAs, the cross products A_i A_j^T (i < j) and the Gram
// matrices B_i^T B_i, each an r x r product (kernels/products.h), and which Gram pairs to dot.
//   loss = sum_cross ||P||_F^2 + sum_{(i, j) gram pairs} <P_i, P_j>_F
// Never a d x d matrix.
#pragma once

#include <ATen/ATen.h>

#include <vector>

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
    TORCH_CHECK_VALUE(a.device() == lora_A[0].device() && b.device() == a.device(), "layer ", l,
                      ": every tensor needs one device");
    TORCH_CHECK_VALUE(a.is_contiguous() && b.is_contiguous(), "layer ", l, ": lora_A and lora_B must be contiguous");
  }
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

// loss from the products [n_items, r, r] (fp32), on the products' device.
inline at::Tensor combine_orthogonal(const at::Tensor& products, const OrthogonalPlan& plan) {
  const auto index = [&](const std::vector<int64_t>& v) {
    return at::tensor(v, at::TensorOptions().dtype(at::kLong)).to(products.device());
  };
  const at::Tensor flat = products.reshape({products.size(0), -1});
  at::Tensor loss = at::zeros({}, products.options());
  if (!plan.cross.empty()) loss = loss + flat.index_select(0, index(plan.cross)).square().sum();
  if (!plan.gram_first.empty())
    loss = loss + (flat.index_select(0, index(plan.gram_first)) * flat.index_select(0, index(plan.gram_second))).sum();
  return loss;
}

}  // namespace mor_ext
