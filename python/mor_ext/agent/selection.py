"""Tool selection while decoding (``docs/spec.md`` §7): the function name constrained to the tools
offered, and AgentFlux's majority vote over sampled selections.

:class:`NameConstraint` says which tokens may come next in an executor turn so that its text stays a
prefix of ``{"name": "<tool>"`` (or ``[{"name": "<tool>"``; after a call of a list, ``, {"name":
"<tool>"`` or the list's end) for a tool offered: a model, even one with random weights, cannot write
another name. Once a name is closed, the arguments are free (no JSON-schema constraint).

:class:`MajorityVote` samples ``n`` selections (syntax and name) at the start of an executor turn,
each on a copy of the episode's own cache row in the driver's batch (nothing of the prompt or the
trajectory runs again), each token under its scheme role; the first sample of the most frequent name
wins, and its row becomes the episode's (its tokens do not run again either).
"""

from __future__ import annotations

import bisect
import json
from collections import Counter
from collections.abc import Sequence

import torch

from ..schemes import ARGUMENTS, CallScanner
from .decoding import sample_token

__all__ = ["NameConstraint", "MajorityVote", "first_name", "token_strings", "completing_tokens", "token_texts",
           "mask_logits"]

_CACHE_ATTR = "_mor_ext_token_strings"  # kept on the tokenizer itself: an id() key could outlive it


def token_strings(tokenizer) -> tuple[list[str], dict[str, list[int]], list[tuple[str, int]]]:
    """Each token's text (special tokens: ""), the ids of each text, and ``(text, id)`` sorted by text
    (for "tokens that start with ..." look-ups); computed once per tokenizer."""
    cached = getattr(tokenizer, _CACHE_ATTR, None)
    if cached is None or len(cached[0]) != len(tokenizer):
        texts = token_texts(tokenizer)
        by_text: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            if text and "\ufffd" not in text:
                by_text.setdefault(text, []).append(i)
        ordered = sorted((t, i) for t, ids in by_text.items() for i in ids)
        cached = (texts, by_text, ordered)
        setattr(tokenizer, _CACHE_ATTR, cached)
    return cached


def completing_tokens(index: tuple[list[str], dict[str, list[int]], list[tuple[str, int]]],
                      rest: str) -> set[int]:
    """The tokens whose text is a prefix of ``rest`` or starts with all of it: those that may come
    next where the text must go on with ``rest``. ``index``: :func:`token_strings` of the tokenizer
    (passed in: looking it up costs more than this on a hot path)."""
    _, by_text, ordered = index
    out: set[int] = set()
    for m in range(1, len(rest) + 1):
        out.update(by_text.get(rest[:m], ()))
    lo = bisect.bisect_left(ordered, (rest, -1))
    hi = bisect.bisect_left(ordered, (rest + "\U0010ffff", -1))
    out.update(i for _, i in ordered[lo:hi])
    return out


def token_texts(tokenizer) -> list[str]:
    """What ``tokenizer.decode([i], skip_special_tokens=True)`` gives for every token ``i``: for a
    fast tokenizer without transformers' clean-up of spaces (the default), one batched call of its
    Rust decoder, which is what ``decode`` runs token by token (~10x faster)."""
    size = len(tokenizer)
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or getattr(tokenizer, "clean_up_tokenization_spaces", True):
        return [tokenizer.decode([i], skip_special_tokens=True) for i in range(size)]
    return backend.decode_batch([[i] for i in range(size)], skip_special_tokens=True)


def _quoted(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)[1:-1]


class NameConstraint:
    """The tokens an executor may write next so that every function name is one of ``names``."""

    def __init__(self, tokenizer, names: Sequence[str], end_id: int) -> None:
        if not names:
            raise ValueError("a name constraint needs at least one tool name")
        self.end_id = end_id
        self.names = list(dict.fromkeys(names))
        self._index = token_strings(tokenizer)
        quoted = [_quoted(n) for n in self.names]
        self._first = [f'{{"name": "{q}"' for q in quoted] + [f'[{{"name": "{q}"' for q in quoted]
        self._next = [f', {{"name": "{q}"' for q in quoted]

    def allowed(self, text: str) -> list[int] | None:
        """Token ids allowed after ``text`` (the turn so far), or None while a call's arguments are
        written (no constraint)."""
        scanner = CallScanner()
        call_end = 0
        for i, ch in enumerate(text):
            before = scanner.state
            scanner.feed(ch)
            if before == ARGUMENTS and scanner.state != ARGUMENTS:
                call_end = i + 1
        if scanner.state == ARGUMENTS:
            return None
        segment = text[call_end:]
        if not scanner.names:
            targets = self._first
        elif scanner.stack == ["["]:
            if segment.strip() == "]":
                return [self.end_id]
            targets = self._next + ["]"]
        else:
            return [self.end_id]
        allowed: set[int] = set()
        for target in targets:
            if target.startswith(segment):
                allowed.update(completing_tokens(self._index, target[len(segment):]))
        # Nothing fits only when the text left the constrained forms (e.g. it was not generated under
        # the constraint): end the turn rather than mask every token.
        return sorted(allowed) or [self.end_id]


