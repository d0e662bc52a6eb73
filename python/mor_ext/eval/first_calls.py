"""Agent episodes that end at the first executor turn, nothing executed: how both evaluations answer.

A task is a query with its tools (schemas suffice) and system prompt; :func:`run_first_calls` runs
them as batched episodes (``AgentConfig(first_call_only=True)``) under the role ids the model was
trained with (:func:`mor_ext.agent.role_encoder`), and :func:`first_executor_turn` reads the answer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..agent import AgentConfig, Episode, EpisodeResult, role_encoder, run_episodes
from ..agent.batch import TokenChooser
from ..data.trajectory import Turn
from ..tools import Tool

__all__ = ["FirstCallTask", "run_first_calls", "first_executor_turn"]


@dataclass(frozen=True)
class FirstCallTask:
    """One question for the agent: the user's ``query``, the ``tools`` offered, the ``system`` prompt."""

    query: str
    tools: Mapping[str, Tool]
    system: str | None = None
    id: str | None = None


def run_first_calls(model: torch.nn.Module, tokenizer, tasks: Sequence[FirstCallTask], *, batch_size: int = 8,
                    max_new_tokens: int = 256, max_tokens: int | None = None,
                    progress: Callable[[int], None] | None = None,
                    choose: TokenChooser | None = None) -> list[EpisodeResult]:
    """The episodes of ``tasks``, in order. ``max_new_tokens`` bounds each role turn; ``max_tokens``
    the whole episode (default: the model's context length); ``progress(1)`` per finished episode;
    ``choose`` replaces greedy decoding, ``(logits, episode) -> token`` (tests script the output)."""
    encoder = role_encoder(model, tokenizer)
    if max_tokens is None:
        max_tokens = int(getattr(model.config, "max_position_embeddings", 4096) or 4096)
    config = AgentConfig(max_steps=1, max_tokens=max_tokens, max_turn_tokens=max_new_tokens, first_call_only=True)

    def make(index: int) -> Episode:
        task = tasks[index]
        return Episode(encoder, task.tools, task.query, config, system=task.system, id=task.id)

    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    done = (lambda index, result: progress(1)) if progress is not None else None
    return run_episodes(model, make, len(tasks), batch_size=batch_size, pad_id=pad, on_done=done,
                        choose=choose).episodes


def first_executor_turn(episode: EpisodeResult) -> Turn | None:
    """The executor turn that ended a first-call episode, or None (no call, or a limit before it)."""
    return next((t for t in episode.trajectory.turns if t.role == "executor"), None)
