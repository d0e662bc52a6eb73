// CPU kernels of mor_ext::grouped_lora and mor_ext::grouped_lora_backward.
//
// Algorithm (measured on a 2-core AVX-512 machine; see benchmarks/README.md): tokens are put in
// batches that share a contiguous block of LoRAs [lo, hi] (for MoR, a role's block: its shared LoRA
// plus its routed ones). Per batch, one shrink GEMM with the whole block ([n, d_in] x [d_in, W*r]),
// a per-token gate that zeroes the LoRAs the token did not pick, and one expand GEMM that adds
// straight into the output. Thin GEMMs of width W*r = 80 run at ~90% of the square-GEMM rate with
// MKL/oneDNN here, whereas per-LoRA gathers (SGMV style) would read x K times.
//
// Batches are contiguous runs of tokens when runs are long (agent trajectories put each role in
// spans: no gather, no scatter, the add is an in-place addmm on a view), else tokens grouped by
// block with index_select / index_add.
//
// Saved for backward: the per-slot shrink output [N, K, r] (small), never [N, L, d_out].
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../input_checks.h"
#include "../kernels/gating.h"
#include "cpu_utils.h"
#include "token_batches.h"

namespace mor_ext::cpu {
namespace {

constexpr int64_t kTokenGrain = 64;

// Batches keyed by each token's first LoRA; a token's block is [first, last] of its slots.
std::vector<Batch> plan_slot_batches(const at::Tensor& index) {
  const int64_t n = index.size(0), k = index.size(1);
  const int32_t* p = index.data_ptr<int32_t>();
  std::vector<int64_t> lo(n, -1), hi(n, -1);
  for (int64_t t = 0; t < n; ++t)
    for (int64_t s = 0; s < k; ++s) {
      const int64_t v = p[t * k + s];
      if (v < 0) continue;
      lo[t] = lo[t] < 0 ? v : std::min(lo[t], v);
      hi[t] = std::max(hi[t], v);
    }
  return plan_batches(lo, hi, index.options());
}

// Writes, for each token of the batch and each of its slots, the slot's shrink (its LoRA's r
// columns of `shrink_block`) into `shrink_slots`, and the gated block `gated = shrink_block * gate`
// where gate = scaling * (sum of the token's weights for that LoRA), zero for LoRAs not picked.
// The per-element math is kernels/gating.h, which the CUDA kernels run too.
template <typename scalar_t>
void gate_block(const Batch& b, const int32_t* index, const scalar_t* weight, int64_t k, int64_t rank, double scaling,
                const at::Tensor& shrink_block, at::Tensor& gated, scalar_t* shrink_slots) {
  const int64_t n = b.size(), width = shrink_block.size(1), loras = width / rank;
  const int64_t* rows = b.rows.defined() ? b.rows.data_ptr<int64_t>() : nullptr;
  const scalar_t* h = shrink_block.data_ptr<scalar_t>();
  scalar_t* g = gated.data_ptr<scalar_t>();
  using acc_t = at::opmath_type<scalar_t>;  // float for float/bf16/half, double for double
  const acc_t scale = static_cast<acc_t>(scaling);
  at::parallel_for(0, n, kTokenGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t = rows ? rows[i] : b.begin + i;
      for (int64_t s = 0; s < k; ++s) {
        const int32_t l = index[t * k + s];
        scalar_t* slot = shrink_slots + (t * k + s) * rank;
        for (int64_t j = 0; j < rank; ++j) slot[j] = l < 0 ? scalar_t(0) : h[i * width + (l - b.key) * rank + j];
      }
      for (int64_t c = 0; c < loras; ++c) {
        const acc_t gate = scale * kernels::lora_gate<acc_t>(index + t * k, weight + t * k, k, b.key + c);
        for (int64_t j = 0; j < rank; ++j)
          g[i * width + c * rank + j] = static_cast<scalar_t>(gate * static_cast<acc_t>(h[i * width + c * rank + j]));
      }
    }
  });
}

