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
from .selection import MajorityVote, mask_logits

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


@dataclass
class _Row:
    """A row of the batch's cache: an episode's, or (``sample`` >= 0) one sample of its ``vote``."""

    index: int
    episode: Episode
    vote: MajorityVote | None = None  # on the episode's row: its vote in progress
    sample: int = -1

    def feed(self):
        if self.sample >= 0:
            return self.vote.feed(self.sample)
        if self.vote is not None:  # the episode waits for its vote; its samples run
            return None
        return self.episode.take_feed()


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

    def resolve(row: _Row) -> int | None:
        """End ``row``'s finished vote: the winner's tokens become the turn's start; returns the
        sample whose cache row the episode continues on (None: its own row)."""
        vote, episode = row.vote, row.episode
        row.vote = None
        episode.votes.append([name or "" for name in vote.names])
        won = vote.winner()
        if won is None:  # no sample named a tool: decode the turn as without a vote
            episode.vote_tokens += sum(vote.fed(k) for k in range(vote.n))
            episode.push(pick(vote.logits, episode, row.index))
            return None
        adopted = won if vote.fed(won) else None  # its row holds the winner's tokens but the last
        episode.vote_tokens += sum(vote.fed(k) for k in range(vote.n) if k != adopted)
        pushed = 0
        for token in vote.samples[won]:
            episode.push(token)
            pushed += 1
            if episode.done:
                break
        episode.skip_feed(min(pushed, vote.fed(won)))
        return adopted

    while waiting:
        slots = [_Row(*slot) for slot in (start_next() for _ in range(min(batch_size, len(waiting)))) if slot is not None]
        if not slots:
            break
        decoder = CacheDecoder(model, len(slots), pad_id)
        limit = refill_limit if refill_limit is not None else 2 * slots[0].episode.config.max_tokens
        while slots:
            logits = decoder.step([row.feed() for row in slots])
            started = []
            for r, (row, row_logits) in enumerate(zip(slots, logits)):
                episode = row.episode
                if row.sample >= 0:
                    if row_logits is not None:  # else the sample is decided: its row idles until the vote ends
                        row.vote.advance(row.sample, row_logits)
                elif row.vote is not None:  # waiting for its vote's samples
                    continue
                elif episode.wants_vote:  # AgentFlux's majority vote over sampled selections
                    episode.voted = True
                    cfg = episode.config
                    row.vote = MajorityVote(episode, cfg.vote, row_logits, temperature=cfg.vote_temperature,
                                            generator=generator(episode, row.index))
                    started.append(r)
                else:
                    episode.push(pick(row_logits, episode, row.index))
            for row in slots:
                if row.sample < 0 and row.vote is not None:
                    row.vote.draw()
            for r in started:  # each undecided sample continues a copy of the episode's cache row
                vote = slots[r].vote
                undecided = vote.undecided
                decoder.copy_rows([r] * len(undecided))
                slots += [_Row(slots[r].index, slots[r].episode, vote, k) for k in undecided]
            # finished votes: their samples' rows go; the winner's row takes the episode's place
            order, dropped = list(range(len(slots))), set()
            for r, row in enumerate(slots):
                if row.sample < 0 and row.vote is not None and row.vote.done:
                    vote = row.vote
                    rows = {s.sample: q for q, s in enumerate(slots) if s.vote is vote and s.sample >= 0}
                    adopted = resolve(row)
                    if adopted is not None:
                        order[r] = rows[adopted]
                    dropped |= set(rows.values())
            if dropped:
                keep = [r for r in range(len(slots)) if r not in dropped]
                decoder.keep_rows([order[r] for r in keep])
                slots = [slots[r] for r in keep]
            finished = [r for r, row in enumerate(slots) if row.sample < 0 and row.episode.done]
            for r in finished:
                finish(slots[r].index, slots[r].episode)
                if waiting and decoder.length < limit:
                    new = start_next()
                    if new is not None:
                        slots[r] = _Row(*new)
                        decoder.restart_row(r)
            keep = [r for r, row in enumerate(slots) if not row.episode.done]
            if len(keep) < len(slots):
                if keep:
                    decoder.keep_rows(keep)
                slots = [slots[r] for r in keep]
        forward_calls += decoder.forward_calls
        tokens_fed += decoder.tokens_processed
    return BatchResult([r for r in results if r is not None], time.perf_counter() - start, forward_calls,
                       tokens_fed, generated)
