#!/bin/bash
# Longer final runs on the fewer-no-call data mix: MoR and plain LoRA at their own sweep's LR
# (sweep.json copied from the 2026-12-05 sweep on our held-out split), 50 min wall each, side by side,
# one core each, checkpoints every 12 steps; then BFCL (first 10 per category).
cd .
P=.venv/bin/python
O=runs/cmp2
mkdir -p $O && cp runs/cmp/sweep.json $O/   # each method's LR from the sweep on our own held-out split
$P benchmarks/compare_methods.py final --data runs/cmp/mix/train_fewer_refusals.jsonl --out $O \
   --methods mor lora --minutes 50 --eval-fraction 0.02 --save-steps 12 > $O/final.log 2>&1
echo FINAL_DONE
$P benchmarks/compare_methods.py evaluate --out $O --results $O/results --only mor lora --limit 10 \
   --batch-size-eval 10 --jobs 2 --heldout runs/cmp/heldout.jsonl --heldout-limit 32 \
   --categories simple_python simple_java simple_javascript multiple parallel parallel_multiple irrelevance live_simple \
   > $O/evaluate.log 2>&1
echo EVAL_DONE
