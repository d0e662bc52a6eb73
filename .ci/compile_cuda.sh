#!/usr/bin/env bash
# CUDA compile gate. For each torch version in TORCH_HEADER_VERSIONS (default: 2.14.1, the newest
# CUDA build CI knows, and 2.11.0, what the H100/H200 machines carry), it unpacks torch/include from
# that version's CUDA wheel and
#   - compiles every csrc/cuda/*.cu with the local nvcc for sm_80 and sm_90 (+PTX), with -Xptxas -v
#     so the log shows registers and spills per kernel;
#   - checks that every C++ source compiles as in a CUDA build (-DMOR_EXT_WITH_CUDA=1, syntax only:
#     the CPU build of this machine compiles them without the CUDA parts).
# The versions run side by side (one compiler each). Fails on any error.
#
#   .ci/compile_cuda.sh [LOG_DIR]          (default: build/cuda-gate)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log_dir=${1:-build/cuda-gate}
versions=(${TORCH_HEADER_VERSIONS:-2.14.1 2.11.0})
mkdir -p "$log_dir"
shopt -s nullglob
sources=(csrc/cuda/*.cu)
cxx_sources=(csrc/*.cpp csrc/aten/*.cpp csrc/cpu/*.cpp)
if (( ${#sources[@]} == 0 )); then
  echo "cuda gate: no .cu files"
  exit 0
fi
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[[ -x "$NVCC" ]] || { echo "cuda gate: nvcc not found" >&2; exit 1; }
PY=${PY:-.venv/bin/python}
CXX=${CXX:-g++}
py_include=$("$PY" -c 'import sysconfig; print(sysconfig.get_paths()["include"])')

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# gate VERSION: every check against that version's headers; its output goes to $log_dir/VERSION/.
gate() {
  local version=$1 out="$log_dir/$1" status=0
  mkdir -p "$out" "$work/$version"
  "$PY" -m pip download --disable-pip-version-check --no-deps --quiet -d "$work/$version/wheel" "torch==$version"
  local wheel
  wheel=$(ls "$work/$version"/wheel/torch-"$version"-*.whl)
  "$PY" - "$wheel" "$work/$version/headers" <<'PYEOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("torch/include/")])
PYEOF
  local inc="$work/$version/headers/torch/include"
  for src in "${sources[@]}"; do
    local name
    name=$(basename "$src" .cu)
    if "$NVCC" -std=c++20 -O3 -c "$src" -o "$work/$version/$name.o" \
        -I"$inc" -I"$inc/torch/csrc/api/include" -Icsrc \
        -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
        -gencode arch=compute_90,code=compute_90 \
        --expt-relaxed-constexpr -Xcompiler -fPIC -Xptxas -v \
        > "$out/$name.log" 2>&1; then
      echo "cuda gate [torch $version]: $src compiles (sm_80, sm_90, compute_90)"
      grep -E "registers|spill" "$out/$name.log" | sed "s/^/  [$version] /" || true
    else
      status=1
      echo "cuda gate [torch $version]: FAILED to compile $src" >&2
      grep -E "error" "$out/$name.log" | head -40 >&2 || tail -40 "$out/$name.log" >&2
    fi
  done
  for src in "${cxx_sources[@]}"; do
    local name
    name=$(basename "$src" .cpp)
    if ! "$CXX" -std=c++20 -fsyntax-only -fPIC -I"$inc" -I"$inc/torch/csrc/api/include" -I"$py_include" -Icsrc \
        -DTORCH_EXTENSION_NAME=_C -DMOR_EXT_WITH_CUDA=1 "$src" > "$out/cxx-$name.log" 2>&1; then
      status=1
      echo "cuda gate [torch $version]: FAILED to compile $src as in a CUDA build" >&2
      grep -E "error" "$out/cxx-$name.log" | head -20 >&2 || tail -20 "$out/cxx-$name.log" >&2
    fi
  done
  (( status == 0 )) && echo "cuda gate [torch $version]: all ${#sources[@]} CUDA sources compile for sm_80 and sm_90, and all ${#cxx_sources[@]} C++ sources as in a CUDA build"
  return $status
}

pids=()
for version in "${versions[@]}"; do
  gate "$version" > "$log_dir/gate-$version.out" 2>&1 &
  pids+=($!)
done
status=0
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || status=1
  cat "$log_dir/gate-${versions[$i]}.out"
done
if (( status == 0 )); then echo "cuda gate: passed for torch ${versions[*]}"; else echo "cuda gate: FAILED" >&2; fi
exit $status
