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

inline int64_t num_panels(int64_t n) { return (n + kPanelWidth - 1) / kPanelWidth; }
// Floats of a packed B ([panel][K][kPanelWidth], zero beyond column N).
inline int64_t packed_size(int64_t k, int64_t n) { return num_panels(n) * k * kPanelWidth; }

// Packs panels [panel_begin, panel_end) of B into `packed`, panel p at packed + (p - panel_begin) * K * kPanelWidth.
void pack_b(const MatrixB& b, int64_t k, int64_t n, int64_t panel_begin, int64_t panel_end, float* packed);

// For rows i in [i_begin, i_end) and the columns of panels [panel_begin, panel_end) (packed by pack_b
// at `packed`): C(i, j) = (accumulate ? C(i, j) : 0) + sum_k a_rows[i][k] * B(k, j), with
// C(i, j) = c_rows[i][j]. Each tile of rows runs over all the panels while its rows of A are in cache.
void gemm_rows(int64_t i_begin, int64_t i_end, int64_t n, int64_t k, const float* const* a_rows,
               int64_t panel_begin, int64_t panel_end, const float* packed, float* const* c_rows, bool accumulate);

// For all rows i < M and the columns of one packed panel (panel `panel`, its K x kPanelWidth floats at
// `panel_b`): C(i, j) = (accumulate ? C(i, j) : 0) + sum_k a[k * lda + i] * B(k, j), with
// C(i, j) = c[i * ldc + j]. A is given transposed, as the [K, M] matrix the kernels hold.
void gemm_at_panel(int64_t m, int64_t n, int64_t k, const float* a, int64_t lda, int64_t panel, const float* panel_b,
                   float* c, int64_t ldc, bool accumulate);

// For i < m, j < n: C(i, j) = (accumulate ? C(i, j) : 0) + sum_k A(i, k) * B(k, j), with
// A(i, k) = a[i * a_row + k * a_col] (a_row or a_col must be 1), B(k, j) = b[k * ldb + j] (B read
// in place; only a last panel whose width is not a multiple of 16 is packed) and C(i, j) =
// c[i * ldc + j]. For the small GEMMs of the loss ops (r x r products, r-column outputs), where
// packing all of B would cost more than the GEMM.
void gemm_unpacked(int64_t m, int64_t n, int64_t k, const float* a, int64_t a_row, int64_t a_col, const float* b,
                   int64_t ldb, float* c, int64_t ldc, bool accumulate);

}  // namespace mor_ext::cpu::avx512
