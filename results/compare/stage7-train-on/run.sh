#!/bin/bash
# A seventh stage: the sixth stage's data and wording unchanged, trained on. Each method starts from its
# sixth-stage final adapter (results/compare/stage6-chain-tools-first, runs/cmp7: weights only, a fresh
# AdamW, step 0, the same for both) and trains 60 more minutes at its own sweep's LR (MoR 3e-3, plain LoRA
# rank 231 1e-3), side by side, one core each, packed rows. The generator is run with another seed
# (7), so both methods see 3,000 trajectories they have not seen, written with the same mix, wording and
# BFCL decontamination (stage six restarted train CE at ~0.5 on its new plan wording and stopped at
# 0.12 / 0.06 after one hour: it had not settled). Then BFCL (the first 20 questions a category, the
# executor constrained to schema-valid calls) and the same held-out tools as stage six.
P=.venv/bin/python
O=runs/cmp8
mkdir -p $O && cp results/compare/sweep.json $O/
.venv/bin/mor-ext data generate --n 3000 --seed 7 --mix single=0.36,multi_step=0.10,parallel_same=0.20,parallel_multiple=0.16,refusal_near_miss=0.06,missing_argument=0.05,no_tool=0.07 \
   --out $O/train.jsonl > $O/generate.log 2>&1
.venv/bin/mor-ext data generate --split heldout --n 64 --seed 1 --out $O/heldout.jsonl > $O/generate_heldout.log 2>&1
$P benchmarks/compare_methods.py final --data $O/train.jsonl --out $O --packing --init-from runs/cmp7 \
   --methods mor lora --minutes 60 --eval-fraction 0.02 > $O/final.log 2>&1
echo FINAL_DONE
cats="simple_python simple_java simple_javascript multiple parallel parallel_multiple irrelevance live_simple"
$P benchmarks/compare_methods.py evaluate --out $O --results $O/results --only mor lora --tag args20 \
   --eval-flags='--constrain-args' --limit 20 --batch-size-eval 10 --jobs 2 --categories $cats \
   --heldout $O/heldout.jsonl --heldout-limit 32 > $O/evaluate_args20.log 2>&1
echo ARGS20_DONE
