// The six thin GEMMs of one role of a MoR layer, timed alone on one core, in the AVX-512 kernels of
// csrc/cpu/gemm_avx512.cpp (no torch needed). Shapes: T=2048 tokens of which one role owns 768 (every
// third span of 160 tokens, its rows gathered by pointer), d_in = d_out = 2048, the role's 5 LoRAs of
// rank 16 (80 columns) plus 4 router rows and the shared-gate row (85).
//
//   g++ -O3 -std=c++20 benchmarks/bench_cpu_gemms.cpp csrc/cpu/gemm_avx512.cpp -o /tmp/bench_cpu_gemms
//   /tmp/bench_cpu_gemms
//
// For comparison, MKL's GEMMs of the same shapes per span: `bench_layer.py --floor` (whole layer).
#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <vector>

#include "../csrc/cpu/gemm_avx512.h"

using namespace mor_ext::cpu::avx512;

int main() {
  if (!available()) {
    std::printf("no AVX-512F on this CPU (or ATEN_CPU_CAPABILITY rules it out)\n");
    return 0;
  }
  const int64_t tokens = 2048, d = 2048, width = 85, lora_width = 80;
  std::mt19937 gen(0);
  std::normal_distribution<float> normal;
  auto random = [&](int64_t n) {
    std::vector<float> v(n);
    for (float& x : v) x = normal(gen);
    return v;
  };
  auto x = random(tokens * d), gy = random(tokens * d), y = random(tokens * d);
  auto rows = random(width * d), b_cols = random(d * lora_width);
  auto ext = random(tokens * width), gated = random(tokens * lora_width);
  std::vector<int64_t> role;  // the role's tokens: every third span of 160
  for (int64_t t = 0; t < tokens; ++t)
    if ((t / 160) % 3 == 0) role.push_back(t);
  const int64_t n = static_cast<int64_t>(role.size());
  std::vector<const float*> x_rows(n), gy_rows(n), ext_rows(n), gated_rows(n);
  std::vector<float*> y_rows(n), ext_out(n), gated_out(n);
  for (int64_t i = 0; i < n; ++i) {
    x_rows[i] = x.data() + role[i] * d;
    gy_rows[i] = gy.data() + role[i] * d;
    y_rows[i] = y.data() + role[i] * d;
    ext_rows[i] = ext_out[i] = ext.data() + i * width;
    gated_rows[i] = gated_out[i] = gated.data() + i * lora_width;
  }

  auto time = [](const char* name, double flops, auto&& f) {
    f();
    double best = 1e9;
    for (int r = 0; r < 7; ++r) {
      const auto a = std::chrono::steady_clock::now();
      f();
      best = std::min(best, std::chrono::duration<double>(std::chrono::steady_clock::now() - a).count());
    }
    if (flops > 0) {
      std::printf("%-44s %7.2f ms  %6.1f GFLOP/s\n", name, best * 1e3, flops / best / 1e9);
    } else {
      std::printf("%-44s %7.2f ms\n", name, best * 1e3);
    }
  };
  auto packed = [](int64_t k, int64_t n_cols) { return std::vector<float>(packed_size(k, n_cols)); };
  std::printf("one role: %ld of %ld tokens, d = %ld, %ld LoRA columns + %ld logit rows, one core\n", n, tokens, d,
              lora_width, width - lora_width);

  auto shrink_b = packed(d, width), expand_b = packed(lora_width, d), grad_gated_b = packed(d, lora_width),
       grad_x_b = packed(width, d);
  time("pack rows^T (shrink's B, from [85, d])", 0, [&] {
    pack_b({rows.data(), d, /*transposed=*/true}, d, width, 0, num_panels(width), shrink_b.data());
  });
  time("pack b_cols^T (expand's B, from [d, 80])", 0, [&] {
    pack_b({b_cols.data(), lora_width, /*transposed=*/true}, lora_width, d, 0, num_panels(d), expand_b.data());
  });
  pack_b({b_cols.data(), lora_width}, d, lora_width, 0, num_panels(lora_width), grad_gated_b.data());
  pack_b({rows.data(), d}, width, d, 0, num_panels(d), grad_x_b.data());

  time("shrink   ext = x[rows] . rows^T", 2.0 * n * d * width, [&] {
    gemm_rows(0, n, width, d, x_rows.data(), 0, num_panels(width), shrink_b.data(), ext_out.data(), false);
  });
  time("expand   y[rows] += gated . b_cols^T", 2.0 * n * d * lora_width, [&] {
    gemm_rows(0, n, d, lora_width, gated_rows.data(), 0, num_panels(d), expand_b.data(), y_rows.data(), true);
  });
  time("backward grad_gated = gy[rows] . b_cols", 2.0 * n * d * lora_width, [&] {
    gemm_rows(0, n, lora_width, d, gy_rows.data(), 0, num_panels(lora_width), grad_gated_b.data(), gated_out.data(),
              false);
  });
  time("backward grad_x[rows] += grad_ext . rows", 2.0 * n * d * width, [&] {
    gemm_rows(0, n, d, width, ext_rows.data(), 0, num_panels(d), grad_x_b.data(), y_rows.data(), true);
  });
  std::vector<float> panel(n * kPanelWidth), grad_rows(width * d), grad_b_t(lora_width * d);
  auto weight_grad = [&](const float* a, int64_t m, const float* rows_of, float* out) {
    for (int64_t p = 0; p < num_panels(d); ++p) {
      pack_b({rows_of, d, false, role.data()}, n, d, p, p + 1, panel.data());
      gemm_at_panel(m, d, n, a, m, p, panel.data(), out, d, false);
    }
  };
  time("backward grad_rows = grad_ext^T . x[rows]", 2.0 * n * d * width,
       [&] { weight_grad(ext.data(), width, x.data(), grad_rows.data()); });
  time("backward grad_b^T = gated^T . gy[rows]", 2.0 * n * d * lora_width,
       [&] { weight_grad(gated.data(), lora_width, gy.data(), grad_b_t.data()); });

  // The orthogonal loss's small GEMMs (csrc/cpu/orthogonal_loss.cpp, gemm_unpacked: B as it is, no
  // packing) for one role of 4 routed rank-16 LoRAs at SmolLM2's widths, one call each as the op
  // makes it. Every one has full 16-float vectors, the case that must not run below the packed tiles.
  for (const int64_t width_in : {int64_t{576}, int64_t{1536}}) {
    const int64_t r = 16, e = 4, er = e * r;
    auto a = random(er * width_in), b = random(e * width_in * r), coef = random(er * er);
    std::vector<float> a_t(width_in * er), band(r * er), gram(r * r), grad_a(er * width_in), grad_b(width_in * r);
    for (int64_t k = 0; k < width_in; ++k)
      for (int64_t j = 0; j < er; ++j) a_t[k * er + j] = a[j * width_in + k];
    std::printf("orthogonal loss, one role: 4 LoRAs of rank 16, d_in = d_out = %ld\n", width_in);
    time("  cross   A_0 . [A_1 A_2 A_3]^T", 2.0 * r * 3 * r * width_in, [&] {
      gemm_unpacked(r, 3 * r, width_in, a.data(), width_in, 1, a_t.data() + r, er, band.data(), 3 * r, false);
    });
    time("  Gram    B_0^T . B_0", 2.0 * r * r * width_in, [&] {
      gemm_unpacked(r, r, width_in, b.data(), 1, r, b.data(), r, gram.data(), r, false);
    });
    time("  grad A  coef[0, 1:] . [A_1 A_2 A_3]", 2.0 * r * 3 * r * width_in, [&] {
      gemm_unpacked(r, width_in, 3 * r, coef.data() + r, er, 1, a.data() + r * width_in, width_in, grad_a.data(),
                    width_in, false);
    });
    time("  grad B  B_0 . others", 2.0 * width_in * r * r, [&] {
      gemm_unpacked(width_in, r, r, b.data(), r, 1, coef.data(), r, grad_b.data(), r, false);
    });
  }
  return 0;
}
