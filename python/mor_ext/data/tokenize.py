"""Trajectory -> ``input_ids``, ``role_ids``, ``labels``, in the model's own chat-template family.

One renderer builds both the training sequences and the inference prompts, so the two cannot
drift: for every role turn ``i`` of a trajectory, ``prompt_for_role(tokenizer, trajectory with
turns[:i], turns[i].role)`` is exactly the training ``input_ids`` (and ``role_ids``) up to the first
content token of turn ``i``.

Layout, one turn per header (ChatML shown; Llama-3 and the plain fallback change only the markers)::

    <|im_start|>system\\n{system}\\n\\n{tools}<|im_end|>\\n   context   role: context_role   label -100
    <|im_start|>user\\n{query}<|im_end|>\\n                context   role: context_role   label -100
    <|im_start|>reasoner\\n                               header    role: reasoner       label -100
    {thought}\\nNext: executor<|im_end|>                  output    role: reasoner       label = token
    \\n                                                  separator role: reasoner       label -100
    <|im_start|>executor\\n{"name": ...}<|im_end|>\\n      the same split, role executor
    <|im_start|>observation\\n{result}<|im_end|>\\n        context   role: context_role   label -100
    ...                                                 reasoner, then summarizer

* **Formats** (:class:`ChatFormat`): ``chatml`` (SmolLM2, Qwen), ``llama3`` (``<|begin_of_text|>``
  first, ``<|start_header_id|>{header}<|end_header_id|>\\n\\n{content}<|eot_id|>``) and ``plain``
  (``### {header}\\n{content}{eos}\\n\\n``, for tokenizers without a chat template).
  :func:`chat_format` picks one from the tokenizer's ``chat_template`` (or, without one, from its
  special tokens), or by name.
* **Tools** are folded into the system turn (after the system prompt, one JSON object per line), as
  Qwen2.5 and Llama-3.1 place tool definitions: the sequence then has one context block before the
  query, and every family's template already has a ``system`` header. No system prompt and no tools
  means no system turn.
* **Tokens**: every piece (begin marker, header, content, end-of-turn marker, separator) is encoded on
  its own with ``add_special_tokens=False`` and the pieces are concatenated. This segmentation is the
  definition of the sequence, for training and for prompts alike; on byte-level BPE tokenizers it
  equals the tokenization of the whole rendered text (the tests check this against
  ``apply_chat_template`` on each family).
* **Labels** cover a role turn's content and its end-of-turn marker (the model must learn to stop),
  never headers, separators or context. **Role ids**: a role turn's header, content, marker and
  separator carry that role's id; context (the begin marker, system/tools, user, observation) carries
  ``context_role`` (a role name, or None for -1, the base model); padding -1. A
  :class:`~mor_ext.schemes.RoleScheme` changes that mapping (``docs/spec.md`` §7): e.g. AgentFlux's
  splits an executor turn into ``selector`` (syntax and function names) and ``arguments`` tokens,
  each token under the role of its first character (character offsets from decoding the turn's
  token prefixes, as the agent does while it generates). :func:`restrict_labels` keeps only the
  labels that some roles predict (per-role loss masks).
* **Raw turns**: a reasoner turn without ``next`` or an executor turn without ``calls`` renders its
  ``content`` verbatim. That is how an inference loop appends what a model generated (which already
  holds its ``Next:`` line, or may not parse as a call) without re-rendering it.
* **Truncation** (``max_length``) drops whole trailing turns, keeping the longest prefix that ends
  with a role turn (the example's ``dropped_turns`` says how many were dropped). If even the first
  role turn does not fit, :class:`ExampleTooLong` is raised; :func:`encode_trajectories` collects
  those as :class:`SkippedExample` records with their reasons. Nothing is ever cut mid-turn.
* **Packing** (:func:`pack`): first-fit of encoded examples into rows of at most ``max_length``
  tokens, with ``position_ids`` restarting at 0 for each example and the row's example
  ``boundaries`` (``cu_seqlens``). :func:`collate` of packed rows returns **no** ``attention_mask``:
  transformers (>= 5, eager/sdpa/flex) derives a block-diagonal causal mask from the position resets
  when ``attention_mask`` is None and no cache is used, and flash-attention uses them as varlen
  boundaries. The trainer must therefore call the model with ``use_cache=False`` and without an
  attention mask; a trainer that builds its own mask uses ``boundaries`` (padding is one more block,
  with labels -100). A packed example's first token is always context (label -100), so no loss term
  crosses a boundary.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from itertools import accumulate
from typing import Iterable, Sequence

import torch

from ..schemes import RoleScheme, token_roles
from ..spec import MoRSpec
from .trajectory import CONTEXT_TURNS, ROLE_TURNS, Trajectory, Turn, render_content

__all__ = [
    "ChatFormat", "CHATML", "LLAMA3", "chat_format", "render_messages", "TurnSpan", "EncodedExample",
    "PackedExample", "SkippedExample", "EncodeResult", "ExampleTooLong", "RoleTokenizer",
    "encode_trajectory", "encode_trajectories", "prompt_for_role", "pack", "collate", "restrict_labels",
    "keep_supervised_logits",
]

logger = logging.getLogger("mor_ext")

IGNORE_INDEX = -100  # label of every unsupervised token (torch's cross-entropy default)
NO_ROLE = -1  # role id of padding (and of context when context_role is None): the base model


# ------------------------------------------------------------------------------------------- formats
@dataclass(frozen=True)
class ChatFormat:
    """The markers of one chat-template family; a turn renders as ``header + content + end + separator``.

    ``header`` holds ``{role}``. ``end_of_turn`` is what a role turn's output ends with (supervised, and
    the stop token at inference); ``separator`` follows it and is not supervised.
    """

    name: str
    begin: str  # once, at the start of every sequence
    header: str
    end_of_turn: str
    separator: str

    @classmethod
    def plain(cls, eos_token: str, bos_token: str | None = None) -> "ChatFormat":
        """``### {role}\\n{content}{eos}\\n\\n``, for tokenizers without a chat template."""
        return cls("plain", bos_token or "", "### {role}\n", eos_token, "\n\n")


