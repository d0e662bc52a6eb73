"""The CPU GEMM micro-benchmark (benchmarks/bench_cpu_gemms.cpp) builds and runs."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from ops.op_utils import AVX512_CPU, NEEDS_COMPILED  # tests/ops/op_utils.py

pytestmark = NEEDS_COMPILED


@pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++")
def test_cpu_gemm_benchmark_builds_and_runs(tmp_path):
    """benchmarks/bench_cpu_gemms.cpp (the AVX-512 kernels alone, standalone) keeps building against
    csrc/cpu/gemm_avx512.h and runs; on a CPU without AVX-512 it says so and exits 0."""
    root = Path(__file__).resolve().parents[2]
    exe = tmp_path / "bench_cpu_gemms"
    subprocess.run(["g++", "-O2", "-std=c++20", str(root / "benchmarks/bench_cpu_gemms.cpp"),
                    str(root / "csrc/cpu/gemm_avx512.cpp"), "-o", str(exe)], check=True)
    out = subprocess.run([str(exe)], check=True, capture_output=True, text=True).stdout
    assert ("GFLOP/s" in out) is AVX512_CPU, out
