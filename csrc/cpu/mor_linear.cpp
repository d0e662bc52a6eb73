// CPU kernels of mor_ext::mor_linear and mor_ext::mor_linear_backward: the whole adapted layer
// (frozen GEMM + routing + grouped LoRA) in one op.
//
// Why fused: at T=2048, d=2048 the separate route op costs four extra passes over x or grad_x
// (router logits, shared-gate logits, grad_x, grad_router) and autograd adds its grad_x to the
// LoRA's. Here, per batch of tokens of one role, the router and shared-gate rows ride along with
// the role's LoRA A rows in the one shrink GEMM ([n, d_in] x [d_in, W*r + E + 1]), and in backward
// the router's dL/dlogits ride along with dL/dshrink in the grad_x and grad_A GEMMs; grad_x is
// accumulated in place on top of the frozen layer's.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cstdlib>
#include <map>
#include <vector>

#include "../kernels/routing.h"
#include "../input_checks.h"
#include "../spec_table.h"
#include "cpu_utils.h"
#include "decode_avx512.h"
#include "gemm_avx512.h"
#include "path_counts.h"
#include "role_gemms.h"
#include "token_batches.h"

namespace mor_ext::cpu {
namespace {

constexpr int64_t kTokenGrain = 64;
// MKL's fp32 GEMM with an output width of 85 runs ~12% slower than with 96 on the dev machine's
// AVX-512 (16 floats a vector): the shrink GEMM computes a few zero columns instead.
constexpr int64_t kRowAlign = 16;

// Calls with fewer tokens (decode) skip the stacked copies of a role's A rows and B columns: at
// T=1, d=576 copying them took longer than the GEMMs they feed. Views and a few more small GEMMs
// do the same work there.
constexpr int64_t kStackMinTokens = 128;

// One role's slice of the layer: its LoRAs, router rows and shared-gate row. `stacked` blocks also
// hold them as the rows of one matrix, so that a single GEMM computes shrink and logits together,
// and the role's B as the columns of one matrix, for one expand GEMM.
struct RoleBlock {
  int64_t role = 0, lora_start = 0, num_loras = 0, experts = 0, top_k = 0, router_start = 0;
  bool shared = false, gated = false;  // gated: has a shared LoRA with a sigmoid gate
  int64_t lora_width = 0;              // num_loras * r: the shrink columns
  int64_t width = 0;                   // lora_width + experts + gated: all columns of the GEMM
  at::Tensor lora_rows, router_rows, gate_row;  // views: [lora_width | experts | 1 (gated), d_in]
  at::Tensor lora_B;                   // view: [num_loras, d_out, r]
  bool stacked = false;
  at::Tensor rows;                     // [width, d_in]: A rows, router rows, shared-gate row
  at::Tensor padded_rows;              // rows and zero rows up to a multiple of kRowAlign, for the shrink GEMM
  at::Tensor b_cols;                   // [d_out, lora_width]

  // [n, width]: the shrink of the role's LoRAs, then its router logits and shared-gate logit.
  at::Tensor shrink_and_logits(const at::Tensor& xb) const {
    if (stacked) return at::mm(xb, padded_rows.t());
    std::vector<at::Tensor> parts = {at::mm(xb, lora_rows.t()), at::mm(xb, router_rows.t())};
    if (gated) parts.push_back(at::mm(xb, gate_row.t()));
    return at::cat(parts, 1);
  }

