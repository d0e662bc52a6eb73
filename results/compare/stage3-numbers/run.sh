#!/bin/bash
# A third stage of the comparison: each method starts from its second-stage final adapter
# (results/compare/continued-varied-plans/run.sh, runs/cmp3: weights only, a fresh AdamW, step 0,
# the same for both) and trains 50 more minutes at its own sweep's LR, side by side, one core each,
# on data regenerated with the same mix, seed and decontamination by the generator whose single
# episodes now draw 30% of their tools from those that take several numbers, often with a plan that
# counts the values and still makes one call (BFCL "multiple": MoR planned N calls for N values).
# Then BFCL, the first 20 questions per category, the executor constrained to schema-valid calls,
# and the held-out tools.
cd .
P=.venv/bin/python
O=runs/cmp4
mkdir -p $O && cp runs/cmp3/sweep.json $O/
.venv/bin/mor-ext data generate --n 3000 --mix single=0.36,multi_step=0.10,parallel_same=0.20,parallel_multiple=0.16,refusal_near_miss=0.06,missing_argument=0.05,no_tool=0.07 \
   --out $O/train.jsonl > $O/generate.log 2>&1
$P benchmarks/compare_methods.py final --data $O/train.jsonl --out $O --init-from runs/cmp3 \
   --methods mor lora --minutes 50 --eval-fraction 0.02 > $O/final.log 2>&1
echo FINAL_DONE
cats="simple_python simple_java simple_javascript multiple parallel parallel_multiple irrelevance live_simple"
$P benchmarks/compare_methods.py evaluate --out $O --results $O/results --only mor lora --tag args20 \
   --eval-flags='--constrain-args' --limit 20 --batch-size-eval 10 --jobs 2 --categories $cats \
   --heldout runs/cmp/heldout.jsonl --heldout-limit 32 > $O/evaluate_args20.log 2>&1
echo ARGS20_DONE
