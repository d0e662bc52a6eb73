"""The tool-selection flags (``docs/spec.md`` §7) of every command that runs the agent: ``mor-ext
agent``, ``mor-ext eval bfcl`` and ``mor-ext eval heldout``. One definition, so that a decoding
option chosen on the held-out split means the same on BFCL and in the agent."""

from __future__ import annotations

import argparse

__all__ = ["add_selection_arguments", "check_selection_arguments"]


def add_selection_arguments(parser: argparse.ArgumentParser, title: str, *, vote_seed: bool = True,
                            repeated_calls: bool = False) -> None:
    """Add the flags as an argument group ``title``. ``vote_seed``: a ``--seed`` of the vote's
    sampling (off where the command has its own ``--seed``, which the vote then shares);
    ``repeated_calls``: ``--max-repeated-calls`` (for multi-step episodes)."""
    selection = parser.add_argument_group(title)
    selection.add_argument("--constrain-names", action="store_true",
                           help="constrained decoding: every function name is one of the tools offered")
    selection.add_argument("--constrain-args", action="store_true",
                           help="constrained decoding of the whole call: names as --constrain-names, arguments a JSON "
                                "object that the tool's parameter schema accepts (needs llguidance)")
    selection.add_argument("--calls-from-plan", action="store_true",
                           help="with --constrain-args: an executor turn after a plan that lists the user's requests "
                                "(\"Asked: 1) ...; 2) ...\", --list-requests training data) makes exactly that many calls")
    selection.add_argument("--distinct-calls", action="store_true",
                           help="with --constrain-args: no call of an executor turn repeats an earlier call of the turn")
    selection.add_argument("--vote", type=int, default=0, metavar="N",
                           help="AgentFlux's majority vote: sample N selections (on the episode's KV cache), keep the most frequent")
    selection.add_argument("--vote-temperature", type=float, default=1.0)
    if vote_seed:
        selection.add_argument("--seed", type=int, default=0, help="seed of the vote's sampling")
    if repeated_calls:
        selection.add_argument("--max-repeated-calls", type=int, default=None, metavar="N",
                               help="stop an episode that makes the same call N times in a row (AgentFlux: 10)")
    selection.add_argument("--max-tools", type=int, default=None, metavar="N",
                           help="hierarchical selection: with more than N tools, pick a category first "
                                "(categories derived from the names unless --tool-categories)")
    selection.add_argument("--tool-categories", default=None, metavar="JSON",
                           help="a JSON file {tool name: category} for --max-tools")


def check_selection_arguments(args: argparse.Namespace) -> None:
    """Raise ValueError for flags of :func:`add_selection_arguments` that do not go together."""
    if args.vote < 0 or (args.max_tools is not None and args.max_tools < 2):
        raise ValueError("--vote must be >= 0 and --max-tools >= 2")
    for flag in ("calls_from_plan", "distinct_calls"):
        if getattr(args, flag) and not args.constrain_args:
            raise ValueError(f"--{flag.replace('_', '-')} bounds the constrained grammar: it needs --constrain-args")
