// Per-token bodies of mor_linear's decode path (a few tokens per call, as in generation), shared
// by the CUDA kernels (csrc/cuda/decode.cu) and their CPU emulation (csrc/cpu/decode.cpp, which the
// CPU tests check against the reference).
//
// At decode sizes the GEMM formulation is launch-bound: stacking the A rows and B columns, the
// shrink GEMM, routing, gating and the expand GEMM are eight small kernels where the frozen layer
// is one GEMV. The decode path is two kernels after the frozen GEMM:
//   1. per token, routing first: the role's router rows and shared-gate row dotted with x (each
//      rounded to x's dtype, as a GEMM's output is) route the token (token_route); then only the A
//      rows of the LoRAs it selected are dotted with x (slot_row), giving per slot the saved shrink
//      and the gated shrink scaling * w_s * A_l x (rounded to x's dtype, as the GEMM path's gated
//      matrix is) -- token_slots below. The GEMM path dots all of the role's LoRAs; reading only the
//      selected ones is what makes this path cheaper where the adapter is not in cache (decoding a
//      whole model: 4 of MoRAgent's 5 LoRAs of a role, 69 of its 85 rows);
//   2. per token and output o: y[o] += sum_s B[l_s, o, :] . gated_s -- expand_output below.
#pragma once

#include <cstdint>

#include "routing.h"  // MOR_HD, RoleTables, route_token

namespace mor_ext::kernels {

// The rows a token of role `rho` dots with x to be routed, in order: its router rows, then its
// shared-gate row when gated.
struct RouteRows {
  int64_t experts = 0;
  bool gated = false;
  MOR_HD int64_t count() const { return experts + (gated ? 1 : 0); }
};

MOR_HD RouteRows route_rows(const RoleTables& spec, int rho) {
  RouteRows d;
  if (!valid_role(spec, rho)) return d;
  d.experts = spec.num_experts[rho];
  d.gated = gated_shared(spec, rho);
  return d;
}

// Row `i` of that list, as a pointer into the parameter it comes from.
template <typename scalar_t>
MOR_HD const scalar_t* route_row(const RoleTables& spec, int rho, int64_t d_in, const RouteRows& d, int64_t i,
                                 const scalar_t* router_weight, const scalar_t* shared_gate_weight) {
  if (i < d.experts) return router_weight + (spec.router_start[rho] + i) * d_in;
  return shared_gate_weight + static_cast<int64_t>(rho) * d_in;
}

// Routes one token from its routing dot products `ext` (RouteRows order, in x's dtype). `logits` is
// scratch of E_total entries, gate_tmp of K floats. Writes index/weight [K] (weight in x's dtype),
// probs [E_total] and the shared-gate logit.
template <typename scalar_t>
MOR_HD void token_route(const RoleTables& spec, int rho, const RouteRows& d, const scalar_t* ext, scalar_t* logits,
                        int32_t* index, scalar_t* weight, float* probs, float* shared_logit, float* gate_tmp) {
  *shared_logit = d.gated ? static_cast<float>(ext[d.experts]) : 0.0f;
  if (valid_role(spec, rho))
    for (int64_t q = 0; q < d.experts; ++q) logits[spec.router_start[rho] + q] = ext[q];
  route_token(spec, rho, logits, *shared_logit, index, gate_tmp, probs);
  for (int s = 0; s < spec.k_max; ++s) weight[s] = static_cast<scalar_t>(gate_tmp[s]);  // used as stored
}

// The A row (lora_A viewed as [L*r, d_in]) whose dot with x is rank j of slot s, or nullptr for an
// empty slot: a token's slot rows are its K x r slot products, computed after routing.
template <typename scalar_t>
MOR_HD const scalar_t* slot_row(const int32_t* index, int s, int64_t j, int64_t rank, int64_t d_in,
                                const scalar_t* lora_A) {
  return index[s] < 0 ? nullptr : lora_A + (static_cast<int64_t>(index[s]) * rank + j) * d_in;
}

// Fills one routed token's slots from `h` [K, r] (A_l x of each slot's LoRA in x's dtype; anything in
// empty slots): the saved slots [K, r] (zeros in empty slots) and slot_gated [K, r] (scaling * w_s *
// h rounded to x's dtype; zeros in empty slots).
template <typename scalar_t, typename acc_t>
MOR_HD void token_slots(int k, int64_t rank, const int32_t* index, const scalar_t* weight, const scalar_t* h,
                        acc_t scaling, scalar_t* slots, acc_t* slot_gated) {
  for (int s = 0; s < k; ++s) {
    const acc_t w = scaling * static_cast<acc_t>(weight[s]);
    for (int64_t j = 0; j < rank; ++j) {
      const scalar_t v = index[s] < 0 ? scalar_t(0) : h[s * rank + j];
      slots[s * rank + j] = v;
      slot_gated[s * rank + j] = static_cast<acc_t>(static_cast<scalar_t>(w * static_cast<acc_t>(v)));
    }
  }
}

// The LoRA delta of output `o` for one token: sum over its slots s of B[l_s, o, :] . slot_gated[s, :]
// (lora_B: the canonical [L, d_out, r], contiguous).
template <typename acc_t, typename scalar_t>
MOR_HD acc_t expand_output(const scalar_t* lora_B, int64_t d_out, int64_t rank, const int32_t* index,
                           const acc_t* slot_gated, int64_t k, int64_t o) {
  acc_t sum = acc_t(0);
  for (int64_t s = 0; s < k; ++s) {
    if (index[s] < 0) continue;
    const scalar_t* b = lora_B + (static_cast<int64_t>(index[s]) * d_out + o) * rank;
    const acc_t* g = slot_gated + s * rank;
    for (int64_t j = 0; j < rank; ++j) sum += static_cast<acc_t>(b[j]) * g[j];
  }
  return sum;
}

}  // namespace mor_ext::kernels
