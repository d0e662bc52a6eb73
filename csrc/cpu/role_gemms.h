// The AVX-512 GEMMs of gemm_avx512.h over the tokens of each role, every role's GEMM of a kind in
// one parallel region.
//
// A role's tokens are a Batch (a contiguous run, or gathered rows); its rows of x, y, grad_y and
// grad_x are addressed through row pointers, so no role ever copies its rows together. A layer
// runs a handful of these GEMMs per role, each a few hundred microseconds at SmolLM2's sizes, so
// the roles share their parallel regions instead of paying a fork and join each. Each output tile
// is computed by one thread with a fixed summation order: results do not depend on the number of
// threads.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "gemm_avx512.h"
#include "token_batches.h"

namespace mor_ext::cpu {

// Pointers to the rows of a contiguous 2-D array that the batch's tokens own.
template <typename T>
std::vector<T*> token_rows(T* base, int64_t ld, const Batch& b) {
  std::vector<T*> rows(b.size());
  for (int64_t i = 0; i < b.size(); ++i) rows[i] = base + b.token(i) * ld;
  return rows;
}

// Pointers to every row of a contiguous [rows, ld] array.
template <typename T>
std::vector<T*> rows_of(T* base, int64_t rows, int64_t ld) {
  std::vector<T*> out(rows);
  for (int64_t i = 0; i < rows; ++i) out[i] = base + i * ld;
  return out;
}

// Calls f(i) for every item i, in one parallel region: the items, in order, are cut into one
// contiguous range per thread of about equal total cost (roles have very different token counts, so
// an even split by count leaves a thread idle).
template <typename F>
void parallel_items(const std::vector<int64_t>& costs, const F& f) {
  const int64_t n = static_cast<int64_t>(costs.size());
  const int64_t threads = std::min<int64_t>(n, at::in_parallel_region() ? 1 : at::get_num_threads());
  if (threads <= 1) {
    for (int64_t i = 0; i < n; ++i) f(i);
    return;
  }
  std::vector<int64_t> cut(threads + 1, n);  // thread t runs items [cut[t], cut[t + 1])
  cut[0] = 0;
  int64_t total = 0, done = 0, t = 1;
  for (int64_t c : costs) total += c;
  for (int64_t i = 0; i < n && t < threads; ++i) {
    done += costs[i];
    while (t < threads && done * threads >= total * t) cut[t++] = i + 1;
  }
  at::parallel_for(0, threads, 1, [&](int64_t t0, int64_t t1) {
    for (int64_t w = t0; w < t1; ++w)
      for (int64_t i = cut[w]; i < cut[w + 1]; ++i) f(i);
  });
}

// Calls f(job, begin, end) over [0, sizes[job]) of every job, in blocks of `grain`, in one parallel region.
template <typename F>
void for_each_block(const std::vector<int64_t>& sizes, int64_t grain, const F& f) {
  std::vector<std::pair<int64_t, int64_t>> blocks;  // (job, first index)
  std::vector<int64_t> costs;
  for (size_t job = 0; job < sizes.size(); ++job)
    for (int64_t begin = 0; begin < sizes[job]; begin += grain) {
      blocks.emplace_back(job, begin);
      costs.push_back(std::min(grain, sizes[job] - begin));
    }
  parallel_items(costs, [&](int64_t i) {
    const auto [job, begin] = blocks[i];
    f(static_cast<size_t>(job), begin, std::min(begin + grain, sizes[job]));
  });
}

// c_rows[i][:n] (+)= sum_k a_rows[i][k] * B(k, :n), for every row i.
struct RowsGemm {
  std::vector<const float*> a_rows;
  int64_t k = 0;
  avx512::MatrixB b;
  int64_t n = 0;
  std::vector<float*> c_rows;
  bool accumulate = false;
  // Optional, per row: the LoRAs (blocks of `unit` columns of A, the first `units`) the row's token
  // uses; A is zero in the others, which the tiles skip (avx512::RowMasks).
  std::vector<uint64_t> row_masks;
  int64_t unit = 0, units = 0;
};

// Runs every GEMM: their B's packed in one parallel region (an item per panel), then all their rows
// in another, in tiles of 32 rows that each run over all panels while their rows of A are in cache.
inline void run_gemms(const std::vector<RowsGemm>& gemms) {
  constexpr int64_t kRowsPerItem = 4 * avx512::kTileRows;
  std::vector<int64_t> offsets;  // of each GEMM's packed B in one buffer: one allocation per call
  std::vector<std::pair<size_t, int64_t>> panels, blocks;  // (GEMM, panel), (GEMM, first row)
  std::vector<int64_t> panel_costs, block_costs;
  int64_t total = 0;
  for (size_t j = 0; j < gemms.size(); ++j) {
    const RowsGemm& g = gemms[j];
    const int64_t m = g.n == 0 ? 0 : static_cast<int64_t>(g.a_rows.size());
    offsets.push_back(total);
    total += m == 0 ? 0 : avx512::packed_size(g.k, g.n);
    for (int64_t p = 0; m > 0 && p < avx512::num_panels(g.n); ++p) {
      panels.emplace_back(j, p);
      panel_costs.push_back(g.k);
    }
    for (int64_t r = 0; r < m; r += kRowsPerItem) {
      blocks.emplace_back(j, r);
      block_costs.push_back(std::min(kRowsPerItem, m - r) * g.k * g.n);
    }
  }
  const at::Tensor buffer = at::empty({total}, at::TensorOptions().dtype(at::kFloat));
  float* const packed = buffer.data_ptr<float>();
  parallel_items(panel_costs, [&](int64_t i) {
    const auto [j, p] = panels[i];
    const RowsGemm& g = gemms[j];
    avx512::pack_b(g.b, g.k, g.n, p, p + 1, packed + offsets[j] + p * g.k * avx512::kPanelWidth);
  });
  parallel_items(block_costs, [&](int64_t i) {
    const auto [j, r] = blocks[i];
    const RowsGemm& g = gemms[j];
    const int64_t m = static_cast<int64_t>(g.a_rows.size());
    const avx512::RowMasks skip{g.row_masks.empty() ? nullptr : g.row_masks.data(), g.unit, g.units};
    avx512::gemm_rows(r, std::min(m, r + kRowsPerItem), g.n, g.k, g.a_rows.data(), 0, avx512::num_panels(g.n),
                      packed + offsets[j], g.c_rows.data(), g.accumulate, skip);
  });
}

// c = a^T . B into a contiguous [m, n] array, where a is [k, m] (contiguous fp32) and B(k, :) belongs
// to the k-th token (e.g. rows of x or grad_y).
struct TransposedAGemm {
  const float* a = nullptr;
  int64_t k = 0, m = 0;
  avx512::MatrixB b;
  int64_t n = 0;
  float* c = nullptr;
  // Optional, per token k: the LoRAs (blocks of `unit` rows of C, the first `units`) it uses; its
  // row of a is zero in the others, so that row of C sums over the tokens that use its LoRA only.
  const uint64_t* k_masks = nullptr;
  int64_t unit = 0, units = 0;
};

// The K ranges (runs of tokens) each block of kTileRows rows of c sums over, for gemm_at_panel:
// block b's at ranges[offsets[b]] .. ranges[offsets[b + 1]]. Rows past the masked LoRAs (router and
// gate rows) take every token. Tokens ordered by mask make few runs.
inline void tile_k_ranges(const TransposedAGemm& g, std::vector<avx512::KRange>& ranges,
                          std::vector<int64_t>& offsets) {
  offsets.assign(1, 0);
  for (int64_t i0 = 0; i0 < g.m; i0 += avx512::kTileRows) {
    const int64_t i1 = std::min(g.m, i0 + avx512::kTileRows);
    if (i1 > g.units * g.unit) {
      ranges.push_back({0, g.k});
    } else {
      uint64_t needed = 0;
      for (int64_t u = i0 / g.unit; u <= (i1 - 1) / g.unit; ++u) needed |= uint64_t{1} << u;
      for (int64_t t = 0; t < g.k; ++t) {
        if ((g.k_masks[t] & needed) == 0) continue;
        if (static_cast<int64_t>(ranges.size()) > offsets.back() && ranges.back().end == t) {
          ranges.back().end = t + 1;
        } else {
          ranges.push_back({t, t + 1});
        }
      }
    }
    offsets.push_back(static_cast<int64_t>(ranges.size()));
  }
}

// All GEMMs' panels of columns in one region, each panel packed into its thread's own buffer.
inline void run_gemms(const std::vector<TransposedAGemm>& gemms) {
  std::vector<std::pair<size_t, int64_t>> items;  // (GEMM, panel)
  std::vector<int64_t> costs;
  std::vector<std::vector<avx512::KRange>> ranges(gemms.size());
  std::vector<std::vector<int64_t>> offsets(gemms.size());
  for (size_t j = 0; j < gemms.size(); ++j) {
    const TransposedAGemm& g = gemms[j];
    if (g.k == 0) std::fill(g.c, g.c + g.m * g.n, 0.0f);  // no tokens: a zero gradient
    if (g.k > 0 && g.k_masks != nullptr) tile_k_ranges(g, ranges[j], offsets[j]);
    for (int64_t p = 0; g.k > 0 && p < avx512::num_panels(g.n); ++p) {
      items.emplace_back(j, p);
      costs.push_back(g.k * g.m);
    }
  }
  parallel_items(costs, [&](int64_t i) {
    const auto [j, p] = items[i];
    const TransposedAGemm& g = gemms[j];
    thread_local std::vector<float> panel;
    panel.resize(g.k * avx512::kPanelWidth);
    avx512::pack_b(g.b, g.k, g.n, p, p + 1, panel.data());
    const bool skip = g.k_masks != nullptr;
    avx512::gemm_at_panel(g.m, g.n, g.k, g.a, g.m, p, panel.data(), g.c, g.n, /*accumulate=*/false,
                          skip ? ranges[j].data() : nullptr, skip ? offsets[j].data() : nullptr);
  });
}

}  // namespace mor_ext::cpu
