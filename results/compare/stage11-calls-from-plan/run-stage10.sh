#!/usr/bin/env bash
# Stage eleven, second half: the stage-ten adapters (runs/cmp11; their plans list parallel requests
# more often, their executor did not follow the lists) on the same questions with the same decoding,
# --constrain-args --calls-from-plan. One method per call ($1: mor or lora), one core each.
set -euo pipefail
P=.venv/bin/python
O=runs/cmp11
cats="${CATS:-simple_python simple_java simple_javascript multiple parallel parallel_multiple irrelevance}"
$P benchmarks/compare_methods.py evaluate --out $O --results $O/results --only $1 --tag plan10 \
   --eval-flags='--constrain-args --calls-from-plan' --limit 10 --batch-size-eval 10 --jobs 1 --categories $cats \
   > $O/evaluate_plan10_$1.log 2>&1
echo PLAN10_$1_DONE
