"""Role-specific completion of the turns converted records lack (reasoner thoughts, summaries).

The converters mark what a source lacks with :data:`~mor_ext.data.converters.PLACEHOLDER`.
:func:`complete_trajectory` fills those turns: observations first, by running the calls through real
implementations (a completer must not invent tool output), then each reasoner and summarizer turn,
in order, with a :class:`Completer`, so that a summary can read the thoughts and observations
before it. Completers:

- :class:`TemplateCompleter` (the default): offline, deterministic, built from the query, the calls
  and the last observation;
- :class:`HFCompleter`: a local Hugging Face causal LM via ``generate``;
- :class:`OpenAICompatibleCompleter`: ``POST {base_url}/chat/completions`` of any OpenAI-compatible
  server, with ``urllib`` (no extra dependency), bounded retries and clear errors.

The model-based completers see :func:`completion_messages`: a role instruction (:data:`ROLE_INSTRUCTIONS`)
and the trajectory so far, plus the calls a thought must lead to.
"""

from __future__ import annotations

import dataclasses
import json
import time
import urllib.error
import urllib.request
from typing import Any, Mapping, Protocol, runtime_checkable

from ..tools.catalogue import CATALOGUE
from .converters import PLACEHOLDER
from .trajectory import Trajectory, parse_trajectory, render_content
from .verification import _resolved_meta, derive_observations

__all__ = [
    "Completer", "CompletionError", "ROLE_INSTRUCTIONS", "completion_messages", "complete_trajectory",
    "TemplateCompleter", "HFCompleter", "OpenAICompatibleCompleter",
]


class CompletionError(RuntimeError):
    """A completer could not produce a turn (an HTTP failure, a timeout, an empty answer, ...)."""


@runtime_checkable
class Completer(Protocol):
    def complete(self, trajectory: Trajectory, turn_index: int, role: str) -> str:
        """The content of ``trajectory.turns[turn_index]``, a turn of ``role``."""
        ...


ROLE_INSTRUCTIONS = {
    "reasoner": ("You are the reasoner of a tool-using agent. Write the reasoner's thought for the marked "
                 "step: briefly analyse the user's request and what is known so far, and justify the next "
                 "step. Do not write tool calls or the final answer; write only the thought."),
    "summarizer": ("You are the summarizer of a tool-using agent. Write the final answer to the user's "
                   "request from the tool observations above, concisely and without inventing facts. "
                   "Write only the answer."),
}


# ------------------------------------------------------------------------------------- the prompt
def _context(trajectory: Trajectory, turn_index: int) -> str:
    lines = ["Available tools:"]
    lines += [f"- {t.name}: {t.description} parameters: {json.dumps(t.parameters, ensure_ascii=False)}"
              for t in trajectory.tools] or ["- (none)"]
    lines += ["", "Trajectory so far:"]
    for turn in trajectory.turns[:turn_index]:
        lines.append(f"[{turn.role}] {render_content(turn)}")
    return "\n".join(lines)


def completion_messages(trajectory: Trajectory, turn_index: int, role: str) -> list[dict[str, str]]:
    """Chat messages asking a model for turn ``turn_index`` (of ``role``): the role instruction as the
    system message; the tools, the turns before it and what it must lead to as the user message."""
    if role not in ROLE_INSTRUCTIONS:
        raise ValueError(f"no completion for {role!r} turns; expected one of {sorted(ROLE_INSTRUCTIONS)}")
    turn = trajectory.turns[turn_index]
    task = [_context(trajectory, turn_index), ""]
    if role == "reasoner":
        following = trajectory.turns[turn_index + 1] if turn_index + 1 < len(trajectory.turns) else None
        if turn.next == "executor" and following is not None and following.role == "executor":
            task.append(f"The thought must lead to this tool call: {render_content(following)}")
        else:
            task.append("The thought must conclude that the final answer can now be given.")
    task.append(f"Write the {role} turn.")
    return [{"role": "system", "content": ROLE_INSTRUCTIONS[role]}, {"role": "user", "content": "\n".join(task)}]


