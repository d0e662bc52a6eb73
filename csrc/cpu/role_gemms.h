// The AVX-512 GEMMs of gemm_avx512.h over the gathered tokens of one role, on all threads.
//
// A role's tokens are a Batch (a contiguous run, or gathered rows); its rows of x, y, grad_y and
// grad_x are addressed through row pointers, so no role ever copies its rows together. Each output
// tile is computed by one thread with a fixed summation order: results do not depend on the number
// of threads.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <vector>

#include "gemm_avx512.h"
#include "token_batches.h"

namespace mor_ext::cpu {

// Pointers to the rows of `t` (2-D, contiguous fp32) that the batch's tokens own.
template <typename T>
std::vector<T*> token_rows(T* base, int64_t ld, const Batch& b) {
  std::vector<T*> rows(b.size());
  for (int64_t i = 0; i < b.size(); ++i) rows[i] = base + b.token(i) * ld;
  return rows;
}

// Pointers to every row of a contiguous 2-D fp32 tensor.
inline std::vector<float*> all_rows(const at::Tensor& t) {
  std::vector<float*> rows(t.size(0));
  for (int64_t i = 0; i < t.size(0); ++i) rows[i] = t.data_ptr<float>() + i * t.size(1);
  return rows;
}

inline std::vector<const float*> const_rows(const at::Tensor& t) {
  const std::vector<float*> rows = all_rows(t);
  return {rows.begin(), rows.end()};
}

// c_rows[i][:n] (+)= sum_k a_rows[i][k] * B(k, :n) for all i: B packed once (panels over threads),
// then the rows split over threads.
inline void gemm_rows(const std::vector<const float*>& a_rows, int64_t k, const avx512::MatrixB& b, int64_t n,
                      const std::vector<float*>& c_rows, bool accumulate) {
  const int64_t m = static_cast<int64_t>(a_rows.size());
  if (m == 0 || n == 0) return;
  at::Tensor packed = at::empty({avx512::packed_size(k, n)}, at::TensorOptions().dtype(at::kFloat));
  float* pp = packed.data_ptr<float>();
  at::parallel_for(0, avx512::num_panels(n), 1, [&](int64_t p0, int64_t p1) {
    avx512::pack_b(b, k, n, p0, p1, pp + p0 * k * avx512::kPanelWidth);
  });
  at::parallel_for(0, m, 4 * avx512::kTileRows, [&](int64_t i0, int64_t i1) {
    avx512::gemm_rows(i0, i1, n, k, a_rows.data(), pp, c_rows.data(), accumulate);
  });
}

// c [m, n] = a^T . B, where a is [k, m] contiguous fp32 and B(k, :) a row of k tokens: the
// panels of columns split over threads, each packed into the thread's own buffer.
inline at::Tensor gemm_at(const at::Tensor& a, const avx512::MatrixB& b, int64_t n) {
  const int64_t k = a.size(0), m = a.size(1);
  if (k == 0) return at::zeros({m, n}, a.options());
  at::Tensor c = at::empty({m, n}, a.options());
  float* cp = c.data_ptr<float>();
  const float* ap = a.data_ptr<float>();
  at::parallel_for(0, avx512::num_panels(n), 1, [&](int64_t p0, int64_t p1) {
    std::vector<float> panel(k * avx512::kPanelWidth);
    for (int64_t p = p0; p < p1; ++p) {
      avx512::pack_b(b, k, n, p, p + 1, panel.data());
      avx512::gemm_at_panel(m, n, k, ap, m, p, panel.data(), cp, n, /*accumulate=*/false);
    }
  });
  return c;
}

}  // namespace mor_ext::cpu
