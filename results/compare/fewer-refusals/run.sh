#!/bin/bash
# Data mix with fewer no-call episodes (18% instead of 32%): MoR and plain LoRA, each at its own sweep's
# LR, 24 steps of batch 4, side by side (one core each), then BFCL (first 10, five categories).
cd .  # from the repository root
P=.venv/bin/python
D=runs/cmp/mix
export OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
common="--model smollm2 --data $D/train_fewer_refusals.jsonl --batch-size 4 --max-length 768 --eval-fraction 0.02 --seed 0 --logging-steps 1 --lr-scheduler constant --no-progress --max-steps 24"
$P -m mor_ext.cli train $common --out $D/mor --method mor --lr 0.003 > $D/mor.log 2>&1 &
$P -m mor_ext.cli train $common --out $D/lora --method lora --lr 0.001 > $D/lora.log 2>&1 &
wait
cats="simple_python multiple parallel parallel_multiple irrelevance"
$P -m mor_ext.cli eval bfcl --adapter $D/mor --method mor --categories $cats --limit 10 --batch-size 10 --out $D/results/mor --no-progress > $D/eval_mor.log 2>&1 &
$P -m mor_ext.cli eval bfcl --adapter $D/lora --method lora --categories $cats --limit 10 --batch-size 10 --out $D/results/lora --no-progress > $D/eval_lora.log 2>&1 &
wait
echo MIX_DONE
