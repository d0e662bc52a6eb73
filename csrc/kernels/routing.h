// Per-token routing math, shared by the CPU kernels and (later) the CUDA kernels.
//
// Every function here works on one token's few router values (E <= a handful), so plain loops
// beat anything clever; they are `__host__ __device__` so that the CPU build runs and tests the
// exact code a GPU thread will run.
#pragma once

#include <cmath>
#include <cstdint>

#if defined(__CUDACC__)
#define MOR_HD __host__ __device__ __forceinline__
#else
#define MOR_HD inline
#endif

namespace mor_ext::kernels {

MOR_HD float sigmoid(float z) { return 1.0f / (1.0f + expf(-z)); }

// probs[0..n) = softmax(logits[0..n)), max-subtracted, in fp32. Logits of any float type (the CUDA
// kernels read them as x's dtype straight from the GEMM's output).
template <typename T>
MOR_HD void softmax(const T* logits, int n, float* probs) {
  float m = -INFINITY;
  for (int i = 0; i < n; ++i) m = fmaxf(m, static_cast<float>(logits[i]));
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    probs[i] = expf(static_cast<float>(logits[i]) - m);
    sum += probs[i];
  }
  const float inv = 1.0f / sum;
  for (int i = 0; i < n; ++i) probs[i] *= inv;
}

// out[0..k) = indices of the k largest logits, descending; ties go to the lower index (the order
// the reference's stable sort gives). k <= n. Selection by logit, not probability, because softmax
// is monotonic and the logits do not collapse to equal values where fp32 probabilities can.
template <typename T>
MOR_HD void top_k_desc(const T* logits, int n, int k, int* out) {
  for (int s = 0; s < k; ++s) {
    int best = -1;
    for (int i = 0; i < n; ++i) {
      bool taken = false;
      for (int q = 0; q < s; ++q) taken |= (out[q] == i);
      if (!taken && (best < 0 || static_cast<float>(logits[i]) > static_cast<float>(logits[best]))) best = i;
    }
    out[s] = best;
  }
}

// Sum of probs over the selected experts: the renormalisation denominator of the top-k gates.
MOR_HD float selected_mass(const float* probs, const int* selected, int k) {
  float z = 0.0f;
  for (int q = 0; q < k; ++q) z += probs[selected[q]];
  return z;
}

// Backward of  g_q = p[sel_q] / Z  and  p = softmax(z)  for one token of one role.
//   probs[0..n)       p (the forward's router_probs of the role)
//   selected[0..k)    the top-k experts, grad_gate[0..k) dL/dg for each of them
//   grad_probs[0..n)  dL/dp coming straight from router_probs (e.g. the load-balance loss)
//   grad_logits[0..n) output: dL/dz
MOR_HD void route_token_backward(const float* probs, int n, const int* selected, const float* grad_gate,
                                 int k, const float* grad_probs, float* grad_logits) {
  float z = selected_mass(probs, selected, k);
  float inv_z = k > 0 ? 1.0f / z : 0.0f;
  float gate_dot = 0.0f;  // sum_q dL/dg_q * g_q
  for (int q = 0; q < k; ++q) gate_dot += grad_gate[q] * probs[selected[q]] * inv_z;
  // dL/dp_j = grad_probs_j + [j selected at q] (dL/dg_q - gate_dot) / Z; then softmax backward.
  float p_dot = 0.0f;
  for (int j = 0; j < n; ++j) {
    float dp = grad_probs[j];
    for (int q = 0; q < k; ++q)
      if (selected[q] == j) dp += (grad_gate[q] - gate_dot) * inv_z;
    grad_logits[j] = dp;
    p_dot += probs[j] * dp;
  }
  for (int j = 0; j < n; ++j) grad_logits[j] = probs[j] * (grad_logits[j] - p_dot);
}

// The spec's per-role tables (docs/spec.md §1) in a form a host loop and a kernel launch (by value) can both carry.
constexpr int kMaxRoles = 16;
constexpr int kMaxExperts = 64;
struct RoleTables {
  int num_roles = 0, k_max = 0, e_total = 0;
  bool sigmoid_gate = true;
  int num_experts[kMaxRoles] = {}, top_k[kMaxRoles] = {}, shared[kMaxRoles] = {}, router_start[kMaxRoles] = {},
      lora_start[kMaxRoles] = {};
};