  // y[batch] += gated @ B^T, gated [n, lora_width].
  void expand_into(const Batch& b, at::Tensor& y, const at::Tensor& gated) const {
    if (stacked) return b.addmm_into(y, gated, b_cols.t());
    const int64_t rank = lora_B.size(2);
    for (int64_t l = 0; l < num_loras; ++l) b.addmm_into(y, gated.narrow(1, l * rank, rank), lora_B[l].t());
  }
};

RoleBlock make_block(const SpecTable& spec, int64_t rho, const at::Tensor& lora_A, const at::Tensor& lora_B,
                     const at::Tensor& router_weight, const at::Tensor& shared_gate_weight, bool stacked) {
  RoleBlock b;
  const int64_t rank = lora_A.size(1), d_in = lora_A.size(2), d_out = lora_B.size(1);
  b.role = rho;
  b.lora_start = spec.lora_start[rho];
  b.shared = spec.shared[rho] != 0;
  b.experts = spec.num_experts[rho];
  b.top_k = spec.top_k[rho];
  b.router_start = spec.router_start[rho];
  b.num_loras = b.experts + (b.shared ? 1 : 0);
  b.gated = b.shared && spec.sigmoid_gate;
  b.lora_width = b.num_loras * rank;
  b.width = b.lora_width + b.experts + (b.gated ? 1 : 0);
  b.lora_rows = lora_A.narrow(0, b.lora_start, b.num_loras).reshape({b.lora_width, d_in});
  b.router_rows = router_weight.narrow(0, b.router_start, b.experts);
  if (b.gated) b.gate_row = shared_gate_weight.narrow(0, rho, 1);
  b.lora_B = lora_B.narrow(0, b.lora_start, b.num_loras);
  b.stacked = stacked;
  if (!stacked) return b;
  std::vector<at::Tensor> parts = {b.lora_rows, b.router_rows};
  if (b.gated) parts.push_back(b.gate_row);
  const int64_t pad = (kRowAlign - b.width % kRowAlign) % kRowAlign;
  if (pad > 0) parts.push_back(at::zeros({pad, d_in}, lora_A.options()));
  b.padded_rows = at::cat(parts);
  b.rows = b.padded_rows.narrow(0, 0, b.width);
  b.b_cols = b.lora_B.permute({1, 0, 2}).reshape({d_out, b.lora_width}).contiguous();
  return b;
}

// The blocks of the roles that have tokens, built before the batches run in parallel.
std::map<int64_t, RoleBlock> make_blocks(const SpecTable& spec, const std::vector<Batch>& batches,
                                         const at::Tensor& lora_A, const at::Tensor& lora_B,
                                         const at::Tensor& router_weight, const at::Tensor& shared_gate_weight,
                                         bool stacked) {
  std::map<int64_t, RoleBlock> blocks;
  for (const Batch& b : batches)
    if (blocks.find(b.key) == blocks.end())
      blocks.emplace(b.key, make_block(spec, b.key, lora_A, lora_B, router_weight, shared_gate_weight, stacked));
  return blocks;
}

// One batch per role over all its tokens, for the AVX-512 path (a run where they are contiguous).
std::vector<Batch> role_groups(const at::Tensor& roles) {
  const int64_t n = roles.size(0);
  const int64_t* rp = roles.data_ptr<int64_t>();
  std::map<int64_t, std::vector<int64_t>> members;
  for (int64_t t = 0; t < n; ++t)
    if (rp[t] >= 0) members[rp[t]].push_back(t);
  std::vector<Batch> groups;
  for (auto& [role, tokens] : members) {
    Batch b;
    b.key = role;
    if (tokens.back() - tokens.front() + 1 == static_cast<int64_t>(tokens.size())) {
      b.begin = tokens.front(), b.end = tokens.back() + 1;
    } else {
      b.rows = at::tensor(tokens, roles.options());
    }
    groups.push_back(std::move(b));
  }
  return groups;
}

// Thresholds of the fp32 AVX-512 paths, overridable for interleaved A/B benchmarks only
// (MOR_EXT_BENCH_DECODE_MAX / MOR_EXT_BENCH_ROLE_GEMMS_MIN, read per call like MOR_EXT_POISON).
int64_t bench_threshold(const char* name, int64_t fallback) {
  const char* v = std::getenv(name);
  return v != nullptr && v[0] != '\0' ? std::atoll(v) : fallback;
}

bool use_decode_path(const at::Tensor& x) {
  return x.scalar_type() == at::kFloat && x.size(0) <= bench_threshold("MOR_EXT_BENCH_DECODE_MAX", kDecodeMaxTokens) &&
         avx512::available();
}

// fp32 on an AVX-512 CPU with enough tokens: one GEMM per kind and role over all of its tokens. At
// 64 tokens (the tiny preset of bench_model.py, one core of the dev machine) this cut a training
// step with 6-token role spans by ~12%: the generic path ran ~40 small ATen ops per layer there. Below,
// packing B per call costs more than the generic path's ops (d=576: +218 vs +117 us at T=8).
constexpr int64_t kRoleGemmMinTokens = 64;

bool use_role_gemms(const at::Tensor& x) {
  return x.scalar_type() == at::kFloat &&
         x.size(0) >= bench_threshold("MOR_EXT_BENCH_ROLE_GEMMS_MIN", kRoleGemmMinTokens) && avx512::available();
}

std::vector<Batch> plan_role_batches(const at::Tensor& roles) {
  const int64_t n = roles.size(0);
  const int64_t* rp = roles.data_ptr<int64_t>();
  std::vector<int64_t> key(rp, rp + n), hi(n, 0);
  return plan_batches(key, hi, roles.options());
}

// Route the batch's tokens [begin, end) from their logits (columns lora_width.. of `ext`) with the
// per-token body every route kernel shares (kernels::route_token), write the routing outputs and the
// shared gate's logit (for backward), and build the gated shrink `gated` [n, lora_width] and the
// saved slots. Callers spread the tokens over threads.
template <typename scalar_t>
void route_and_gate(const Batch& b, int64_t begin, int64_t end, const RoleBlock& blk,
                    const kernels::RoleTables& tables, const at::Tensor& ext, double scaling, int64_t k_max,
                    int64_t e_total, int64_t rank, int32_t* index, scalar_t* weight, float* probs, float* shared_logit,
                    scalar_t* shrink, at::Tensor& gated) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* h = ext.data_ptr<scalar_t>();
  scalar_t* g = gated.data_ptr<scalar_t>();
  const int64_t width = ext.size(1), lw = blk.lora_width;
  const int e = static_cast<int>(blk.experts);
  std::vector<float> logits(e_total), gate_fp32(k_max);
  std::vector<acc_t> gate(blk.num_loras);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t t = b.token(i);
    const scalar_t* row = h + i * width;
    for (int q = 0; q < e; ++q) logits[blk.router_start + q] = static_cast<float>(row[lw + q]);
    shared_logit[t] = blk.gated ? static_cast<float>(row[lw + e]) : 0.0f;
    kernels::route_token(tables, static_cast<int>(blk.role), logits.data(), shared_logit[t], index + t * k_max,
                         gate_fp32.data(), probs + t * e_total);
    // The gates as stored in x's dtype, which is what the reference multiplies by.
    std::fill(gate.begin(), gate.end(), acc_t(0));
    for (int64_t q = 0; q < k_max; ++q) {
      weight[t * k_max + q] = static_cast<scalar_t>(gate_fp32[q]);
      if (index[t * k_max + q] >= 0)
        gate[index[t * k_max + q] - blk.lora_start] += static_cast<acc_t>(weight[t * k_max + q]);
    }
    for (int64_t q = 0; q < k_max; ++q) {  // saved shrink per slot, zeros in empty slots
      scalar_t* dst = shrink + (t * k_max + q) * rank;
      const int32_t l = index[t * k_max + q];
      for (int64_t j = 0; j < rank; ++j) dst[j] = l < 0 ? scalar_t(0) : row[(l - blk.lora_start) * rank + j];
    }
    for (int64_t l = 0; l < blk.num_loras; ++l) {
      const acc_t gl = static_cast<acc_t>(scaling) * gate[l];
      for (int64_t j = 0; j < rank; ++j)
        g[i * lw + l * rank + j] = static_cast<scalar_t>(gl * static_cast<acc_t>(row[l * rank + j]));
    }
  }
}

