"""Plot training-loss curves of `mor-ext train` runs into one PNG.

    python benchmarks/plot_training.py runs/smollm2-mor runs/smollm2-lora --out benchmarks/training_loss.png

Each run directory holds training_log.json (a finished run) or checkpoint-*/trainer_state.json
(the latest is used for a run still going or stopped early). Plots train CE (MoR runs also log it
as `ce`; LoRA runs log `loss`, which is CE) against the step as lines, and the held-out `eval_ce`
(CE per supervised token, without MoR's aux and orth terms) as dots of the same colour.
Needs matplotlib (not a dependency of the package: `pip install matplotlib`).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def log_history(run: Path) -> list[dict]:
    final = run / "training_log.json"
    if final.is_file():
        return json.loads(final.read_text())["log_history"]
    states = sorted(run.glob("checkpoint-*/trainer_state.json"), key=lambda p: int(p.parent.name.split("-")[1]))
    if not states:
        raise SystemExit(f"{run}: no training_log.json and no checkpoint-*/trainer_state.json")
    return json.loads(states[-1].read_text())["log_history"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--out", type=Path, default=Path("training_loss.png"))
    ap.add_argument("--title", default="training cross-entropy")
    args = ap.parse_args()

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for run in args.runs:
        history = log_history(run)
        rows = [r for r in history if "step" in r and ("ce" in r or "loss" in r) and "train_runtime" not in r]
        steps = [r["step"] for r in rows]
        ce = [float(r.get("ce", r.get("loss"))) for r in rows]
        line, = ax.plot(steps, ce, label=run.name, marker=".")
        evals = [(r["step"], r["eval_ce"]) for r in history if "eval_ce" in r]
        if evals:
            ax.plot(*zip(*evals), "o", color=line.get_color(), markersize=7)
        held = f", eval CE {evals[-1][1]:.3f}" if evals else ""
        print(f"{run.name}: {len(rows)} points, CE {ce[0]:.3f} -> {ce[-1]:.3f} at step {steps[-1]}{held}")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("cross-entropy (supervised role tokens)")
    ax.set_title(args.title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(args.out, dpi=120)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
