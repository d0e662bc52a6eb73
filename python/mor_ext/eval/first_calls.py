"""Agent episodes that end at the first executor turn, nothing executed: how both evaluations answer.

A task is a query with its tools (schemas suffice) and system prompt; :func:`run_first_calls` runs
them as batched episodes (``AgentConfig(first_call_only=True)``) under the role ids the model was
trained with (:func:`mor_ext.agent.role_encoder`), and :func:`first_executor_turn` reads the answer.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from ..agent import NO_CALL, AgentConfig, Episode, EpisodeResult, role_encoder, run_episodes
from ..agent.batch import TokenChooser
from ..agent.flags import check_selection_arguments
from ..agent.hierarchy import choose_tools
from ..data.trajectory import Turn
from ..tools import Tool

__all__ = ["FirstCallTask", "Selection", "run_first_calls", "first_executor_turn", "selection_from_args"]


@dataclass(frozen=True)
class FirstCallTask:
    """One question for the agent: the user's ``query``, the ``tools`` offered, the ``system`` prompt."""

    query: str
    tools: Mapping[str, Tool]
    system: str | None = None
    id: str | None = None


@dataclass(frozen=True)
class Selection:
    """How the first call's tool is selected (``docs/spec.md`` §7): ``constrain_names`` keeps the name
    to the tools offered; ``constrain_args`` the whole call to the tools' schemas (name and arguments),
    with ``calls_from_plan`` as many calls as the plan before lists (``AgentConfig.calls_from_plan``)
    and with ``distinct_calls`` no call repeated within a turn (``AgentConfig.distinct_calls``);
    ``vote`` > 1 samples that many selections (at ``vote_temperature``, seeded
    ``seed``) and keeps the majority; ``max_tools`` selects a category first when a question offers
    more tools (``categories``: tool name -> category, else derived from the names)."""

    constrain_names: bool = False
    constrain_args: bool = False
    calls_from_plan: bool = False
    distinct_calls: bool = False
    vote: int = 0
    vote_temperature: float = 1.0
    seed: int = 0
    max_tools: int | None = None
    categories: Mapping[str, str] | None = field(default=None, hash=False)

    def to_dict(self) -> dict:
        return {"constrain_names": self.constrain_names, "constrain_args": self.constrain_args,
                "calls_from_plan": self.calls_from_plan, "distinct_calls": self.distinct_calls, "vote": self.vote,
                "vote_temperature": self.vote_temperature, "seed": self.seed, "max_tools": self.max_tools, "categories": "given" if self.categories else None}


def run_first_calls(model: torch.nn.Module, tokenizer, tasks: Sequence[FirstCallTask], *, batch_size: int = 8,
                    max_new_tokens: int = 256, max_tokens: int | None = None,
                    progress: Callable[[int], None] | None = None,
                    choose: TokenChooser | None = None, selection: Selection | None = None) -> list[EpisodeResult]:
    """The episodes of ``tasks``, in order. ``max_new_tokens`` bounds each role turn; ``max_tokens``
    the whole episode (default: the model's context length); ``progress(1)`` per finished episode;
    ``choose`` replaces greedy decoding, ``(logits, episode) -> token`` (tests script the output);
    ``selection``: constrained names, the majority vote, hierarchical selection (default: none)."""
    encoder = role_encoder(model, tokenizer)
    selection = selection or Selection()
    if max_tokens is None:
        max_tokens = int(getattr(model.config, "max_position_embeddings", 4096) or 4096)
    config = AgentConfig(max_steps=1, max_tokens=max_tokens, max_turn_tokens=max_new_tokens, first_call_only=True,
                         constrain_names=selection.constrain_names, constrain_args=selection.constrain_args,
                         calls_from_plan=selection.calls_from_plan, distinct_calls=selection.distinct_calls,
                         vote=selection.vote,
                         vote_temperature=selection.vote_temperature, seed=selection.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    offered: list[Mapping[str, Tool] | None] = [task.tools for task in tasks]
    if selection.max_tools is not None:
        chosen = choose_tools(model, encoder, [t.query for t in tasks], [list(t.tools.values()) for t in tasks],
                              selection.max_tools, system=[t.system for t in tasks], categories=selection.categories,
                              batch_size=batch_size, max_turn_tokens=max_new_tokens, max_tokens=max_tokens, pad_id=pad)
        offered = [None if tools is None else {t.name: t for t in tools} for tools in chosen]

    def make(index: int) -> Episode:
        task = tasks[index]
        episode = Episode(encoder, offered[index] or task.tools, task.query, config, system=task.system, id=task.id)
        if offered[index] is None:  # the hierarchical selection chose no category: no call
            episode.warnings.append("hierarchical selection: no category chosen")
            episode.status = NO_CALL
        return episode

    done = (lambda index, result: progress(1)) if progress is not None else None
    return run_episodes(model, make, len(tasks), batch_size=batch_size, pad_id=pad, on_done=done,
                        choose=choose).episodes


def first_executor_turn(episode: EpisodeResult) -> Turn | None:
    """The executor turn that ended a first-call episode, or None (no call, or a limit before it)."""
    return next((t for t in episode.trajectory.turns if t.role == "executor"), None)


# ------------------------------------------------------------------------------------------- CLI
def selection_from_args(args: argparse.Namespace) -> Selection:
    """The :class:`Selection` of :func:`~mor_ext.agent.flags.add_selection_arguments`' flags."""
    categories = None
    if getattr(args, "tool_categories", None):
        with open(args.tool_categories, encoding="utf-8") as f:
            categories = json.load(f)
        if not isinstance(categories, dict):
            raise ValueError(f"{args.tool_categories}: expected a JSON object {{function name: category}}")
    check_selection_arguments(args)
    return Selection(constrain_names=args.constrain_names, constrain_args=args.constrain_args,
                     calls_from_plan=args.calls_from_plan, distinct_calls=args.distinct_calls, vote=args.vote, vote_temperature=args.vote_temperature,
                     seed=args.seed, max_tools=args.max_tools, categories=categories)
