#!/bin/bash
# A fourth comparison, from scratch in one stage: the earlier stages' adapters were not kept, and the
# trainer is faster since (packed rows, logits only where a label follows: ~1.6x the trajectories a
# minute). Both methods start from the base model at their own sweep's learning rate
# (results/compare/sweep.json: MoR 3e-3, plain LoRA rank 231 1e-3), train 65 minutes each, side by
# side, one core each, on the same data (the stage-three mix, the generator's plan wordings varied),
# then BFCL (the first 20 questions a category, the executor constrained to schema-valid calls) and
# the held-out tools, two evaluations at once.
P=.venv/bin/python
O=runs/cmp5
mkdir -p $O runs/cmp && cp results/compare/sweep.json $O/
.venv/bin/mor-ext data generate --n 3000 --mix single=0.36,multi_step=0.10,parallel_same=0.20,parallel_multiple=0.16,refusal_near_miss=0.06,missing_argument=0.05,no_tool=0.07 \
   --out $O/train.jsonl > $O/generate.log 2>&1
.venv/bin/mor-ext data generate --split heldout --n 64 --seed 1 --out $O/heldout.jsonl > $O/generate_heldout.log 2>&1
$P benchmarks/compare_methods.py final --data $O/train.jsonl --out $O --packing \
   --methods mor lora --minutes 65 --eval-fraction 0.02 > $O/final.log 2>&1
echo FINAL_DONE
cats="simple_python simple_java simple_javascript multiple parallel parallel_multiple irrelevance live_simple"
$P benchmarks/compare_methods.py evaluate --out $O --results $O/results --only mor lora --tag args20 \
   --eval-flags='--constrain-args' --limit 20 --batch-size-eval 10 --jobs 2 --categories $cats \
   --heldout $O/heldout.jsonl --heldout-limit 32 > $O/evaluate_args20.log 2>&1
echo ARGS20_DONE