CHATML = ChatFormat("chatml", "", "<|im_start|>{role}\n", "<|im_end|>", "\n")
LLAMA3 = ChatFormat("llama3", "<|begin_of_text|>", "<|start_header_id|>{role}<|end_header_id|>\n\n", "<|eot_id|>", "")
_FORMAT_NAMES = ("chatml", "llama3", "plain")
# Markers that must each be one token of the vocabulary for a family to be usable.
_MARKERS = {"chatml": ("<|im_start|>", "<|im_end|>"),
            "llama3": ("<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>")}


def _template_text(tokenizer) -> str:
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, dict):  # named templates ("default", "tool_use", ...)
        return "\n".join(str(t) for t in template.values())
    return template or ""


def _single_token_id(tokenizer, text: str) -> int | None:
    ids = tokenizer.encode(text, add_special_tokens=False)
    if len(ids) != 1 or (tokenizer.unk_token_id is not None and ids[0] == tokenizer.unk_token_id):
        return None
    return ids[0]


def chat_format(tokenizer, name: str | None = None) -> ChatFormat:
    """The :class:`ChatFormat` for a tokenizer: by ``name`` ("chatml", "llama3", "plain"), or detected.

    Detection reads the chat template (``<|im_start|>`` -> chatml, ``<|start_header_id|>`` -> llama3);
    without a template, the special tokens; a template of another family falls back to plain, with a
    warning. The markers of the chosen family must each be one token of the vocabulary.
    """
    if name is None:
        template = _template_text(tokenizer)
        if "<|im_start|>" in template:
            name = "chatml"
        elif "<|start_header_id|>" in template:
            name = "llama3"
        elif template:
            logger.warning("the tokenizer's chat template is neither ChatML nor Llama-3; using the plain format "
                           "(pass chat_format='chatml'|'llama3'|'plain' to choose)")
            name = "plain"
        else:
            has = lambda family: all(_single_token_id(tokenizer, m) is not None for m in _MARKERS[family])  # noqa: E731
            name = "chatml" if has("chatml") else "llama3" if has("llama3") else "plain"
    if name not in _FORMAT_NAMES:
        raise ValueError(f"unknown chat format {name!r}; expected one of {list(_FORMAT_NAMES)}")
    if name == "plain":
        if tokenizer.eos_token is None:
            raise ValueError("the plain chat format ends each turn with the eos token, but the tokenizer has none")
        return ChatFormat.plain(tokenizer.eos_token, tokenizer.bos_token)
    missing = [m for m in _MARKERS[name] if _single_token_id(tokenizer, m) is None]
    if missing:
        raise ValueError(f"chat format {name!r} needs the special tokens {missing} as single tokens, "
                         "but the tokenizer splits them or lacks them")
    return CHATML if name == "chatml" else LLAMA3


