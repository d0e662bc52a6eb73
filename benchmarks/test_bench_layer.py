"""The bench_layer.py cases as a pytest-benchmark suite, to save and compare results across commits:

    pytest benchmarks/ --benchmark-autosave            # saves .benchmarks/...
    pytest benchmarks/ --benchmark-compare             # compares with the last saved run

Shape from MOR_BENCH_TOKENS / MOR_BENCH_D / MOR_BENCH_LAYOUT (defaults: 2048, 2048, spans).
Not part of the test suite (pyproject's testpaths is tests/).
"""

import os

import pytest
import torch

from layer_cases import CASES, Shape, make_inputs, zero_grads

SHAPE = Shape(
    tokens=int(os.environ.get("MOR_BENCH_TOKENS", 2048)),
    d_in=int(os.environ.get("MOR_BENCH_D", 2048)),
    d_out=int(os.environ.get("MOR_BENCH_D", 2048)),
    role_layout=os.environ.get("MOR_BENCH_LAYOUT", "spans"),
)


@pytest.mark.parametrize("case", list(CASES))
def test_layer_forward_backward(benchmark, case):
    torch.manual_seed(0)
    inputs = make_inputs(SHAPE)
    step = CASES[case](inputs)

    def run():
        zero_grads(inputs)
        step()

    benchmark.extra_info.update(tokens=SHAPE.tokens, d=SHAPE.d_in, layout=SHAPE.role_layout)
    benchmark.pedantic(run, warmup_rounds=1, rounds=5, iterations=1)