// The saved routing of mor_linear_backward, as raw pointers for the per-token loops.
template <typename scalar_t>
struct SavedRouting {
  const int32_t* index;
  const scalar_t* weight;
  const scalar_t* shrink;
  const float* grad_weight;  // dL/d lora_weight from outside the op
  const float* grad_probs;   // dL/d router_probs from outside the op (the load-balance loss)
  const float* probs;
  const float* shared_logit;
};

// Per token [begin, end) of the batch, from grad_gated = dL/d(gated shrink) [n, lora_width]: the
// gated shrink again (`gated`, for grad B) and grad_ext = [dL/dshrink | dL/d router logits | dL/d
// shared-gate logit]. Callers spread the tokens over threads.
template <typename scalar_t>
void token_backward(const Batch& b, int64_t begin, int64_t end, const RoleBlock& blk,
                    const kernels::RoleTables& tables, const SavedRouting<scalar_t>& r, double scaling, int64_t k_max,
                    int64_t e_total, int64_t rank, const at::Tensor& grad_gated, at::Tensor& gated,
                    at::Tensor& grad_ext) {
  using acc_t = at::opmath_type<scalar_t>;
  const scalar_t* dg = grad_gated.data_ptr<scalar_t>();
  scalar_t* g_out = gated.data_ptr<scalar_t>();
  scalar_t* ge = grad_ext.data_ptr<scalar_t>();
  const int64_t lw = blk.lora_width, width = blk.width;
  const int e = static_cast<int>(blk.experts);
  std::vector<acc_t> acc_g(lw), acc_dh(lw);
  std::vector<float> grad_slot(k_max), grad_logits(e_total);
  for (int64_t i = begin; i < end; ++i) {
    const int64_t t = b.token(i);
    std::fill(acc_g.begin(), acc_g.end(), acc_t(0));
    std::fill(acc_dh.begin(), acc_dh.end(), acc_t(0));
    std::fill(grad_slot.begin(), grad_slot.end(), 0.0f);
    const int64_t used = (blk.shared ? 1 : 0) + blk.top_k;
    for (int64_t q = 0; q < used; ++q) {  // the LoRA path: dL/dw, dL/dshrink, and the gated shrink again
      const int64_t col = (r.index[t * k_max + q] - blk.lora_start) * rank;
      const acc_t wq = static_cast<acc_t>(scaling) * static_cast<acc_t>(r.weight[t * k_max + q]);
      const scalar_t* h = r.shrink + (t * k_max + q) * rank;
      acc_t dot = 0;
      for (int64_t j = 0; j < rank; ++j) {
        const acc_t d = static_cast<acc_t>(dg[i * lw + col + j]);
        dot += d * static_cast<acc_t>(h[j]);
        acc_g[col + j] += wq * static_cast<acc_t>(h[j]);
        acc_dh[col + j] += wq * d;
      }
      // dL/dw as the op's lora_weight output sees it: this op's LoRA path plus outside uses.
      grad_slot[q] = static_cast<float>(static_cast<scalar_t>(static_cast<acc_t>(scaling) * dot)) +
                     r.grad_weight[t * k_max + q];
    }
    for (int64_t j = 0; j < lw; ++j) {
      g_out[i * lw + j] = static_cast<scalar_t>(acc_g[j]);
      ge[i * width + j] = static_cast<scalar_t>(acc_dh[j]);
    }
    // The routing path, with route_backward's per-token body: routed gates through top-k
    // renormalisation and softmax to the router logits, the shared gate through its sigmoid.
    const float grad_shared = kernels::route_token_backward_all(
        tables, static_cast<int>(blk.role), r.probs + t * e_total, r.index + t * k_max, grad_slot.data(),
        r.grad_probs + t * e_total, r.shared_logit[t], grad_logits.data());
    for (int q = 0; q < e; ++q) ge[i * width + lw + q] = static_cast<scalar_t>(grad_logits[blk.router_start + q]);
    if (blk.gated) ge[i * width + lw + e] = static_cast<scalar_t>(grad_shared);
  }
}

}  // namespace

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mor_linear_cpu(
    const at::Tensor& x, const at::Tensor& weight, const std::optional<at::Tensor>& bias, const at::Tensor& lora_A,
    const at::Tensor& lora_B, const at::Tensor& router_weight, const at::Tensor& shared_gate_weight,
    const at::Tensor& role_ids, at::IntArrayRef num_experts, at::IntArrayRef top_k, at::IntArrayRef has_shared,
    bool sigmoid_gate, double scaling) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, sigmoid_gate);
  check_layer_inputs(x, weight, bias, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, spec);
  const int64_t n = x.size(0), k_max = spec.k_max, e_total = spec.num_experts_total, rank = lora_A.size(1);
  const at::Tensor xc = x.contiguous(), roles = role_ids.contiguous();
  const at::Tensor a = lora_A.contiguous();

  at::Tensor y = frozen_linear(xc, weight, bias);
  LayerRouting out = LayerRouting::fresh(x, k_max, e_total, rank);
  auto& [lora_index, lora_weight, router_probs, shrink, shared_gate_logit] = out;
  const kernels::RoleTables tables = spec.tables();
  if (use_decode_path(x)) {
    decode_avx512_f32(spec, xc, roles, a, lora_B.contiguous(), router_weight.contiguous(),
                      shared_gate_weight.contiguous(), scaling, y, lora_index, lora_weight, router_probs, shrink,
                      shared_gate_logit);
    count_path(CpuPath::kAvx512Decode);
    return out.with(y);
  }
  count_path(use_role_gemms(x) ? CpuPath::kAvx512RoleGemms : CpuPath::kGeneric);

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "mor_linear_cpu", [&] {
    int32_t* index_p = lora_index.data_ptr<int32_t>();
    scalar_t* weight_p = lora_weight.data_ptr<scalar_t>();
    float* probs_p = router_probs.data_ptr<float>();
    float* shared_p = shared_gate_logit.data_ptr<float>();
    scalar_t* shrink_p = shrink.data_ptr<scalar_t>();
    // Defaults for every token (role -1 keeps them): empty slots, zero probabilities and shrink.
    at::parallel_for(0, n, 256, [&](int64_t begin, int64_t end) {
      for (int64_t t = begin; t < end; ++t) {
        std::fill(index_p + t * k_max, index_p + (t + 1) * k_max, -1);
        std::fill(weight_p + t * k_max, weight_p + (t + 1) * k_max, scalar_t(0));
        std::fill(probs_p + t * e_total, probs_p + (t + 1) * e_total, 0.0f);
        std::fill(shrink_p + t * k_max * rank, shrink_p + (t + 1) * k_max * rank, scalar_t(0));
        shared_p[t] = 0.0f;
      }
    });
    if (use_role_gemms(x)) {  // fp32: per role, one GEMM per kind over all its tokens (role_gemms.h)
      const std::vector<Batch> groups = role_groups(roles);
      const std::map<int64_t, RoleBlock> blocks =
          make_blocks(spec, groups, a, lora_B, router_weight, shared_gate_weight, /*stacked=*/true);
      const int64_t d_in = x.size(1), d_out = y.size(1);
      std::vector<at::Tensor> ext, gated;  // per role: [n, W*r + E + gated] shrink and logits; [n, W*r]
      std::vector<int64_t> sizes;
      std::vector<RowsGemm> shrinks, expands;
      for (const Batch& g : groups) {
        const RoleBlock& b = blocks.at(g.key);
        sizes.push_back(g.size());
        ext.push_back(at::empty({g.size(), b.width}, x.options()));
        gated.push_back(at::empty({g.size(), b.lora_width}, x.options()));
        shrinks.push_back({token_rows<const float>(xc.data_ptr<float>(), d_in, g), d_in,
                           {b.rows.data_ptr<float>(), d_in, /*transposed=*/true}, b.width, all_rows(ext.back()),
                           /*accumulate=*/false});
        expands.push_back({const_rows(gated.back()), b.lora_width,
                           {b.b_cols.data_ptr<float>(), b.lora_width, /*transposed=*/true}, d_out,
                           token_rows(y.data_ptr<float>(), d_out, g), /*accumulate=*/true});
      }
      run_gemms(shrinks);
      for_each_block(sizes, kTokenGrain, [&](size_t j, int64_t begin, int64_t end) {
        route_and_gate<scalar_t>(groups[j], begin, end, blocks.at(groups[j].key), tables, ext[j], scaling, k_max,
                                 e_total, rank, index_p, weight_p, probs_p, shared_p, shrink_p, gated[j]);
      });
      run_gemms(expands);
      return;
    }
    const std::vector<Batch> batches = plan_role_batches(roles);
    const std::map<int64_t, RoleBlock> blocks =
        make_blocks(spec, batches, a, lora_B, router_weight, shared_gate_weight, n >= kStackMinTokens);
    run_work(plan_work(batches), [&](const Batch& b, int64_t) {
      const RoleBlock& blk = blocks.at(b.key);
      const at::Tensor ext = blk.shrink_and_logits(b.take(xc));  // [n, W*r + E + gated (+ pad)]
      at::Tensor gated = at::empty({b.size(), blk.lora_width}, x.options());
      at::parallel_for(0, b.size(), kTokenGrain, [&](int64_t begin, int64_t end) {  // inline when nested
        route_and_gate<scalar_t>(b, begin, end, blk, tables, ext, scaling, k_max, e_total, rank, index_p, weight_p,
                                 probs_p, shared_p, shrink_p, gated);
      });
      blk.expand_into(b, y, gated);
    });
  });
  return out.with(y);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> mor_linear_backward_cpu(
    const at::Tensor& grad_y, const at::Tensor& grad_lora_weight, const at::Tensor& grad_router_probs,
    const at::Tensor& x, const at::Tensor& weight, const at::Tensor& lora_A, const at::Tensor& lora_B,
    const at::Tensor& router_weight, const at::Tensor& shared_gate_weight, const at::Tensor& role_ids,
    const at::Tensor& lora_index, const at::Tensor& lora_weight, const at::Tensor& router_probs,
    const at::Tensor& shrink, const at::Tensor& shared_gate_logit, at::IntArrayRef num_experts, at::IntArrayRef top_k,
    at::IntArrayRef has_shared, bool sigmoid_gate, double scaling) {
  const SpecTable spec = SpecTable::from(num_experts, top_k, has_shared, sigmoid_gate);
  check_layer_inputs(x, weight, std::nullopt, lora_A, lora_B, router_weight, shared_gate_weight, role_ids, spec);
  const int64_t n = x.size(0), k_max = spec.k_max, e_total = spec.num_experts_total, rank = lora_A.size(1),
                d_in = x.size(1), d_out = weight.size(0);
  check_saved_routing(grad_y, grad_lora_weight, grad_router_probs, lora_index, lora_weight, router_probs, shrink,
                      shared_gate_logit, n, d_out, k_max, e_total, rank, x);

  const at::Tensor xc = x.contiguous(), roles = role_ids.contiguous(), a = lora_A.contiguous();
  const auto& [gy, index, w, saved, gw_in, gp_in, probs, shared_logits] = LayerBackwardInputs::from(
      x, grad_y, grad_lora_weight, grad_router_probs, lora_index, lora_weight, router_probs, shrink, shared_gate_logit);
  check_saved_slots(index, roles, spec, "mor_linear_backward");
  const kernels::RoleTables tables = spec.tables();
  const at::ScalarType acc_type = at::toOpMathType(x.scalar_type());

  at::Tensor grad_x = at::mm(gy, weight);
  const bool by_role = use_role_gemms(x);
  count_path(by_role ? CpuPath::kAvx512RoleGemms : CpuPath::kGeneric);
  const std::vector<Batch> batches = by_role ? role_groups(roles) : plan_role_batches(roles);
  const std::map<int64_t, RoleBlock> blocks =
      make_blocks(spec, batches, a, lora_B, router_weight, shared_gate_weight, /*stacked=*/true);
  const WorkPlan plan = by_role ? WorkPlan{} : plan_work(batches);
  // Per worker, role -> (grad of rows, grad of b_cols), in the accumulation dtype; a worker's first
  // batch of a role writes them, later ones add. The by-role path has one "worker" and one batch a role.
  std::vector<std::map<int64_t, std::pair<at::Tensor, at::Tensor>>> grads(by_role ? 1 : plan.size());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "mor_linear_backward_cpu", [&] {
    const SavedRouting<scalar_t> routing{index.data_ptr<int32_t>(), w.data_ptr<scalar_t>(), saved.data_ptr<scalar_t>(),
                                         gw_in.data_ptr<float>(),   gp_in.data_ptr<float>(),  probs.data_ptr<float>(),
                                         shared_logits.data_ptr<float>()};
    if (by_role) {  // fp32: per role, one GEMM per kind over all its tokens (role_gemms.h)
      const float *xp = xc.data_ptr<float>(), *gyp = gy.data_ptr<float>();
      std::vector<at::Tensor> grad_gated, gated, grad_ext;  // per role: [n, W*r], [n, W*r], [n, width]
      std::vector<int64_t> sizes;
      std::vector<RowsGemm> to_grad_gated, to_grad_x;
      std::vector<TransposedAGemm> to_weight_grads;  // per role: grad of its rows, grad of B's columns (transposed)
      for (const Batch& g : batches) {
        const RoleBlock& b = blocks.at(g.key);
        sizes.push_back(g.size());
        grad_gated.push_back(at::empty({g.size(), b.lora_width}, x.options()));
        gated.push_back(at::empty({g.size(), b.lora_width}, x.options()));
        grad_ext.push_back(at::empty({g.size(), b.width}, x.options()));  // [dL/dshrink | dL/dlogits]
        to_grad_gated.push_back({token_rows(gyp, d_out, g), d_out, {b.b_cols.data_ptr<float>(), b.lora_width},
                                 b.lora_width, all_rows(grad_gated.back()), /*accumulate=*/false});
        to_grad_x.push_back({const_rows(grad_ext.back()), b.width, {b.rows.data_ptr<float>(), d_in}, d_in,
                             token_rows(grad_x.data_ptr<float>(), d_in, g), /*accumulate=*/true});
        // B(k, :) is the k-th token's row of x or grad_y: a view from the run's first token, or gathered.
        const int64_t* tokens = g.rows.defined() ? g.rows.data_ptr<int64_t>() : nullptr;
        const int64_t first = g.rows.defined() ? 0 : g.begin;
        const avx512::MatrixB x_rows{xp + first * d_in, d_in, /*transposed=*/false, tokens};
        const avx512::MatrixB gy_rows{gyp + first * d_out, d_out, /*transposed=*/false, tokens};
        to_weight_grads.push_back({grad_ext.back(), x_rows, d_in});
        to_weight_grads.push_back({gated.back(), gy_rows, d_out});
      }
      run_gemms(to_grad_gated);
      for_each_block(sizes, kTokenGrain, [&](size_t j, int64_t begin, int64_t end) {
        token_backward<scalar_t>(batches[j], begin, end, blocks.at(batches[j].key), tables, routing, scaling, k_max,
                                 e_total, rank, grad_gated[j], gated[j], grad_ext[j]);
      });
      const std::vector<at::Tensor> weight_grads = run_gemms(to_weight_grads);
      run_gemms(to_grad_x);
      for (size_t j = 0; j < batches.size(); ++j)  // grad of b_cols as a transposed view: copied once below
        grads[0].emplace(batches[j].key, std::make_pair(weight_grads[2 * j], weight_grads[2 * j + 1].t()));
      return;
    }
    run_work(plan, [&](const Batch& b, int64_t worker) {
      const RoleBlock& blk = blocks.at(b.key);
      const at::Tensor gyb = b.take(gy), xb = b.take(xc);
      const at::Tensor grad_gated = at::mm(gyb, blk.b_cols).contiguous();  // [n, lora_width]
      at::Tensor gated = at::empty({b.size(), blk.lora_width}, x.options());
      at::Tensor grad_ext = at::empty({b.size(), blk.width}, x.options());  // [dL/dshrink | dL/dlogits]
      at::parallel_for(0, b.size(), kTokenGrain, [&](int64_t begin, int64_t end) {  // inline when nested
        token_backward<scalar_t>(b, begin, end, blk, tables, routing, scaling, k_max, e_total, rank, grad_gated, gated,
                                 grad_ext);
      });
      // One GEMM each gives grad_A of the role's LoRAs and grad of its router and gate rows; one adds
      // the LoRA's and the router's grad_x onto the frozen layer's, in place.
      auto found = grads[worker].find(b.key);
      if (found == grads[worker].end()) {
        grads[worker].emplace(b.key, std::make_pair(at::mm(grad_ext.t(), xb).to(acc_type),
                                                    at::mm(gyb.t(), gated).to(acc_type)));
      } else if (acc_type == x.scalar_type()) {
        found->second.first.addmm_(grad_ext.t(), xb);
        found->second.second.addmm_(gyb.t(), gated);
      } else {
        found->second.first.add_(at::mm(grad_ext.t(), xb));
        found->second.second.add_(at::mm(gyb.t(), gated));
      }
      b.addmm_into(grad_x, grad_ext, blk.rows);
    });
  });

  at::Tensor grad_a = at::zeros_like(lora_A, lora_A.options().dtype(acc_type));
  at::Tensor grad_b = at::zeros_like(lora_B, lora_B.options().dtype(acc_type));
  at::Tensor grad_router = at::zeros_like(router_weight, router_weight.options().dtype(acc_type));
  at::Tensor grad_shared = at::zeros_like(shared_gate_weight, shared_gate_weight.options().dtype(acc_type));
  for (auto& [rho, blk] : blocks) {
    at::Tensor grad_rows, grad_b_cols;  // summed over workers, in worker order
    for (auto& per_worker : grads) {
      auto found = per_worker.find(rho);
      if (found == per_worker.end()) continue;
      if (!grad_rows.defined()) {
        std::tie(grad_rows, grad_b_cols) = found->second;
      } else {
        grad_rows.add_(found->second.first);
        grad_b_cols.add_(found->second.second);
      }
    }
    grad_a.narrow(0, blk.lora_start, blk.num_loras).copy_(grad_rows.narrow(0, 0, blk.lora_width).view({blk.num_loras, rank, d_in}));
    grad_router.narrow(0, blk.router_start, blk.experts).copy_(grad_rows.narrow(0, blk.lora_width, blk.experts));
    if (blk.gated) grad_shared.narrow(0, rho, 1).copy_(grad_rows.narrow(0, blk.lora_width + blk.experts, 1));
    grad_b.narrow(0, blk.lora_start, blk.num_loras).copy_(grad_b_cols.view({d_out, blk.num_loras, rank}).permute({1, 0, 2}));
  }
  const auto dt = x.scalar_type();
  return {grad_x, grad_a.to(dt), grad_b.to(dt), grad_router.to(dt), grad_shared.to(dt)};
}

TORCH_LIBRARY_IMPL(mor_ext, CPU, m) {
  m.impl("mor_linear", &mor_linear_cpu);
  m.impl("mor_linear_backward", &mor_linear_backward_cpu);
}

}  // namespace mor_ext::cpu