def _resolve_format(tokenizer, fmt: str | ChatFormat | None) -> ChatFormat:
    return fmt if isinstance(fmt, ChatFormat) else chat_format(tokenizer, fmt)


# ------------------------------------------------------------------------------------------- text
def _turn_text(turn: Turn) -> str:
    if (turn.role == "reasoner" and turn.next is None) or (turn.role == "executor" and not turn.calls):
        return turn.content  # a raw turn: model output kept verbatim
    return render_content(turn)


def _system_text(trajectory: Trajectory) -> str | None:
    parts = [trajectory.system] if trajectory.system else []
    if trajectory.tools:
        lines = "\n".join(json.dumps(t.to_dict(), ensure_ascii=False) for t in trajectory.tools)
        parts.append(f"Available tools (one JSON object per line):\n{lines}")
    return "\n\n".join(parts) or None


def render_messages(trajectory: Trajectory) -> list[dict[str, str]]:
    """The rendered turns as ``{"role": header, "content": text}``: the system turn (system prompt and
    tools) if any, then one message per turn. The same text the token sequences are built from."""
    system = _system_text(trajectory)
    messages = [] if system is None else [{"role": "system", "content": system}]
    for i, turn in enumerate(trajectory.turns):
        if turn.role not in CONTEXT_TURNS + ROLE_TURNS:
            raise ValueError(f"turns[{i}].role = {turn.role!r}; expected one of {list(CONTEXT_TURNS + ROLE_TURNS)}")
        messages.append({"role": turn.role, "content": _turn_text(turn)})
    return messages


# ------------------------------------------------------------------------------------------- results
@dataclass(frozen=True)
class TurnSpan:
    """Where one rendered turn lies in a sequence (token offsets, end-exclusive)."""

    header: str  # system, user, reasoner, executor, observation, summarizer
    turn: int  # index into trajectory.turns; -1 for the system turn
    start: int  # first header token
    content: int  # first content token: a prompt for this turn ends here
    output_end: int  # one past the end-of-turn marker; a role turn's labels cover [content, output_end)
    end: int  # one past the separator: the next turn's start


@dataclass
class EncodedExample:
    """One encoded trajectory; the three lists have one entry per token."""

    input_ids: list[int]
    role_ids: list[int]
    labels: list[int]
    spans: tuple[TurnSpan, ...]
    id: str | None = None
    dropped_turns: int = 0  # whole trailing turns dropped to fit max_length

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass
class PackedExample:
    """Several encoded examples in one row; ``position_ids`` restart at 0 for each of them."""

    input_ids: list[int]
    role_ids: list[int]
    labels: list[int]
    position_ids: list[int]
    boundaries: tuple[int, ...]  # cu_seqlens: example k is [boundaries[k], boundaries[k + 1])
    members: tuple[int, ...]  # indices, in the list given to pack(), of the examples in this row

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class SkippedExample:
    index: int  # position in the input of encode_trajectories
    id: str | None
    reason: str


@dataclass
class EncodeResult:
    examples: list[EncodedExample]
    skipped: list[SkippedExample]


class ExampleTooLong(ValueError):
    """Even the first role turn of a trajectory does not fit in ``max_length`` tokens."""

    def __init__(self, id: str | None, reason: str) -> None:
        self.id, self.reason = id, reason
        super().__init__(f"trajectory {id!r}: {reason}")


