#!/usr/bin/env bash
# Stage twelve (twenty-first session): no training. The stage-nine adapters of both methods
# (runs/cmp10, the best MoR so far) evaluated again with one decoding change, --distinct-calls: no
# call of an executor's list may repeat an earlier call of the same turn (a token that would complete
# the repeat is masked). Both methods get the same decoding; the same questions as the stage-nine
# first-10 runs. Irrelevance is not rerun: its verdict is the reasoner's decision alone, which the
# option does not touch.
# NOT RUN in the twenty-first session: on the held-out tools (heldout.sh) the option changed no
# verdict, and by the project's rule a decoding option goes to BFCL only after it helps there.
set -euo pipefail
P=.venv/bin/python
O=runs/cmp10
cats="simple_python simple_java simple_javascript multiple parallel parallel_multiple"
$P benchmarks/compare_methods.py evaluate --out $O --results $O/results --only mor lora --tag distinct10 \
   --eval-flags='--constrain-args --distinct-calls' --limit 10 --batch-size-eval 10 --jobs 2 --categories $cats \
   > $O/evaluate_distinct10.log 2>&1
echo DISTINCT10_DONE