// Backward per token of a batch: from dL/d(gated) (`grad_gated`, [n, W*r]) and the saved slots,
// writes dL/dw into grad_weight, dL/d(shrink) into grad_shrink, and rebuilds `gated`.
template <typename scalar_t>
void gate_block_backward(const Batch& b, const int32_t* index, const scalar_t* weight, const scalar_t* shrink_slots,
                         int64_t k, int64_t rank, double scaling, const at::Tensor& grad_gated, at::Tensor& gated,
                         at::Tensor& grad_shrink, at::opmath_type<scalar_t>* grad_weight) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = b.size(), width = grad_gated.size(1), loras = width / rank;
  const int64_t* rows = b.rows.defined() ? b.rows.data_ptr<int64_t>() : nullptr;
  const scalar_t* dg = grad_gated.data_ptr<scalar_t>();
  scalar_t* g = gated.data_ptr<scalar_t>();
  scalar_t* dh = grad_shrink.data_ptr<scalar_t>();
  const acc_t scale = static_cast<acc_t>(scaling);
  at::parallel_for(0, n, kTokenGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      const int64_t t = rows ? rows[i] : b.begin + i;
      const int32_t* idx = index + t * k;
      const scalar_t* w = weight + t * k;
      const scalar_t* slots = shrink_slots + t * k * rank;
      for (int64_t s = 0; s < k; ++s)
        grad_weight[t * k + s] =
            idx[s] < 0 ? acc_t(0)
                       : kernels::slot_weight_grad(dg + i * width + (idx[s] - b.key) * rank, slots + s * rank, rank, scale);
      for (int64_t c = 0; c < loras; ++c) {
        const acc_t gate = scale * kernels::lora_gate<acc_t>(idx, w, k, b.key + c);
        for (int64_t j = 0; j < rank; ++j) {
          const int64_t col = c * rank + j;
          g[i * width + col] = static_cast<scalar_t>(kernels::gated_from_slots(idx, w, slots, k, rank, b.key + c, j, scale));
          dh[i * width + col] = static_cast<scalar_t>(gate * static_cast<acc_t>(dg[i * width + col]));
        }
      }
    }
  });
}

}  // namespace

