// CPU kernel of the test-only op mor_ext::testing_mor_linear_decode: the CUDA decode path's per-token bodies
// (kernels/decode.h) in plain loops, so that the CPU tests check the code a GPU block runs. Not a
// fast path: mor_linear's CPU kernel runs the same bodies with AVX-512 dot products for a few fp32
// tokens (decode_avx512.cpp) and GEMMs otherwise.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <vector>

#include "../input_checks.h"
#include "../kernels/decode.h"
#include "../spec_table.h"
#include "cpu_utils.h"

namespace mor_ext::cpu {

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mor_linear_decode_cpu(
    const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias, const at::Tensor& lora_A,
    const at::Tensor& lora_B, const at::Tensor& router_weight, const at::Tensor& shared_gate_weight,
    const at::Tensor& role_ids, at::IntArrayRef num_experts, at::IntArrayRef top_k, at::IntArrayRef has_shared,
    bool sigmoid_gate, double scaling) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, sigmoid_gate);
  check_layer_inputs(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, spec);
  const int64_t n = x.size(0), d_in = x.size(1), d_out = weight.size(0), k = spec.k_max,
                e_total = spec.num_experts_total, rank = lora_A.size(1);
  const at::Tensor xc = x.contiguous(), roles = role_ids.contiguous(), a = lora_A.contiguous(),
                   b = lora_B.contiguous(), rw = router_weight.contiguous(), gw = shared_gate_weight.contiguous();
  at::Tensor y = frozen_linear(xc, weight, bias);
  LayerRouting out = LayerRouting::fresh(x, k, e_total, rank);
  auto& [lora_index, lora_weight, router_probs, shrink, shared_gate_logit] = out;
  const kernels::RoleTables tables = spec.tables();

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "mor_linear_decode_cpu", [&] {
    using acc_t = at::opmath_type<scalar_t>;
    const scalar_t *xp = xc.data_ptr<scalar_t>(), *ap = a.data_ptr<scalar_t>(), *bp = b.data_ptr<scalar_t>(),
                   *rp = rw.data_ptr<scalar_t>(), *gp = gw.data_ptr<scalar_t>();
    const int64_t* role_p = roles.data_ptr<int64_t>();
    scalar_t* yp = y.data_ptr<scalar_t>();
    std::vector<scalar_t> ext, logits(e_total), h(k * rank);
    std::vector<acc_t> slot_gated(k * rank);
    std::vector<float> gate_tmp(k);
    auto dot = [&](const scalar_t* xt, const scalar_t* row) {  // a warp per row, rounded as a GEMM's output
      acc_t sum = acc_t(0);
      for (int64_t j = 0; j < d_in; ++j) sum += static_cast<acc_t>(xt[j]) * static_cast<acc_t>(row[j]);
      return static_cast<scalar_t>(sum);
    };
    for (int64_t t = 0; t < n; ++t) {  // a GPU block per token
      const int rho = static_cast<int>(role_p[t]);
      const scalar_t* xt = xp + t * d_in;
      const kernels::RouteRows rows = kernels::route_rows(tables, rho);
      ext.assign(rows.count(), scalar_t(0));
      for (int64_t i = 0; i < rows.count(); ++i) ext[i] = dot(xt, kernels::route_row(tables, rho, d_in, rows, i, rp, gp));
      int32_t* index = lora_index.data_ptr<int32_t>() + t * k;
      scalar_t* weight = lora_weight.data_ptr<scalar_t>() + t * k;
      kernels::token_route(tables, rho, rows, ext.data(), logits.data(), index, weight,
                           router_probs.data_ptr<float>() + t * e_total, shared_gate_logit.data_ptr<float>() + t,
                           gate_tmp.data());
      for (int s = 0; s < k; ++s)  // then only the selected LoRAs' rows
        for (int64_t j = 0; j < rank; ++j) {
          const scalar_t* row = kernels::slot_row(index, s, j, rank, d_in, ap);
          h[s * rank + j] = row == nullptr ? scalar_t(0) : dot(xt, row);
        }
      kernels::token_slots(static_cast<int>(k), rank, index, weight, h.data(), static_cast<acc_t>(scaling),
                           shrink.data_ptr<scalar_t>() + t * k * rank, slot_gated.data());
      for (int64_t o = 0; o < d_out; ++o) {  // a thread per output
        const acc_t delta = kernels::expand_output<acc_t>(bp, d_out, rank, index, slot_gated.data(), k, o);
        yp[t * d_out + o] = static_cast<scalar_t>(static_cast<acc_t>(yp[t * d_out + o]) + delta);
      }
    }
  });
  return out.with(y);
}

TORCH_LIBRARY_IMPL(mor_ext, CPU, m) { m.impl("testing_mor_linear_decode", &mor_linear_decode_cpu); }

}  // namespace mor_ext::cpu
