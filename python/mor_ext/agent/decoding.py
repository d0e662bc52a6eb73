"""Incremental decoding on one KV cache for several rows, each fed only its new tokens.

:class:`CacheDecoder` keeps one ``DynamicCache`` and one 2-D attention mask for a batch of rows.
Each :meth:`~CacheDecoder.step` runs the tokens every row has not run yet (a header, an observation,
the token it just generated), each with its own role id, in ONE forward call: rows are right-padded
to the longest feed of the step, padding carries role -1 and attention-mask 0, so it never influences
a real token. Every row keeps its own position counter, so a row's positions are those it would have
alone. Rows that finish can be dropped (:meth:`~CacheDecoder.keep_rows`) or restarted with a new
episode (:meth:`~CacheDecoder.restart_row`: its old cache columns are masked out, positions restart);
a row can be copied (:meth:`~CacheDecoder.copy_rows`) so that several samples continue its prefix.

Nothing here knows about roles' text or tools: that is :mod:`.episode`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn as nn

from ..generation import cache_argument
from ..patching import is_patched
from ..data.tokenize import NO_ROLE

__all__ = ["CacheDecoder", "Feed", "sample_token"]

Feed = tuple[Sequence[int], Sequence[int]]  # (token ids, role ids) a row runs this step


class CacheDecoder:
    """One KV cache for ``rows`` rows; ``step`` returns the last-position logits of each fed row."""

    def __init__(self, model: nn.Module, rows: int, pad_id: int = 0) -> None:
        from transformers import DynamicCache

        self.model = model
        self.device = next(model.parameters()).device
        self.pad_id = pad_id
        self.cache = DynamicCache(config=model.config)
        self._cache_kw = cache_argument(model)
        self._role_kw = is_patched(model)  # an unpatched model (a baseline) takes no role ids
        self.mask = torch.zeros(rows, 0, dtype=torch.long, device=self.device)  # 1 = a real token
        self.positions = [0] * rows  # next position id of each row
        self.tokens_processed = 0  # real (unpadded) tokens that went through the model
        self.forward_calls = 0

    @property
    def rows(self) -> int:
        return self.mask.shape[0]

    @property
    def length(self) -> int:
        """Columns in the cache (real tokens, padding and restarted rows' old tokens)."""
        return self.mask.shape[1]

    @torch.no_grad()
    def step(self, feeds: Sequence[Feed | None]) -> list[torch.Tensor | None]:
        """Run each row's feed (None or empty: nothing) in one forward; returns per row the logits
        ``[vocab]`` after its last fed token, or None for rows fed nothing."""
        if len(feeds) != self.rows:
            raise ValueError(f"step got {len(feeds)} feeds for {self.rows} rows")
        lengths = [0 if f is None else len(f[0]) for f in feeds]
        width = max(lengths, default=0)
        if width == 0:
            return [None] * self.rows
        ids = torch.full((self.rows, width), self.pad_id, dtype=torch.long)
        roles = torch.full((self.rows, width), NO_ROLE, dtype=torch.long)
        new_mask = torch.zeros((self.rows, width), dtype=torch.long)
        positions = torch.empty((self.rows, width), dtype=torch.long)
        for row, (feed, n) in enumerate(zip(feeds, lengths)):
            if n:
                tokens, role_ids = feed
                if len(role_ids) != n:
                    raise ValueError(f"row {row}: {n} tokens but {len(role_ids)} role ids")
                ids[row, :n] = torch.as_tensor(list(tokens))
                roles[row, :n] = torch.as_tensor(list(role_ids))
                new_mask[row, :n] = 1
            # Padding continues the row's positions; it is masked, so the values only need to be valid.
            positions[row] = torch.arange(self.positions[row], self.positions[row] + width)
            self.positions[row] += n
        self.mask = torch.cat([self.mask, new_mask.to(self.device)], dim=1)
        extra = {"role_ids": roles.to(self.device)} if self._role_kw else {}
        out = self.model(input_ids=ids.to(self.device), attention_mask=self.mask, position_ids=positions.to(self.device),
                         use_cache=True, **{self._cache_kw: self.cache}, **extra)
        self.tokens_processed += sum(lengths)
        self.forward_calls += 1
        logits = out.logits
        return [logits[row, n - 1] if n else None for row, n in enumerate(lengths)]

    def restart_row(self, row: int) -> None:
        """Free ``row`` for a new episode: its cached tokens are masked out, positions restart at 0.
        Feed the new episode's prompt in the next step (a row must see at least one real token)."""
        self.mask[row] = 0
        self.positions[row] = 0

    def copy_rows(self, rows: Sequence[int]) -> list[int]:
        """Append a copy of each of ``rows`` (cache entries, mask, positions) as new rows and return
        their indices: samples that share a row's prefix decode from its cache, nothing run again."""
        index = list(range(self.rows)) + list(rows)
        self._select(index)
        return list(range(self.rows - len(rows), self.rows))

    def keep_rows(self, rows: Sequence[int]) -> None:
        """Keep only ``rows``, in that order (finished rows stop costing compute; a row may take
        another's place)."""
        self._select(list(rows))

    def _select(self, rows: list[int]) -> None:
        index = torch.as_tensor(rows, dtype=torch.long, device=self.device)
        if self.length:
            self.cache.batch_select_indices(index)
        self.mask = self.mask[index]
        self.positions = [self.positions[r] for r in rows]


def sample_token(logits: torch.Tensor, *, do_sample: bool = False, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0, generator: torch.Generator | None = None) -> int:
    """Greedy (argmax) or sampled next token from ``logits [vocab]`` (temperature, then top-k, then top-p)."""
    if not do_sample:
        return int(torch.argmax(logits))
    scores = logits.float() / max(temperature, 1e-5)
    if top_k > 0:
        kth = torch.topk(scores, min(top_k, scores.numel())).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        cumulative = torch.softmax(sorted_scores, dim=-1).cumsum(-1)
        drop = cumulative - torch.softmax(sorted_scores, dim=-1) > top_p  # keep the token that crosses top_p
        scores[order[drop]] = float("-inf")
    probs = torch.softmax(scores, dim=-1)
    return int(torch.multinomial(probs.cpu(), 1, generator=generator))
