"""Loss curves of training runs as a PNG: train CE per step and the held-out eval CE, one line per run.

    python benchmarks/plot_losses.py --out results/loss_curves.png RUN_DIR [RUN_DIR ...]

Each RUN_DIR is an ``mor-ext train --out`` directory (its ``training_log.json``); the legend names a run
by its directory and learning rate. Needs matplotlib (``pip install matplotlib``; not a dependency of
the package).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def curves(run: Path) -> tuple[str, list[tuple[int, float]], list[tuple[int, float]]]:
    """(label, [(step, train CE)], [(step, eval CE)]) of one run; CE without MoR's aux and orth terms."""
    log = json.loads((run / "training_log.json").read_text())
    train, evals = [], []
    for h in log["log_history"]:
        if "eval_ce" in h:
            evals.append((h["step"], h["eval_ce"]))
        elif "loss" in h and "train_runtime" not in h:
            train.append((h["step"], float(h.get("ce", h["loss"]))))
    config = log["config"]
    return f"{run.name} ({config['method']}, lr {config['lr']:g})", train, evals


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--title", default="SmolLM2-135M-Instruct: train CE per step (lines), held-out eval CE (dots)")
    args = ap.parse_args()
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for run in args.runs:
        label, train, evals = curves(run)
        line, = ax.plot(*zip(*train), label=label, linewidth=1.2)
        if evals:
            ax.plot(*zip(*evals), "o", color=line.get_color(), markersize=6)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy per supervised token")
    ax.set_title(args.title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
