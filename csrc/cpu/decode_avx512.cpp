// See decode_avx512.h. The vector code is in functions compiled for AVX-512F alone (a target
// attribute, not a -m flag for the file, so no inline function of a header is ever built for a CPU
// that might lack it); elsewhere than x86-64 GCC/Clang the path is never called (avx512::available() is false).
#include "decode_avx512.h"

#include <ATen/Parallel.h>

#include <algorithm>
#include <array>
#include <cstdlib>
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

// A phase (the selected LoRAs' shrink, the expand) is spread over the threads only when it reads at
// least this many bytes of adapter: below, a parallel region's fork and join cost more than the
// second thread's share of the reads. (The frozen GEMV before it runs on all threads already.)
constexpr int64_t kParallelMinBytes = 96 * 1024;

// How many threads the decode path may use: torch's, or fewer through MOR_EXT_BENCH_DECODE_THREADS
// (read per call, like mor_linear's other benchmark thresholds; for interleaved A/B runs only).
int decode_threads() {
  const char* v = std::getenv("MOR_EXT_BENCH_DECODE_THREADS");
  const int threads = at::get_num_threads();
  return v != nullptr && v[0] != '\0' ? std::max(1, std::min(threads, std::atoi(v))) : threads;
}

// Runs body(begin, end) over [0, count): in one chunk per thread where the phase reads enough bytes
// to pay for a parallel region, else inline.
template <typename Body>
void split(int64_t count, int64_t bytes, int threads, const Body& body) {
  if (count <= 0) return;
  if (threads <= 1 || count == 1 || bytes < kParallelMinBytes) return body(0, count);
  at::parallel_for(0, count, (count + threads - 1) / threads, body);
}

MOR_AVX512 __mmask16 tail_mask(int64_t left) { return left >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << left) - 1u); }

// The 16 sums of a[0..15]'s lanes, as one vector (s[i] = sum of a[i]'s lanes): a tree of
// shuffles and adds, 15 of each, instead of 16 horizontal reductions of ~8 instructions each. Every
// a[i] is summed in the same order, whichever slot it takes.
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

// Vectors whose lane sums are wanted, each with where its sum goes; reduced 16 at a time.
struct LaneSums {
  __m512 v[16];
  float* dst[16];
  int size = 0;

  MOR_AVX512 void flush() {
    if (size == 0) return;
    for (int i = size; i < 16; ++i) v[i] = _mm512_setzero_ps();
    alignas(64) float s[16];
    _mm512_store_ps(s, sums_of_16(v));
    for (int i = 0; i < size; ++i) *dst[i] = s[i];
    size = 0;
  }
  MOR_AVX512 void push(__m512 a, float* to) {
    v[size] = a, dst[size] = to;
    if (++size == 16) flush();
  }
};

// <row, xs[u]> for u < U, as vectors whose lanes are still to be summed: two accumulators per pair
// (even and odd chunks of 16 floats, a masked tail in the even one), added. The row is read once
// for all U tokens, from start to end. A pair's order of operations is the same whatever else is
// computed with it, so a token's results do not depend on the other tokens of the call.
template <int U>
MOR_AVX512 void row_dots(const float* row, const float* const* xs, int64_t d, __m512* out) {
  __m512 even[U], odd[U];
  for (int u = 0; u < U; ++u) even[u] = odd[u] = _mm512_setzero_ps();
  int64_t c = 0;
  for (; c + 32 <= d; c += 32) {
    const __m512 r0 = _mm512_loadu_ps(row + c), r1 = _mm512_loadu_ps(row + c + 16);
    for (int u = 0; u < U; ++u) {
      even[u] = _mm512_fmadd_ps(r0, _mm512_loadu_ps(xs[u] + c), even[u]);
      odd[u] = _mm512_fmadd_ps(r1, _mm512_loadu_ps(xs[u] + c + 16), odd[u]);
    }
  }
  for (; c < d; c += 16) {
    const __mmask16 m = tail_mask(d - c);
    const __m512 r = _mm512_maskz_loadu_ps(m, row + c);
    for (int u = 0; u < U; ++u) even[u] = _mm512_fmadd_ps(r, _mm512_maskz_loadu_ps(m, xs[u] + c), even[u]);
  }
  for (int u = 0; u < U; ++u) out[u] = _mm512_add_ps(even[u], odd[u]);
}

