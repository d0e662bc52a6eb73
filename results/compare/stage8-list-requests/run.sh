#!/bin/bash
# An eighth stage, from scratch: the adapters of stages five to seven were not kept (runs/ does not
# survive a session), so both methods start from the base model, as in stage four. The data is the
# generator of stage seven (same mix, wording and BFCL decontamination) with --list-requests: every
# first plan opens by listing the user's requests, numbered, one per call of the first executor turn,
# so that the number of calls is copied from the query request by request instead of being chosen by
# a plan's opening (the failure of stages two to seven: 16 of 20 of MoR's parallel answers had the
# wrong number of calls in stage seven). Each method at its own sweep's learning rate
# (results/compare/sweep.json: MoR 3e-3, plain LoRA rank 231 1e-3), 60 minutes each, side by side,
# one core each, packed rows; then BFCL (the executor constrained to schema-valid calls).
# This session's machine was an AMD EPYC without AVX-512 (stages four to seven ran on one with it): each
# step took ~1.7x as long, so the training covers fewer trajectories than stage four's 65 minutes, and
# the evaluation was cut to fit the session: the first 10 questions of the six non-live AST categories
# and irrelevance (stages four to seven: 20, with live_simple and the held-out tools).
# Data: the generator as of commit c524c98 (before the workspace tool family was added).
P=.venv/bin/python
O=runs/cmp9
mkdir -p $O && cp results/compare/sweep.json $O/
.venv/bin/mor-ext data generate --n 3000 --seed 8 --list-requests --mix single=0.36,multi_step=0.10,parallel_same=0.20,parallel_multiple=0.16,refusal_near_miss=0.06,missing_argument=0.05,no_tool=0.07 \
   --out $O/train.jsonl > $O/generate.log 2>&1
.venv/bin/mor-ext data generate --split heldout --n 64 --seed 1 --out $O/heldout.jsonl > $O/generate_heldout.log 2>&1
$P benchmarks/compare_methods.py final --data $O/train.jsonl --out $O --packing \
   --methods mor lora --minutes 60 --eval-fraction 0.02 > $O/final.log 2>&1
echo FINAL_DONE
cats="simple_python simple_java simple_javascript multiple parallel parallel_multiple irrelevance"
$P benchmarks/compare_methods.py evaluate --out $O --results $O/results --only mor lora --tag args10 \
   --eval-flags='--constrain-args' --limit 10 --batch-size-eval 10 --jobs 2 --categories $cats \
   > $O/evaluate_args10.log 2>&1
echo ARGS10_DONE
# The held-out tools (the same file as stages six and seven), run after BFCL, on the first 10 episodes
# only: at 32 each, the runs (stopped after 16 minutes, a third done) would have ended past the session.
.venv/bin/mor-ext eval heldout --data $O/heldout.jsonl --adapter $O/final/lora --method lora --limit 10 --batch-size 10 \
   --out $O/results/lora-args10/heldout > $O/heldout_lora.log 2>&1 &
.venv/bin/mor-ext eval heldout --data $O/heldout.jsonl --adapter $O/final/mor --method mor --limit 10 --batch-size 10 \
   --out $O/results/mor-args10/heldout > $O/heldout_mor.log 2>&1
wait
