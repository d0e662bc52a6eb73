"""Tool selection while decoding (``docs/spec.md`` §7): the function name constrained to the tools
offered, and AgentFlux's majority vote over sampled selections.

:class:`NameConstraint` says which tokens may come next in an executor turn so that its text stays a
prefix of ``{"name": "<tool>"`` (or ``[{"name": "<tool>"``; after a call of a list, ``, {"name":
"<tool>"`` or the list's end) for a tool offered: a model, even one with random weights, cannot write
another name. Once a name is closed, the arguments are free (no JSON-schema constraint).

:func:`vote_selection` samples ``n`` selections (syntax and name) as one batch that shares a single
prefill of the episode so far (its cache rows repeated), each token under its scheme role, and
returns the tokens of the first sample of the most frequent name.
"""

from __future__ import annotations

import bisect
import json
from collections import Counter
from collections.abc import Sequence

import torch

from ..schemes import ARGUMENTS, CallScanner
from .decoding import CacheDecoder, sample_token

__all__ = ["NameConstraint", "vote_selection", "token_strings", "mask_logits"]

_CACHE_ATTR = "_mor_ext_token_strings"  # kept on the tokenizer itself: an id() key could outlive it


def token_strings(tokenizer) -> tuple[list[str], dict[str, list[int]], list[tuple[str, int]]]:
    """Each token's text (special tokens: ""), the ids of each text, and ``(text, id)`` sorted by text
    (for "tokens that start with ..." look-ups); computed once per tokenizer."""
    cached = getattr(tokenizer, _CACHE_ATTR, None)
    if cached is None or len(cached[0]) != len(tokenizer):
        size = len(tokenizer)
        texts = [tokenizer.decode([i], skip_special_tokens=True) for i in range(size)]
        by_text: dict[str, list[int]] = {}
        for i, text in enumerate(texts):
            if text and "\ufffd" not in text:
                by_text.setdefault(text, []).append(i)
        ordered = sorted((t, i) for t, ids in by_text.items() for i in ids)
        cached = (texts, by_text, ordered)
        setattr(tokenizer, _CACHE_ATTR, cached)
    return cached


def _quoted(name: str) -> str:
    return json.dumps(name, ensure_ascii=False)[1:-1]


class NameConstraint:
    """The tokens an executor may write next so that every function name is one of ``names``."""

    def __init__(self, tokenizer, names: Sequence[str], end_id: int) -> None:
        if not names:
            raise ValueError("a name constraint needs at least one tool name")
        self.end_id = end_id
        self.names = list(dict.fromkeys(names))
        _, self._by_text, self._ordered = token_strings(tokenizer)
        self._keys = [t for t, _ in self._ordered]
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
                allowed.update(self._completing(target[len(segment):]))
        # Nothing fits only when the text left the constrained forms (e.g. it was not generated under
        # the constraint): end the turn rather than mask every token.
        return sorted(allowed) or [self.end_id]

    def _completing(self, rest: str) -> set[int]:
        """Tokens whose text is a prefix of ``rest`` or starts with all of it."""
        out: set[int] = set()
        for m in range(1, len(rest) + 1):
            out.update(self._by_text.get(rest[:m], ()))
        lo = bisect.bisect_left(self._keys, rest)
        hi = bisect.bisect_left(self._keys, rest + "\U0010ffff")
        out.update(i for _, i in self._ordered[lo:hi])
        return out


def mask_logits(logits: torch.Tensor, allowed: Sequence[int]) -> torch.Tensor:
    """``logits`` with every token outside ``allowed`` set to -inf."""
    keep = torch.full_like(logits, float("-inf"))
    index = torch.as_tensor(list(allowed), dtype=torch.long, device=logits.device)
    keep[index] = logits[index]
    return keep


@torch.no_grad()
def vote_selection(model: torch.nn.Module, episode, n: int, *, temperature: float = 1.0,
                   generator: torch.Generator | None = None, pad_id: int = 0,
                   constraint: NameConstraint | None = None,
                   names_out: list | None = None) -> list[int] | None:
    """Sample ``n`` selections at the start of ``episode``'s executor turn (one prefill, ``n`` cache
    rows) and return the tokens of the first sample of the most frequent name, up to and including
    the token that closes it; None if no sample closed a name within the turn's token limit.
    ``names_out`` (a list) receives each sample's name ("" for none), in sample order."""
    if n < 1:
        raise ValueError(f"the vote needs n >= 1 samples, got {n}")
    decoder = CacheDecoder(model, 1, pad_id)
    logits = decoder.step([(episode.input_ids, episode.role_ids)])[0]
    decoder.repeat_rows(n)
    decode = episode.encoder.decode
    samples: list[list[int]] = [[] for _ in range(n)]
    names: list[str | None] = [None] * n
    row_logits: list[torch.Tensor | None] = [logits] * n
    for _ in range(episode.config.max_turn_tokens):
        feeds = []
        for row in range(n):
            if names[row] is not None or row_logits[row] is None:
                feeds.append(None)
                continue
            scores = row_logits[row]
            if constraint is not None:
                scores = mask_logits(scores, constraint.allowed(decode(samples[row])))
            token = sample_token(scores, do_sample=True, temperature=temperature, generator=generator)
            samples[row].append(token)
            scanner = CallScanner()
            for ch in decode(samples[row]):
                scanner.feed(ch)
            if scanner.names:
                names[row] = scanner.names[0]
                feeds.append(None)
            elif token == episode.end_id:
                names[row] = ""  # ended without a call
                feeds.append(None)
            else:
                feeds.append(([token], [episode.role_id_for(samples[row])]))
        if all(f is None for f in feeds):
            break
        row_logits = decoder.step(feeds)
    if names_out is not None:
        names_out.extend(name or "" for name in names)
    votes = Counter(name for name in names if name)
    if not votes:
        return None
    winner = votes.most_common(1)[0][0]
    return samples[names.index(winner)]
