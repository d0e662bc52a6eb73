"""``mor-ext agent``: run the role-switching agent on one or more queries and print each role's turns.

    mor-ext agent [--model M] [--adapter DIR] [--tools module:attr | --mcp "command"] [--sandbox] "query" ...

Without ``--adapter`` the model is patched with fresh (zero) adapters, i.e. it is the base model
under the MoR protocol: useful to try the plumbing, not to get answers. Without ``--tools`` /
``--mcp`` the tools are :data:`DEFAULT_TOOLS`, four tools of the built-in catalogue. Several queries run as
one batch (``--batch-size``) and the throughput is printed. ``--json PATH`` writes the trajectories
(one JSON object per line; ``-`` for stdout).
"""

from __future__ import annotations

import argparse
import importlib
import json
import shlex
import sys
from contextlib import ExitStack
from collections.abc import Sequence
from typing import Any, TextIO

from .flags import add_selection_arguments, check_selection_arguments

__all__ = ["add_arguments", "run_command", "load_tools", "DEFAULT_TOOLS"]

# Without --tools / --mcp: a few everyday tools of the built-in catalogue.
DEFAULT_TOOLS = ("convert_temperature_scale", "country_capital_city", "percentage_of_number", "circle_area_from_radius")

_COLOURS = {"reasoner": "36", "executor": "33", "observation": "90", "summarizer": "32"}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("queries", nargs="+", metavar="query", help="what to ask (several run as one batch)")
    parser.add_argument("--model", default=None, help="'smollm2' (default), a local .gguf file or HF model directory")
    parser.add_argument("--adapter", default=None, help="a MoR adapter directory (mor_ext.save_adapter)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--tools", default=None, metavar="MODULE:ATTR",
                        help="a ToolRegistry, a Tool or a list of Tools to import (default: DEFAULT_TOOLS of the catalogue)")
    source.add_argument("--mcp", default=None, metavar="COMMAND|URL",
                        help="an MCP server: a command to start over stdio, or an http(s):// URL to connect to")
    parser.add_argument("--sandbox", action="store_true", help="add the sandboxed run_python tool")
    parser.add_argument("--system", default=None, help="system prompt (default: none, as the synthetic training data has)")
    parser.add_argument("--max-steps", type=int, default=6)
    parser.add_argument("--max-tokens", type=int, default=2048)
    parser.add_argument("--max-turn-tokens", type=int, default=256)
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=0.7)
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--json", default=None, metavar="PATH", help="write the trajectories as JSON lines ('-': stdout)")
    add_selection_arguments(parser, "tool selection (docs/spec.md §7; the role scheme is the adapter's own)",
                            vote_seed=False, repeated_calls=True)


def load_tools(spec: str) -> list[Any]:
    """``module:attr`` -> a list of Tools (the attribute may be a registry, a Tool or a list)."""
    from ..tools import Tool

    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ValueError(f"--tools expects module:attr, got {spec!r}")
    value = getattr(importlib.import_module(module_name), attr)
    if isinstance(value, Tool):
        return [value]
    items = list(value.values()) if hasattr(value, "values") else list(value)
    if not all(isinstance(t, Tool) for t in items):
        raise ValueError(f"{spec} is not a Tool, a ToolRegistry or a list of Tools")
    return items


def _printer(out: TextIO, colour: bool):
    state = {"role": None}

    def stream(role: str, text: str) -> None:
        if role != state["role"]:
            label = f"[{role}] "
            out.write(("\n" if state["role"] else "") + (f"\033[1;{_COLOURS.get(role, '0')}m{label}\033[0m" if colour else label))
            state["role"] = role
        out.write(f"\033[{_COLOURS.get(role, '0')}m{text}\033[0m" if colour else text)
        out.flush()

    return stream


def run_command(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run ``mor-ext agent`` (see the module docstring)."""
    out = out if out is not None else sys.stdout  # looked up per call: it may be replaced after import
    check_selection_arguments(args)  # before any model is loaded
    from .. import load_adapter, patch
    from ..models import load_model
    from .episode import AgentConfig
    from .runtime import Agent
    from .sandbox import python_tool

    with ExitStack() as stack:
        if args.mcp:
            from .mcp_tools import MCPToolServer

            server = MCPToolServer(url=args.mcp) if args.mcp.startswith(("http://", "https://")) \
                else MCPToolServer(shlex.split(args.mcp))
            tools = list(stack.enter_context(server).tools().values())
        elif args.tools:
            tools = load_tools(args.tools)
        else:
            from ..tools.catalogue import CATALOGUE

            tools = list(CATALOGUE.subset(list(DEFAULT_TOOLS)).values())
        if args.sandbox:
            tools.append(python_tool())
        model, tokenizer = load_model(args.model)
        if args.adapter:
            load_adapter(model, args.adapter)
        else:
            patch(model)
        model.eval()
        config = AgentConfig(max_steps=args.max_steps, max_tokens=args.max_tokens, max_turn_tokens=args.max_turn_tokens,
                             do_sample=args.sample, temperature=args.temperature, top_p=args.top_p, seed=args.seed,
                             constrain_names=args.constrain_names, constrain_args=args.constrain_args, vote=args.vote,
                             vote_temperature=args.vote_temperature, calls_from_plan=args.calls_from_plan,
                             distinct_calls=args.distinct_calls, max_repeated_calls=args.max_repeated_calls)
        categories = None
        if args.tool_categories:
            with open(args.tool_categories, encoding="utf-8") as f:
                categories = json.load(f)
        agent = Agent(model, tokenizer, tools, system=args.system, config=config, max_tools=args.max_tools,
                      categories=categories)
        colour = out.isatty()
        if len(args.queries) == 1:
            episodes = [agent.run(args.queries[0], stream=_printer(out, colour))]
            out.write("\n")
        else:
            batch = agent.run_batch(args.queries, batch_size=args.batch_size)
            episodes = batch.episodes
            for query, episode in zip(args.queries, episodes):
                out.write(f"\nquery: {query}\n")
                stream = _printer(out, colour)
                for turn in episode.trajectory.turns[1:]:
                    stream(turn.role, turn.content or json.dumps([c.to_dict() for c in turn.calls]))
                out.write("\n")
            out.write(batch.summary() + "\n")
        for episode in episodes:
            out.write(f"answer ({episode.status}): {episode.answer if episode.answer is not None else '-'}\n")
        if args.json:
            lines = "".join(e.trajectory.to_json() + "\n" for e in episodes)
            if args.json == "-":
                out.write(lines)
            else:
                with open(args.json, "w", encoding="utf-8") as f:
                    f.write(lines)
    return 0
