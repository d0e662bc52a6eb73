#!/usr/bin/env bash
# CUDA compile gate: compiles every csrc/cuda/*.cu with the local nvcc against the headers of the
# CUDA build of torch 2.14.1 (unpacked from its wheel: torch/include only), for sm_80 and sm_90 (+PTX),
# with -Xptxas -v so the log shows registers and spills per kernel. Fails on any error.
#
#   .ci/compile_cuda.sh [LOG_DIR]          (default: build/cuda-gate)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

log_dir=${1:-build/cuda-gate}
mkdir -p "$log_dir"
shopt -s nullglob
sources=(csrc/cuda/*.cu)
if (( ${#sources[@]} == 0 )); then
  echo "cuda gate: no .cu files"
  exit 0
fi
NVCC=${NVCC:-$(command -v nvcc || echo /usr/local/cuda/bin/nvcc)}
[[ -x "$NVCC" ]] || { echo "cuda gate: nvcc not found" >&2; exit 1; }
PY=${PY:-.venv/bin/python}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "cuda gate: fetching torch 2.14.1 (CUDA build) headers"
"$PY" -m pip download --disable-pip-version-check --no-deps --quiet -d "$work/wheel" "torch==2.14.1"
wheel=$(ls "$work"/wheel/torch-2.14.1-*.whl)
"$PY" - "$wheel" "$work/torch-headers" <<'PYEOF'
import sys, zipfile
with zipfile.ZipFile(sys.argv[1]) as z:
    z.extractall(sys.argv[2], [n for n in z.namelist() if n.startswith("torch/include/")])
PYEOF
inc="$work/torch-headers/torch/include"

status=0
for src in "${sources[@]}"; do
  name=$(basename "$src" .cu)
  echo "cuda gate: $src (sm_80, sm_90, compute_90)"
  if "$NVCC" -std=c++20 -O3 -c "$src" -o "$work/$name.o" \
      -I"$inc" -I"$inc/torch/csrc/api/include" -Icsrc \
      -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 \
      -gencode arch=compute_90,code=compute_90 \
      --expt-relaxed-constexpr -Xcompiler -fPIC -Xptxas -v \
      > "$log_dir/$name.log" 2>&1; then
    grep -E "registers|spill" "$log_dir/$name.log" | sed 's/^/  /' || true
  else
    status=1
    echo "cuda gate: FAILED to compile $src" >&2
    grep -E "error" "$log_dir/$name.log" | head -40 >&2 || tail -40 "$log_dir/$name.log" >&2
  fi
done
if (( status == 0 )); then echo "cuda gate: all ${#sources[@]} CUDA sources compile for sm_80 and sm_90"; fi
exit $status
