"""Constrained decoding of the arguments to the tool's JSON schema (docs/spec.md §7): a model with
random weights always writes calls that parse and validate; the constraint never blocks every token;
greedy decoding is unchanged where the model's own choice is already valid."""

from __future__ import annotations

import json
import random

import jsonschema
import pytest
import torch

from agent_helpers import SYSTEM, build_model, build_tokenizer
from mor_ext.agent import Agent, AgentConfig
from mor_ext.agent.arguments import Bounds, CallGrammar, call_grammar
from mor_ext.agent.episode import CALLED
from mor_ext.agent.parsing import parse_executor_output
from mor_ext.tools import Tool

pytest.importorskip("llguidance")

SCHEMAS = {
    "book_room": {"type": "object", "properties": {
        "city": {"type": "string"},
        "nights": {"type": "integer"},
        "kind": {"type": "string", "enum": ["single", "double", "suite"]},
        "tags": {"type": "array", "items": {"type": "string"}, "maxItems": 3},
        "guest": {"type": "object", "properties": {"name": {"type": "string"}, "age": {"type": "number"},
                                                   "vip": {"type": "boolean"}}, "required": ["name"]}},
        "required": ["city", "kind"]},
    "set_levels": {"type": "object", "properties": {
        "levels": {"type": "array", "items": {"type": "integer", "enum": [1, 2, 3]}, "minItems": 1},
        "mode": {"type": ["string", "null"]},
        "scale": {"anyOf": [{"type": "number"}, {"type": "string", "enum": ["auto"]}]},
        "matrix": {"type": "array", "items": {"type": "array", "items": {"type": "number"}, "maxItems": 2},
                   "maxItems": 2}},
        "required": ["levels", "scale"]},
    "ping": {"type": "object", "properties": {}},
    "flags": {"type": "object", "properties": {"a": {"type": "boolean"}, "b": {"type": "boolean"},
                                               "c": {"type": "boolean"}}},
}
TOOLS = {name: Tool(name, f"Tool {name}.", schema) for name, schema in SCHEMAS.items()}
SHORT = Bounds(string_chars=12, array_items=4, calls=3)  # a random model's strings end in a few tokens


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.fixture(scope="module")
def end(tokenizer):
    return tokenizer.convert_tokens_to_ids("<|im_end|>")


def _calls_valid(text: str, tools=TOOLS) -> list:
    parsed = parse_executor_output(text)
    assert parsed.ok, (parsed.error, text)
    for call in parsed.calls:
        assert call.name in tools, text
        jsonschema.validate(call.arguments, tools[call.name].parameters)
        assert set(call.arguments) <= set(tools[call.name].parameters["properties"])
    assert json.loads(text)  # the turn is exactly JSON: nothing around the calls
    return parsed.calls


@pytest.mark.parametrize("seed", range(3))
def test_a_random_model_always_writes_calls_the_schemas_accept(tokenizer, seed):
    model = build_model(len(tokenizer), seed=seed)
    names = set()
    for do_sample in (True, False):
        config = AgentConfig(first_call_only=True, max_turn_tokens=24, do_sample=do_sample, temperature=1.3,
                             seed=seed, constrain_args=True, argument_bounds=SHORT)
        agent = Agent(model, tokenizer, TOOLS, system=SYSTEM, config=config)
        episodes = agent.run_batch([f"Please help with request {i}." for i in range(6)], batch_size=6).episodes
        for e in episodes:
            assert e.status == CALLED
            turn = next(t for t in e.trajectory.turns if t.role == "executor")
            names |= {c.name for c in _calls_valid(turn.content)}  # never cut before the calls are complete
    assert len(names) > 1


def _allowed_ids(mask: torch.Tensor) -> list[int]:
    return torch.nonzero(mask).flatten().tolist()


