#!/bin/bash
# The untuned base model on the same 32 held-out-tool episodes (its files: results/bfcl/base/heldout/).
.venv/bin/mor-ext eval heldout --data runs/cmp/heldout.jsonl --method base --limit 32 --batch-size 10 \
    --out runs/cmp2/results/base/heldout
