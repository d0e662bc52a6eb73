"""The ``mor-ext`` command line. One subcommand per job; each lives in its own function below.

    mor-ext demo     the whole pipeline at small scale: data, MoR training, the agent on unseen tools, evaluation
    mor-ext info     which backend runs the ops, and the versions in use
    mor-ext train    fine-tune with MoR LoRA (or the plain-LoRA baseline / MoR ablations) on trajectories
    mor-ext data     generate synthetic trajectories, or validate a trajectory JSONL file
    mor-ext agent    answer queries with the role-switching agent (tools, MCP servers, sandboxed code)
    mor-ext eval     evaluate a base, LoRA or MoR-tuned model (``eval bfcl``: BFCL, scored by BFCL's checker;
                     ``eval heldout``: tools never seen in training)
    mor-ext adapter  work on saved adapters (``adapter average``: the weighted mean of several of one config)

``mor-ext train`` also runs data-parallel on CPU or GPU under torchrun:
``torchrun --nproc_per_node 2 -m mor_ext.cli train ...``, or sharded with FSDP2 (``train --fsdp``).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from typing import Sequence


def _cmd_demo(args: argparse.Namespace) -> int:
    from .demo import BFCL_SAMPLE, DemoConfig, run_demo

    run_demo(DemoConfig(
        model=args.model, out_dir=args.out_dir, train_examples=args.train_examples, minutes=args.minutes, lr=args.lr,
        batch_size=args.batch_size, grad_accum=args.grad_accum, agent_queries=args.agent_queries,
        heldout_episodes=args.heldout_episodes, bfcl_limit=args.bfcl_limit,
        bfcl_categories=tuple(args.bfcl_categories or BFCL_SAMPLE), max_new_tokens=args.max_new_tokens, seed=args.seed))
    return 0


def _cmd_info(args: argparse.Namespace) -> int:
    import torch
    import transformers

    from . import __version__, backend_info

    info = {"mor_ext": __version__, "transformers": transformers.__version__,
            "threads": torch.get_num_threads(), **backend_info()}
    print(json.dumps(info, indent=2))
    return 0


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import TrainConfig, train

    fields = {f for f in TrainConfig.__dataclass_fields__}
    values = {k: v for k, v in vars(args).items() if k in fields}
    if values.get("resume") == "latest":
        values["resume"] = True
    if str(values.get("context_role")).lower() == "none":
        values["context_role"] = None
    try:
        result = train(TrainConfig(**values))
    finally:
        _end_process_group()
    print(json.dumps({"out_dir": str(result.out_dir), "global_step": result.global_step,
                      "train_loss": result.train_loss, "parameter_counts": result.parameter_counts,
                      "train_examples": result.num_train_examples, "eval_examples": result.num_eval_examples,
                      "skipped_records": result.skipped_records, "seconds": round(result.seconds, 1)}))
    return 0


def _end_process_group() -> None:
    """Destroy the process group that a torchrun launch opened (the Trainer opens it, nobody closes it).

    Left to interpreter shutdown, gloo's worker threads can still hold tensors whose release needs the
    GIL while the interpreter is being torn down, and the process aborts ("terminate called without an
    active exception", SIGABRT) after training has finished; destroying it here, while Python is whole,
    ends the run cleanly."""
    import torch.distributed as dist

    from .sharding import distributed_active

    if distributed_active():
        dist.destroy_process_group()


def _length_tokenizer(name: str):
    """The tokenizer that token lengths are measured with (``none``: no lengths)."""
    if name == "none":
        return None
    from transformers import AutoTokenizer

    from .models import resolve_model

    directory, gguf = resolve_model(None if name == "smollm2" else name)
    return AutoTokenizer.from_pretrained(directory, gguf_file=gguf, local_files_only=True)


def _parse_mix(text: str | None) -> dict[str, float] | None:
    if not text:
        return None
    mix = {}
    for part in text.split(","):
        kind, sep, weight = part.partition("=")
        if not sep:
            raise ValueError(f"--mix takes kind=weight pairs separated by commas, got {part!r}")
        mix[kind.strip()] = float(weight)
    return mix


def _cmd_data_generate(args: argparse.Namespace) -> int:
    from .data.jsonl import write_trajectories
    from .data.synthetic import generate
    from .data.synthetic.report import format_report, pattern_report

    forms = tuple(args.forms.split(",")) if args.forms else None
    options = {"forms": forms} if forms else {}
    data = generate(args.n, seed=args.seed, split=args.split, mix=_parse_mix(args.mix), max_tools=args.max_tools,
                    max_chars=args.max_chars or None, list_requests=args.list_requests, **options)
    count = write_trajectories(args.out, data)
    report = pattern_report(data, _length_tokenizer(args.tokenizer), args.max_length)
    print(format_report(report), file=sys.stderr)
    print(json.dumps({"path": args.out, "written": count, "split": args.split, "patterns": report}))
    return 0


def _cmd_data_validate(args: argparse.Namespace) -> int:
    from .data.jsonl import read_trajectories, validate_file
    from .data.synthetic.report import format_report, pattern_report

    report = validate_file(args.file)
    if not args.all_errors:
        report["errors"] = report["errors"][:20]
    trajectories, _ = read_trajectories(args.file, on_error="skip")
    report["patterns"] = pattern_report(trajectories, _length_tokenizer(args.tokenizer), args.max_length)
    print(format_report(report["patterns"]), file=sys.stderr)
    print(json.dumps(report, indent=2, ensure_ascii=False))
    contaminated = report["bfcl"].get("clean") is False
    return 0 if report["bad"] == 0 and not contaminated else 1


def _cmd_agent(args: argparse.Namespace) -> int:
    from .agent.command import run_command

    return run_command(args)


def _cmd_eval_bfcl(args: argparse.Namespace) -> int:
    from .eval.bfcl.command import run_command

    return run_command(args)


def _cmd_eval_heldout(args: argparse.Namespace) -> int:
    from .eval.heldout import run_command

    return run_command(args)


def _cmd_adapter_average(args: argparse.Namespace) -> int:
    from .adapters.averaging import average_adapters

    out = average_adapters(args.sources, args.out, weights=args.weights)
    print(f"wrote {out}: the weighted mean of {len(args.sources)} adapters, weights {args.weights or 'equal'}")
    return 0


def _add_adapter_parser(sub) -> None:
    adapter = sub.add_parser("adapter", help="work on saved adapters (mor_ext or PEFT LoRA directories)")
    actions = adapter.add_subparsers(dest="action", required=True, metavar="ACTION")
    average = actions.add_parser("average", help="write the weighted mean of several adapters of one config "
                                                 "(e.g. a checkpoint and the run that continued from it)")
    average.add_argument("sources", nargs="+", metavar="ADAPTER_DIR", help="two or more adapter directories")
    average.add_argument("--out", required=True, help="directory of the averaged adapter")
    average.add_argument("--weights", type=float, nargs="+", default=None, metavar="W",
                         help="one weight per adapter, non-negative, summing to 1 (default: equal)")
    average.set_defaults(func=_cmd_adapter_average)


def _add_eval_parser(sub) -> None:
    from .eval.bfcl.command import add_arguments  # argparse only; the model and BFCL load on use
    from .eval.heldout import add_arguments as add_heldout_arguments

    evaluation = sub.add_parser("eval", help="evaluate a model on BFCL or on tools never seen in training")
    benchmarks = evaluation.add_subparsers(dest="benchmark", required=True, metavar="BENCHMARK")
    bfcl = benchmarks.add_parser("bfcl", help="BFCL single-turn categories, scored by BFCL's own checker")
    add_arguments(bfcl)
    bfcl.set_defaults(func=_cmd_eval_bfcl)
    heldout = benchmarks.add_parser("heldout", help="the agent on synthetic episodes over held-out tools, "
                                                    "scored against their reference calls")
    add_heldout_arguments(heldout)
    heldout.set_defaults(func=_cmd_eval_heldout)


def _add_train_parser(sub) -> None:
    train = sub.add_parser("train", help="fine-tune with MoR LoRA (default), plain LoRA or a MoR ablation")
    train.add_argument("--model", default=None, help="'smollm2' (default), a local .gguf file or HF model directory")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="trajectory JSONL file (bad records are reported and skipped)")
    source.add_argument("--generate", type=int, metavar="N", help="train on N synthetic trajectories instead")
    train.add_argument("--out", dest="out_dir", required=True, help="output directory (adapter, log, checkpoints)")
    train.add_argument("--method", choices=["mor", "lora"], default="mor",
                       help="mor (default) or lora: plain PEFT LoRA with a matched trainable-parameter budget")
    train.add_argument("--rank", type=int, default=16, help="LoRA rank of each MoR LoRA (default 16)")
    train.add_argument("--lora-alpha", type=float, default=None, help="default: rank (scaling 1)")
    train.add_argument("--lora-dropout", type=float, default=0.0)
    train.add_argument("--target-modules", nargs="+", default=None, help="default: the model family's projections")
    train.add_argument("--context-role", default="reasoner",
                       help="role of context tokens (default reasoner); 'none' for the base model")
    train.add_argument("--no-aux", action="store_true", help="ablation: load-balance loss coefficient 0")
    train.add_argument("--no-orth", action="store_true", help="ablation: orthogonality loss coefficient 0")
    train.add_argument("--one-role", action="store_true",
                       help="ablation: one role with as many LoRAs as MoRAgent's three, used by every role token")
    train.add_argument("--max-length", type=int, default=1024)
    train.add_argument("--packing", action="store_true", help="pack several trajectories per row")
    train.add_argument("--eval-fraction", type=float, default=0.0)
    train.add_argument("--max-steps", type=int, default=-1, help="overrides --epochs when > 0")
    train.add_argument("--max-minutes", type=float, default=None,
                       help="stop after this many minutes of training (the step in progress finishes; "
                            "evaluation and saving still run): a time budget for comparing methods")
    train.add_argument("--epochs", type=float, default=1.0)
    train.add_argument("--lr", type=float, default=2e-4)
    train.add_argument("--batch-size", type=int, default=1, help="per device")
    train.add_argument("--grad-accum", type=int, default=1)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument("--optim", default="adamw_torch_fused",
                       help="a transformers optimizer name (adamw_torch_fused, adamw_torch, sgd, ...)")
    train.add_argument("--lr-scheduler", default="linear")
    train.add_argument("--warmup-steps", type=int, default=0)
    train.add_argument("--weight-decay", type=float, default=0.0)
    train.add_argument("--bf16", action="store_true", help="bf16 mixed precision (where the device supports it)")
    train.add_argument("--logging-steps", type=int, default=10)
    train.add_argument("--save-steps", type=int, default=None, help="checkpoint every N steps (default: none)")
    train.add_argument("--save-total-limit", type=int, default=None)
    train.add_argument("--resume", nargs="?", const="latest", default=None,
                       help="resume from a checkpoint directory, or the latest one in --out without a value")
    train.add_argument("--no-shuffle", dest="shuffle", action="store_false", help="train in file order")
    train.add_argument("--ddp-find-unused-parameters", action="store_true")
    train.add_argument("--fsdp", action="store_true",
                       help="under torchrun: shard the model, adapter and optimiser state with FSDP2 (instead of DDP)")
    train.add_argument("--activation-checkpointing", action="store_true",
                       help="recompute each decoder layer in the backward: less activation memory, more compute")
    train.add_argument("--no-progress", dest="progress_bar", action="store_false")
    roles = train.add_argument_group("role schemes and decoupled training (AgentFlux; docs/spec.md §7)")
    roles.add_argument("--scheme", choices=("moragent", "agentflux", "combined"), default="moragent",
                       help="which role each token trains: moragent (default), agentflux (selector: names; "
                            "arguments: the rest of each call) or combined (MoRAgent's reasoner + the split)")
    roles.add_argument("--tool-groups", default=None,
                       help="one arguments role per tool group: 'families' or a JSON file {tool: group}")
    roles.add_argument("--loss-roles", nargs="+", default=None, metavar="ROLE",
                       help="per-role loss mask: only the labels these roles predict (default: joint loss); "
                            "patterns such as 'arguments*' match every arguments role")
    roles.add_argument("--train-roles", nargs="+", default=None, metavar="ROLE",
                       help="train only these roles; the others are frozen exactly")
    roles.add_argument("--role-lr", type=_parse_role_lr, default=None, metavar="ROLE=X,...",
                       help="learning-rate multiplier per role, e.g. selector=2,arguments=0.5")
    roles.add_argument("--init-adapter", default=None,
                       help="start from this adapter (a later stage of a run); mor: roles of --scheme it lacks "
                            "are added fresh (output unchanged); lora: a saved peft LoRA of this run's rank")
    train.set_defaults(func=_cmd_train)


def _parse_role_lr(text: str) -> dict[str, float]:
    out = {}
    for part in text.split(","):
        role, sep, value = part.partition("=")
        if not sep or not role.strip():
            raise argparse.ArgumentTypeError(f"--role-lr takes role=multiplier pairs, got {part!r}")
        out[role.strip()] = float(value)
    return out


def _add_data_parser(sub) -> None:
    data = sub.add_parser("data", help="synthetic trajectories and trajectory-file validation")
    data_sub = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    gen = data_sub.add_parser("generate", help="write N synthetic, decontaminated trajectories to a JSONL file")
    gen.add_argument("--n", type=int, required=True)
    gen.add_argument("--out", required=True)
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--split", choices=("train", "heldout", "all"), default="train",
                     help="tools to use: train (default), heldout (tool families never used in training) or all")
    gen.add_argument("--mix", help="kind weights, e.g. single=3,parallel_same=2,refusal_near_miss=1 (default: the built-in mix)")
    gen.add_argument("--max-tools", type=int, default=4, help="most tools offered per episode (default 4)")
    gen.add_argument("--max-chars", type=int, default=2100,
                     help="redraw episodes longer than this many rendered characters (0: no bound; default 2100, ~768 tokens)")
    gen.add_argument("--forms", help="request forms of parallel episodes, comma-separated: same-tool forms "
                                     "and_list,respectively,for_each,bullets (the default), slot_list (the list in "
                                     "the varied slot); joined (parallel_multiple queries as one sentence)")
    gen.add_argument("--list-requests", action="store_true",
                     help="open each first plan by listing the user's requests, one per call of the turn "
                          "(\"Asked: 1) ...; 2) ...\"), so the call count is copied from the query")
    gen.set_defaults(func=_cmd_data_generate)
    val = data_sub.add_parser("validate", help="report the bad records of a trajectory JSONL file, its pattern mix and "
                                               "its overlap with BFCL (exit 1 if bad or overlapping)")
    val.add_argument("file")
    val.add_argument("--all-errors", action="store_true", help="list every error (default: the first 20)")
    for p in (gen, val):
        p.add_argument("--tokenizer", default="smollm2",
                       help="tokenizer for the token-length report: smollm2 (default), a model path, or none")
        p.add_argument("--max-length", type=int, default=768, help="training length the report counts fits against")
    val.set_defaults(func=_cmd_data_validate)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mor-ext", description="Mixture-of-Roles LoRA for agent tuning")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = sub.add_parser("demo", help="the whole pipeline at small scale: synthetic data, MoR training of "
                                       "SmolLM2, the agent on unseen tools, base vs tuned evaluation")
    demo.add_argument("--model", default=None,
                      help="'smollm2' (default), a local .gguf file or HF model directory")
    demo.add_argument("--out", dest="out_dir", default="runs/demo", help="output directory (default runs/demo)")
    demo.add_argument("--train-examples", type=int, default=400, help="synthetic training trajectories (default 400)")
    demo.add_argument("--minutes", type=float, default=5.0, help="training wall time in minutes (default 5)")
    demo.add_argument("--lr", type=float, default=2e-3, help="AdamW learning rate (default 2e-3)")
    demo.add_argument("--batch-size", type=int, default=2)
    demo.add_argument("--grad-accum", type=int, default=2)
    demo.add_argument("--agent-queries", type=int, default=3, help="held-out-tool queries the agent answers (default 3)")
    demo.add_argument("--heldout-episodes", type=int, default=16,
                      help="held-out-tool episodes scored for base and tuned (default 16)")
    demo.add_argument("--bfcl-limit", type=int, default=3, help="questions per BFCL category (default 3; 0: skip BFCL)")
    demo.add_argument("--bfcl-categories", nargs="+", default=None, metavar="CATEGORY",
                      help="BFCL categories of the sample (default simple_python multiple parallel irrelevance)")
    demo.add_argument("--max-new-tokens", type=int, default=96, help="per generation in the evaluations (default 96)")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(func=_cmd_demo)

    info = sub.add_parser("info", help="print the backend in use and versions")
    info.set_defaults(func=_cmd_info)
    _add_train_parser(sub)
    _add_data_parser(sub)
    from .agent.command import add_arguments  # argparse only; the runtime loads on use

    agent = sub.add_parser("agent", help="answer queries role by role with tools, MCP servers or sandboxed code")
    add_arguments(agent)
    agent.set_defaults(func=_cmd_agent)
    _add_eval_parser(sub)
    _add_adapter_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one subcommand. A mistake in the input (a missing file, a bad value, data that overlaps
    BFCL, a checkpoint that does not fit) ends with ``mor-ext: error: ...`` and exit status 2, without a
    traceback; ``MOR_EXT_DEBUG=1`` shows the traceback."""
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(message)s")
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except (ValueError, OSError, ImportError) as exc:  # user input (the package's errors derive from these)
        if os.environ.get("MOR_EXT_DEBUG"):
            raise
        print(f"mor-ext: error: {exc}\n(MOR_EXT_DEBUG=1 shows the traceback)", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
