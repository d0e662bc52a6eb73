// See decode_avx512.h. The vector code is in functions compiled for AVX-512F alone (a target
// attribute, not a -m flag for the file, so no inline function of a header is ever built for a CPU
// that might lack it); elsewhere than x86-64 GCC/Clang the path is never called (avx512::available() is false).
#include "decode_avx512.h"

#include <algorithm>
#include <vector>

#include "../kernels/decode.h"

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define MOR_EXT_DECODE_AVX512 1
#include <immintrin.h>
#define MOR_AVX512 __attribute__((target("avx512f")))
#endif

namespace mor_ext::cpu {

#if defined(MOR_EXT_DECODE_AVX512)
namespace {

MOR_AVX512 __mmask16 tail_mask(int64_t left) { return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u); }

MOR_AVX512 float dot(const float* a, const float* b, int64_t n) {
  __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
  int64_t i = 0;
  for (; i + 32 <= n; i += 32) {
    acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
  }
  for (; i < n; i += 16) {
    const __mmask16 m = tail_mask(n - i);
    acc0 = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc0);
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1));
}

// y[o] += sum_s B[l_s, o, :] . gated[s, :] for every o: kernels::expand_output, 16 ranks a vector.
// `terms` lists (B of the slot's LoRA at o = 0 plus the chunk's offset, the gated chunk, its mask).
struct ExpandTerm {
  const float* b;
  const float* g;
  int64_t left;  // ranks left from this chunk on (>= 16: a full vector)
};

// The 16 sums of a[0..15]'s lanes, as one vector (s[i] = sum of a[i]'s lanes): a tree of
// shuffles and adds, 15 of each, instead of 16 horizontal reductions of ~8 instructions each.
MOR_AVX512 __m512 sums_of_16(const __m512* a) {
  __m512 b[8], c[4], d[2];
  for (int i = 0; i < 8; ++i)  // 256-bit halves: b[i] = [a[2i] in 8 lanes | a[2i+1] in 8 lanes]
    b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44),
                         _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xEE));
  for (int i = 0; i < 4; ++i)  // 128-bit lanes: c[i] = a[4i], .., a[4i+3] in 4 lanes each
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x88),
                         _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xDD));
  for (int i = 0; i < 2; ++i)  // within lanes: lane k of d[i] = 2 + 2 lanes of a[8i+k], a[8i+4+k]
    d[i] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * i], c[2 * i + 1], 0x44),
                         _mm512_shuffle_ps(c[2 * i], c[2 * i + 1], 0xEE));
  // Element 4k + j of e is the sum of a[4j + k]: one permute puts each where it belongs.
  const __m512 e = _mm512_add_ps(_mm512_shuffle_ps(d[0], d[1], 0x88), _mm512_shuffle_ps(d[0], d[1], 0xDD));
  const __m512i where = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(where, e);
}

MOR_AVX512 void expand(float* y, int64_t d_out, int64_t rank, const std::vector<ExpandTerm>& terms) {
  for (int64_t o0 = 0; o0 < d_out; o0 += 16) {  // 16 outputs: one vector of sums
    const int64_t outs = std::min<int64_t>(16, d_out - o0);
    __m512 acc[16];
    for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
    for (const ExpandTerm& term : terms) {
      const __mmask16 m = tail_mask(term.left);
      const __m512 g = _mm512_maskz_loadu_ps(m, term.g);
      const float* b = term.b + o0 * rank;
      if (outs == 16) {  // a constant trip count keeps acc in registers
        for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, b + i * rank), g, acc[i]);
      } else {
        for (int64_t i = 0; i < outs; ++i) acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, b + i * rank), g, acc[i]);
      }
    }
    const __mmask16 live = tail_mask(outs);
    _mm512_mask_storeu_ps(y + o0, live, _mm512_add_ps(_mm512_maskz_loadu_ps(live, y + o0), sums_of_16(acc)));
  }
}

std::vector<ExpandTerm> expand_terms(const float* lora_B, int64_t d_out, int64_t rank, const int32_t* index,
                                     const float* gated, int64_t k) {
  std::vector<ExpandTerm> terms;
  for (int64_t s = 0; s < k; ++s) {
    if (index[s] < 0) continue;
    for (int64_t c = 0; c < rank; c += 16)
      terms.push_back({lora_B + static_cast<int64_t>(index[s]) * d_out * rank + c, gated + s * rank + c, rank - c});
  }
  return terms;
}

}  // namespace

void decode_avx512_f32(const SpecTable& spec, const at::Tensor& x, const at::Tensor& roles, const at::Tensor& lora_A,
                       const at::Tensor& lora_B, const at::Tensor& router_weight,
                       const at::Tensor& shared_gate_weight, double scaling, at::Tensor& y, at::Tensor& lora_index,
                       at::Tensor& lora_weight, at::Tensor& router_probs, at::Tensor& shrink,
                       at::Tensor& shared_gate_logit) {
  const kernels::RoleTables tables = spec.tables();
  const int64_t n = x.size(0), d_in = x.size(1), d_out = y.size(1), rank = lora_A.size(1), k = spec.k_max,
                e_total = spec.num_experts_total;
  const float *xp = x.data_ptr<float>(), *ap = lora_A.data_ptr<float>(), *bp = lora_B.data_ptr<float>(),
              *rp = router_weight.data_ptr<float>(), *gp = shared_gate_weight.data_ptr<float>();
  const int64_t* role_p = roles.data_ptr<int64_t>();
  float* yp = y.data_ptr<float>();
  std::vector<float> ext, logits(e_total), gated(k * rank), gate_tmp(k);
  for (int64_t t = 0; t < n; ++t) {
    const int rho = static_cast<int>(role_p[t]);
    const kernels::DecodeRows rows = kernels::decode_rows(tables, rho, rank);
    ext.resize(rows.count());
    for (int64_t i = 0; i < rows.count(); ++i)
      ext[i] = dot(xp + t * d_in, kernels::decode_row(tables, rho, rank, d_in, rows, i, ap, rp, gp), d_in);
    int32_t* index = lora_index.data_ptr<int32_t>() + t * k;
    kernels::token_slots(tables, rho, rank, rows, ext.data(), logits.data(), static_cast<float>(scaling), index,
                         lora_weight.data_ptr<float>() + t * k, router_probs.data_ptr<float>() + t * e_total,
                         shared_gate_logit.data_ptr<float>() + t, shrink.data_ptr<float>() + t * k * rank,
                         gated.data(), gate_tmp.data());
    expand(yp + t * d_out, d_out, rank, expand_terms(bp, d_out, rank, index, gated.data(), k));
  }
}

#else  // not x86-64 GCC/Clang

void decode_avx512_f32(const SpecTable&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                       const at::Tensor&, const at::Tensor&, double, at::Tensor&, at::Tensor&, at::Tensor&,
                       at::Tensor&, at::Tensor&, at::Tensor&) {
  TORCH_CHECK(false, "mor_ext was built without the AVX-512 decode path");
}

#endif

}  // namespace mor_ext::cpu
