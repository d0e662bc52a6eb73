#!/usr/bin/env bash
# Stage eleven: the decoding choice on our own held-out tools (never on BFCL). Each adapter of $1
# (runs/cmp10: stage nine, runs/cmp11: stage ten) answers the first $LIMIT (default 20) held-out-tool episodes under
# --constrain-args alone and with --calls-from-plan; $2: mor or lora (one method per call, one core).
set -euo pipefail
O=$1; M=$2
for flags in "--constrain-args" "--constrain-args --calls-from-plan"; do
  tag=$( [ "$flags" = "--constrain-args" ] && echo args || echo plan )
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/mor-ext eval heldout --data $O/heldout.jsonl --adapter $O/final/$M \
     --method $M --limit ${LIMIT:-20} --batch-size 10 $flags --out $O/results/$M-heldout${LIMIT:-20}-$tag > $O/heldout${LIMIT:-20}_${M}_$tag.log 2>&1
done
echo HELDOUT20_${M}_DONE