# ------------------------------------------------------------------------------------------- encoder
class RoleTokenizer:
    """A tokenizer, a chat format and a role mapping: encodes trajectories and builds prompts.

    ``spec`` gives the role ids (``spec.role_index``; default ``MoRSpec.moragent()``); ``context_role``
    is the role of context tokens (None: -1), as in :class:`~mor_ext.MoRConfig`. ``chat_format`` is a
    name, a :class:`ChatFormat`, or None to detect it from the tokenizer. ``scheme``: the role of
    each token of a role turn (None: the turn's header names its role, MoRAgent's rule).
    """

    def __init__(self, tokenizer, spec: MoRSpec | None = None, context_role: str | None = "reasoner",
                 chat_format: str | ChatFormat | None = None, scheme: RoleScheme | None = None) -> None:
        self.tokenizer = tokenizer
        self.spec = MoRSpec.moragent() if spec is None else spec
        self.scheme = scheme
        if scheme is not None:
            scheme.check_spec(self.spec)
        self.format = _resolve_format(tokenizer, chat_format)
        self.context_role_id = NO_ROLE if context_role is None else self.spec.role_index(context_role)
        self._begin = self.encode_text(self.format.begin)
        self._end = self.encode_text(self.format.end_of_turn)
        self._separator = self.encode_text(self.format.separator)
        self._headers: dict[str, list[int]] = {}

    @property
    def end_of_turn_id(self) -> int:
        """The token a role's output ends with: the stop token for generation."""
        return self._end[-1]

    def encode_text(self, text: str) -> list[int]:
        """Token ids of ``text`` alone, without special tokens (the way every piece is encoded)."""
        return self.tokenizer.encode(text, add_special_tokens=False) if text else []


    def header_ids(self, header: str) -> list[int]:
        """Token ids of the header that opens a turn of ``header`` (a role or a context header)."""
        if header not in self._headers:
            self._headers[header] = self.encode_text(self.format.header.format(role=header))
        return self._headers[header]

    def context_turn_ids(self, header: str, text: str) -> list[int]:
        """A whole context turn (e.g. an observation) as it renders in training: header, content, end
        of turn, separator."""
        return self.header_ids(header) + self.encode_text(text) + self._end + self._separator

    @property
    def end_of_turn_ids(self) -> list[int]:
        """The end-of-turn marker's ids (its last one is :attr:`end_of_turn_id`)."""
        return list(self._end)

    @property
    def separator_ids(self) -> list[int]:
        """The ids between one turn's end marker and the next turn's header."""
        return list(self._separator)

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids`` as the agent reads generated tokens (special tokens skipped)."""
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def _role_id(self, header: str, where: str) -> int:
        if header not in ROLE_TURNS:
            return self.context_role_id
        role = header if self.scheme is None else self.scheme.turn_role(header)
        try:
            return self.spec.role_index(role)
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from None

    def turn_role_id(self, header: str) -> int:
        """The role id of a turn's header tokens (context headers: the context role)."""
        return self._role_id(header, f"{header} turn")

    def executor_role_ids(self, content_ids: Sequence[int]) -> tuple[list[int], int]:
        """Role ids of an executor turn's content tokens under the scheme, and of its end-of-turn
        marker (and separator). Each token runs under the role of its first character."""
        if self.scheme is None or not self.scheme.splits_calls:
            role = self._role_id("executor", "executor turn")
            return [role] * len(content_ids), role
        starts = [len(self.decode(content_ids[:k])) for k in range(len(content_ids))]
        roles, end = token_roles(self.scheme, starts, self.decode(content_ids))
        return [self.spec.role_index(r) for r in roles], self.spec.role_index(end)

    def _turn_pieces(self, trajectory: Trajectory) -> list[tuple[str, int, list[int], list[int]]]:
        """``(header, turn index, header ids, content ids)`` per rendered turn."""
        messages = render_messages(trajectory)
        first = len(messages) - len(trajectory.turns)  # 1 if there is a system turn
        return [(m["role"], i - first, self.header_ids(m["role"]), self.encode_text(m["content"]))
                for i, m in enumerate(messages)]

    def encode(self, trajectory: Trajectory, max_length: int | None = None) -> EncodedExample:
        """Encode a whole trajectory (see the module docstring); raises :class:`ExampleTooLong`."""
        pieces = self._turn_pieces(trajectory)
        tail = len(self._end) + len(self._separator)
        # ends[k]: one past the last token of rendered turn k
        ends = list(accumulate((len(h) + len(c) + tail for _, _, h, c in pieces), initial=len(self._begin)))[1:]
        keep = len(pieces)
        if max_length is not None and ends and ends[-1] > max_length:
            # The longest prefix of whole turns that fits and ends with a role turn.
            roles_at = [k for k, piece in enumerate(pieces) if piece[0] in ROLE_TURNS]
            fitting = [k for k in roles_at if ends[k] <= max_length]
            if not fitting:
                if not roles_at:
                    reason = f"it has no role turn and its {ends[-1]} context tokens exceed max_length={max_length}"
                else:
                    k = roles_at[0]
                    reason = (f"its first role turn ({pieces[k][0]}) ends at token {ends[k]}, "
                              f"past max_length={max_length}")
                raise ExampleTooLong(trajectory.id, reason)
            keep = fitting[-1] + 1

        n = len(self._begin)
        ids, roles, labels, spans = list(self._begin), [self.context_role_id] * n, [IGNORE_INDEX] * n, []
        for header, turn, header_ids, content_ids in pieces[:keep]:
            role = self._role_id(header, f"turns[{turn}]")
            output = content_ids + self._end
            start = len(ids)
            ids += header_ids + output + self._separator
            if header == "executor" and self.scheme is not None:
                content_roles, end_role = self.executor_role_ids(content_ids)
                roles += [role] * len(header_ids) + content_roles + [end_role] * (len(self._end) + len(self._separator))
            else:
                roles += [role] * (len(ids) - start)
            trained = header in ROLE_TURNS
            labels += [IGNORE_INDEX] * len(header_ids) + (output if trained else [IGNORE_INDEX] * len(output))
            labels += [IGNORE_INDEX] * len(self._separator)
            content = start + len(header_ids)
            spans.append(TurnSpan(header, turn, start, content, content + len(output), len(ids)))
        dropped = len(pieces) - keep
        return EncodedExample(ids, roles, labels, tuple(spans), trajectory.id, dropped)

    def encode_many(self, trajectories: Iterable[Trajectory], max_length: int | None = None) -> EncodeResult:
        """Encode each trajectory; those whose first role turn does not fit are skipped and reported."""
        examples, skipped = [], []
        for index, trajectory in enumerate(trajectories):
            try:
                examples.append(self.encode(trajectory, max_length))
            except ExampleTooLong as exc:
                skipped.append(SkippedExample(index, trajectory.id, exc.reason))
        if skipped:
            logger.warning("skipped %d of %d trajectories that do not fit max_length=%s (first: %s: %s)",
                           len(skipped), len(skipped) + len(examples), max_length, skipped[0].id, skipped[0].reason)
        truncated = sum(1 for e in examples if e.dropped_turns)
        if truncated:
            logger.info("%d trajectories lost trailing turns to max_length=%s", truncated, max_length)
        return EncodeResult(examples, skipped)

    def prompt(self, trajectory: Trajectory, role: str) -> tuple[list[int], list[int]]:
        """``(input_ids, role_ids)`` of the trajectory so far plus the header of ``role``, about to speak."""
        if role not in ROLE_TURNS:
            raise ValueError(f"prompt role must be one of {list(ROLE_TURNS)}, got {role!r}")
        encoded = self.encode(trajectory)
        header = self.header_ids(role)
        return encoded.input_ids + header, encoded.role_ids + [self._role_id(role, "prompt role")] * len(header)