# ------------------------------------------------------------------------------------ completing
def complete_trajectory(trajectory: Trajectory, completer: Completer | None = None, *,
                        implementations: Mapping[str, Any] = CATALOGUE) -> Trajectory:
    """``trajectory`` with its placeholders filled: observations from running the calls (where every
    call has an implementation in ``implementations`` and runs), then every reasoner and summarizer
    placeholder from ``completer`` (default :class:`TemplateCompleter`), in turn order.

    The completion marks in ``meta`` are updated to what is left (an observation no implementation can
    produce stays a placeholder, and :func:`~mor_ext.data.verification.verify` rejects it);
    ``meta["completed_by"]`` names the completer. Raises :class:`CompletionError` on an empty completion.
    """
    completer = completer if completer is not None else TemplateCompleter()
    trajectory, _ = derive_observations(trajectory, implementations)
    filled = []
    for i, turn in enumerate(trajectory.turns):
        if turn.role not in ROLE_INSTRUCTIONS or turn.content != PLACEHOLDER:
            continue
        text = completer.complete(trajectory, i, turn.role)
        if not isinstance(text, str) or not text.strip() or text.strip() == PLACEHOLDER:
            raise CompletionError(f"trajectory {trajectory.id}: {type(completer).__name__} gave no "
                                  f"{turn.role} text for turn {i}: {text!r:.60}")
        turns = list(trajectory.turns)
        turns[i] = dataclasses.replace(turn, content=text.strip())
        trajectory = dataclasses.replace(trajectory, turns=tuple(turns))
        filled.append(i)
    if not filled:
        return trajectory
    meta = _resolved_meta(trajectory.meta, list(trajectory.turns))
    meta["completed_by"] = type(completer).__name__
    meta["completed_turns"] = sorted(set(meta.get("completed_turns", [])) | set(filled))
    trajectory = dataclasses.replace(trajectory, meta=meta)
    parse_trajectory(trajectory.to_dict(), record=trajectory.id)
    return trajectory


