// See gemm_avx512.h.
#include "gemm_avx512.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <vector>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MOR_EXT_HAVE_AVX512 1
#include <immintrin.h>
#define MOR_AVX512 __attribute__((target("avx512f")))
#endif

namespace mor_ext::cpu::avx512 {

#if defined(MOR_EXT_HAVE_AVX512)

bool available() {
  static const bool yes = [] {
    const char* cap = std::getenv("ATEN_CPU_CAPABILITY");  // torch's switch to stay below a vector ISA
    if (cap != nullptr && (std::strcmp(cap, "default") == 0 || std::strcmp(cap, "avx2") == 0)) return false;
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") != 0;
  }();
  return yes;
}

namespace {

constexpr int kVec = 16;
static_assert(kPanelWidth % kVec == 0);
constexpr int kPanelVecs = static_cast<int>(kPanelWidth / kVec);

MOR_AVX512 __mmask16 tail_mask(int64_t left) { return left >= kVec ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u); }

// C tile (MR rows x NV vectors) = (accumulate ? C : 0) + A . B.
// A(i, k): kTransposedA ? a[k * lda + i] : a_rows[i][k]. B(k, v): with kPackedB a panel's, at
// bp + k * kPanelWidth, zero beyond the matrix; else rows at bp + k * ldb, every vector of them
// readable (gemm_unpacked copies a panel whose last vector is partial, zero-padded). So only the stores
// are masked (`last`: the lanes of the last vector), after the k loop: a masked load inside it makes
// GCC (12) keep the accumulators in memory and store all of them at every k step, which ran the
// unpacked tiles at ~22 G multiply-adds/s against ~55 without (one core of the dev machine's Zen 4).
// Sums over k in the `ranges` only (the rest of A is known zero).
template <int MR, int NV, bool kTransposedA, bool kPackedB>
MOR_AVX512 void tile(const KRange* ranges, int n_ranges, const float* const* a_rows, const float* a, int64_t lda,
                     const float* bp, int64_t ldb, float* const* c_rows, __mmask16 last, bool accumulate) {
  __m512 acc[MR][NV];
  for (int i = 0; i < MR; ++i)
    for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_setzero_ps();
  const float* rows[MR];
  if constexpr (!kTransposedA)
    for (int i = 0; i < MR; ++i) rows[i] = a_rows[i];
  const int64_t stride = kPackedB ? kPanelWidth : ldb;
  for (int s = 0; s < n_ranges; ++s) {
    for (int64_t k = ranges[s].begin; k < ranges[s].end; ++k) {
      __m512 b[NV];
      for (int v = 0; v < NV; ++v) b[v] = _mm512_loadu_ps(bp + k * stride + v * kVec);
      for (int i = 0; i < MR; ++i) {
        const __m512 ai = _mm512_set1_ps(kTransposedA ? a[k * lda + i] : rows[i][k]);
        for (int v = 0; v < NV; ++v) acc[i][v] = _mm512_fmadd_ps(ai, b[v], acc[i][v]);
      }
    }
  }
  for (int i = 0; i < MR; ++i) {
    for (int v = 0; v < NV; ++v) {
      float* c = c_rows[i] + v * kVec;
      const __mmask16 m = v == NV - 1 ? last : __mmask16(0xFFFF);
      __m512 r = acc[i][v];
      if (accumulate) r = _mm512_add_ps(r, _mm512_maskz_loadu_ps(m, c));
      _mm512_mask_storeu_ps(c, m, r);
    }
  }
}

template <int MR, bool kTransposedA, bool kPackedB>
MOR_AVX512 void tile_of_width(int nv, const KRange* ranges, int n_ranges, const float* const* a_rows, const float* a,
                              int64_t lda, const float* bp, int64_t ldb, float* const* c_rows, __mmask16 last,
                              bool accumulate) {
  switch (nv) {
    case 3: return tile<MR, 3, kTransposedA, kPackedB>(ranges, n_ranges, a_rows, a, lda, bp, ldb, c_rows, last, accumulate);
    case 2: return tile<MR, 2, kTransposedA, kPackedB>(ranges, n_ranges, a_rows, a, lda, bp, ldb, c_rows, last, accumulate);
    default: return tile<MR, 1, kTransposedA, kPackedB>(ranges, n_ranges, a_rows, a, lda, bp, ldb, c_rows, last, accumulate);
  }
}

// Rows [0, mi) of a tile (mi <= kTileRows) as tiles of 8, 4, 2 and 1 rows (ldb: see tile).
template <bool kTransposedA, bool kPackedB = true>
MOR_AVX512 void tile_rows(int64_t mi, int nv, const KRange* ranges, int n_ranges, const float* const* a_rows,
                          const float* a, int64_t lda, const float* bp, float* const* c_rows, __mmask16 last,
                          bool accumulate, int64_t ldb = 0) {
  // Explicit calls, not a lambda: a lambda's body would not carry the target attribute.
  int64_t i = 0;
  auto a_at = [&](int64_t row) { return kTransposedA ? a + row : nullptr; };
  auto rows_at = [&](int64_t row) { return kTransposedA ? nullptr : a_rows + row; };
  if (mi - i >= 8) {
    tile_of_width<8, kTransposedA, kPackedB>(nv, ranges, n_ranges, rows_at(i), a_at(i), lda, bp, ldb, c_rows + i, last,
                                             accumulate);
    i += 8;
  }
  if (mi - i >= 4) {
    tile_of_width<4, kTransposedA, kPackedB>(nv, ranges, n_ranges, rows_at(i), a_at(i), lda, bp, ldb, c_rows + i, last,
                                             accumulate);
    i += 4;
  }
  if (mi - i >= 2) {
    tile_of_width<2, kTransposedA, kPackedB>(nv, ranges, n_ranges, rows_at(i), a_at(i), lda, bp, ldb, c_rows + i, last,
                                             accumulate);
    i += 2;
  }
  if (mi - i >= 1)
    tile_of_width<1, kTransposedA, kPackedB>(nv, ranges, n_ranges, rows_at(i), a_at(i), lda, bp, ldb, c_rows + i, last,
                                             accumulate);
}

struct PanelColumns {
  int64_t j0, width;
  int nv;
  __mmask16 last;
};

MOR_AVX512 PanelColumns panel_columns(int64_t panel, int64_t n) {
  PanelColumns p;
  p.j0 = panel * kPanelWidth;
  p.width = std::min<int64_t>(kPanelWidth, n - p.j0);
  p.nv = static_cast<int>((p.width + kVec - 1) / kVec);
  p.last = tail_mask(p.width - (p.nv - 1) * kVec);
  return p;
}

}  // namespace

