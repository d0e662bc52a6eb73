#!/bin/bash
# The same 50-minute adapters, BFCL with the executor constrained to calls the offered schemas accept
# (--constrain-args: names and arguments), first 10 per category.
cd .
P=.venv/bin/python
O=runs/cmp2
$P benchmarks/compare_methods.py evaluate --out $O --results $O/results --only mor lora --tag args \
   --eval-flags='--constrain-args' --limit 10 --batch-size-eval 10 --jobs 2 \
   --categories simple_python simple_java simple_javascript multiple parallel parallel_multiple irrelevance live_simple \
   > $O/evaluate_args.log 2>&1
echo ARGS_DONE
