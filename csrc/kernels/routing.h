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

// probs[0..n) = softmax(logits[0..n)), max-subtracted, in fp32.
MOR_HD void softmax(const float* logits, int n, float* probs) {
  float m = -INFINITY;
  for (int i = 0; i < n; ++i) m = fmaxf(m, logits[i]);
  float sum = 0.0f;
  for (int i = 0; i < n; ++i) {
    probs[i] = expf(logits[i] - m);
    sum += probs[i];
  }
  const float inv = 1.0f / sum;
  for (int i = 0; i < n; ++i) probs[i] *= inv;
}

// out[0..k) = indices of the k largest logits, descending; ties go to the lower index (the order
// the reference's stable sort gives). k <= n. Selection by logit, not probability, because softmax
// is monotonic and the logits do not collapse to equal values where fp32 probabilities can.
MOR_HD void top_k_desc(const float* logits, int n, int k, int* out) {
  for (int s = 0; s < k; ++s) {
    int best = -1;
    for (int i = 0; i < n; ++i) {
      bool taken = false;
      for (int q = 0; q < s; ++q) taken |= (out[q] == i);
      if (!taken && (best < 0 || logits[i] > logits[best])) best = i;
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

}  // namespace mor_ext::kernels
