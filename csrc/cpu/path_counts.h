// Counts of which of mor_linear's and the loss ops' CPU paths ran, for the tests only.
//
// The AVX-512 paths and the generic (ATen/MKL) ones may give bit-identical results on some CPUs,
// so a test cannot tell from the outputs which one ran; these counters say it directly (one relaxed
// atomic add per call, nothing per token). Read through the test-only op testing_cpu_path_counts.
#pragma once

#include <atomic>
#include <cstdint>
#include <vector>

namespace mor_ext::cpu {

// The order of testing_cpu_path_counts' result (mor_ext.ops.CPU_PATHS names them in Python).
enum class CpuPath : int {
  kAvx512Decode = 0,    // forward, a few fp32 tokens (decode_avx512.cpp)
  kAvx512RoleGemms = 1, // forward or backward, fp32, one AVX-512 GEMM per role and kind (role_gemms.h)
  kGeneric = 2,         // forward or backward through ATen GEMMs per span of a role (MKL where built)
  kAvx512Losses = 3,    // orthogonal_loss_layers or its backward, small GEMMs in AVX-512 (gemm_avx512.h)
  kGenericLosses = 4,   // the same in plain loops (no AVX-512, or MOR_EXT_BENCH_LOSSES=generic)
  kCount = 5,
};

inline std::atomic<int64_t>& path_counter(CpuPath path) {
  static std::atomic<int64_t> counters[static_cast<int>(CpuPath::kCount)] = {};
  return counters[static_cast<int>(path)];
}

inline void count_path(CpuPath path) { path_counter(path).fetch_add(1, std::memory_order_relaxed); }

inline std::vector<int64_t> path_counts() {
  std::vector<int64_t> out;
  for (int i = 0; i < static_cast<int>(CpuPath::kCount); ++i)
    out.push_back(path_counter(static_cast<CpuPath>(i)).load(std::memory_order_relaxed));
  return out;
}

}  // namespace mor_ext::cpu