// out[i * U + u] = <rows[i], xs[u]> for i < nrows, u < U.
template <int U>
MOR_AVX512 void dot_rows_of(const float* const* rows, int64_t nrows, const float* const* xs, int64_t d, float* out) {
  LaneSums sums;
  __m512 p[U];
  for (int64_t i = 0; i < nrows; ++i) {
    row_dots<U>(rows[i], xs, d, p);
    for (int u = 0; u < U; ++u) sums.push(p[u], out + i * U + u);
  }
  sums.flush();
}

void dot_rows(const float* const* rows, int64_t nrows, const float* const* xs, int tokens, int64_t d, float* out) {
  switch (tokens) {
    case 1: return dot_rows_of<1>(rows, nrows, xs, d, out);
    case 2: return dot_rows_of<2>(rows, nrows, xs, d, out);
    case 3: return dot_rows_of<3>(rows, nrows, xs, d, out);
    case 4: return dot_rows_of<4>(rows, nrows, xs, d, out);
    case 5: return dot_rows_of<5>(rows, nrows, xs, d, out);
    case 6: return dot_rows_of<6>(rows, nrows, xs, d, out);
    case 7: return dot_rows_of<7>(rows, nrows, xs, d, out);
    case 8: return dot_rows_of<8>(rows, nrows, xs, d, out);
    default: TORCH_INTERNAL_ASSERT(false, "dot_rows: ", tokens, " tokens");
  }
}

// One term of a token's expand (kernels::expand_output, 16 ranks a vector): B of the slot's LoRA at
// o = 0 plus the chunk's offset, the gated chunk, and the ranks left from this chunk on (>= 16: a
// full vector).
struct ExpandTerm {
  const float* b;
  const float* g;
  int64_t left;
};

// For outputs [o_begin, o_end) (o_begin a multiple of 16) of every token: y[t][o] += sum over the
// token's terms of B[l, o, chunk] . g. Blocks of 16 outputs are the outer loop, so a block's B rows,
// read from memory for the first token that uses them, are in L1 for the others.
MOR_AVX512 void expand(int64_t o_begin, int64_t o_end, int64_t rank, int64_t n, const int64_t* term_start,
                       const ExpandTerm* terms, float* const* y) {
  const bool full_chunks = rank % 16 == 0;  // every term a full vector of 16 ranks
  for (int64_t o0 = o_begin; o0 < o_end; o0 += 16) {
    const int64_t outs = std::min<int64_t>(16, o_end - o0);
    const __mmask16 live = tail_mask(outs);
    for (int64_t t = 0; t < n; ++t) {
      if (term_start[t] == term_start[t + 1]) continue;  // no LoRA: y is the frozen layer's
      __m512 acc[16];
      for (int i = 0; i < 16; ++i) acc[i] = _mm512_setzero_ps();
      if (outs == 16 && full_chunks) {
        // A constant trip count and no masked load keep acc in registers: with a masked load in
        // the loop GCC (12) stores all 16 accumulators to memory every term.
        for (int64_t q = term_start[t]; q < term_start[t + 1]; ++q) {
          const __m512 g = _mm512_loadu_ps(terms[q].g);
          const float* b = terms[q].b + o0 * rank;
          for (int i = 0; i < 16; ++i) acc[i] = _mm512_fmadd_ps(_mm512_loadu_ps(b + i * rank), g, acc[i]);
        }
      } else {
        for (int64_t q = term_start[t]; q < term_start[t + 1]; ++q) {
          const ExpandTerm& term = terms[q];
          const __mmask16 m = tail_mask(term.left);
          const __m512 g = _mm512_maskz_loadu_ps(m, term.g);
          const float* b = term.b + o0 * rank;
          for (int64_t i = 0; i < outs; ++i) acc[i] = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, b + i * rank), g, acc[i]);
        }
      }
      float* yo = y[t] + o0;
      _mm512_mask_storeu_ps(yo, live, _mm512_add_ps(_mm512_maskz_loadu_ps(live, yo), sums_of_16(acc)));
    }
  }
}

// The tokens of one role in the call.
struct RoleGroup {
  int rho = 0, size = 0;
  int64_t tokens[kDecodeMaxTokens] = {};
  const float* xs[kDecodeMaxTokens] = {};
};

}  // namespace