# ------------------------------------------------------------------------------------------- functions
def restrict_labels(example: EncodedExample | PackedExample, role_ids: Iterable[int]) -> EncodedExample | PackedExample:
    """Keep only the labels predicted under ``role_ids`` (a per-role loss mask, ``docs/spec.md`` §7):
    label ``i`` is the target of position ``i - 1``, so it stays iff ``example.role_ids[i - 1]`` is one
    of them. Changes ``example`` in place and returns it."""
    keep = set(role_ids)
    labels = example.labels
    for i in range(len(labels)):
        if labels[i] != IGNORE_INDEX and (i == 0 or example.role_ids[i - 1] not in keep):
            labels[i] = IGNORE_INDEX
    return example


def encode_trajectory(tokenizer, trajectory: Trajectory, spec: MoRSpec | None = None,
                      context_role: str | None = "reasoner", *, max_length: int | None = None,
                      chat_format: str | ChatFormat | None = None) -> EncodedExample:
    """:meth:`RoleTokenizer.encode` in one call."""
    return RoleTokenizer(tokenizer, spec, context_role, chat_format).encode(trajectory, max_length)


def encode_trajectories(tokenizer, trajectories: Iterable[Trajectory], spec: MoRSpec | None = None,
                        context_role: str | None = "reasoner", *, max_length: int | None = None,
                        chat_format: str | ChatFormat | None = None) -> EncodeResult:
    """:meth:`RoleTokenizer.encode_many` in one call."""
    return RoleTokenizer(tokenizer, spec, context_role, chat_format).encode_many(trajectories, max_length)