@pytest.mark.parametrize("seed", range(40))
def test_random_walks_never_meet_a_dead_end_and_end_valid(tokenizer, end, seed):
    rng = random.Random(seed)
    tools = dict(rng.sample(sorted(TOOLS.items()), rng.randint(1, len(TOOLS))))
    grammar = CallGrammar(tokenizer, tools, end, bounds=SHORT)
    ids: list[int] = []
    while True:
        allowed = _allowed_ids(grammar.allowed(ids))
        assert allowed, f"dead end after {tokenizer.decode(ids)!r}"
        token = rng.choice(allowed)
        if token == end:
            break
        ids.append(token)
        assert len(ids) < 2000
    assert grammar.accepts(ids)
    _calls_valid(tokenizer.decode(ids), tools)


VALID = [
    '{"name": "book_room", "arguments": {"city": "Paris", "kind": "suite"}}',
    '{"name": "book_room", "arguments": {"city": "Lima \\"centre\\"", "nights": 3, "kind": "double", '
    '"tags": ["quiet", "sea"], "guest": {"name": "Ana", "age": 41.5, "vip": true}}}',
    '[{"name": "ping", "arguments": {}}, {"name": "set_levels", "arguments": {"levels": [1, 3], "mode": null, '
    '"scale": "auto", "matrix": [[1.5, -2], []]}}]',
    '{"name": "set_levels", "arguments": {"levels": [2], "scale": -0.25e3}}',
    '{"name": "flags", "arguments": {"b": false}}',
    '{"name": "flags", "arguments": {}}',
    '{"name": "book_room", "arguments": {"kind": "single", "guest": {"vip": false, "name": "Bo"}, "city": "Rome"}}',
    '{"name": "flags", "arguments": {"c": true, "a": false}}',
]
INVALID = [
    '{"name": "book_room", "arguments": {"city": "Rome"}}',  # a required key missing
    '{"name": "book_room", "arguments": {"city": "Rome", "kind": "penthouse"}}',  # not an enum member
    '{"name": "flags", "arguments": {"a": true, "a": false}}',  # a repeated key
    '{"name": "flags", "arguments": {"a": 1}}',  # the wrong type
    '{"name": "flags", "arguments": {"z": true}}',  # not a property
    '{"name": "book", "arguments": {}}',  # not a tool
    '{"name":"ping","arguments":{}}',  # not the call format's separators
]