std::tuple<at::Tensor, at::Tensor> grouped_lora_cpu(const at::Tensor& x, const at::Tensor& lora_A,
                                                    const at::Tensor& lora_B, const at::Tensor& lora_index,
                                                    const at::Tensor& lora_weight, double scaling,
                                                    const std::optional<at::Tensor>& weight,
                                                    const std::optional<at::Tensor>& bias) {
  check_grouped_inputs(x, lora_A, lora_B, lora_index, lora_weight);
  const int64_t n = x.size(0), num_loras = lora_A.size(0), rank = lora_A.size(1), d_in = x.size(1),
                d_out = lora_B.size(1), k = lora_index.size(1);
  const at::Tensor index = checked_index(lora_index, num_loras);
  const at::Tensor xc = x.contiguous(), a = lora_A.contiguous(), w = lora_weight.contiguous();

  at::Tensor out;
  if (weight.has_value() && weight->defined()) {
    check_frozen_linear(x, *weight, bias, d_out);
    out = frozen_linear(xc, *weight, bias);
  } else {
    out = at::zeros({n, d_out}, x.options());
  }
  at::Tensor shrink = new_output({n, k, rank}, x.options());
  if (n == 0 || k == 0) return {out, shrink.zero_()};

  const std::vector<Batch> batches = plan_slot_batches(index);
  BlockColumnsOfB b_cols(lora_B);
  const at::Tensor a_rows = a.view({num_loras * rank, d_in});

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "grouped_lora_cpu", [&] {
    // Tokens in no batch (no LoRA at all) still get their zero shrink rows.
    const int32_t* ip = index.data_ptr<int32_t>();
    scalar_t* sp = shrink.data_ptr<scalar_t>();
    for (int64_t t = 0; t < n; ++t) {
      bool any = false;
      for (int64_t s = 0; s < k; ++s) any |= ip[t * k + s] >= 0;
      if (!any) std::fill(sp + t * k * rank, sp + (t + 1) * k * rank, scalar_t(0));
    }
    b_cols.prepare(batches);
    run_work(plan_work(batches), [&](const Batch& b, int64_t) {
      const int64_t width = (b.hi - b.key + 1) * rank;
      const at::Tensor xb = b.take(xc);
      const at::Tensor shrink_block = at::mm(xb, a_rows.narrow(0, b.key * rank, width).t()).contiguous();
      at::Tensor gated = at::empty_like(shrink_block);
      gate_block<scalar_t>(b, index.data_ptr<int32_t>(), w.data_ptr<scalar_t>(), k, rank, scaling, shrink_block,
                           gated, shrink.data_ptr<scalar_t>());
      b.addmm_into(out, gated, b_cols.get(b.key, b.hi).t());
    });
  });
  return {out, shrink};
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> grouped_lora_backward_cpu(
    const at::Tensor& grad_out, const at::Tensor& x, const at::Tensor& lora_A, const at::Tensor& lora_B,
    const at::Tensor& lora_index, const at::Tensor& lora_weight, const at::Tensor& shrink, double scaling,
    const std::optional<at::Tensor>& weight) {
  check_grouped_inputs(x, lora_A, lora_B, lora_index, lora_weight);
  const int64_t n = x.size(0), num_loras = lora_A.size(0), rank = lora_A.size(1), d_in = x.size(1),
                d_out = lora_B.size(1), k = lora_index.size(1);
  check_grouped_backward(grad_out, shrink, n, d_out, k, rank, x);
  if (weight.has_value() && weight->defined()) check_frozen_linear(x, *weight, std::nullopt, d_out);
  const at::Tensor index = checked_index(lora_index, num_loras);
  const at::Tensor xc = x.contiguous(), gy = grad_out.to(x.scalar_type()).contiguous(), a = lora_A.contiguous(),
                   w = lora_weight.contiguous(), saved = shrink.to(x.scalar_type()).contiguous();

  at::Tensor grad_x = (weight.has_value() && weight->defined()) ? at::mm(gy, *weight) : at::zeros_like(xc);
  // fp32 (fp64 for fp64) accumulators: a LoRA's gradient sums over batches, and bf16 partial sums
  // would lose bits.
  const at::ScalarType acc_type = at::toOpMathType(x.scalar_type());
  at::Tensor grad_a_rows = at::zeros({num_loras * rank, d_in}, x.options().dtype(acc_type));
  at::Tensor grad_b_cols = at::zeros({d_out, num_loras * rank}, x.options().dtype(acc_type));
  at::Tensor grad_weight = at::zeros({n, k}, x.options().dtype(acc_type));
  if (n > 0 && k > 0) {
    const std::vector<Batch> batches = plan_slot_batches(index);
    BlockColumnsOfB b_cols(lora_B);
    const at::Tensor a_rows = a.view({num_loras * rank, d_in});
    b_cols.prepare(batches);
    const WorkPlan plan = plan_work(batches);
    // Worker 0 accumulates into the outputs, the others into their own buffers, summed in order below:
    // the blocks of different batches overlap.
    std::vector<std::pair<at::Tensor, at::Tensor>> partial(plan.size(), {grad_a_rows, grad_b_cols});
    for (int64_t wk = 1; wk < plan.size(); ++wk)
      partial[wk] = {at::zeros_like(grad_a_rows), at::zeros_like(grad_b_cols)};
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "grouped_lora_backward_cpu", [&] {
      run_work(plan, [&](const Batch& b, int64_t worker) {
        const int64_t width = (b.hi - b.key + 1) * rank;
        const at::Tensor gyb = b.take(gy);
        const at::Tensor xb = b.take(xc);
        const at::Tensor grad_gated = at::mm(gyb, b_cols.get(b.key, b.hi)).contiguous();  // [n, W*r]
        at::Tensor gated = at::empty_like(grad_gated), grad_shrink = at::empty_like(grad_gated);
        gate_block_backward<scalar_t>(b, index.data_ptr<int32_t>(), w.data_ptr<scalar_t>(),
                                      saved.data_ptr<scalar_t>(), k, rank, scaling, grad_gated, gated, grad_shrink,
                                      grad_weight.data_ptr<at::opmath_type<scalar_t>>());
        auto grad_b_block = partial[worker].second.narrow(1, b.key * rank, width);
        auto grad_a_block = partial[worker].first.narrow(0, b.key * rank, width);
        if (x.scalar_type() == acc_type) {
          grad_b_block.addmm_(gyb.t(), gated);
          grad_a_block.addmm_(grad_shrink.t(), xb);
        } else {
          grad_b_block.add_(at::mm(gyb.t(), gated));
          grad_a_block.add_(at::mm(grad_shrink.t(), xb));
        }
        b.addmm_into(grad_x, grad_shrink, a_rows.narrow(0, b.key * rank, width));
      });
    });
    for (int64_t wk = 1; wk < plan.size(); ++wk) {
      grad_a_rows.add_(partial[wk].first);
      grad_b_cols.add_(partial[wk].second);
    }
  }
  at::Tensor grad_a = grad_a_rows.view({num_loras, rank, d_in}).to(x.scalar_type());
  at::Tensor grad_b = grad_b_cols.view({d_out, num_loras, rank}).permute({1, 0, 2}).contiguous().to(x.scalar_type());
  return {grad_x, grad_a, grad_b, grad_weight.to(x.scalar_type())};
}

TORCH_LIBRARY_IMPL(mor_ext, CPU, m) {
  m.impl("grouped_lora", &grouped_lora_cpu);
  m.impl("grouped_lora_backward", &grouped_lora_backward_cpu);
}

}  // namespace mor_ext::cpu
