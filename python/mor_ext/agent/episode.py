"""One agent episode as a state machine over tokens: what to feed next, what a new token means.

An :class:`Episode` never runs the model. The driver (:mod:`.batch`) asks it for the tokens it has
not fed yet (:meth:`Episode.take_feed`), runs them, picks the next token and hands it back
(:meth:`Episode.push`). The episode decides when a role's turn ends, appends what follows (end of
turn, separator, observations, the next role's header) as new tokens with their role ids, runs the
tool calls, and records the whole token sequence, so the same sequence could be re-run with teacher
forcing. Its token layout is :mod:`mor_ext.data.tokenize`'s (each piece encoded on its own, role ids
as in training), so a finished episode is a training example.

Turn ends:

* reasoner: as soon as its text ends with ``Next: executor`` / ``Next: summarizer`` (the end-of-turn
  marker is then appended for it), or at its end-of-turn token (no decision: executor before any tool
  call, summarizer after; recorded in ``meta["warnings"]``);
* executor and summarizer: at the end-of-turn token;
* any role: at ``max_turn_tokens`` (the turn is cut, recorded in the warnings).

Every failure of a call (unreadable output, unknown tool, bad arguments, an exception, a timeout) is
an observation the reasoner reads. ``max_steps`` executor turns and ``max_tokens`` tokens end an
episode with status ``step_limit`` / ``token_limit`` instead of an answer.

``AgentConfig.first_call_only`` (evaluation, e.g. BFCL): the episode ends at the first executor turn,
whose calls are parsed and never run (status ``called``; no observation follows), or at a reasoner
that goes to the summarizer instead (status ``no_call``; the summarizer does not run). The tools then
need no implementation: their schemas are all the model sees.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..data.tokenize import RoleTokenizer
from ..data.trajectory import ROLE_TURNS, ToolCall, Trajectory, Turn
from ..schemes import token_roles
from ..tools import Tool, execute, observation_text
from .parsing import parse_executor_output

__all__ = ["AgentConfig", "Episode", "EpisodeResult", "ANSWERED", "STEP_LIMIT", "TOKEN_LIMIT", "CALLED", "NO_CALL",
           "REPEATED_CALL", "Stream"]

ANSWERED, STEP_LIMIT, TOKEN_LIMIT = "answered", "step_limit", "token_limit"
CALLED, NO_CALL = "called", "no_call"  # ends of a first_call_only episode
REPEATED_CALL = "repeated_call"  # the same call max_repeated_calls times in a row
_DECISION = re.compile(r"Next:\s*(executor|summarizer)\s*$", re.IGNORECASE)

Stream = Callable[[str, str], None]  # (role or "observation", new text)


@dataclass(frozen=True)
class AgentConfig:
    """Limits and decoding of an episode.

    ``max_steps``: executor turns (tool rounds) before the episode stops; ``max_tokens``: the whole
    episode's length (prompt included); ``max_turn_tokens``: one role turn's length.
    Decoding is greedy unless ``do_sample``; sampled runs are reproducible with ``seed``.
    ``first_call_only``: stop at the first executor turn without running its calls, or at a reasoner's
    decision for the summarizer (see the module docstring); with ``stop_after_name`` as soon as the
    first function name is written (its arguments are not generated).

    Tool selection (``docs/spec.md`` §7): ``constrain_names`` restricts every function name to the
    tools offered; ``vote`` > 1 samples that many selections at the start of each executor turn (one
    copy each of the episode's cache row, at ``vote_temperature``) and keeps the most frequent name;
    ``max_repeated_calls`` ends the episode (status ``repeated_call``) when the same call is made that
    many times in a row. ``constrain_args`` constrains the whole executor turn to calls of the tools
    offered whose arguments their parameter schemas accept (:mod:`.arguments`; the names with them);
    such a turn is not cut at ``max_turn_tokens`` before its calls are complete (the grammar is
    finite: ``argument_bounds``, an :class:`~.arguments.Bounds`). ``calls_from_plan`` (with
    ``constrain_args``): an executor turn that follows a plan listing the user's requests ("Asked:
    1) ...; 2) ...", the opening of ``--list-requests`` data) makes exactly that many calls, the count
    the reasoner set, up to ``argument_bounds.calls`` (other executor turns: 1 to that cap).
    ``distinct_calls`` (with ``constrain_args``): no call of an executor turn repeats an earlier call
    of the same turn (:class:`~.arguments.CallGrammar`'s ``distinct``; keys in the same order).
    """

    max_steps: int = 6
    max_tokens: int = 2048
    max_turn_tokens: int = 256
    tool_timeout: float | None = 10.0
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0
    seed: int | None = None
    first_call_only: bool = False
    stop_after_name: bool = False
    constrain_names: bool = False
    vote: int = 0
    vote_temperature: float = 1.0
    max_repeated_calls: int | None = None
    constrain_args: bool = False
    argument_bounds: Any = None  # an arguments.Bounds for constrain_args (None: its defaults)
    calls_from_plan: bool = False
    distinct_calls: bool = False


@dataclass
class EpisodeResult:
    """A finished episode: its trajectory (training format), status and token record.

    ``input_ids`` / ``role_ids`` are every token of the episode in order (the last generated token
    included); ``generated[i]`` says whether token ``i`` was chosen by the model (else it was
    appended by the runtime: prompt, markers, headers, observations). ``tokens_fed`` counts the
    tokens that went through the model for this episode: ``len(input_ids) - 1`` for an answered one.
    ``vote_tokens``: the tokens that the majority votes' samples ran besides (the winner's, which
    are the episode's own, count in ``tokens_fed``); each vote's names are in ``trajectory.meta["votes"]``.
    """

    trajectory: Trajectory
    status: str
    answer: str | None
    input_ids: list[int]
    role_ids: list[int]
    generated: list[bool]
    tokens_fed: int
    steps: int
    vote_tokens: int = 0

    @property
    def generated_tokens(self) -> int:
        return sum(self.generated)

    @property
    def trainable(self) -> bool:
        """Answered, and every executor turn held readable calls: the trajectory passes
        :func:`~mor_ext.data.trajectory.parse_trajectory` and can be trained on (failed calls and their
        error observations included: recovering from them is worth learning)."""
        return self.status == ANSWERED and all(t.calls for t in self.trajectory.turns if t.role == "executor")


class Episode:
    """The state of one episode (see the module docstring)."""

    def __init__(self, encoder: RoleTokenizer, tools: Mapping[str, Tool], query: str, config: AgentConfig, *,
                 system: str | None = None, id: str | None = None, stream: Stream | None = None) -> None:
        self.encoder, self.tools, self.config, self.stream = encoder, tools, config, stream
        tokenizer = encoder.tokenizer
        self._decode = lambda ids: tokenizer.decode(ids, skip_special_tokens=True)
        self.end_id = encoder.end_of_turn_id
        self._end, self._separator = encoder.end_of_turn_ids, encoder.separator_ids
        self.turns: list[Turn] = [Turn("user", query)]
        self.system, self.id = system, id
        self.input_ids: list[int] = []
        self.role_ids: list[int] = []
        self.generated: list[bool] = []
        self._feed_from = 0  # input_ids[_feed_from:] have not gone through the model yet
        self.tokens_fed = 0
        self.steps = 0
        self.status: str | None = None
        self.answer: str | None = None
        self.warnings: list[str] = []
        self.role = "reasoner"
        self.turn_ids: list[int] = []  # what the speaking role has generated so far this turn
        self.voted = False  # whether this executor turn's selection was voted on already
        self._constraint = None
        self._arguments: dict[int | None, Any] = {}  # CallGrammars by exact call count (None: any)
        self._turn_grammar: tuple[int, Any] | None = None  # (len(turns) when chosen, its CallGrammar)
        self.votes: list[list[str]] = []  # each majority vote's sampled names ("": none), in order
        self.vote_tokens = 0  # tokens the votes' samples ran that did not become the episode's
        self._turn_text = ""
        prompt_ids, prompt_roles = encoder.prompt(self._trajectory(), "reasoner")  # the training prefix
        self._append(prompt_ids, prompt_roles)
        if len(prompt_ids) >= config.max_tokens:  # nothing to generate: end before running anything
            self.warnings.append(f"the prompt alone has {len(prompt_ids)} tokens, max_tokens={config.max_tokens}")
            self.status = TOKEN_LIMIT

    # ------------------------------------------------------------------------------ driver interface
    @property
    def done(self) -> bool:
        return self.status is not None

    @property
    def role_turns(self) -> int:
        """Role turns finished so far (the index of the turn being generated)."""
        return sum(1 for t in self.turns if t.role in ROLE_TURNS)

    def take_feed(self) -> tuple[list[int], list[int]]:
        """The tokens (and role ids) not yet run through the model; they count as fed."""
        ids, roles = self.input_ids[self._feed_from:], self.role_ids[self._feed_from:]
        self._feed_from = len(self.input_ids)
        self.tokens_fed += len(ids)
        return ids, roles

    def push(self, token: int) -> None:
        """The model chose ``token`` for the speaking role."""
        if self.done:
            raise RuntimeError("push on a finished episode")
        self.turn_ids.append(token)
        self._append([token], [self.role_id_for(self.turn_ids)], generated=True)
        if token != self.end_id:
            self._emit_text()
        if token == self.end_id:
            self._end_turn(ended=True)
        elif self.config.stop_after_name and self.role == "executor" and self._first_name() is not None:
            self._end_turn(ended=False)
        elif self.role == "reasoner" and _DECISION.search(self._turn_text):
            self._end_turn(ended=False)
        elif len(self.turn_ids) >= self.config.max_turn_tokens and self._may_cut():
            self.warnings.append(f"{self.role} turn {self.role_turns} cut at max_turn_tokens={self.config.max_turn_tokens}")
            self._end_turn(ended=False)
        if not self.done and len(self.input_ids) >= self.config.max_tokens:
            self.status = TOKEN_LIMIT

    def result(self) -> EpisodeResult:
        if not self.done:
            raise RuntimeError("the episode has not finished")
        return EpisodeResult(self._trajectory(), self.status, self.answer, list(self.input_ids),
                             list(self.role_ids), list(self.generated), self.tokens_fed, self.steps, self.vote_tokens)

    # ------------------------------------------------------------------------------ internals
    def _trajectory(self) -> Trajectory:
        meta: dict[str, Any] = {"source": "mor_ext.agent"}
        if self.status is not None:
            meta.update(status=self.status, steps=self.steps, tokens=len(self.input_ids))
        if self.warnings:
            meta["warnings"] = list(self.warnings)
        if self.votes:
            meta["votes"] = [list(v) for v in self.votes]
        unreadable = [{"turn": i, "text": t.content} for i, t in enumerate(self.turns) if t.role == "executor" and not t.calls]
        if unreadable:  # the format's executor turn holds calls only: keep what the model wrote here
            meta["unreadable_calls"] = unreadable
        return Trajectory(tuple(self.tools.values()), tuple(self.turns), self.system, self.id, meta)

    def _role_id(self, header: str) -> int:
        if header == "executor" and self.role == "executor" and self.turn_ids:  # the turn's tail (end marker)
            return self.encoder.executor_role_ids(self._content_ids())[1]
        return self.encoder.turn_role_id(header)

    def _content_ids(self) -> list[int]:
        return self.turn_ids[:-1] if self.turn_ids and self.turn_ids[-1] == self.end_id else self.turn_ids

    def role_id_for(self, turn_ids: list[int]) -> int:
        """The role the last of ``turn_ids`` (this turn's tokens) runs under: the turn's, or in an
        executor turn split by the role scheme, the role of the token's first character (the
        end-of-turn marker: the role after the text, as in training)."""
        if self.role != "executor" or self.encoder.scheme is None or not self.encoder.scheme.splits_calls:
            return self.encoder.turn_role_id(self.role)
        if turn_ids[-1] == self.end_id:
            return self.encoder.executor_role_ids(turn_ids[:-1])[1]
        start = len(self.encoder.decode(turn_ids[:-1]))
        roles, _ = token_roles(self.encoder.scheme, [start], self.encoder.decode(turn_ids))
        return self.encoder.spec.role_index(roles[0])

    # ------------------------------------------------------------------------------ tool selection
    def allowed_next(self):
        """The tokens the model may choose next (token ids or a bool mask; ``constrain_names``: a
        function name must be one of the tools offered; ``constrain_args``: the whole call must fit
        its tool's schema), or None for any token."""
        return self.allowed_for(self.turn_ids)

    def allowed_for(self, turn_ids: list[int]):
        """:meth:`allowed_next` for a turn (of the speaking role) that holds ``turn_ids`` so far: the
        majority vote's samples ask it for their own texts."""
        if self.role != "executor":
            return None
        arguments = self.argument_constraint()
        if arguments is not None:
            return arguments.allowed(turn_ids)
        constraint = self.name_constraint()
        return None if constraint is None else constraint.allowed(self.encoder.decode(turn_ids))

    def argument_constraint(self):
        """The :class:`~.arguments.CallGrammar` over this episode's tools' schemas (None unless
        ``constrain_args``) for the executor turn being written, built on first use: with
        ``calls_from_plan``, exactly as many calls as the plan before the turn lists (at most the cap).
        Chosen once per turn: it is asked for every token."""
        if not self.config.constrain_args or not self.tools:
            return None
        if self._turn_grammar is not None and self._turn_grammar[0] == len(self.turns):
            return self._turn_grammar[1]
        from .arguments import Bounds, CallGrammar

        calls = self.planned_calls() if self.config.calls_from_plan else None
        if calls is not None:  # a plan that lists more requests than the grammar's cap gets the cap
            calls = min(calls, (self.config.argument_bounds or Bounds()).calls)
        if calls not in self._arguments:
            grammar = CallGrammar.for_tools(self.encoder.tokenizer, self.tools, self.end_id,
                                            self.config.argument_bounds, calls, self.config.distinct_calls)
            self._arguments[calls] = grammar
            self.warnings.extend(w for w in grammar.warnings if w not in self.warnings)
        self._turn_grammar = (len(self.turns), self._arguments[calls])
        return self._arguments[calls]

    def planned_calls(self) -> int | None:
        """The number of requests that the reasoner's turn just before this one lists ("Asked: 1)
        ...; 2) ...", :func:`~mor_ext.data.synthetic.episodes.count_listed_requests`), else None."""
        from ..data.synthetic.episodes import count_listed_requests

        plan = self.turns[-1] if self.turns else None
        if plan is None or plan.role != "reasoner":
            return None
        return count_listed_requests(plan.content)

    def _may_cut(self) -> bool:
        """Whether the turn may be cut here: not inside a call whose arguments are constrained."""
        grammar = self.argument_constraint() if self.role == "executor" else None
        return grammar is None or grammar.accepts(self.turn_ids)

    def skip_feed(self, n: int) -> None:
        """The next ``n`` tokens not yet fed are in the cache already (the majority vote ran them on
        the row the episode continues on): they count as fed and are not run again."""
        if n < 0 or self._feed_from + n > len(self.input_ids):
            raise ValueError(f"cannot skip {n} tokens: {len(self.input_ids) - self._feed_from} wait to be fed")
        self._feed_from += n
        self.tokens_fed += n

    def name_constraint(self):
        """The :class:`~.selection.NameConstraint` over this episode's tools (None unless
        ``constrain_names``), built on first use."""
        if not self.config.constrain_names or not self.tools:
            return None
        if self._constraint is None:
            from .selection import NameConstraint

            self._constraint = NameConstraint(self.encoder.tokenizer, list(self.tools), self.end_id)
        return self._constraint

    @property
    def wants_vote(self) -> bool:
        """At the start of an executor turn whose selection is to be voted on."""
        return self.config.vote > 1 and self.role == "executor" and not self.turn_ids and not self.voted

    def _first_name(self) -> str | None:
        from .selection import first_name

        return first_name(self.encoder.decode(self.turn_ids))

    def _append(self, ids: list[int], roles: list[int] | int | str, generated: bool = False) -> None:
        if isinstance(roles, str):
            roles = [self._role_id(roles)] * len(ids)
        self.input_ids += ids
        self.role_ids += roles
        self.generated += [generated] * len(ids)

    def _emit_text(self) -> None:
        text = self._decode(self.turn_ids)
        if text.endswith("\ufffd"):  # half of a multi-byte character: wait for the rest
            return
        if self.stream is not None and len(text) > len(self._turn_text):
            self.stream(self.role, text[len(self._turn_text):])
        self._turn_text = text

    def _append_context_turn(self, header: str, text: str) -> None:
        self._append(self.encoder.context_turn_ids(header, text), header)
        if self.stream is not None:
            self.stream(header, text)

    def _end_turn(self, ended: bool) -> None:
        role = self.role
        content = self.turn_ids[:-1] if ended else self.turn_ids
        text = self._decode(content).strip()
        if not ended:  # the model did not write the marker: the runtime does, as training has it
            self._append(self._end, role)
        if role == "summarizer":
            self.turns.append(Turn("summarizer", text))
            self.answer, self.status = text, ANSWERED
            return
        self._append(self._separator, role)
        if role == "reasoner":
            match = _DECISION.search(text)
            if match:
                decision = match.group(1).lower()
                text = text[:match.start()].rstrip()
            else:
                decision = "summarizer" if self.steps else "executor"
                self.warnings.append(f"reasoner turn {self.role_turns} wrote no decision; went on with {decision}")
            self.turns.append(Turn("reasoner", text, next=decision))
            if decision == "summarizer" and self.config.first_call_only:
                self.status = NO_CALL
                return
            if decision == "executor" and self.steps >= self.config.max_steps:
                self.status = STEP_LIMIT
                return
            self._start_turn(decision)
            return
        # executor: parse, run, observe; the reasoner reads the observation next
        parsed = parse_executor_output(text)
        self.steps += 1
        if self.config.first_call_only:  # the calls are the answer; nothing runs
            calls = parsed.calls
            if not calls and self.config.stop_after_name and self._first_name() is not None:
                calls = (ToolCall(self._first_name(), {}),)  # the name alone: its arguments were never written
            self.turns.append(Turn("executor", text, calls=calls))
            self.status = CALLED
            return
        if self._repeats(parsed.calls) >= (self.config.max_repeated_calls or 0) > 0:
            self.turns.append(Turn("executor", text, calls=parsed.calls))
            self.warnings.append(f"the same call was made {self.config.max_repeated_calls} times in a row: stopped")
            self.status = REPEATED_CALL
            return
        if parsed.ok:
            results = [execute(self.tools, c.name, c.arguments, timeout=self.config.tool_timeout) for c in parsed.calls]
            observation = observation_text(results)
        else:
            observation = json.dumps({"error": parsed.error}, ensure_ascii=False)
        # An unreadable call stays as the raw text (no calls): kept for inspection, not for training.
        self.turns.append(Turn("executor", text, calls=parsed.calls))
        self.turns.append(Turn("observation", observation))
        self._append_context_turn("observation", observation)
        self._start_turn("reasoner")

    def _repeats(self, calls) -> int:
        """How many executor turns in a row, this one included, made exactly ``calls``."""
        if not calls:
            return 0
        key = [c.to_dict() for c in calls]
        count = 1
        for turn in reversed([t for t in self.turns if t.role == "executor"]):
            if [c.to_dict() for c in turn.calls] != key:
                break
            count += 1
        return count

    def _start_turn(self, role: str) -> None:
        self.role, self.turn_ids, self._turn_text, self.voted = role, [], "", False
        self._append(self.encoder.header_ids(role), role)
