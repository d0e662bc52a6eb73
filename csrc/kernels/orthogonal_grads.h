// Gradients of the orthogonal loss from its r x r products, for all layers in one launch (docs/spec.md §4):
//   dL/dA_i = 2 g sum_{j != i} (A_i A_j^T) A_j        (A_i: r x d_in)
//   dL/dB_i = 2 g B_i sum_{j != i} B_j^T B_j          (B_i: d_out x r)
// over the routed LoRAs i, j of one role; every other LoRA's gradient is zero. Both are
//   O[p, k] = scale * sum_terms sum_q C_t[p, q] X_t[q, k]
// with r x r coefficients C_t taken from the forward's products (kernels/products.h) and r x D
// operands X_t: A_j (C_t = A_i A_j^T) for each j != i, or B_i^T once (element (q, k) = B_i[k, q];
// C_t = sum_{j != i} B_j^T B_j, symmetric).
//
// One CUDA block handles one output item and a tile of its D columns; one thread per column holds
// the r accumulators. The functions below are that thread's steps; the CPU build runs them in
// loops (orthogonal_grads_cpu) so that the tests check them without a GPU.
#pragma once

#include <cstdint>

#include "products.h"  // MOR_HD, kMaxRank

namespace mor_ext::kernels {

// One output matrix (an A_i or a B_i^T gradient), element (p, k) at out[p * out_row + k * out_col],
// and its terms [term_begin, term_begin + term_count) of the term table. Pointers as integers, so a
// table travels to the device as an int64 tensor.
struct GradItem {
  int64_t out, out_row, out_col, cols, term_begin, term_count;
};
// One term: coefficients C_t = the sum of products[coef + c] over c in [0, coef_count), c != coef_skip
// (transposed when `transposed`), operand element (q, k) at x[q * x_row + k * x_col]. An A_i term is
// one cross product (count 1, skip -1); B_i has one term, the role's Gram matrices but its own
// (count E, skip i), so each column of B_i is read and multiplied once, not E - 1 times.
struct GradTerm {
  int64_t coef, coef_count, coef_skip, transposed, x, x_row, x_col;
};
constexpr int kGradItemFields = sizeof(GradItem) / sizeof(int64_t);
constexpr int kGradTermFields = sizeof(GradTerm) / sizeof(int64_t);
constexpr int kGradCols = 128;  // output columns per CUDA block (one per thread)

// C_t[p, q] from the products table [n, r, r] (fp32), its products summed in order (directly, not
// as a total minus the skipped one, which cancels when the Gram matrices are nearly orthogonal).
MOR_HD float term_coef(const float* products, const GradTerm& term, int r, int p, int q) {
  const int64_t at = term.transposed ? q * r + p : p * r + q;
  float c = 0.0f;
  for (int64_t i = 0; i < term.coef_count; ++i)
    if (i != term.coef_skip) c += products[(term.coef + i) * r * r + at];
  return c;
}

// The steps below take the rank as a template argument R (R > 0: the rank, known at compile time, so
// a GPU thread's loops unroll and its r accumulators stay in registers instead of local memory) or
// R = 0 (the rank `r` at run time). with_rank() picks the instantiation for a rank.
template <int R>
MOR_HD constexpr int rank_of(int r) {
  return R > 0 ? R : r;
}

// acc[p] += sum_q coef[p][q] * X[q, k] for one term and one column k; coef is the term's r x r
// coefficients already laid out row-major (C_t[p, q] at coef[p * r + q], e.g. in shared memory).
template <typename T, int R = 0>
MOR_HD void accumulate_term(const GradTerm& term, const float* coef, int r, int64_t k, float* acc) {
  const int n = rank_of<R>(r);
  const T* x = reinterpret_cast<const T*>(term.x);
  float column[kMaxRank];
#pragma unroll
  for (int q = 0; q < n; ++q) column[q] = static_cast<float>(x[q * term.x_row + k * term.x_col]);
#pragma unroll
  for (int p = 0; p < n; ++p) {
    float s = 0.0f;
#pragma unroll
    for (int q = 0; q < n; ++q) s += coef[p * n + q] * column[q];
    acc[p] += s;
  }
}

template <typename T, int R = 0>
MOR_HD void store_column(const GradItem& item, int r, int64_t k, float scale, const float* acc) {
  const int n = rank_of<R>(r);
  T* out = reinterpret_cast<T*>(item.out);
#pragma unroll
  for (int p = 0; p < n; ++p) out[p * item.out_row + k * item.out_col] = static_cast<T>(scale * acc[p]);
}

// fn.template operator()<R>() with R = r for the common ranks, else R = 0 (run-time rank).
template <typename Fn>
void with_rank(int r, Fn&& fn) {
  switch (r) {
    case 4: return fn.template operator()<4>();
    case 8: return fn.template operator()<8>();
    case 16: return fn.template operator()<16>();
    case 32: return fn.template operator()<32>();
    default: return fn.template operator()<0>();
  }
}

}  // namespace mor_ext::kernels
