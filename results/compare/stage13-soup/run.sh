#!/usr/bin/env bash
# A thirteenth stage (twenty-second session): no training. Each method's adapter is the parameter-wise
# mean of its stage-nine adapter (runs/cmp10) and its stage-ten adapter (runs/cmp11, which continued
# from stage nine for 40 minutes on parallel-heavy data): weight averaging ("model soup" / WiSE-FT
# interpolation) by one rule for both methods (`mor-ext adapter average`, weights 0.5 / 0.5, every
# tensor: LoRA A and B, router and shared-gate weights). Chosen on our own held-out tools first (the
# first 20 episodes of stages nine to twelve), then BFCL's first 10 questions of the six non-live AST
# categories and irrelevance, as stage nine. Decoding: --constrain-args (with the token cap on the
# schema parts llguidance compiles, new this session; stage nine is re-run under it below).
# Machine: a 2-core AMD EPYC without AVX-512, one core a run.
set -euo pipefail
P=.venv/bin/python
O=runs/soup
for m in mor lora; do
  .venv/bin/mor-ext adapter average runs/cmp10/final/$m runs/cmp11/final/$m --out $O/$m
done
# One method's first 20 held-out-tool episodes on one core: $1 the adapter, $2 the method, $3 the
# output directory, $4 the log.
heldout20() {
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/mor-ext eval heldout --data runs/cmp10/heldout.jsonl --adapter "$1" \
     --method "$2" --limit 20 --batch-size 10 --constrain-args --out "$3" > "$4" 2>&1
}
# 1. held-out tools: the averages, and stage nine again under this session's grammar (same episodes)
for m in mor lora; do heldout20 $O/$m $m $O/results/$m-heldout20-args $O/heldout20_${m}_args.log & done
wait
for m in mor lora; do heldout20 runs/cmp10/final/$m $m $O/recheck/stage9-$m-heldout20-args $O/recheck/stage9_${m}.log & done
wait
echo HELDOUT_DONE
# 2. BFCL (the averages won on the held-out tools for both methods), the command of stage nine's runs
cats="simple_python simple_java simple_javascript multiple parallel parallel_multiple irrelevance"
for m in mor lora; do
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $P -m mor_ext.cli eval bfcl --adapter $O/$m --method $m --categories $cats \
     --limit 10 --batch-size 10 --out $O/results/$m-args10 --no-progress --constrain-args > $O/bfcl_${m}_args10.log 2>&1 &
done
wait
echo ARGS10_DONE
# 3. held-out tools only (not run on BFCL this session): stage ten alone, and the averages weighted
# 0.75 stage nine / 0.25 stage ten, the same 20 episodes
for m in mor lora; do
  .venv/bin/mor-ext adapter average runs/cmp10/final/$m runs/cmp11/final/$m --weights 0.75 0.25 --out runs/soup75/$m
done
for m in mor lora; do heldout20 runs/cmp11/final/$m $m $O/extra/stage10-$m-heldout20-args $O/extra/stage10_${m}.log & done
wait
for m in mor lora; do heldout20 runs/soup75/$m $m $O/extra/soup75-$m-heldout20-args $O/extra/soup75_${m}.log & done
wait
echo EXTRA_DONE