void decode_avx512_f32(const SpecTable& spec, const at::Tensor& x, const at::Tensor& roles, const at::Tensor& lora_A,
                       const at::Tensor& lora_B, const at::Tensor& router_weight,
                       const at::Tensor& shared_gate_weight, double scaling, at::Tensor& y, at::Tensor& lora_index,
                       at::Tensor& lora_weight, at::Tensor& router_probs, at::Tensor& shrink,
                       at::Tensor& shared_gate_logit) {
  const kernels::RoleTables tables = spec.tables();
  const int64_t n = x.size(0), d_in = x.size(1), d_out = y.size(1), rank = lora_A.size(1), k = spec.k_max,
                e_total = spec.num_experts_total;
  TORCH_INTERNAL_ASSERT(n <= kDecodeMaxTokens, "the decode path takes at most ", kDecodeMaxTokens, " tokens");
  const float *xp = x.data_ptr<float>(), *ap = lora_A.data_ptr<float>(), *bp = lora_B.data_ptr<float>(),
              *rp = router_weight.data_ptr<float>(), *gp = shared_gate_weight.data_ptr<float>();
  const int64_t* role_p = roles.data_ptr<int64_t>();
  int32_t* index_p = lora_index.data_ptr<int32_t>();
  float *yp = y.data_ptr<float>(), *weight_p = lora_weight.data_ptr<float>(), *probs_p = router_probs.data_ptr<float>(),
        *shrink_p = shrink.data_ptr<float>(), *shared_p = shared_gate_logit.data_ptr<float>();
  const int threads = decode_threads();

  // The tokens of each role present (few tokens, few roles: groups in order of first appearance).
  std::array<RoleGroup, kernels::kMaxRoles> groups;
  int num_groups = 0;
  std::array<int, kernels::kMaxRoles> group_of;
  group_of.fill(-1);
  for (int64_t t = 0; t < n; ++t) {
    const int rho = static_cast<int>(role_p[t]);
    if (!kernels::valid_role(tables, rho)) continue;
    if (group_of[rho] < 0) groups[num_groups].rho = rho, group_of[rho] = num_groups++;
    RoleGroup& g = groups[group_of[rho]];
    g.tokens[g.size] = t, g.xs[g.size++] = xp + t * d_in;
  }

  // Scratch, reused between calls: routing dots [n][E+1 max] (and a role's [E+1][tokens] before),
  // slot products h and gated [n][K*r], and per role the dots of the LoRAs its tokens selected
  // [LoRAs * r][tokens].
  int64_t max_route = 0, max_loras = 0;
  for (int rho = 0; rho < tables.num_roles; ++rho) {
    max_route = std::max<int64_t>(max_route, tables.num_experts[rho] + 1);
    max_loras = std::max<int64_t>(max_loras, tables.num_experts[rho] + tables.shared[rho]);
  }
  const int64_t slot_floats = k * rank, lora_floats = max_loras * rank * kDecodeMaxTokens;
  thread_local std::vector<float> scratch;
  scratch.resize((n + kDecodeMaxTokens) * max_route + 2 * n * slot_floats + num_groups * lora_floats + e_total + k);
  float* route_dots = scratch.data();
  float* role_dots = route_dots + n * max_route;
  float* h = role_dots + kDecodeMaxTokens * max_route;
  float* gated = h + n * slot_floats;
  float* lora_dots = gated + n * slot_floats;
  float* logits = lora_dots + num_groups * lora_floats;
  float* gate_tmp = logits + e_total;

  // 1. Routing first: each role's router rows and shared-gate row, read once for all its tokens.
  for (int gi = 0; gi < num_groups; ++gi) {
    const RoleGroup& g = groups[gi];
    const kernels::RouteRows rows = kernels::route_rows(tables, g.rho);
    std::array<const float*, kernels::kMaxExperts + 1> row_ptrs;
    for (int64_t i = 0; i < rows.count(); ++i) row_ptrs[i] = kernels::route_row(tables, g.rho, d_in, rows, i, rp, gp);
    dot_rows(row_ptrs.data(), rows.count(), g.xs, g.size, d_in, role_dots);  // [rows][tokens]
    for (int u = 0; u < g.size; ++u)
      for (int64_t i = 0; i < rows.count(); ++i) route_dots[g.tokens[u] * max_route + i] = role_dots[i * g.size + u];
  }
  for (int64_t t = 0; t < n; ++t) {
    const int rho = static_cast<int>(role_p[t]);
    kernels::token_route(tables, rho, kernels::route_rows(tables, rho), route_dots + t * max_route, logits,
                         index_p + t * k, weight_p + t * k, probs_p + t * e_total, shared_p + t, gate_tmp);
  }

  // 2. The shrink of the LoRAs that some token of the role selected, each A row read once for all
  //    the role's tokens (one job per LoRA), spread over the threads when there is enough to read.
  struct ShrinkJob {
    int group;
    int64_t lora, position;  // LoRA index; its place in the group's lora_dots
  };
  // Thread-local buffers keep their capacity between calls; the parallel bodies below reach them
  // through these references (a thread_local named inside them would be the worker's own).
  thread_local std::vector<ShrinkJob> job_buffer;
  thread_local std::vector<int64_t> positions;  // [group][LoRA of the role] -> its place, or -1
  std::vector<ShrinkJob>& jobs = job_buffer;
  jobs.clear();
  positions.assign(num_groups * (max_loras + 1), -1);
  for (int gi = 0; gi < num_groups; ++gi) {
    const RoleGroup& g = groups[gi];
    const int64_t first = tables.lora_start[g.rho];
    int64_t used = 0;
    for (int u = 0; u < g.size; ++u)
      for (int64_t s = 0; s < k; ++s) {
        const int32_t l = index_p[g.tokens[u] * k + s];
        if (l < 0 || positions[gi * (max_loras + 1) + (l - first)] >= 0) continue;
        positions[gi * (max_loras + 1) + (l - first)] = used;
        jobs.push_back({gi, l, used++});
      }
  }
  split(static_cast<int64_t>(jobs.size()), static_cast<int64_t>(jobs.size()) * rank * d_in * 4, threads,
        [&](int64_t begin, int64_t end) {
          std::vector<const float*> rows(rank);
          for (int64_t q = begin; q < end; ++q) {
            const ShrinkJob& job = jobs[q];
            const RoleGroup& g = groups[job.group];
            for (int64_t j = 0; j < rank; ++j) rows[j] = ap + (job.lora * rank + j) * d_in;
            dot_rows(rows.data(), rank, g.xs, g.size, d_in,
                     lora_dots + job.group * lora_floats + job.position * rank * g.size);
          }
        });

  // 3. Each token's slots: the saved shrink and the gated shrink (kernels::token_slots).
  for (int64_t t = 0; t < n; ++t) {
    const int rho = static_cast<int>(role_p[t]);
    const int32_t* index = index_p + t * k;
    if (kernels::valid_role(tables, rho)) {
      const int gi = group_of[rho];
      const RoleGroup& g = groups[gi];
      const int u = static_cast<int>(std::find(g.tokens, g.tokens + g.size, t) - g.tokens);
      for (int64_t s = 0; s < k; ++s) {
        if (index[s] < 0) continue;
        const int64_t pos = positions[gi * (max_loras + 1) + (index[s] - tables.lora_start[rho])];
        const float* dots = lora_dots + gi * lora_floats + pos * rank * g.size;
        for (int64_t j = 0; j < rank; ++j) h[t * slot_floats + s * rank + j] = dots[j * g.size + u];
      }
    }
    kernels::token_slots(static_cast<int>(k), rank, index, weight_p + t * k, h + t * slot_floats,
                         static_cast<float>(scaling), shrink_p + t * slot_floats, gated + t * slot_floats);
  }

  // 4. The expand: y += B . gated over each token's slots, spread over blocks of outputs.
  thread_local std::vector<ExpandTerm> term_buffer;
  std::vector<ExpandTerm>& terms = term_buffer;
  terms.clear();
  std::array<int64_t, kDecodeMaxTokens + 1> term_start{};
  std::array<float*, kDecodeMaxTokens> y_rows{};
  for (int64_t t = 0; t < n; ++t) {
    y_rows[t] = yp + t * d_out;
    for (int64_t s = 0; s < k; ++s) {
      const int32_t l = index_p[t * k + s];
      if (l < 0) continue;
      for (int64_t c = 0; c < rank; c += 16)
        terms.push_back({bp + static_cast<int64_t>(l) * d_out * rank + c, gated + t * slot_floats + s * rank + c,
                         rank - c});
    }
    term_start[t + 1] = static_cast<int64_t>(terms.size());
  }
  const int64_t blocks = (d_out + 15) / 16;
  const int64_t expand_bytes = static_cast<int64_t>(jobs.size()) * d_out * rank * 4;
  split(blocks, expand_bytes, threads, [&](int64_t begin, int64_t end) {
    expand(begin * 16, std::min(end * 16, d_out), rank, n, term_start.data(), terms.data(), y_rows.data());
  });
}

#else  // not x86-64 GCC/Clang

void decode_avx512_f32(const SpecTable&, const at::Tensor&, const at::Tensor&, const at::Tensor&, const at::Tensor&,
                       const at::Tensor&, const at::Tensor&, double, at::Tensor&, at::Tensor&, at::Tensor&,
                       at::Tensor&, at::Tensor&, at::Tensor&) {
  TORCH_CHECK(false, "mor_ext was built without the AVX-512 decode path");
}

#endif

}  // namespace mor_ext::cpu
