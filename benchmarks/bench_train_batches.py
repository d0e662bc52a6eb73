"""Training steps on real agent batches: what padding and the unsupervised positions' logits cost.

A step of ``mor-ext train`` runs batches of tokenized synthetic trajectories: rows padded to the
longest of the batch (or packed, ``--packing``), and labels only on the roles' turns. This script
tokenizes generated trajectories with the embedded SmolLM2 tokenizer, builds the trainer's batches
(``RoleDataCollator``, batch 4, max_length 768 as in ``compare_methods.py``) and times forward +
backward + fused AdamW on the SmolLM2-135M shape (random weights, fp32) with MoR or peft's LoRA, in
three layouts, interleaved batch by batch:

* ``padded``: the batch as the trainer built it before 2026-12-06 (logits at every position);
* ``padded+kept``: the same batch with ``logits_to_keep`` (logits only where a label follows);
* ``packed+kept``: the same trajectories packed into rows of <= 768 tokens, with ``logits_to_keep``.

Prints the share of padding and of supervised positions, and per layout the median time per batch
and per trajectory (packed rows hold more than one).

    python benchmarks/bench_train_batches.py --data runs/cmp/train.jsonl --method mor --batches 6
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_model  # noqa: E402
from mor_ext.data.tokenize import keep_supervised_logits  # noqa: E402
from mor_ext.models import load_model  # noqa: E402
from mor_ext.train.config import TrainConfig  # noqa: E402
from mor_ext.train.data import RoleDataCollator, build_datasets  # noqa: E402


def batches(data: str, packing: bool, batch_size: int, count: int, tokenizer) -> list[tuple[dict, int]]:
    """The first ``count`` trainer batches of ``data`` (in file order), each with its trajectory count."""
    config = TrainConfig(out_dir="unused", data=data, max_length=768, packing=packing, shuffle=False)
    train, _, _ = build_datasets(config, tokenizer)
    collate = RoleDataCollator(tokenizer.pad_token_id)
    out = []
    for start in range(0, min(len(train), batch_size * count), batch_size):
        rows = [train[i] for i in range(start, min(start + batch_size, len(train)))]
        out.append((collate(rows), sum(len(getattr(r, "members", (0,))) for r in rows)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="a JSONL of trajectories (mor-ext data generate)")
    parser.add_argument("--method", choices=["mor", "lora"], default="mor")
    parser.add_argument("--batches", type=int, default=6,
                        help="padded batches of 4 timed (packed: as many trajectories)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    allocator = bench_model.steady_allocator()
    _, tokenizer = load_model(None)
    padded = batches(args.data, False, 4, args.batches, tokenizer)
    trajectories = sum(n for _, n in padded)
    packed = []
    for batch, n in batches(args.data, True, 4, args.batches, tokenizer):
        if sum(m for _, m in packed) >= trajectories:
            break
        packed.append((batch, n))

    positions = sum(b["input_ids"].numel() for b, _ in padded)
    pad = sum(int((b["attention_mask"] == 0).sum()) for b, _ in padded)
    supervised = sum(int((b["labels"][:, 1:] != -100).sum()) for b, _ in padded)
    print(f"{bench_model.cpu_name()}, {args.threads} threads, torch {torch.__version__}, {allocator}, SmolLM2 shape, "
          f"{args.method}; {len(padded)} padded batches of 4 ({trajectories} trajectories, {positions} positions: "
          f"{pad / positions:.1%} padding, {supervised / positions:.1%} followed by a label); "
          f"{len(packed)} packed batches ({sum(n for _, n in packed)} trajectories)", flush=True)

    layouts = {
        "padded": padded,
        "padded+kept": [(keep_supervised_logits(b), n) for b, n in padded],
        "packed+kept": [(keep_supervised_logits(b), n) for b, n in packed],
    }
    model, _ = bench_model.build_model("smollm2", args.method, "cpu", torch.zeros(1, 1, dtype=torch.long))
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-6, fused=True)

    def step(batch: dict) -> float:
        inputs = dict(batch)
        if args.method == "lora":
            inputs.pop("role_ids")
        t0 = time.perf_counter()
        model(**inputs, use_cache=False).loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    step(padded[0][0])  # warm-up
    totals: dict[str, list[float]] = {name: [] for name in layouts}
    for _ in range(args.rounds):
        for name, rows in layouts.items():  # interleaved: each round runs every layout's batches once
            totals[name].append(sum(step(b) for b, _ in rows))
        print("  round: " + ", ".join(f"{k} {v[-1]:.1f} s" for k, v in totals.items()), flush=True)
    base = statistics.median(totals["padded"])
    print("\n| layout | batches | trajectories | s for all (median of rounds) | s per trajectory | x padded |\n"
          "|---|---:|---:|---:|---:|---:|")
    for name, rows in layouts.items():
        t = statistics.median(totals[name])
        n = sum(k for _, k in rows)
        print(f"| {name} | {len(rows)} | {n} | {t:.1f} | {t / n:.2f} | {t / base * trajectories / n:.2f} |")


if __name__ == "__main__":
    main()