// Role ids outside 0..R-1 mean "no adapter" here. Bad ids are an error raised before any kernel
// runs (functional.py, or once per model call); this only keeps a kernel from indexing the tables
// out of bounds when the caller skipped that check.
MOR_HD bool valid_role(const RoleTables& spec, int rho) { return rho >= 0 && rho < spec.num_roles; }

// Has role `rho` a shared LoRA with a sigmoid gate (whose logit the routing reads)?
MOR_HD bool gated_shared(const RoleTables& spec, int rho) {
  return spec.sigmoid_gate && valid_role(spec, rho) && spec.shared[rho] != 0;
}

// Routes one token of role `rho` (-1: no adapter). `logits` are the E_total router logits of the
// token (fp32); `shared_logit` its role's shared-gate logit (used when the role has a gated shared
// LoRA). Writes all K_max slots (index -1 / gate 0 when unused) and all E_total probabilities
// (zero outside the role): shared slot first, then top-k in descending probability.
template <typename T>
MOR_HD void route_token(const RoleTables& spec, int rho, const T* logits, float shared_logit, int32_t* index,
                        float* gate, float* probs) {
  for (int q = 0; q < spec.k_max; ++q) index[q] = -1, gate[q] = 0.0f;
  for (int e = 0; e < spec.e_total; ++e) probs[e] = 0.0f;
  if (!valid_role(spec, rho)) return;
  int slot = 0;
  if (spec.shared[rho]) {
    index[slot] = spec.lora_start[rho];
    gate[slot] = spec.sigmoid_gate ? sigmoid(shared_logit) : 1.0f;
    ++slot;
  }
  const int e = spec.num_experts[rho], k = spec.top_k[rho];
  if (e == 0) return;
  const T* role_logits = logits + spec.router_start[rho];
  float* role_probs = probs + spec.router_start[rho];
  int selected[kMaxExperts];
  softmax(role_logits, e, role_probs);
  top_k_desc(role_logits, e, k, selected);
  const float inv_mass = k > 0 ? 1.0f / selected_mass(role_probs, selected, k) : 0.0f;
  const int first_routed = spec.lora_start[rho] + spec.shared[rho];
  for (int q = 0; q < k; ++q, ++slot) {
    index[slot] = first_routed + selected[q];
    gate[slot] = role_probs[selected[q]] * inv_mass;
  }
}

// Backward of route_token for one token: from dL/dgate (grad_gate[K_max]) and dL/dprobs
// (grad_probs[E_total]) to dL/dlogits (grad_logits[E_total], zero outside the role; any output
// type, computed in fp32) and dL/d of the shared-gate logit (returned; 0 when the role has no
// gated shared LoRA). `index` is the token's lora_index row as route_token wrote it.
template <typename G, typename Out>
MOR_HD float route_token_backward_all(const RoleTables& spec, int rho, const float* probs, const int32_t* index,
                                      const G* grad_gate, const float* grad_probs, float shared_logit,
                                      Out* grad_logits) {
  for (int e = 0; e < spec.e_total; ++e) grad_logits[e] = Out(0);
  if (!valid_role(spec, rho)) return 0.0f;
  float grad_shared_logit = 0.0f;
  int slot = 0;
  if (spec.shared[rho]) {
    if (spec.sigmoid_gate) {
      const float s = sigmoid(shared_logit);
      grad_shared_logit = static_cast<float>(grad_gate[0]) * s * (1.0f - s);
    }
    ++slot;
  }
  const int e = spec.num_experts[rho], k = spec.top_k[rho];
  if (e == 0) return grad_shared_logit;
  const int first_routed = spec.lora_start[rho] + spec.shared[rho];
  int selected[kMaxExperts];
  float gate_grad[kMaxExperts], role_grad[kMaxExperts];
  int used = 0;
  for (int q = 0; q < k; ++q) {
    // A slot that names no routed LoRA of the role (an index that route did not write: the CPU
    // ops reject it, a GPU kernel cannot) is left out rather than read outside the role's columns.
    const int s = index[slot + q] - first_routed;
    if (s < 0 || s >= e) continue;
    selected[used] = s;
    gate_grad[used++] = static_cast<float>(grad_gate[slot + q]);
  }
  const int col = spec.router_start[rho];
  route_token_backward(probs + col, e, selected, gate_grad, used, grad_probs + col, role_grad);
  for (int j = 0; j < e; ++j) grad_logits[col + j] = static_cast<Out>(role_grad[j]);
  return grad_shared_logit;
}

}  // namespace mor_ext::kernels