# ----------------------------------------------------------------------------------- the template
def _describe_result(text: str) -> str:
    """Plain words for an observation (``{"result": r}``, ``{"error": e}``, a list of them, or text)."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return text.strip()
    items = data if isinstance(data, list) else [data]
    parts = []
    for item in items:
        if isinstance(item, dict) and set(item) == {"result"}:
            parts.append(json.dumps(item["result"], ensure_ascii=False))
        elif isinstance(item, dict) and set(item) == {"error"}:
            parts.append(f"an error ({item['error']})")
        else:
            parts.append(json.dumps(item, ensure_ascii=False))
    return "; ".join(parts)


class TemplateCompleter:
    """Deterministic, offline thoughts and summaries from templates; the default completer."""

    def complete(self, trajectory: Trajectory, turn_index: int, role: str) -> str:
        turns = trajectory.turns
        before = turns[:turn_index]
        observations = [t.content for t in before if t.role == "observation" and t.content != PLACEHOLDER]
        descriptions = {t.name: t.description.rstrip(".") for t in trajectory.tools}
        query = trajectory.query.strip()
        if role == "reasoner":
            turn = turns[turn_index]
            if turn.next == "executor" and turn_index + 1 < len(turns):
                calls = turns[turn_index + 1].calls
                uses = ", then ".join(
                    f"the tool `{c.name}`" + (f" ({descriptions[c.name].lower()})" if descriptions.get(c.name) else "")
                    + f" with {json.dumps(c.arguments, ensure_ascii=False)}" for c in calls)
                if observations:
                    return f"The results so far are {_describe_result(observations[-1])}. Next I need {uses}."
                return f"The user asks: {query} I can answer it with {uses}."
            if observations:
                return (f"The tool results ({_describe_result(observations[-1])}) answer the request, "
                        "so I can give the final answer.")
            return "None of the available tools is needed or able to help here, so I will answer directly."
        if role == "summarizer":
            if observations:
                calls = [c.name for t in before if t.role == "executor" for c in t.calls]
                tools = ", ".join(f"`{n}`" for n in dict.fromkeys(calls))
                return f"Using {tools}, the result is: {_describe_result(observations[-1])}."
            return "I'm sorry, but none of the available tools can help with this request."
        raise ValueError(f"no template for {role!r} turns; expected one of {sorted(ROLE_INSTRUCTIONS)}")


# --------------------------------------------------------------------------- a local Hugging Face LM
class HFCompleter:
    """Completions from a local Hugging Face causal LM (``model.generate``; greedy by default).

    The prompt is :func:`completion_messages` through the tokenizer's chat template when it has one,
    else the messages as plain text; it is cut from the left to ``max_prompt_tokens``.
    ``generate_kwargs`` go to ``generate`` as they are.
    """

    def __init__(self, model: Any, tokenizer: Any, *, max_new_tokens: int = 256, max_prompt_tokens: int = 2048,
                 **generate_kwargs: Any) -> None:
        self.model, self.tokenizer = model, tokenizer
        self.max_new_tokens, self.max_prompt_tokens = max_new_tokens, max_prompt_tokens
        self.generate_kwargs = {"do_sample": False, **generate_kwargs}

    def _prompt_ids(self, messages: list[dict[str, str]]) -> list[int]:
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
            ids = ids["input_ids"] if isinstance(ids, Mapping) else ids
        else:
            text = "\n\n".join(f"{m['role'].upper()}: {m['content']}" for m in messages) + "\n\nASSISTANT: "
            ids = self.tokenizer(text, add_special_tokens=True)["input_ids"]
        return list(ids)[-self.max_prompt_tokens:]

    def complete(self, trajectory: Trajectory, turn_index: int, role: str) -> str:
        import torch

        ids = self._prompt_ids(completion_messages(trajectory, turn_index, role))
        device = next(self.model.parameters()).device
        input_ids = torch.tensor([ids], dtype=torch.long, device=device)  # [1, prompt_len]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else self.tokenizer.eos_token_id
        with torch.no_grad():
            out = self.model.generate(input_ids, attention_mask=torch.ones_like(input_ids),
                                      max_new_tokens=self.max_new_tokens, pad_token_id=pad, **self.generate_kwargs)
        return self.tokenizer.decode(out[0, input_ids.shape[1]:], skip_special_tokens=True).strip()


# ------------------------------------------------------------------------ an OpenAI-compatible API
_RETRY_STATUS = {408, 429, 500, 502, 503, 504}


class OpenAICompatibleCompleter:
    """Completions from ``POST {base_url}/chat/completions`` (OpenAI, vLLM, llama.cpp, ... servers).

    Timeouts, connection errors and HTTP 408/429/5xx are retried up to ``max_retries`` times with
    exponential backoff; other HTTP errors and malformed responses raise :class:`CompletionError`
    at once. Every error names the URL, the attempt and what the server said.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, *, timeout: float = 60.0,
                 max_retries: int = 2, backoff_s: float = 0.5, temperature: float = 0.0, max_tokens: int = 256,
                 extra_body: dict[str, Any] | None = None) -> None:
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout
        self.max_retries, self.backoff_s = max_retries, backoff_s
        self.body = {"temperature": temperature, "max_tokens": max_tokens, **(extra_body or {})}

    def _post(self, payload: dict[str, Any]) -> dict[str, Any]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        data = json.dumps(payload, ensure_ascii=False).encode("utf-8")
        attempts = self.max_retries + 1
        last = ""
        for attempt in range(1, attempts + 1):
            request = urllib.request.Request(self.url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    raw = response.read()
            except urllib.error.HTTPError as e:
                body = e.read()[:300].decode("utf-8", "replace")
                last = f"HTTP {e.code} {e.reason}: {body}"
                if e.code not in _RETRY_STATUS:
                    raise CompletionError(f"POST {self.url} (attempt {attempt}/{attempts}): {last}") from None
            except (TimeoutError, urllib.error.URLError, ConnectionError) as e:
                reason = getattr(e, "reason", e)
                kind = "timed out" if isinstance(reason, TimeoutError) or isinstance(e, TimeoutError) else "failed"
                last = f"{kind} after {self.timeout:g} s limit: {reason}" if kind == "timed out" else f"failed: {reason}"
            else:
                try:
                    return json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError):
                    raise CompletionError(f"POST {self.url}: the response is not JSON: {raw[:200]!r}") from None
            if attempt < attempts:
                time.sleep(self.backoff_s * 2 ** (attempt - 1))
        raise CompletionError(f"POST {self.url} failed after {attempts} attempt(s); last: {last}")

    def complete(self, trajectory: Trajectory, turn_index: int, role: str) -> str:
        payload = {"model": self.model, "messages": completion_messages(trajectory, turn_index, role), **self.body}
        response = self._post(payload)
        try:
            content = response["choices"][0]["message"]["content"]
        except (KeyError, IndexError, TypeError):
            raise CompletionError(f"POST {self.url}: no choices[0].message.content in {str(response)[:200]}") from None
        if not isinstance(content, str) or not content.strip():
            raise CompletionError(f"POST {self.url}: empty completion for the {role} turn {turn_index}")
        return content.strip()