def prompt_for_role(tokenizer, trajectory: Trajectory, role: str, spec: MoRSpec | None = None,
                    context_role: str | None = "reasoner", *,
                    chat_format: str | ChatFormat | None = None) -> tuple[list[int], list[int]]:
    """:meth:`RoleTokenizer.prompt` in one call."""
    return RoleTokenizer(tokenizer, spec, context_role, chat_format).prompt(trajectory, role)


def pack(examples: Sequence[EncodedExample], max_length: int) -> list[PackedExample]:
    """First-fit packing into rows of at most ``max_length`` tokens, in input order within a row."""
    rows: list[list[int]] = []
    free: list[int] = []
    for i, example in enumerate(examples):
        if len(example) > max_length:
            raise ValueError(f"example {i} ({example.id!r}) has {len(example)} tokens, more than max_length="
                             f"{max_length}; encode with the same max_length first")
        row = next((r for r, room in enumerate(free) if room >= len(example)), None)
        if row is None:
            rows.append([])
            free.append(max_length)
            row = len(rows) - 1
        rows[row].append(i)
        free[row] -= len(example)
    packed = []
    for members in rows:
        ids, roles, labels, positions, bounds = [], [], [], [], [0]
        for i in members:
            ex = examples[i]
            ids += ex.input_ids
            roles += ex.role_ids
            labels += ex.labels
            positions += range(len(ex))
            bounds.append(len(ids))
        packed.append(PackedExample(ids, roles, labels, positions, tuple(bounds), tuple(members)))
    return packed


def collate(examples: Sequence[EncodedExample | PackedExample], pad_id: int) -> dict[str, torch.Tensor]:
    """Right-pad to the longest row: padding gets role -1 and label -100.

    Plain examples also get ``attention_mask`` (0 on padding). Packed rows get ``position_ids`` instead
    (restarting per example; the padding is one more block from 0) and no attention mask, so that
    transformers builds a block-diagonal causal mask (call the model with ``use_cache=False``).
    """
    if not examples:
        raise ValueError("collate needs at least one example")
    if pad_id is None:
        raise ValueError("pad_id is None: the tokenizer has no pad token; pass e.g. tokenizer.eos_token_id")
    packed = isinstance(examples[0], PackedExample)
    if any(isinstance(e, PackedExample) != packed for e in examples):
        raise TypeError("collate got a mix of packed and unpacked examples")
    width = max(len(e.input_ids) for e in examples)

    def pad(rows: list[list[int]], value: int) -> torch.Tensor:  # [batch, width]
        return torch.tensor([row + [value] * (width - len(row)) for row in rows], dtype=torch.long)

    batch = {
        "input_ids": pad([e.input_ids for e in examples], pad_id),
        "role_ids": pad([e.role_ids for e in examples], NO_ROLE),
        "labels": pad([e.labels for e in examples], IGNORE_INDEX),
    }
    if packed:
        batch["position_ids"] = torch.tensor(
            [e.position_ids + list(range(width - len(e))) for e in examples], dtype=torch.long)
    else:
        batch["attention_mask"] = pad([[1] * len(e.input_ids) for e in examples], 0)
    return batch


def keep_supervised_logits(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The batch for a causal LM that computes logits only where a label follows (transformers'
    ``logits_to_keep`` as a boolean ``[batch, seq]`` mask), with ``labels`` reshaped to match.

    Agent trajectories supervise the roles' turns only (about a quarter of the tokens of the synthetic
    data): the other positions' logits, a ``[hidden, vocab]`` product each (49152 wide for SmolLM2,
    about a fifth of a training step), feed no loss term. The model keeps the masked positions in
    row-major order, then one more, the last position of the last row, which no label follows; the
    causal-LM loss shifts ``labels`` left by one, so ``labels`` becomes ``[-100, t_1, ..., t_N]`` (1-D) for
    the N targets ``t_i`` in that order, and loss, ``num_items_in_batch`` and per-token means are
    those of the full batch. Only for models whose forward takes ``logits_to_keep``."""
    labels = batch["labels"]
    keep = torch.zeros_like(labels, dtype=torch.bool)
    keep[:, :-1] = labels[:, 1:] != IGNORE_INDEX
    keep[-1, -1] = True
    targets = labels[:, 1:][keep[:, :-1]]
    return {**batch, "labels": torch.cat([labels.new_full((1,), IGNORE_INDEX), targets]), "logits_to_keep": keep}
