"""Answering BFCL questions: as the project's agent (``agent`` mode) or with BFCL's prompt (``prompt``).

**agent**: each question becomes the project's trajectory prompt (the system prompt, the question's
functions as schema-only tools, the user's message) and the model runs as the agent
(:func:`mor_ext.agent.run_episodes`, batched, ``first_call_only``): the first executor turn's parsed
calls are the answer, written as BFCL's Python-call text; a reasoner that goes to the summarizer
answers no call (``[]``). Nothing is ever executed: the tools have no implementation. An executor
turn that does not parse keeps its raw text as the answer (BFCL's decoder then judges it). A MoR model
runs with per-token roles as in training; a plain model (the base, or a merged LoRA) runs the same
prompt without roles; a one-role ablation runs every role's tokens under its one role, as it was trained.

**prompt**: BFCL's default prompt-mode system prompt (``system_prompt_pre_processing_chat_model``) in the
tokenizer's chat template, plain greedy generation in batches (prompts sorted by length, left
padding); the generated text is the answer, decoded later as BFCL decodes it. A MoR model generates
under its executor role.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch

from ...agent import EpisodeResult
from ...agent.batch import TokenChooser
from ...patching import active_role, is_patched
from ..first_calls import FirstCallTask, Selection, first_executor_turn, run_first_calls
from .calls import NO_CALL, calls_text, schema_tools
from .data import Question
from .shim import bfcl

__all__ = ["Answer", "answer_as_agent", "answer_with_prompt", "agent_query", "prompt_messages"]

Progress = Callable[[int], None]  # called with the number of questions just answered


@dataclass
class Answer:
    """One question's answer: ``result`` is BFCL's result text; ``raw`` what the model wrote
    (prompt mode: the generation; agent mode: the executor's text, if it got that far)."""

    id: str
    result: str
    raw: str
    status: str = "generated"  # agent mode: the episode's status (called, no_call, token_limit, ...)
    extra: dict[str, Any] = field(default_factory=dict)


# ------------------------------------------------------------------------------------------- agent
def agent_query(question: Question) -> tuple[str, str | None]:
    """``(user query, extra system text)`` of a question for the trajectory prompt: BFCL system
    messages join the system prompt; several other messages are kept in order as ``role: text`` lines."""
    system = "\n\n".join(m["content"] for m in question.messages if m["role"] == "system") or None
    rest = [m for m in question.messages if m["role"] != "system"]
    if len(rest) == 1 and rest[0]["role"] == "user":
        return rest[0]["content"], system
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in rest), system


def _agent_answer(question: Question, episode: EpisodeResult) -> Answer:
    turn = first_executor_turn(episode)
    reasoner = next((t.content for t in episode.trajectory.turns if t.role == "reasoner"), "")
    extra = {"reasoner": reasoner}
    if episode.trajectory.meta.get("warnings"):
        extra["warnings"] = episode.trajectory.meta["warnings"]
    if turn is None:  # no_call, or a limit before any executor turn
        return Answer(question.id, NO_CALL, "", episode.status, extra)
    raw = turn.content
    result = calls_text(turn.calls, question.language) if turn.calls else raw
    return Answer(question.id, result, raw, episode.status, extra)


def answer_as_agent(model: torch.nn.Module, tokenizer, questions: Sequence[Question], *, system: str | None = None,
                    batch_size: int = 8, max_new_tokens: int = 256, max_tokens: int | None = None,
                    progress: Progress | None = None, choose: TokenChooser | None = None,
                    selection: Selection | None = None) -> list[Answer]:
    """Agent-mode answers, in question order (see the module docstring). ``max_new_tokens`` bounds
    each role turn; ``max_tokens`` the whole episode (default: the model's context length).
    ``choose`` replaces greedy decoding, ``(logits, episode) -> token`` (tests script the output).
    ``selection``: constrained names, majority vote, hierarchical selection (``docs/spec.md`` §7)."""
    b = bfcl()

    def convert(functions: list[dict]) -> list[dict]:
        return b.convert_to_tool(functions, b.GORILLA_TO_OPENAPI, b.ModelStyle.OSSMODEL)

    def task(question: Question) -> FirstCallTask:
        query, extra = agent_query(question)
        full_system = "\n\n".join(p for p in (system, extra) if p) or None
        return FirstCallTask(query, schema_tools(question.functions, convert), full_system, question.id)

    episodes = run_first_calls(model, tokenizer, [task(q) for q in questions], batch_size=batch_size,
                               max_new_tokens=max_new_tokens, max_tokens=max_tokens, progress=progress, choose=choose,
                               selection=selection)
    return [_agent_answer(q, e) for q, e in zip(questions, episodes)]


# ------------------------------------------------------------------------------------------- prompt
def prompt_messages(question: Question) -> list[dict[str, str]]:
    """The chat messages BFCL's prompt mode sends: its default system prompt with the functions (in
    JSON), merged with the question's own system message if it has one, then the question."""
    return bfcl().system_prompt(copy.deepcopy(list(question.messages)), copy.deepcopy(list(question.functions)),
                                question.id)


def _prompt_ids(tokenizer, question: Question) -> list[int]:
    if not getattr(tokenizer, "chat_template", None):
        raise ValueError("prompt mode renders BFCL's messages with the tokenizer's chat template, and this tokenizer "
                         "has none")
    text = tokenizer.apply_chat_template(prompt_messages(question), tokenize=False, add_generation_prompt=True)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.no_grad()
def answer_with_prompt(model: torch.nn.Module, tokenizer, questions: Sequence[Question], *, batch_size: int = 8,
                       max_new_tokens: int = 256, progress: Progress | None = None) -> list[Answer]:
    """Prompt-mode answers (greedy), in question order (see the module docstring)."""
    prompts = [_prompt_ids(tokenizer, q) for q in questions]
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths share a batch
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    device = next(model.parameters()).device
    texts: dict[int, str] = {}
    role = nullcontext()
    if is_patched(model):
        spec = model.mor_config.spec
        role = active_role(model, "executor" if "executor" in [r.name for r in spec.roles] else 0)
    with role:
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            width = max(len(prompts[i]) for i in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):  # left padding: every row's last prompt token is at the end
                ids[r, width - len(prompts[i]):] = torch.tensor(prompts[i])
                mask[r, width - len(prompts[i]):] = 1
            out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), max_new_tokens=max_new_tokens,
                                 do_sample=False, pad_token_id=pad, eos_token_id=tokenizer.eos_token_id)
            for r, i in enumerate(rows):
                texts[i] = tokenizer.decode(out[r, width:], skip_special_tokens=True)
            if progress is not None:
                progress(len(rows))
    return [Answer(q.id, texts[i], texts[i]) for i, q in enumerate(questions)]