MOR_AVX512 void pack_b(const MatrixB& b, int64_t k_len, int64_t n, int64_t panel_begin, int64_t panel_end,
                       float* packed) {
  for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
    const PanelColumns cols = panel_columns(panel, n);
    float* dst = packed + (panel - panel_begin) * k_len * kPanelWidth;
    if (!b.transposed) {
      for (int64_t k = 0; k < k_len; ++k) {
        const float* src = b.base + (b.index ? b.index[k] : k) * b.ld + cols.j0;
        for (int v = 0; v < kPanelVecs; ++v) {
          const int64_t left = cols.width - v * kVec;
          const __mmask16 live = left > 0 ? tail_mask(left) : __mmask16(0);
          _mm512_storeu_ps(dst + k * kPanelWidth + v * kVec, _mm512_maskz_loadu_ps(live, src + v * kVec));
        }
      }
      continue;
    }
    // Transposed source: each source row is a column of B. In blocks of kBlock k's, so that the
    // block of the panel being written (kBlock x 48 floats) stays in L1.
    constexpr int64_t kBlock = 64;
    std::memset(dst, 0, sizeof(float) * k_len * kPanelWidth);
    for (int64_t k0 = 0; k0 < k_len; k0 += kBlock) {
      const int64_t k1 = std::min(k_len, k0 + kBlock);
      for (int64_t j = 0; j < cols.width; ++j) {
        const float* src = b.base + (cols.j0 + j) * b.ld;
        for (int64_t k = k0; k < k1; ++k) dst[k * kPanelWidth + j] = src[b.index ? b.index[k] : k];
      }
    }
  }
}

MOR_AVX512 void gemm_rows(int64_t i_begin, int64_t i_end, int64_t n, int64_t k_len, const float* const* a_rows,
                          int64_t panel_begin, int64_t panel_end, const float* packed, float* const* c_rows,
                          bool accumulate, const RowMasks& skip) {
  KRange ranges[kMaxRanges];
  for (int64_t i0 = i_begin; i0 < i_end; i0 += kTileRows) {
    const int64_t mi = std::min<int64_t>(kTileRows, i_end - i0);
    int n_ranges = 1;
    ranges[0] = {0, k_len};
    if (skip.masks != nullptr) {
      uint64_t used = 0;
      for (int64_t i = i0; i < i0 + mi; ++i) used |= skip.masks[i];
      n_ranges = k_ranges(skip, used, k_len, ranges);
    }
    for (int64_t panel = panel_begin; panel < panel_end; ++panel) {
      const PanelColumns cols = panel_columns(panel, n);
      float* c[kTileRows];
      for (int64_t i = 0; i < mi; ++i) c[i] = c_rows[i0 + i] + cols.j0;
      const float* panel_b = packed + (panel - panel_begin) * k_len * kPanelWidth;
      tile_rows<false>(mi, cols.nv, ranges, n_ranges, a_rows + i0, nullptr, 0, panel_b, c, cols.last, accumulate);
    }
  }
}

constexpr int64_t kChunk = 256;  // k's per partial sum of gemm_at_panel

