#!/bin/bash
# A second stage of the 50-minute runs (results/compare/longer-fewer-refusals/run.sh): each method
# resumes from its latest checkpoint there (MoR step 48, plain LoRA step 36: weights, AdamW state,
# step) and trains 50 more minutes, side by side, one core each, on data regenerated with the same
# mix, seed and decontamination by the generator with varied, count-stating plan wordings
# (single, parallel_same, parallel_multiple). Same LR as before (each method's own sweep). No
# checkpoints on the way, so no evaluations inside the 50 minutes (they took ~25% of stage one's).
# Then BFCL (first 10 per category), the executor constrained to schema-valid calls, and greedy.
cd .
P=.venv/bin/python
O=runs/cmp3
mkdir -p $O && cp runs/cmp2/sweep.json $O/
.venv/bin/mor-ext data generate --n 3000 --mix single=0.36,multi_step=0.10,parallel_same=0.20,parallel_multiple=0.16,refusal_near_miss=0.06,missing_argument=0.05,no_tool=0.07 \
   --out $O/train.jsonl > $O/generate.log 2>&1
$P benchmarks/compare_methods.py final --data $O/train.jsonl --out $O --resume-from runs/cmp2 \
   --methods mor lora --minutes 50 --eval-fraction 0.02 > $O/final.log 2>&1
echo FINAL_DONE
cats="simple_python simple_java simple_javascript multiple parallel parallel_multiple irrelevance live_simple"
$P benchmarks/compare_methods.py evaluate --out $O --results $O/results --only mor lora --tag args \
   --eval-flags='--constrain-args' --limit 10 --batch-size-eval 10 --jobs 2 --categories $cats \
   > $O/evaluate_args.log 2>&1
echo ARGS_DONE
$P benchmarks/compare_methods.py evaluate --out $O --results $O/results --only mor lora --limit 10 \
   --batch-size-eval 10 --jobs 2 --heldout runs/cmp/heldout.jsonl --heldout-limit 32 --categories $cats \
   > $O/evaluate.log 2>&1
echo EVAL_DONE
# Afterwards (same session): the first 20 questions per category, the executor constrained as above.
$P benchmarks/compare_methods.py evaluate --out $O --results $O/results --only mor lora --tag args20 \
   --eval-flags='--constrain-args' --limit 20 --batch-size-eval 10 --jobs 2 --categories $cats \
   > $O/evaluate_args20.log 2>&1
echo ARGS20_DONE
