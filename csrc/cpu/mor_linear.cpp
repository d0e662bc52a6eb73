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
#include <numeric>
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

// A role's sizes and offsets in the layer's stacked parameters (no tensor views).
RoleBlock role_sizes(const SpecTable& spec, int64_t rho, int64_t rank) {
  RoleBlock b;
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
  return b;
}

RoleBlock make_block(const SpecTable& spec, int64_t rho, const at::Tensor& lora_A, const at::Tensor& lora_B,
                     const at::Tensor& router_weight, const at::Tensor& shared_gate_weight, bool stacked) {
  const int64_t rank = lora_A.size(1), d_in = lora_A.size(2), d_out = lora_B.size(1);
  RoleBlock b = role_sizes(spec, rho, rank);
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

// Route the batch's tokens [begin, end) from their logits (columns lora_width.. of h, the role's
// [n, width] shrink and logits) with the
// per-token body every route kernel shares (kernels::route_token), write the routing outputs and the
// shared gate's logit (for backward), and build the gated shrink `gated` [n, lora_width] and the
// saved slots; `g` is [n, lora_width]. Callers spread the tokens over threads.
template <typename scalar_t>
void route_and_gate(const Batch& b, int64_t begin, int64_t end, const RoleBlock& blk,
                    const kernels::RoleTables& tables, const scalar_t* h, int64_t width, double scaling,
                    int64_t k_max, int64_t e_total, int64_t rank, int32_t* index, scalar_t* weight, float* probs,
                    float* shared_logit, scalar_t* shrink, scalar_t* g) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t lw = blk.lora_width;
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

// Per token [begin, end) of the batch, from dg = dL/d(gated shrink) [n, lora_width]: the gated
// shrink again (g_out [n, lora_width], for grad B) and ge = [dL/dshrink | dL/d router logits | dL/d
// shared-gate logit] [n, width]. Callers spread the tokens over threads.
template <typename scalar_t>
void token_backward(const Batch& b, int64_t begin, int64_t end, const RoleBlock& blk,
                    const kernels::RoleTables& tables, const SavedRouting<scalar_t>& r, double scaling, int64_t k_max,
                    int64_t e_total, int64_t rank, const scalar_t* dg, scalar_t* g_out, scalar_t* ge) {
  using acc_t = at::opmath_type<scalar_t>;
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


// Roles with fewer tokens run their GEMMs over all their LoRAs: ordering the tokens (and gathering
// them in backward) costs more than it saves when few tiles of 8 tokens share one selection (the
// tiny preset of bench_model.py, ~21 tokens a role: its step ran 0.1-0.9 ms slower with skipping).
constexpr int64_t kSkipMinTokens = 128;

// Per token of the batch, the role's LoRAs its routing selected (bit l: LoRA lora_start + l), from
// the saved slots `index` [tokens, k_max]. Empty where no token skips any (top_k = E), the role has
// more LoRAs than bits, or few tokens: then the GEMMs run over all of them.
std::vector<uint64_t> lora_masks(const Batch& b, const RoleBlock& blk, const int32_t* index, int64_t k_max) {
  if (blk.top_k >= blk.experts || blk.num_loras > 64 || b.size() < kSkipMinTokens) return {};
  std::vector<uint64_t> masks(b.size(), 0);
  for (int64_t i = 0; i < b.size(); ++i) {
    const int32_t* slots = index + b.token(i) * k_max;
    for (int64_t q = 0; q < k_max; ++q)
      if (slots[q] >= 0) masks[i] |= uint64_t{1} << (slots[q] - blk.lora_start);
  }
  return masks;
}

// Batch positions ordered by their masks (stably), so that a tile's rows mostly share one mask and
// skip the same LoRA: with 4 routed LoRAs and top-3, a role's tokens fall in 4 such groups.
std::vector<int64_t> order_by_mask(const std::vector<uint64_t>& masks) {
  std::vector<int64_t> order(masks.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) { return masks[a] < masks[b]; });
  return order;
}

// The by-role path's roles (fp32): each role's A rows, router rows and shared-gate row stacked as
// one [width, d_in] matrix and its B as the columns of one [d_out, lora_width] matrix, copied with
// plain loops into one buffer that also holds the per-role scratch matrices a pass asks for. ATen's
// narrow / cat / permute / contiguous / empty cost ~15 small ops a role, which at agent-turn sizes
// (tens of tokens a role, d = 64..576) was a large share of a layer's host time.
struct StackedRoles {
  std::vector<RoleBlock> blocks;              // sizes only, one per group, in group order
  std::vector<float*> rows, b_cols;           // per group: [width, d_in], [d_out, lora_width]
  std::vector<std::vector<float*>> scratch;   // per group: the scratch arrays asked for
  at::Tensor buffer;
};

// `scratch_sizes(block, tokens)`: the float counts of the scratch arrays a group needs.
template <typename Sizes>
StackedRoles stack_roles(const SpecTable& spec, const std::vector<Batch>& groups, const at::Tensor& lora_A,
                         const at::Tensor& lora_B, const at::Tensor& router_weight,
                         const at::Tensor& shared_gate_weight, const Sizes& scratch_sizes) {
  const int64_t rank = lora_A.size(1), d_in = lora_A.size(2), d_out = lora_B.size(1);
  StackedRoles s;
  std::vector<std::vector<int64_t>> sizes;
  std::vector<int64_t> starts, costs;
  int64_t total = 0;
  for (const Batch& g : groups) {  // per role: stacked rows and B columns, then its scratch arrays
    const RoleBlock b = role_sizes(spec, g.key, rank);
    starts.push_back(total);
    costs.push_back(b.width * d_in + d_out * b.lora_width);
    total += costs.back();
    sizes.push_back(scratch_sizes(b, g.size()));
    for (int64_t n : sizes.back()) total += n;
    s.blocks.push_back(b);
  }
  s.buffer = at::empty({total}, lora_A.options());
  float* base = s.buffer.data_ptr<float>();
  for (size_t j = 0; j < groups.size(); ++j) {
    const RoleBlock& b = s.blocks[j];
    float* p = base + starts[j];
    s.rows.push_back(p);
    s.b_cols.push_back(p + b.width * d_in);
    p += costs[j];
    s.scratch.emplace_back();
    for (int64_t n : sizes[j]) {
      s.scratch.back().push_back(p);
      p += n;
    }
  }
  const float *a = lora_A.data_ptr<float>(), *bw = lora_B.data_ptr<float>(), *rw = router_weight.data_ptr<float>(),
              *gw = shared_gate_weight.data_ptr<float>();
  parallel_items(costs, [&](int64_t j) {
    const RoleBlock& b = s.blocks[j];
    float* rows = s.rows[j];
    std::memcpy(rows, a + b.lora_start * rank * d_in, sizeof(float) * b.lora_width * d_in);
    std::memcpy(rows + b.lora_width * d_in, rw + b.router_start * d_in, sizeof(float) * b.experts * d_in);
    if (b.gated) std::memcpy(rows + (b.lora_width + b.experts) * d_in, gw + b.role * d_in, sizeof(float) * d_in);
    float* cols = s.b_cols[j];  // cols[o, l * r + i] = lora_B[lora_start + l, o, i]
    for (int64_t o = 0; o < d_out; ++o)
      for (int64_t l = 0; l < b.num_loras; ++l)
        std::memcpy(cols + o * b.lora_width + l * rank, bw + ((b.lora_start + l) * d_out + o) * rank,
                    sizeof(float) * rank);
  });
  return s;
}

// fp32 on an AVX-512 CPU: per role, one GEMM per kind over all of its tokens (role_gemms.h). `y`
// holds the frozen layer's output; the LoRA deltas are added in place.
void forward_by_role(const SpecTable& spec, const kernels::RoleTables& tables, const at::Tensor& xc,
                     const at::Tensor& roles, const at::Tensor& a, const at::Tensor& lora_B,
                     const at::Tensor& router_weight, const at::Tensor& shared_gate_weight, double scaling,
                     at::Tensor& y, LayerRouting& out) {
  const int64_t k_max = spec.k_max, e_total = spec.num_experts_total, rank = a.size(1), d_in = xc.size(1),
                d_out = y.size(1);
  const std::vector<Batch> groups = role_groups(roles);
  // Scratch per role: ext = [shrink | router logits | gate logit] [n, width], gated shrink [n, lora_width].
  const StackedRoles st = stack_roles(spec, groups, a, lora_B.contiguous(), router_weight.contiguous(),
                                      shared_gate_weight.contiguous(), [](const RoleBlock& b, int64_t n) {
                                        return std::vector<int64_t>{n * b.width, n * b.lora_width};
                                      });
  std::vector<int64_t> sizes;
  std::vector<RowsGemm> shrinks, expands;
  for (size_t j = 0; j < groups.size(); ++j) {
    const Batch& g = groups[j];
    const RoleBlock& b = st.blocks[j];
    sizes.push_back(g.size());
    shrinks.push_back({token_rows<const float>(xc.data_ptr<float>(), d_in, g), d_in,
                       {st.rows[j], d_in, /*transposed=*/true}, b.width, rows_of(st.scratch[j][0], g.size(), b.width),
                       /*accumulate=*/false});
    expands.push_back({rows_of<const float>(st.scratch[j][1], g.size(), b.lora_width), b.lora_width,
                       {st.b_cols[j], b.lora_width, /*transposed=*/true}, d_out,
                       token_rows(y.data_ptr<float>(), d_out, g), /*accumulate=*/true});
  }
  run_gemms(shrinks);
  int32_t* index_p = out.lora_index.data_ptr<int32_t>();
  float *weight_p = out.lora_weight.data_ptr<float>(), *probs_p = out.router_probs.data_ptr<float>(),
        *shared_p = out.shared_gate_logit.data_ptr<float>(), *shrink_p = out.shrink.data_ptr<float>();
  for_each_block(sizes, kTokenGrain, [&](size_t j, int64_t begin, int64_t end) {
    route_and_gate<float>(groups[j], begin, end, st.blocks[j], tables, st.scratch[j][0], st.blocks[j].width, scaling,
                          k_max, e_total, rank, index_p, weight_p, probs_p, shared_p, shrink_p, st.scratch[j][1]);
  });
  // The expand skips, per tile of tokens, the LoRAs none of them selected (a gated shrink of zeros):
  // the tokens in order of their selections, so that a tile's share one.
  for (size_t j = 0; j < groups.size(); ++j) {
    std::vector<uint64_t> masks = lora_masks(groups[j], st.blocks[j], index_p, k_max);
    if (masks.empty()) continue;
    RowsGemm& e = expands[j];
    const std::vector<int64_t> order = order_by_mask(masks);
    const std::vector<const float*> a_rows = e.a_rows;
    const std::vector<float*> c_rows = e.c_rows;
    for (size_t i = 0; i < order.size(); ++i) {
      e.a_rows[i] = a_rows[order[i]];
      e.c_rows[i] = c_rows[order[i]];
      e.row_masks.push_back(masks[order[i]]);
    }
    e.unit = rank, e.units = st.blocks[j].num_loras;
  }
  run_gemms(expands);
}

// The backward of forward_by_role: adds the LoRA and router terms to grad_x in place and returns
// (grad_A, grad_B, grad_router, grad_shared_gate).
template <typename Routing>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> backward_by_role(
    const SpecTable& spec, const kernels::RoleTables& tables, const Routing& routing, const at::Tensor& xc,
    const at::Tensor& gy, const at::Tensor& roles, const at::Tensor& a, const at::Tensor& lora_B,
    const at::Tensor& router_weight, const at::Tensor& shared_gate_weight, double scaling, at::Tensor& grad_x) {
  const int64_t k_max = spec.k_max, e_total = spec.num_experts_total, rank = a.size(1), d_in = xc.size(1),
                d_out = gy.size(1);
  std::vector<Batch> groups = role_groups(roles);
  // Where a role's router skips some of its LoRAs, its tokens in order of their selections (gathered),
  // so that the GEMMs whose K or rows run over LoRAs skip, per tile, those its tokens did not select.
  std::vector<std::vector<uint64_t>> masks(groups.size());
  for (size_t j = 0; j < groups.size(); ++j) {
    masks[j] = lora_masks(groups[j], role_sizes(spec, groups[j].key, rank), routing.index, k_max);
    if (masks[j].empty()) continue;
    const std::vector<int64_t> order = order_by_mask(masks[j]);
    std::vector<int64_t> tokens(order.size());
    std::vector<uint64_t> sorted(order.size());
    for (size_t i = 0; i < order.size(); ++i) {
      tokens[i] = groups[j].token(order[i]);
      sorted[i] = masks[j][order[i]];
    }
    Batch b;
    b.key = groups[j].key;
    b.rows = at::tensor(tokens, roles.options());
    groups[j] = std::move(b);
    masks[j] = std::move(sorted);
  }
  // Scratch per role: grad of the gated shrink [n, lw], the gated shrink again [n, lw],
  // grad_ext = [dL/dshrink | dL/dlogits] [n, width], grad of the stacked rows [width, d_in], grad of
  // B's columns, transposed [lw, d_out].
  const StackedRoles st = stack_roles(spec, groups, a, lora_B.contiguous(), router_weight.contiguous(),
                                      shared_gate_weight.contiguous(), [&](const RoleBlock& b, int64_t n) {
                                        return std::vector<int64_t>{n * b.lora_width, n * b.lora_width, n * b.width,
                                                                    b.width * d_in, b.lora_width * d_out};
                                      });
  const float *xp = xc.data_ptr<float>(), *gyp = gy.data_ptr<float>();
  std::vector<int64_t> sizes;
  std::vector<RowsGemm> to_grad_gated, to_grad_x;
  std::vector<TransposedAGemm> to_weight_grads;
  for (size_t j = 0; j < groups.size(); ++j) {
    const Batch& g = groups[j];
    const RoleBlock& b = st.blocks[j];
    const std::vector<float*>& s = st.scratch[j];
    sizes.push_back(g.size());
    to_grad_gated.push_back({token_rows(gyp, d_out, g), d_out, {st.b_cols[j], b.lora_width}, b.lora_width,
                             rows_of(s[0], g.size(), b.lora_width), /*accumulate=*/false});
    to_grad_x.push_back({rows_of<const float>(s[2], g.size(), b.width), b.width, {st.rows[j], d_in}, d_in,
                         token_rows(grad_x.data_ptr<float>(), d_in, g), /*accumulate=*/true, masks[j], rank,
                         b.num_loras});
    // B(k, :) is the k-th token's row of x or grad_y: a view from the run's first token, or gathered.
    const int64_t* tokens = g.rows.defined() ? g.rows.data_ptr<int64_t>() : nullptr;
    const int64_t first = g.rows.defined() ? 0 : g.begin;
    const uint64_t* k_masks = masks[j].empty() ? nullptr : masks[j].data();
    to_weight_grads.push_back({s[2], g.size(), b.width, {xp + first * d_in, d_in, /*transposed=*/false, tokens}, d_in,
                               s[3], k_masks, rank, b.num_loras});
    to_weight_grads.push_back({s[1], g.size(), b.lora_width,
                               {gyp + first * d_out, d_out, /*transposed=*/false, tokens}, d_out, s[4], k_masks, rank,
                               b.num_loras});
  }
  run_gemms(to_grad_gated);
  for_each_block(sizes, kTokenGrain, [&](size_t j, int64_t begin, int64_t end) {
    const std::vector<float*>& s = st.scratch[j];
    token_backward<float>(groups[j], begin, end, st.blocks[j], tables, routing, scaling, k_max, e_total, rank, s[0],
                          s[1], s[2]);
  });
  run_gemms(to_weight_grads);
  run_gemms(to_grad_x);

  // Each role's gradients into the parameters' layout, every element written once: roles with
  // tokens copy theirs, the rest is zeroed below (zero-filling all first was a second pass over the
  // adapters' gradients: 282 MB a step at SmolLM2's size).
  at::Tensor grad_a = new_output(a.sizes(), a.options()), grad_b = new_output(lora_B.sizes(), a.options()),
             grad_router = new_output(router_weight.sizes(), a.options()),
             grad_shared = new_output(shared_gate_weight.sizes(), a.options());
  float *ga = grad_a.data_ptr<float>(), *gb = grad_b.data_ptr<float>(), *gr = grad_router.data_ptr<float>(),
        *gs = grad_shared.data_ptr<float>();
  std::vector<bool> has_tokens(spec.num_roles, false);
  for (const RoleBlock& b : st.blocks) has_tokens[b.role] = true;
  for (int64_t rho = 0; rho < spec.num_roles; ++rho) {
    const RoleBlock b = role_sizes(spec, rho, rank);
    if (!has_tokens[rho]) {
      std::memset(ga + b.lora_start * rank * d_in, 0, sizeof(float) * b.lora_width * d_in);
      std::memset(gb + b.lora_start * d_out * rank, 0, sizeof(float) * b.num_loras * d_out * rank);
      std::memset(gr + b.router_start * d_in, 0, sizeof(float) * b.experts * d_in);
    }
    if (!has_tokens[rho] || !b.gated) std::memset(gs + rho * d_in, 0, sizeof(float) * d_in);
  }
  std::vector<int64_t> costs;
  for (const RoleBlock& b : st.blocks) costs.push_back(b.width * d_in + b.lora_width * d_out);
  parallel_items(costs, [&](int64_t j) {
    const RoleBlock& b = st.blocks[j];
    const float* rows = st.scratch[j][3];
    std::memcpy(ga + b.lora_start * rank * d_in, rows, sizeof(float) * b.lora_width * d_in);
    std::memcpy(gr + b.router_start * d_in, rows + b.lora_width * d_in, sizeof(float) * b.experts * d_in);
    if (b.gated) std::memcpy(gs + b.role * d_in, rows + (b.lora_width + b.experts) * d_in, sizeof(float) * d_in);
    const float* cols_t = st.scratch[j][4];  // [l * r + i, o] -> grad_B[lora_start + l, o, i]
    for (int64_t l = 0; l < b.num_loras; ++l)
      for (int64_t o = 0; o < d_out; ++o) {
        float* dst = gb + ((b.lora_start + l) * d_out + o) * rank;
        for (int64_t i = 0; i < rank; ++i) dst[i] = cols_t[(l * rank + i) * d_out + o];
      }
  });
  return {grad_a, grad_b, grad_router, grad_shared};
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
  const bool by_role = use_role_gemms(x);
  count_path(by_role ? CpuPath::kAvx512RoleGemms : CpuPath::kGeneric);

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
    if (by_role) return forward_by_role(spec, tables, xc, roles, a, lora_B, router_weight, shared_gate_weight, scaling,
                                        y, out);
    const std::vector<Batch> batches = plan_role_batches(roles);
    const std::map<int64_t, RoleBlock> blocks =
        make_blocks(spec, batches, a, lora_B, router_weight, shared_gate_weight, n >= kStackMinTokens);
    run_work(plan_work(batches), [&](const Batch& b, int64_t) {
      const RoleBlock& blk = blocks.at(b.key);
      const at::Tensor ext = blk.shrink_and_logits(b.take(xc));  // [n, W*r + E + gated (+ pad)]
      at::Tensor gated = at::empty({b.size(), blk.lora_width}, x.options());
      at::parallel_for(0, b.size(), kTokenGrain, [&](int64_t begin, int64_t end) {  // inline when nested
        route_and_gate<scalar_t>(b, begin, end, blk, tables, ext.data_ptr<scalar_t>(), ext.size(1), scaling, k_max,
                                 e_total, rank, index_p, weight_p, probs_p, shared_p, shrink_p,
                                 gated.data_ptr<scalar_t>());
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
  if (use_role_gemms(x)) {  // fp32: per role, one GEMM per kind over all its tokens (role_gemms.h)
    count_path(CpuPath::kAvx512RoleGemms);
    const SavedRouting<float> routing{index.data_ptr<int32_t>(), w.data_ptr<float>(), saved.data_ptr<float>(),
                                      gw_in.data_ptr<float>(),   gp_in.data_ptr<float>(), probs.data_ptr<float>(),
                                      shared_logits.data_ptr<float>()};
    auto [grad_a, grad_b, grad_router, grad_shared] = backward_by_role(
        spec, tables, routing, xc, gy, roles, a, lora_B, router_weight, shared_gate_weight, scaling, grad_x);
    return {grad_x, grad_a, grad_b, grad_router, grad_shared};
  }
  count_path(CpuPath::kGeneric);
  const std::vector<Batch> batches = plan_role_batches(roles);
  const std::map<int64_t, RoleBlock> blocks =
      make_blocks(spec, batches, a, lora_B, router_weight, shared_gate_weight, /*stacked=*/true);
  const WorkPlan plan = plan_work(batches);
  // Per worker, role -> (grad of rows, grad of b_cols), in the accumulation dtype; a worker's first
  // batch of a role writes them, later ones add.
  std::vector<std::map<int64_t, std::pair<at::Tensor, at::Tensor>>> grads(plan.size());

  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "mor_linear_backward_cpu", [&] {
    const SavedRouting<scalar_t> routing{index.data_ptr<int32_t>(), w.data_ptr<scalar_t>(), saved.data_ptr<scalar_t>(),
                                         gw_in.data_ptr<float>(),   gp_in.data_ptr<float>(),  probs.data_ptr<float>(),
                                         shared_logits.data_ptr<float>()};
    run_work(plan, [&](const Batch& b, int64_t worker) {
      const RoleBlock& blk = blocks.at(b.key);
      const at::Tensor gyb = b.take(gy), xb = b.take(xc);
      const at::Tensor grad_gated = at::mm(gyb, blk.b_cols).contiguous();  // [n, lora_width]
      at::Tensor gated = at::empty({b.size(), blk.lora_width}, x.options());
      at::Tensor grad_ext = at::empty({b.size(), blk.width}, x.options());  // [dL/dshrink | dL/dlogits]
      at::parallel_for(0, b.size(), kTokenGrain, [&](int64_t begin, int64_t end) {  // inline when nested
        token_backward<scalar_t>(b, begin, end, blk, tables, routing, scaling, k_max, e_total, rank,
                                 grad_gated.data_ptr<scalar_t>(), gated.data_ptr<scalar_t>(),
                                 grad_ext.data_ptr<scalar_t>());
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
  return {grad_x, contiguous_as(grad_a, dt), contiguous_as(grad_b, dt), contiguous_as(grad_router, dt),
          contiguous_as(grad_shared, dt)};
}

TORCH_LIBRARY_IMPL(mor_ext, CPU, m) {
  m.impl("mor_linear", &mor_linear_cpu);
  m.impl("mor_linear_backward", &mor_linear_backward_cpu);
}

}  // namespace mor_ext::cpu