MOR_AVX512 void gemm_at_panel(int64_t m, int64_t n, int64_t k_len, const float* a, int64_t lda, int64_t panel,
                              const float* panel_b, float* c, int64_t ldc, bool accumulate, const KRange* ranges,
                              const int64_t* offsets) {
  const PanelColumns cols = panel_columns(panel, n);
  const KRange all{0, k_len};
  for (int64_t i0 = 0; i0 < m; i0 += kTileRows) {
    const int64_t mi = std::min<int64_t>(kTileRows, m - i0);
    float* c_rows[kTileRows];
    for (int64_t i = 0; i < mi; ++i) c_rows[i] = c + (i0 + i) * ldc + cols.j0;
    const int64_t block = i0 / kTileRows;
    const KRange* r = offsets == nullptr ? &all : ranges + offsets[block];
    const int n_ranges = offsets == nullptr ? 1 : static_cast<int>(offsets[block + 1] - offsets[block]);
    // K here is tokens (up to thousands): summed in chunks of kChunk, each chunk's sum added to C,
    // since one fp32 accumulator over all of them drifts from the exact sum (~2x the error of a
    // BLAS GEMM at 1100 tokens).
    KRange chunk[kMaxRanges];
    int n_chunk = 0;
    int64_t in_chunk = 0;
    bool first = true;
    for (int s = 0; s < n_ranges; ++s) {
      for (int64_t k = r[s].begin; k < r[s].end;) {
        const int64_t end = std::min(r[s].end, k + (kChunk - in_chunk));
        chunk[n_chunk++] = {k, end};
        in_chunk += end - k;
        k = end;
        if (in_chunk == kChunk || n_chunk == kMaxRanges) {
          tile_rows<true>(mi, cols.nv, chunk, n_chunk, nullptr, a + i0, lda, panel_b, c_rows, cols.last,
                          accumulate || !first);
          first = false, n_chunk = 0, in_chunk = 0;
        }
      }
    }
    if (n_chunk > 0 || first)  // the rest, or zeros (or C as is) where no token is in any range
      tile_rows<true>(mi, cols.nv, chunk, n_chunk, nullptr, a + i0, lda, panel_b, c_rows, cols.last,
                      accumulate || !first);
  }
}

MOR_AVX512 void gemm_unpacked(int64_t m, int64_t n, int64_t k_len, const float* a, int64_t a_row, int64_t a_col,
                              const float* b, int64_t ldb, float* c, int64_t ldc, bool accumulate) {
  if (a_col != 1 && a_row != 1) throw std::invalid_argument("gemm_unpacked: A needs a row or column stride of 1");
  const bool transposed = a_col != 1;
  thread_local std::vector<float> padded;  // a panel whose last vector is partial, zero-padded
  for (int64_t j0 = 0; j0 < n; j0 += kPanelWidth) {
    const int64_t width = std::min<int64_t>(kPanelWidth, n - j0);
    const int nv = static_cast<int>((width + kVec - 1) / kVec);
    const __mmask16 last = tail_mask(width - (nv - 1) * kVec);
    // The tiles load whole vectors of B (see tile): a partial last vector is read from a zero-padded
    // copy of the panel (rows of kPanelWidth floats), which costs one pass over its k rows.
    const float* panel = b + j0;
    int64_t panel_ld = ldb;
    if (last != __mmask16(0xFFFF)) {
      padded.resize(k_len * kPanelWidth);
      pack_b({b, ldb}, k_len, n, j0 / kPanelWidth, j0 / kPanelWidth + 1, padded.data());
      panel = padded.data();
      panel_ld = kPanelWidth;
    }
    const KRange all{0, k_len};
    for (int64_t i0 = 0; i0 < m; i0 += kTileRows) {
      const int64_t mi = std::min<int64_t>(kTileRows, m - i0);
      const float* a_rows[kTileRows];
      float* c_rows[kTileRows];
      for (int64_t i = 0; i < mi; ++i) {
        a_rows[i] = a + (i0 + i) * a_row;
        c_rows[i] = c + (i0 + i) * ldc + j0;
      }
      if (transposed)
        tile_rows<true, false>(mi, nv, &all, 1, nullptr, a + i0, a_col, panel, c_rows, last, accumulate, panel_ld);
      else
        tile_rows<false, false>(mi, nv, &all, 1, a_rows, nullptr, 0, panel, c_rows, last, accumulate, panel_ld);
    }
  }
}

#else  // no AVX-512 build: callers check available() first

bool available() { return false; }
void pack_b(const MatrixB&, int64_t, int64_t, int64_t, int64_t, float*) {
  throw std::logic_error("mor_ext was built without its AVX-512 GEMMs");
}
void gemm_rows(int64_t, int64_t, int64_t, int64_t, const float* const*, int64_t, int64_t, const float*, float* const*,
               bool, const RowMasks&) {
  throw std::logic_error("mor_ext was built without its AVX-512 GEMMs");
}
void gemm_at_panel(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, float*, int64_t, bool,
                   const KRange*, const int64_t*) {
  throw std::logic_error("mor_ext was built without its AVX-512 GEMMs");
}
void gemm_unpacked(int64_t, int64_t, int64_t, const float*, int64_t, int64_t, const float*, int64_t, float*, int64_t,
                   bool) {
  throw std::logic_error("mor_ext was built without its AVX-512 GEMMs");
}

#endif

}  // namespace mor_ext::cpu::avx512
