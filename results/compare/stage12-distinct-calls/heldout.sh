#!/usr/bin/env bash
# Stage twelve: the decoding choice on our own held-out tools first (never on BFCL). The adapter of
# method $2 (mor or lora) in $1 (runs/cmp10: stage nine) answers the first $LIMIT (default 20)
# held-out-tool episodes under --constrain-args alone and with --distinct-calls (one method per call,
# one core).
set -euo pipefail
O=$1; M=$2; L=${LIMIT:-20}
for flags in "--constrain-args" "--constrain-args --distinct-calls"; do
  tag=$( [ "$flags" = "--constrain-args" ] && echo args || echo distinct )
  OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 .venv/bin/mor-ext eval heldout --data $O/heldout.jsonl --adapter $O/final/$M \
     --method $M --limit $L --batch-size 10 $flags --out $O/results/$M-heldout$L-$tag > $O/heldout${L}_${M}_$tag.log 2>&1
done
echo HELDOUT${L}_${M}_DONE
