// Batching tokens that share a block of LoRAs, for the CPU kernels of grouped_lora and mor_linear.
//
// Each token has a key (the first LoRA of its block, or its role; < 0 = no adapter) and the last
// LoRA it uses. When the tokens of a key come in long runs (agent trajectories put each role in
// spans), a batch is a contiguous run: no gather, no scatter, and adds are in-place GEMMs on views.
// Otherwise (mean run < kMinMeanRun tokens) the tokens of a key are gathered into one batch.
// Measured on the 2-core dev machine at T=2048, d=2048: runs beat gathering by ~5% of the layer.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/ThreadLocalState.h>

#include <algorithm>
#include <map>
#include <numeric>
#include <utility>
#include <vector>

namespace mor_ext::cpu {

constexpr int64_t kMinMeanRun = 32;

struct Batch {
  int64_t begin = 0, end = 0;  // a contiguous token range, when rows is undefined
  at::Tensor rows;             // int64 token indices, when the batch is gathered
  int64_t key = 0;             // shared by every token of the batch
  int64_t hi = 0;              // the last LoRA any token of the batch uses
  int64_t size() const { return rows.defined() ? rows.size(0) : end - begin; }
  int64_t token(int64_t i) const { return rows.defined() ? rows.data_ptr<int64_t>()[i] : begin + i; }
  // Tokens [lo, hi) of this batch, as a batch of the same key.
  Batch slice(int64_t lo, int64_t hi) const {
    Batch s = *this;
    if (rows.defined()) {
      s.rows = rows.narrow(0, lo, hi - lo);
    } else {
      s.begin = begin + lo, s.end = begin + hi;
    }
    return s;
  }
  at::Tensor take(const at::Tensor& t) const {
    return rows.defined() ? t.index_select(0, rows) : t.narrow(0, begin, end - begin);
  }
  // dst[rows] += a @ b, in place on a view where the batch is contiguous and dtypes allow.
  void addmm_into(at::Tensor& dst, const at::Tensor& a, const at::Tensor& b) const {
    if (!rows.defined() && dst.scalar_type() == a.scalar_type()) {
      auto view = dst.narrow(0, begin, end - begin);
      view.addmm_(a, b);
    } else if (rows.defined()) {
      dst.index_add_(0, rows, at::mm(a, b).to(dst.scalar_type()));
    } else {
      dst.narrow(0, begin, end - begin).add_(at::mm(a, b).to(dst.scalar_type()));
    }
  }
};

// key[t] < 0: token t is in no batch. hi[t]: the last LoRA token t uses (a batch keeps the max).
inline std::vector<Batch> plan_batches(const std::vector<int64_t>& key, const std::vector<int64_t>& hi,
                                       const at::TensorOptions& index_options) {
  const int64_t n = static_cast<int64_t>(key.size());
  std::vector<Batch> runs;
  int64_t active = 0;
  for (int64_t t = 0; t < n; ++t) {
    if (key[t] < 0) continue;
    ++active;
    if (!runs.empty() && runs.back().end == t && runs.back().key == key[t]) {
      runs.back().end = t + 1;
      runs.back().hi = std::max(runs.back().hi, hi[t]);
    } else {
      Batch b;
      b.begin = t, b.end = t + 1, b.key = key[t], b.hi = hi[t];
      runs.push_back(b);
    }
  }
  if (runs.empty() || active >= kMinMeanRun * static_cast<int64_t>(runs.size())) return runs;
  {  // One run per key (e.g. a single decode token) is already what gathering would give.
    std::vector<int64_t> keys;
    for (const Batch& r : runs) keys.push_back(r.key);
    std::sort(keys.begin(), keys.end());
    if (std::adjacent_find(keys.begin(), keys.end()) == keys.end()) return runs;
  }

  std::map<int64_t, std::pair<std::vector<int64_t>, int64_t>> members;  // key -> (tokens, max hi)
  for (int64_t t = 0; t < n; ++t) {
    if (key[t] < 0) continue;
    auto& m = members[key[t]];
    if (m.first.empty()) m.second = hi[t];
    m.first.push_back(t);
    m.second = std::max(m.second, hi[t]);
  }
  std::vector<Batch> groups;
  for (auto& [k, m] : members) {
    Batch b;
    b.rows = at::tensor(m.first, index_options.dtype(at::kLong));
    b.key = k, b.hi = m.second;
    groups.push_back(std::move(b));
  }
  return groups;
}

// B of the LoRAs [lo, hi] side by side as [d_out, W*r], copied once per block per call: the
// canonical [L, d_out, r] layout cannot be viewed that way.
class BlockColumnsOfB {
 public:
  explicit BlockColumnsOfB(const at::Tensor& lora_B) : lora_B_(lora_B) {}
  // Builds the blocks of all batches up front, so that get() only reads when batches run in parallel.
  void prepare(const std::vector<Batch>& batches) {
    for (const Batch& b : batches) get(b.key, b.hi);
  }
  const at::Tensor& get(int64_t lo, int64_t hi) {
    auto it = cache_.find({lo, hi});
    if (it != cache_.end()) return it->second;
    const int64_t d_out = lora_B_.size(1), rank = lora_B_.size(2), width = (hi - lo + 1) * rank;
    at::Tensor cols = lora_B_.narrow(0, lo, hi - lo + 1).permute({1, 0, 2}).reshape({d_out, width}).contiguous();
    return cache_.emplace(std::make_pair(lo, hi), std::move(cols)).first->second;
  }

