#!/usr/bin/env bash
# Stage eleven (twentieth session): no training. The stage-nine adapters of both methods (runs/cmp10,
# the best MoR so far) evaluated again with one decoding change, --calls-from-plan: the executor's
# turn after a plan that lists the user's requests ("Asked: 1) ...; 2) ...", how --list-requests data
# opens every first plan) is constrained to exactly that many calls. The count is the model's own
# (its reasoner's plan), never BFCL's; both methods get the same decoding. Same questions as the
# stage-nine first-10 runs (the first 10 of the six non-live AST categories and irrelevance).
set -euo pipefail
P=.venv/bin/python
O=runs/cmp10
cats="simple_python simple_java simple_javascript multiple parallel parallel_multiple irrelevance"
$P benchmarks/compare_methods.py evaluate --out $O --results $O/results --only mor lora --tag plan10 \
   --eval-flags='--constrain-args --calls-from-plan' --limit 10 --batch-size-eval 10 --jobs 2 --categories $cats \
   > $O/evaluate_plan10.log 2>&1
echo PLAN10_DONE
