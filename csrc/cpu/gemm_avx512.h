// fp32 GEMMs for the thin shapes of a MoR layer, in AVX-512, with the gathers fused in.
//
// The C++ layer path computes, per role, six GEMMs whose one side is the role's ~85 LoRA/router
// columns: shrink x[rows] . R^T, expand gated . B^T into y[rows], and in backward gy[rows] . B,
// grad_ext . R into grad_x[rows], gated^T . gy[rows] and grad_ext^T . x[rows]. With BLAS these run
// either per contiguous span of a role (short GEMMs: MKL reached 70-80 GFLOP/s on one core of the
// dev machine's Zen 4, against 88 for the square frozen GEMM) or after copying the role's rows
// together. Here the row gather is part of the GEMM: A's and C's rows are pointers, B is packed into
// 48-column panels, and a 8 x 48 register tile (24 zmm accumulators) runs the inner loop.
//
// This header includes no ATen (the .cpp's vector code is built for AVX-512F through a target
// attribute; see decode_avx512.cpp for why not a -m flag).
#pragma once

#include <cstdint>

namespace mor_ext::cpu::avx512 {

// True where AVX-512F is present, built in, and not disabled through ATEN_CPU_CAPABILITY.
bool available();

constexpr int64_t kPanelWidth = 48;  // columns of a packed B panel: 3 vectors of 16 floats
constexpr int64_t kTileRows = 8;     // rows of C a register tile computes

// B(k, j) for k < K, j < N: base[row(k) * ld + j], or with `transposed` base[j * ld + row(k)],
// where row(k) = index ? index[k] : k.
struct MatrixB {
  const float* base = nullptr;
  int64_t ld = 0;
  bool transposed = false;
  const int64_t* index = nullptr;
};

// A range [begin, end) of the K dimension that a tile sums over: where A is known to be zero outside
// the ranges (the LoRAs a token's router did not select), the tiles skip it.
struct KRange {
  int64_t begin = 0, end = 0;
};
// At most this many ranges per tile: 64 LoRAs give at most 32 disjoint ranges, and one tail.
constexpr int kMaxRanges = 34;

// Per row of A, a bit per block of `unit` columns of K: where bit u is clear, A(i, k) is zero for
// k in [u * unit, (u + 1) * unit). Columns from units * unit on are never skipped. masks == nullptr:
// A may be nonzero anywhere.
struct RowMasks {
  const uint64_t* masks = nullptr;
  int64_t unit = 0, units = 0;
};

// The ranges of [0, k_len) outside the units whose bits are all clear in `used` (merged where they
// touch); returns their count (<= kMaxRanges).
inline int k_ranges(const RowMasks& m, uint64_t used, int64_t k_len, KRange* out) {
  int n = 0;
  auto add = [&](int64_t begin, int64_t end) {
    if (n > 0 && out[n - 1].end == begin) {
      out[n - 1].end = end;
    } else {
      out[n++] = {begin, end};
    }
  };
  for (int64_t u = 0; u < m.units; ++u)
    if ((used >> u) & 1u) add(u * m.unit, (u + 1) * m.unit);
  if (m.units * m.unit < k_len) add(m.units * m.unit, k_len);
  return n;
}

inline int64_t num_panels(int64_t n) { return (n + kPanelWidth - 1) / kPanelWidth; }
// Floats of a packed B ([panel][K][kPanelWidth], zero beyond column N).
inline int64_t packed_size(int64_t k, int64_t n) { return num_panels(n) * k * kPanelWidth; }

// Packs panels [panel_begin, panel_end) of B into `packed`, panel p at packed + (p - panel_begin) * K * kPanelWidth.
void pack_b(const MatrixB& b, int64_t k, int64_t n, int64_t panel_begin, int64_t panel_end, float* packed);

// For rows i in [i_begin, i_end) and the columns of panels [panel_begin, panel_end) (packed by pack_b
// at `packed`): C(i, j) = (accumulate ? C(i, j) : 0) + sum_k a_rows[i][k] * B(k, j), with
// C(i, j) = c_rows[i][j]. Each tile of rows runs over all the panels while its rows of A are in cache.
// With `skip`, a tile sums only over the K ranges that some of its rows may hold nonzeros in (callers
// order the rows so that the rows of a tile share their masks).
void gemm_rows(int64_t i_begin, int64_t i_end, int64_t n, int64_t k, const float* const* a_rows,
               int64_t panel_begin, int64_t panel_end, const float* packed, float* const* c_rows, bool accumulate,
               const RowMasks& skip = {});

// For all rows i < M and the columns of one packed panel (panel `panel`, its K x kPanelWidth floats at
// `panel_b`): C(i, j) = (accumulate ? C(i, j) : 0) + sum_k a[k * lda + i] * B(k, j), with
// C(i, j) = c[i * ldc + j]. A is given transposed, as the [K, M] matrix the kernels hold.
// `offsets` (or nullptr: all of K): the K ranges of each block of kTileRows rows of C, block b's at
// ranges[offsets[b]] .. ranges[offsets[b + 1]] (see tile_k_ranges in role_gemms.h).
void gemm_at_panel(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, int64_t panel, const float* panel_b,
                   float* c, int64_t ldc, bool accumulate, const KRange* ranges = nullptr,
                   const int64_t* offsets = nullptr);

// For i < m, j < n: C(i, j) = (accumulate ? C(i, j) : 0) + sum_k A(i, k) * B(k, j), with
// A(i, k) = a[i * a_row + k * a_col] (a_row or a_col must be 1), B(k, j) = b[k * ldb + j] (B read
// in place; only a last panel whose width is not a multiple of 16 is packed) and C(i, j) =
// c[i * ldc + j]. For the small GEMMs of the loss ops (r x r products, r-column outputs), where
// packing all of B would cost more than the GEMM.
void gemm_unpacked(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
                   int64_t ldb, float* c, int64_t ldc, bool accumulate);

}  // namespace mor_ext::cpu::avx512
