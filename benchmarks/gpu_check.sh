#!/usr/bin/env bash
# The one GPU check: build with CUDA, run the CUDA tests (and the CPU suite, which checks the torch
# version there), a compute-sanitizer memcheck pass, and the GPU benchmarks; print one table last.
# Made for the lent H100/H200 machines (torch 2.11.0+cu130, Python 3.12, nvcc 13.0, no network);
# fits in about 6 minutes. Logs and the table go to the directory given as $1, or $MOR_GPU_OUT, or
# $OUT (the device tool's), or ./gpu-check.
#
#   bash benchmarks/gpu_check.sh "$OUT"
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
out=${1:-${MOR_GPU_OUT:-${OUT:-gpu-check}}}
mkdir -p "$out"
PY=${PY:-python3}
summary=()
step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $out/NAME.log, record the outcome
  local name=$1 limit=$2; shift 2
  local t0=$SECONDS
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  summary+=("| $name | $([[ $rc == 0 ]] && echo ok || echo "FAILED ($rc)") | $((SECONDS - t0)) s |")
  return $rc
}

# The image's default g++ (/opt/gcc, 13.3) was seen (2026-11-26, H100) to give an extension with its
# own copy of libstdc++'s stream code: formatting an integer into a C++ error message then crashed
# in a locale facet of the other copy. Prefer the system compiler when there is one.
if [[ -z "${CXX:-}" && -x /usr/bin/g++ ]]; then export CXX=/usr/bin/g++ CUDAHOSTCXX=/usr/bin/g++; fi
{ nvidia-smi -L; "$PY" -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"; nvcc --version | tail -1
  echo "c++: ${CXX:-$(command -v c++)} ($("${CXX:-c++}" --version | head -1))"; } > "$out/env.log" 2>&1
# sm_90 only (the lent H100/H200): half the compile time of the default 8.0;9.0+PTX.
if ! step build 240 env MOR_EXT_CUDA=ON CMAKE_BUILD_PARALLEL_LEVEL=16 "$PY" -m pip install --no-build-isolation \
    --no-deps --no-index -v --config-settings=cmake.define.MOR_EXT_CUDA_ARCHITECTURES=9.0 .; then
  tail -40 "$out/build.log"; printf '%s\n' "${summary[@]}"; exit 1
fi
"$PY" -c "import mor_ext; print(mor_ext.describe_backend())" >> "$out/env.log" 2>&1
so=$("$PY" -c 'import mor_ext._C as c; print(c.__file__)')
if { nm -C --defined-only "$so"; nm -D -C --defined-only "$so"; } 2> /dev/null | grep -q "std::basic_ostream<char, std::char_traits<char> >& std::basic_ostream<char, std::char_traits<char> >::_M_insert<long>"; then
  echo "WARNING: $so defines libstdc++'s stream code itself (libstdc++ linked statically?): C++ error messages with numbers may crash" >> "$out/env.log"
fi
{ echo "ldd:"; ldd "$so"; } >> "$out/env.log" 2>&1
# C++ errors must reach Python as exceptions (a toolchain mismatch can turn every TORCH_CHECK into a
# crash); on a crash, cuda-gdb (which also debugs host code) records where.
errors_py='import torch, mor_ext
try:
    torch.ops.mor_ext.orthogonal_loss_layers([torch.zeros(1, 2, 3)], [torch.zeros(1, 3, 2)], [], [], [])
except ValueError as e:
    print("ok: a C++ ValueError reached Python:", str(e).splitlines()[0])'
if ! step errors 60 "$PY" -c "$errors_py" && command -v cuda-gdb > /dev/null; then
  { echo "--- cuda-gdb"; timeout 120 cuda-gdb -batch -ex run -ex bt -ex "info sharedlibrary" --args "$PY" -c "$errors_py"
    echo "--- ldd"; ldd "$("$PY" -c 'import mor_ext._C as c; print(c.__file__)')"; } >> "$out/errors.log" 2>&1
fi
# The CPU suite's validation tests (C++ errors on purpose), in one plain pytest process.
if ! step validate 90 "$PY" -m pytest tests/ops/test_input_checks.py -q -p no:cacheprovider -k "validate or bad_input or out_of_range" \
    && command -v cuda-gdb > /dev/null; then
  { echo "--- cuda-gdb"; timeout 120 cuda-gdb -batch -ex run -ex bt --args "$PY" -m pytest tests/ops/test_input_checks.py -q -x \
      -p no:cacheprovider -k "validate or bad_input or out_of_range"; } >> "$out/validate.log" 2>&1
fi
timeout_flag=()
"$PY" -c "import pytest_timeout" 2> /dev/null && timeout_flag=(-p timeout --timeout=90)
# ~370 CUDA tests, most of their time in the CPU references: 4 workers share the GPU (the image has
# pytest-xdist; without it they run in one process).
workers=()
"$PY" -c "import xdist" 2> /dev/null && workers=(-n 4)
step cuda_tests 200 "$PY" -m pytest tests/ops/test_cuda.py -q -rs -p no:cacheprovider "${timeout_flag[@]}" "${workers[@]}" \
  --durations=8
if command -v compute-sanitizer > /dev/null; then
  step memcheck 60 compute-sanitizer --tool memcheck --error-exitcode 1 "$PY" -m pytest tests/ops/test_cuda.py -q \
    -p no:cacheprovider -k "(route_matches_reference and moragent and float32) or orthogonal_products \
or (cuda_grouped_lora and small and (gaps or duplicates)) or (cuda_mor_linear and spans and bfloat16) \
or (orthogonal_grads and bfloat16) or (cuda_decode_kernels and moragent and not 300)"
fi
step bench 240 "$PY" benchmarks/bench_gpu.py
# The CPU suite last (it checks this torch version; the numbers above matter more), a few threads
# per worker so that workers do not fight over cores.
[[ -n "${GPU_CHECK_SKIP_CPU:-}" ]] || step cpu_tests 70 env OMP_NUM_THREADS=2 "$PY" -m pytest tests -q -m "not integration and not cuda" \
  -p no:cacheprovider ${workers[@]:+-n 8} "${timeout_flag[@]}"


echo; cat "$out/env.log"; echo
for name in errors validate cuda_tests cpu_tests memcheck; do [[ -f "$out/$name.log" ]] && echo "$name: $(tail -1 "$out/$name.log")"; done
echo; echo "| step | result | time |"; echo "|---|---|---:|"; printf '%s\n' "${summary[@]}"
echo; grep '^|' "$out/bench.log" || tail -20 "$out/bench.log"