def mask_logits(logits: torch.Tensor, allowed: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """``logits`` with every token outside ``allowed`` (token ids, or a bool mask over the first
    tokens of the vocabulary) set to -inf."""
    if isinstance(allowed, torch.Tensor) and allowed.dtype == torch.bool:
        keep = torch.zeros(logits.shape[-1], dtype=torch.bool, device=logits.device)
        n = min(allowed.numel(), keep.numel())
        keep[:n] = allowed[:n].to(logits.device)
        return logits.masked_fill(~keep, float("-inf"))
    keep = torch.full_like(logits, float("-inf"))
    index = torch.as_tensor(list(allowed), dtype=torch.long, device=logits.device)
    keep[index] = logits[index]
    return keep


def first_name(text: str) -> str | None:
    """The first function name an executor's ``text`` closes, or None."""
    scanner = CallScanner()
    for ch in text:
        scanner.feed(ch)
        if scanner.names:
            return scanner.names[0]
    return None


class MajorityVote:
    """AgentFlux's majority vote at the start of one episode's executor turn, decoded inside the
    driver's batch (:func:`~.batch.run_episodes`).

    ``logits`` are the episode's logits after the executor's header. Every sample draws its first
    token from them; the driver then gives each undecided sample a copy of the episode's cache row
    (:meth:`~.decoding.CacheDecoder.copy_rows`), feeds :meth:`feed` and hands the logits back through
    :meth:`advance`. A sample is decided when its text closes a function name (the name), or when it
    writes the end of the turn or reaches ``max_turn_tokens`` first (no name: ""). Sampling is at
    ``temperature``, under the episode's constraint (names, or the arguments' grammar).
    """

    def __init__(self, episode, n: int, logits: torch.Tensor, *, temperature: float = 1.0,
                 generator: torch.Generator | None = None) -> None:
        if n < 1:
            raise ValueError(f"the vote needs n >= 1 samples, got {n}")
        self.episode, self.n, self.logits = episode, n, logits
        self.temperature, self.generator = temperature, generator
        self.samples: list[list[int]] = [[] for _ in range(n)]
        self.names: list[str | None] = [None] * n  # None: undecided; "": no name
        self._pending: dict[int, torch.Tensor] = {}
        for k in range(n):
            self._sample(k, logits)

    @property
    def undecided(self) -> list[int]:
        return [k for k in range(self.n) if self.names[k] is None]

    @property
    def done(self) -> bool:
        return not self.undecided

    def feed(self, k: int):
        """Sample ``k``'s token to run next (its last, under its scheme role), or None once decided."""
        if self.names[k] is not None:
            return None
        tokens = self.samples[k]
        return [tokens[-1]], [self.episode.role_id_for(tokens)]

    def advance(self, k: int, logits: torch.Tensor) -> None:
        """The logits after sample ``k``'s last fed token; samples draw in order of ``k`` once all
        are in (:meth:`draw`)."""
        self._pending[k] = logits

    def draw(self) -> None:
        """Sample the next token of every sample whose logits came in, in sample order."""
        for k in sorted(self._pending):
            self._sample(k, self._pending[k])
        self._pending.clear()

    def winner(self) -> int | None:
        """The first sample of the most frequent name (ties: the name sampled first), or None if no
        sample wrote a name."""
        votes = Counter(name for name in self.names if name)
        if not votes:
            return None
        return self.names.index(votes.most_common(1)[0][0])

    def fed(self, k: int) -> int:
        """Tokens of sample ``k`` that went through the model (all but the last: it was never fed)."""
        return max(len(self.samples[k]) - 1, 0)

    def _choose(self, k: int, scores: torch.Tensor) -> int:
        return sample_token(scores, do_sample=True, temperature=self.temperature, generator=self.generator)

    def _sample(self, k: int, logits: torch.Tensor) -> None:
        episode, tokens = self.episode, self.samples[k]
        allowed = episode.allowed_for(tokens)
        token = self._choose(k, logits if allowed is None else mask_logits(logits, allowed))
        tokens.append(token)
        name = first_name(episode.encoder.decode(tokens))
        if name is not None:
            self.names[k] = name
        elif token == episode.end_id or len(tokens) >= episode.config.max_turn_tokens:
            self.names[k] = ""