@pytest.mark.parametrize("text", VALID)
def test_every_tokenization_of_a_valid_call_passes(tokenizer, end, text):
    _calls_valid(text)
    grammar = CallGrammar(tokenizer, TOOLS, end)
    rng = random.Random(len(text))
    splits = []
    for _ in range(10):  # the text cut into random pieces, each tokenized on its own
        cuts = sorted(rng.sample(range(1, len(text)), rng.randint(1, len(text) // 2)))
        splits.append([text[a:b] for a, b in zip([0, *cuts], [*cuts, len(text)])])
    for pieces in [[text], list(text), *splits]:
        ids = [i for piece in pieces for i in tokenizer.encode(piece, add_special_tokens=False)]
        for k, token in enumerate(ids):
            assert bool(grammar.allowed(ids[:k])[token]), (tokenizer.decode(ids[:k]), tokenizer.decode([token]))
        assert bool(grammar.allowed(ids)[end]) and grammar.accepts(ids)


@pytest.mark.parametrize("text", INVALID)
def test_invalid_calls_are_blocked(tokenizer, end, text):
    grammar = CallGrammar(tokenizer, TOOLS, end)
    ids = tokenizer.encode(text, add_special_tokens=False)
    blocked = any(not grammar.allowed(ids[:k])[token] for k, token in enumerate(ids))
    assert blocked or not grammar.allowed(ids)[end]
    # after a token the grammar rejects (a scripted turn), the turn may only end: never no token at all
    if blocked:
        assert _allowed_ids(grammar.allowed(ids)) == [end]


class Leaning:
    """Greedy decoding of a model that leans towards ``text``: argmax of the logits plus a bonus on
    the next token of ``text``'s tokens (a stand-in for a model whose own choice is that text)."""

    def __init__(self, tokenizer, text: str) -> None:
        end = [tokenizer.convert_tokens_to_ids("<|im_end|>")]
        self.ids = {"reasoner": tokenizer.encode("I call it.\nNext: executor", add_special_tokens=False),
                    "executor": tokenizer.encode(text, add_special_tokens=False) + end}

    def __call__(self, logits: torch.Tensor, episode) -> int:
        scores, ids, done = logits.clone(), self.ids[episode.role], len(episode.turn_ids)
        if done < len(ids):
            scores[ids[done]] += 1e4
        return int(torch.argmax(scores))


def _greedy_call(model, tokenizer, text: str, constrain: bool):
    config = AgentConfig(first_call_only=True, max_turn_tokens=200, constrain_args=constrain)
    agent = Agent(model, tokenizer, TOOLS, system=SYSTEM, config=config, choose=Leaning(tokenizer, text))
    return agent.run("Book me a room.")


@pytest.mark.parametrize("text", VALID[:3])
def test_greedy_with_the_constraint_equals_greedy_without_when_the_choice_is_valid(tokenizer, text):
    model = build_model(len(tokenizer), seed=5)
    free, constrained = _greedy_call(model, tokenizer, text, False), _greedy_call(model, tokenizer, text, True)
    assert constrained.input_ids == free.input_ids and constrained.role_ids == free.role_ids
    assert next(t for t in free.trajectory.turns if t.role == "executor").content == text


def test_large_objects_keep_the_schemas_order(tokenizer, end):
    schema = {"type": "object", "properties": {f"k{i}": {"type": "integer"} for i in range(8)}, "required": ["k5"]}
    tools = {"wide": Tool("wide", "Eight keys.", schema)}
    grammar = CallGrammar(tokenizer, tools, end, bounds=Bounds(any_order=4))

    def passes(arguments: str) -> bool:
        ids = tokenizer.encode('{"name": "wide", "arguments": ' + arguments + "}", add_special_tokens=False)
        return all(grammar.allowed(ids[:k])[t] for k, t in enumerate(ids)) and grammar.accepts(ids)

    assert passes('{"k1": 1, "k5": 2, "k7": 3}') and passes('{"k5": 0}')
    assert not passes('{"k5": 2, "k1": 1}') and not passes('{"k1": 1, "k7": 3}') and not passes("{}")


@pytest.mark.parametrize("text", INVALID[:3])
def test_an_invalid_choice_is_steered_into_a_valid_call(tokenizer, text):
    model = build_model(len(tokenizer), seed=5)
    free, constrained = _greedy_call(model, tokenizer, text, False), _greedy_call(model, tokenizer, text, True)
    assert next(t for t in free.trajectory.turns if t.role == "executor").content == text
    _calls_valid(next(t for t in constrained.trajectory.turns if t.role == "executor").content)


def test_bfcl_style_schemas_compile(tokenizer, end):
    odd = {"type": "object", "properties": {
        "when": {"type": "string", "format": "date"},
        "code": {"type": "string", "pattern": "^[A-Z]{3}$"},
        "count": {"type": "integer", "minimum": 1, "maximum": 5},
        "extra": {"type": "dict", "properties": {"x": {"type": "float"}}},
        "pair": {"type": "tuple", "items": {"type": "any"}},
        "blob": {"description": "anything"},
        "map": {"type": "object", "additionalProperties": {"type": "integer"}}},
        "required": ["code", "count"]}
    tools = {"odd": Tool("odd", "Odd types.", odd)}
    lark, warnings = call_grammar(tools)
    assert "%json" in lark and not warnings
    grammar = CallGrammar(tokenizer, tools, end)
    text = ('{"name": "odd", "arguments": {"when": "2024-05-01", "code": "ABC", "count": 4, "extra": {"x": 1.5}, '
            '"pair": ["a", 2], "blob": {"k": [true, null]}, "map": {"a": 1, "b": 2}}}')
    ids = tokenizer.encode(text, add_special_tokens=False)
    assert all(grammar.allowed(ids[:k])[t] for k, t in enumerate(ids)) and grammar.accepts(ids)
    bad = tokenizer.encode('{"name": "odd", "arguments": {"code": "ABC", "count": 9}}', add_special_tokens=False)
    assert not all(grammar.allowed(bad[:k])[t] for k, t in enumerate(bad))  # out of the range: llguidance's %json


@pytest.mark.parametrize("schema", [
    {"type": "number", "exclusiveMinimum": 0},  # "0.000..." is a valid prefix for ever
    {"type": "number", "minimum": 0.5, "maximum": 1},
    {"type": "integer", "minimum": 1},
])
def test_a_range_that_llguidance_compiles_still_ends(tokenizer, end, schema):
    """A model that writes zeros wherever it may (a stage-thirteen held-out episode did, for 8,000
    tokens) ends its value at the delegated part's token cap; a value in range is untouched."""
    tools = {"size": Tool("size", "A size.", {"type": "object", "properties": {"edge": schema}, "required": ["edge"]})}
    grammar = CallGrammar(tokenizer, tools, end)
    assert "[max_tokens=" in grammar.lark
    zero, ids = tokenizer.convert_tokens_to_ids("0"), tokenizer.encode('{"name": "size", "arguments": {"edge": ',
                                                                       add_special_tokens=False)
    assert all(grammar.allowed(ids[:k])[t] for k, t in enumerate(ids))
    cap = Bounds().delegated_tokens(schema)
    while (allowed := _allowed_ids(grammar.allowed(ids))) != [end]:
        ids.append(zero if zero in allowed else min(allowed))
        assert len(ids) < 200 + cap, tokenizer.decode(ids)
    assert tokenizer.decode(ids).endswith("}}") and grammar.accepts(ids)
    good = tokenizer.encode('{"name": "size", "arguments": {"edge": 1}}', add_special_tokens=False)
    assert all(grammar.allowed(good[:k])[t] for k, t in enumerate(good)) and grammar.accepts(good)


def test_the_vote_samples_under_the_grammar(tokenizer):
    model = build_model(len(tokenizer), seed=2)
    config = AgentConfig(first_call_only=True, max_turn_tokens=24, vote=4, vote_temperature=2.0, seed=1,
                         constrain_args=True, argument_bounds=SHORT)
    episodes = Agent(model, tokenizer, TOOLS, system=SYSTEM, config=config).run_batch(["Hi."] * 3, batch_size=3).episodes
    for e in episodes:
        assert all(n in TOOLS for n in e.trajectory.meta["votes"][0])
        _calls_valid(next(t for t in e.trajectory.turns if t.role == "executor").content)


@pytest.mark.parametrize("calls", [1, 2, 4])
def test_an_exact_call_count_grammar_ends_only_after_that_many_calls(tokenizer, end, calls):
    """``call_grammar(calls=N)`` (``--calls-from-plan``): random walks under it end in exactly N valid
    calls, and a turn with one call fewer is not accepted where N > 1."""
    grammar = CallGrammar(tokenizer, TOOLS, end, bounds=SHORT, calls=calls)
    for seed in range(6):
        rng, ids = random.Random(seed), []
        while (token := rng.choice(_allowed_ids(grammar.allowed(ids)))) != end:
            ids.append(token)
            assert len(ids) < 4000
        assert len(_calls_valid(tokenizer.decode(ids))) == calls
    one = '{"name": "ping", "arguments": {}}'
    for count in range(max(calls - 1, 1), calls + 2):
        text = one if count == 1 else "[" + ", ".join([one] * count) + "]"
        ids = tokenizer.encode(text, add_special_tokens=False) + [end]
        fits = all(grammar.allowed(ids[:k])[t] for k, t in enumerate(ids))
        assert fits == (count == calls), text
    with pytest.raises(ValueError, match="at least one call"):
        call_grammar(TOOLS, SHORT, calls=0)


class _PlanThenSample:
    """Scripts the reasoner's turn (``plans[episode.id]`` then "Next: executor") and samples the
    executor's tokens from the (masked) logits of a random model, seeded."""

    def __init__(self, tokenizer, plans: dict[str, str], seed: int) -> None:
        self.tokenizer, self.plans = tokenizer, plans
        self.end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, logits: torch.Tensor, episode) -> int:
        if episode.role == "reasoner":
            ids = self.tokenizer.encode(self.plans[episode.id] + " Next: executor", add_special_tokens=False)
            return ids[len(episode.turn_ids)]
        return int(torch.multinomial(torch.softmax(logits.float() * 0.5, -1), 1, generator=self.generator))


PLANS = {"three": "Asked: 1) ping; 2) the levels 1 and 2; 3) a room in Oslo. Three calls.",
         "one": "Asked: 1) a double room in Rome for 2 nights.",
         "none": "The user wants a room; 1) book_room; 2) ping.",
         "five": "Asked: 1) ping; 2) ping; 3) ping; 4) ping; 5) ping."}  # more than SHORT's cap of 3 calls


@pytest.mark.parametrize("from_plan", [True, False])
def test_calls_from_plan_makes_as_many_calls_as_the_plan_lists(tokenizer, from_plan):
    """``AgentConfig.calls_from_plan``: the executor turn after a plan that lists N requests makes
    exactly N calls (at most ``Bounds.calls``); after a plan without the listing, 1 to ``Bounds.calls``. Without the option
    the same sampled model makes other counts (what the option changes)."""
    model = build_model(len(tokenizer), seed=3)
    config = AgentConfig(first_call_only=True, max_turn_tokens=200, constrain_args=True, argument_bounds=SHORT,
                         calls_from_plan=from_plan)  # the scripted plans are not cut
    counts = {name: [] for name in PLANS}
    for seed in range(4):
        agent = Agent(model, tokenizer, TOOLS, system=SYSTEM, config=config,
                      choose=_PlanThenSample(tokenizer, PLANS, seed))
        for name in PLANS:
            episode = agent.run_batch(["Help me."], batch_size=1, ids=[name]).episodes[0]
            assert episode.status == CALLED
            counts[name].append(len(_calls_valid(next(t for t in episode.trajectory.turns
                                                       if t.role == "executor").content)))
    assert all(1 <= c <= SHORT.calls for c in counts["none"])
    if from_plan:
        assert counts["three"] == [3] * 4 and counts["one"] == [1] * 4 and counts["five"] == [SHORT.calls] * 4
    else:
        assert counts["three"] + counts["one"] != [3] * 4 + [1] * 4


# ------------------------------------------------------------------ distinct calls (--distinct-calls)
@pytest.mark.parametrize("text, done, tail", [
    ('{"name": "ping", "argu', [], '{"name": "ping", "argu'),
    ('[{"name": "ping", "arguments": {}}', ['{"name": "ping", "arguments": {}}'], ""),
    ('[{"name": "ping", "arguments": {}}, {"name": "fl', ['{"name": "ping", "arguments": {}}'], ', {"name": "fl'),
    ('[{"name": "a", "arguments": {"s": "}, {"}}, {"name": "b", "arguments": {}}]',
     ['{"name": "a", "arguments": {"s": "}, {"}}', '{"name": "b", "arguments": {}}'], "]"),
    ("[", [], ""),
])
def test_split_calls_finds_the_complete_calls_of_a_list(text, done, tail):
    from mor_ext.agent.arguments import split_calls

    assert split_calls(text) == (done, tail)


def _walk(grammar, end, rng) -> list[int]:
    ids: list[int] = []
    while True:
        allowed = _allowed_ids(grammar.allowed(ids))
        assert allowed
        token = rng.choice(allowed)
        if token == end:
            return ids
        ids.append(token)
        assert len(ids) < 4000


def test_distinct_calls_grammar_never_repeats_a_call_in_a_turn(tokenizer, end):
    """Random walks of three calls over a tool without arguments and one with three booleans: without
    ``distinct`` some turns repeat a call (what the option is for), with it none does, and every turn
    still ends in valid calls."""
    tools = {n: TOOLS[n] for n in ("ping", "flags")}
    repeats = {}
    for distinct in (False, True):
        grammar = CallGrammar(tokenizer, tools, end, bounds=SHORT, calls=3, distinct=distinct)
        repeats[distinct] = 0
        for seed in range(12):
            calls = _calls_valid(tokenizer.decode(_walk(grammar, end, random.Random(seed))), tools)
            keys = [json.dumps([c.name, c.arguments], sort_keys=True) for c in calls]
            assert len(calls) == 3
            repeats[distinct] += len(keys) - len(set(keys))
    assert repeats[False] > 0 and repeats[True] == 0


def test_distinct_calls_blocks_only_the_token_that_completes_a_repeat(tokenizer, end):
    """After ``f(a=true), f(a=true`` the closing brace (which would complete the repeat) is blocked
    while another key stays open; a value that differs, or the first call, is not touched."""
    first = '[{"name": "flags", "arguments": {"a": true}}, '
    brace = tokenizer.encode("}", add_special_tokens=False)
    assert len(brace) == 1
    for distinct in (False, True):
        grammar = CallGrammar(tokenizer, TOOLS, end, bounds=SHORT, distinct=distinct)
        for text, blocked in ((first + '{"name": "flags", "arguments": {"a": true', distinct),
                              (first + '{"name": "flags", "arguments": {"a": false', False),
                              ('[{"name": "flags", "arguments": {"a": true', False)):
            mask = grammar.allowed(tokenizer.encode(text, add_special_tokens=False))
            assert bool(mask[brace[0]]) != blocked, (text, distinct)
            assert mask[tokenizer.encode(",", add_special_tokens=False)[0]], text  # another key may follow


def test_distinct_calls_lets_an_unavoidable_repeat_through(tokenizer, end):
    """Two calls of the only tool, which takes no arguments: the repeat is the only way to end the turn,
    so it is let through rather than leaving the turn without a valid ending."""
    grammar = CallGrammar(tokenizer, {"ping": TOOLS["ping"]}, end, bounds=SHORT, calls=2, distinct=True)
    ids = _walk(grammar, end, random.Random(0))
    assert [c.name for c in _calls_valid(tokenizer.decode(ids), {"ping": TOOLS["ping"]})] == ["ping", "ping"]


class _Repeat:
    """Scripts the reasoner's "Next: executor"; the executor writes ``text`` wherever the (masked)
    logits allow its next token, else the best allowed token."""

    def __init__(self, tokenizer, text: str) -> None:
        self.ids = tokenizer.encode(text, add_special_tokens=False)
        self.plan = tokenizer.encode("Next: executor", add_special_tokens=False)

    def __call__(self, logits: torch.Tensor, episode) -> int:
        k = len(episode.turn_ids)
        if episode.role == "reasoner":
            return self.plan[k]
        if episode.role == "executor" and k < len(self.ids) and torch.isfinite(logits[self.ids[k]]) \
                and all(a == b for a, b in zip(episode.turn_ids, self.ids)):
            return self.ids[k]
        return int(torch.argmax(logits))


@pytest.mark.parametrize("distinct", [False, True])
def test_distinct_calls_reaches_the_episode(tokenizer, distinct):
    """``AgentConfig.distinct_calls``: an executor that would write the same call twice writes a
    different second call (without the option: the repeat)."""
    model = build_model(len(tokenizer), seed=5)
    config = AgentConfig(first_call_only=True, max_turn_tokens=400, constrain_args=True, argument_bounds=SHORT,
                         distinct_calls=distinct)
    one = '{"name": "flags", "arguments": {"a": true}}'
    agent = Agent(model, tokenizer, TOOLS, system=SYSTEM, config=config,
                  choose=_Repeat(tokenizer, f"[{one}, {one}]"))
    episode = agent.run_batch(["Help me."], batch_size=1).episodes[0]
    calls = [(c.name, c.arguments) for c in _calls_valid(
        next(t for t in episode.trajectory.turns if t.role == "executor").content)]
    assert calls[0] == ("flags", {"a": True}) and len(calls) >= 2
    assert (calls[1] == calls[0]) != distinct