 private:
  const at::Tensor& lora_B_;
  std::map<std::pair<int64_t, int64_t>, at::Tensor> cache_;
};

// Spreading batches over threads.
//
// The LoRA GEMMs of a batch are thin (n x d x ~85); MKL splits such a GEMM over threads badly: on
// the 2-core dev machine one [200, 2048] x [2048, 85] GEMM runs at 148 GFLOP/s on two threads and
// 112 on one, so two batches side by side on one thread each do 224. Each worker therefore runs
// whole batches with single-threaded GEMMs (nested in the parallel region, MKL and ATen run on the
// calling thread). Large batches are cut into chunks so the workers finish together; chunks go to
// workers longest first (LPT), a deterministic plan, so per-worker gradient sums are reproducible
// for a given thread count. Small calls (decode) keep one worker and multi-threaded GEMMs.
constexpr int64_t kMinParallelTokens = 256;  // per worker
constexpr int64_t kMinChunk = 64;

struct WorkPlan {
  std::vector<std::vector<Batch>> workers;  // the chunks each worker runs, in order
  int64_t size() const { return static_cast<int64_t>(workers.size()); }
};

inline WorkPlan plan_work(const std::vector<Batch>& batches) {
  int64_t tokens = 0;
  for (const Batch& b : batches) tokens += b.size();
  const int64_t threads = at::in_parallel_region() ? 1 : at::get_num_threads();
  const int64_t workers = std::max<int64_t>(1, std::min(threads, tokens / kMinParallelTokens));
  WorkPlan plan;
  plan.workers.resize(workers);
  if (workers == 1) {
    plan.workers[0] = batches;
    return plan;
  }
  // Four chunks per worker at most per batch size: enough to balance, big enough to keep GEMMs fast.
  const int64_t max_chunk = std::max(kMinChunk, (tokens + 4 * workers - 1) / (4 * workers));
  std::vector<Batch> chunks;
  for (const Batch& b : batches) {
    const int64_t pieces = (b.size() + max_chunk - 1) / max_chunk;
    for (int64_t p = 0; p < pieces; ++p) chunks.push_back(b.slice(b.size() * p / pieces, b.size() * (p + 1) / pieces));
  }
  std::vector<size_t> order(chunks.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](size_t i, size_t j) { return chunks[i].size() > chunks[j].size(); });
  std::vector<int64_t> load(workers, 0);
  for (size_t i : order) {
    const auto w = std::min_element(load.begin(), load.end()) - load.begin();
    load[w] += chunks[i].size();
    plan.workers[w].push_back(chunks[i]);
  }
  return plan;
}

// f(batch, worker) for every chunk of the plan; each worker's chunks run in order on one thread,
// with the caller's thread-local state (dispatch keys, grad mode, profiler), as inside an op.
template <typename F>
void run_work(const WorkPlan& plan, const F& f) {
  if (plan.size() == 1) {
    for (const Batch& b : plan.workers[0]) f(b, 0);
    return;
  }
  const at::ThreadLocalState state;
  at::parallel_for(0, plan.size(), 1, [&](int64_t begin, int64_t end) {
    at::ThreadLocalStateGuard guard(state);
    for (int64_t w = begin; w < end; ++w)
      for (const Batch& b : plan.workers[w]) f(b, w);
  });
}

}  // namespace mor_ext::cpu
