"""Running many episodes as one batch on one KV cache, each row at its own point of its own episode.

In one forward step row 0 may be reasoning while row 1 writes a call and row 2 reads an
observation: every token carries its own role id, which MoR's per-token routing allows and a
per-role adapter swap (one active adapter per forward) does not. A row whose episode ends takes the
next waiting query when that pays (its old cache columns are masked out and it starts over at
position 0; "pays" = the cache is still shorter than ``refill_limit`` columns); otherwise it drops
out of the cache, so finished rows cost nothing. :func:`run_episodes` is also what
:meth:`mor_ext.agent.Agent.run` uses for a single episode: one decoding loop for both.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from .decoding import CacheDecoder, sample_token
from .episode import Episode, EpisodeResult
from .selection import mask_logits, vote_selection

__all__ = ["BatchResult", "run_episodes"]

TokenChooser = Callable[[torch.Tensor, Episode], int]  # (logits [vocab], episode) -> next token


@dataclass
class BatchResult:
    """The episodes (in query order) and the throughput of the run."""

    episodes: list[EpisodeResult]
    seconds: float
    forward_calls: int
    tokens_fed: int  # real tokens run through the model (padding excluded)
    tokens_generated: int

    @property
    def episodes_per_minute(self) -> float:
        return 60.0 * len(self.episodes) / self.seconds if self.seconds > 0 else float("inf")

    @property
    def tokens_per_second(self) -> float:
        """Generated tokens per second."""
        return self.tokens_generated / self.seconds if self.seconds > 0 else float("inf")

    def summary(self) -> str:
        return (f"{len(self.episodes)} episodes in {self.seconds:.2f} s: {self.episodes_per_minute:.1f} episodes/min, "
                f"{self.tokens_per_second:.1f} generated tokens/s, {self.tokens_fed} tokens through the model in "
                f"{self.forward_calls} forward calls")


@torch.no_grad()
def run_episodes(model: torch.nn.Module, make_episode: Callable[[int], Episode], count: int, *,
                 batch_size: int = 8, choose: TokenChooser | None = None, pad_id: int = 0,
                 refill_limit: int | None = None,
                 on_done: Callable[[int, EpisodeResult], None] | None = None) -> BatchResult:
    """Run episodes ``make_episode(0) .. make_episode(count - 1)`` at most ``batch_size`` at a time.

    ``choose`` picks each next token (default: the episode's config, greedy or sampled, with one
    generator per episode seeded ``config.seed + index`` so batched and single runs sample alike).
    ``refill_limit``: cache columns up to which a finished row takes a new query (default: twice the
    first episode's ``max_tokens``). ``on_done(index, result)`` is called as each episode finishes
    (progress bars).
    """
    start = time.perf_counter()
    waiting = deque(range(count))
    results: list[EpisodeResult | None] = [None] * count
    generators: dict[int, torch.Generator] = {}

    def generator(episode: Episode, index: int) -> torch.Generator:
        if index not in generators:
            generators[index] = torch.Generator().manual_seed((episode.config.seed or 0) + index)
        return generators[index]

    def pick(logits: torch.Tensor, episode: Episode, index: int) -> int:
        allowed = episode.allowed_next()
        if allowed is not None:  # constrained decoding of the function name (docs/spec.md §7)
            logits = mask_logits(logits, allowed)
        if choose is not None:
            return choose(logits, episode)
        cfg = episode.config
        if not cfg.do_sample:
            return sample_token(logits)
        return sample_token(logits, do_sample=True, temperature=cfg.temperature, top_k=cfg.top_k,
                            top_p=cfg.top_p, generator=generator(episode, index))

    def advance(logits: torch.Tensor, episode: Episode, index: int) -> None:
        if episode.wants_vote:  # AgentFlux's majority vote over sampled selections
            episode.voted = True
            chosen = vote_selection(model, episode, episode.config.vote, temperature=episode.config.vote_temperature,
                                    generator=generator(episode, index), pad_id=pad_id,
                                    constraint=episode.name_constraint())
            if chosen:
                for token in chosen:
                    episode.push(token)
                    if episode.done:
                        break
                return
        episode.push(pick(logits, episode, index))

    forward_calls = tokens_fed = generated = 0

    def finish(index: int, episode: Episode) -> None:
        nonlocal generated
        results[index] = episode.result()
        generated += results[index].generated_tokens
        if on_done is not None:
            on_done(index, results[index])

    def start_next() -> tuple[int, Episode] | None:
        """The next waiting episode that has anything to run (one may end before its first token)."""
        while waiting:
            index = waiting.popleft()
            episode = make_episode(index)
            if not episode.done:
                return index, episode
            finish(index, episode)
        return None

    while waiting:
        slots = [slot for slot in (start_next() for _ in range(min(batch_size, len(waiting)))) if slot is not None]
        if not slots:
            break
        decoder = CacheDecoder(model, len(slots), pad_id)
        limit = refill_limit if refill_limit is not None else 2 * slots[0][1].config.max_tokens
        while slots:
            logits = decoder.step([episode.take_feed() for _, episode in slots])
            for (index, episode), row_logits in zip(slots, logits):
                advance(row_logits, episode, index)
            finished = [row for row, (_, episode) in enumerate(slots) if episode.done]
            for row in finished:
                finish(*slots[row])
                if waiting and decoder.length < limit:
                    new = start_next()
                    if new is not None:
                        slots[row] = new
                        decoder.restart_row(row)
            keep = [row for row, (_, episode) in enumerate(slots) if not episode.done]
            if len(keep) < len(slots):
                if keep:
                    decoder.keep_rows(keep)
                slots = [slots[row] for row in keep]
        forward_calls += decoder.forward_calls
        tokens_fed += decoder.tokens_processed
    return BatchResult([r for r in results if r is not None], time.perf_counter() - start, forward_calls,
                       tokens_fed, generated)
