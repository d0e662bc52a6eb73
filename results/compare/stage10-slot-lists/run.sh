#!/bin/bash
# A tenth stage: the ninth stage's adapters trained on, with parallel requests worded as BFCL words
# them. In stage nine MoR listed one request where BFCL's parallel questions put several values in one
# slot ("a loan term of 15, 20 and 30 years", "Apple, Google and Microsoft") and merged requests of
# different tools asked in one sentence ("the area and circumference of a circle"). New data (seed
# 10), still --list-requests, adds two request forms: slot_list (same-tool requests with the values
# listed in the varied slot: "What is 17, 61 and 6.7 seconds in minutes?") and joined (a
# parallel_multiple query in one sentence: "Find 145 and 465 minutes in seconds and 157 watts in
# kilowatts."), and a mix closer to BFCL's non-live AST weights (half of it is parallel): single 0.36,
# parallel_same 0.24 (was 0.20), parallel_multiple 0.20 (was 0.16), multi_step 0.08, near-miss 0.04,
# missing argument 0.03, no_tool 0.05. Each method from its stage-nine final adapter (runs/cmp10:
# weights only, a fresh AdamW), 40 more minutes at its own sweep's LR (MoR 3e-3, plain LoRA rank 231
# 1e-3), side by side, one core each, packed rows. Same data, seed and budget for both methods.
# Evaluation: the first 10 BFCL questions of the six non-live AST categories and irrelevance, the
# executor constrained to schema-valid calls, then the first 10 held-out-tool episodes.
P=.venv/bin/python
O=runs/cmp11
mkdir -p $O && cp results/compare/sweep.json $O/
.venv/bin/mor-ext data generate --n 3000 --seed 10 --list-requests \
   --forms and_list,respectively,for_each,bullets,slot_list,joined \
   --mix single=0.36,multi_step=0.08,parallel_same=0.24,parallel_multiple=0.20,refusal_near_miss=0.04,missing_argument=0.03,no_tool=0.05 \
   --out $O/train.jsonl > $O/generate.log 2>&1
.venv/bin/mor-ext data generate --split heldout --n 64 --seed 1 --out $O/heldout.jsonl > $O/generate_heldout.log 2>&1
$P benchmarks/compare_methods.py final --data $O/train.jsonl --out $O --packing --init-from runs/cmp10 \
   --methods mor lora --minutes 40 --eval-fraction 0.02 > $O/final.log 2>&1
echo FINAL_DONE
cats="simple_python simple_java simple_javascript multiple parallel parallel_multiple irrelevance"
$P benchmarks/compare_methods.py evaluate --out $O --results $O/results --only mor lora --tag args10 \
   --eval-flags='--constrain-args' --limit 10 --batch-size-eval 10 --jobs 2 --categories $cats \
   > $O/evaluate_args10.log 2>&1
echo ARGS10_DONE
.venv/bin/mor-ext eval heldout --data $O/heldout.jsonl --adapter $O/final/lora --method lora --limit 10 --batch-size 10 \
   --out $O/results/lora-args10/heldout > $O/heldout_lora.log 2>&1 &
.venv/bin/mor-ext eval heldout --data $O/heldout.jsonl --adapter $O/final/mor --method mor --limit 10 --batch-size 10 \
   --out $O/results/mor-args10/heldout > $O/heldout_mor.log 2>&1
wait
echo HELDOUT_DONE
