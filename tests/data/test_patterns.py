"""The BFCL-shaped patterns of the synthetic data: near-miss and missing-argument refusals, surface
forms of same-tool calls, the held-out tool split, the pattern report, fits-768, decontamination."""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import replace

import pytest

from mor_ext.data import synthetic
from mor_ext.data.synthetic import generate
from mor_ext.data.synthetic.episodes import REQUESTS, SURFACE_FORMS, count_listed_requests
from mor_ext.data.synthetic.report import format_report, pattern_report
from mor_ext.data.trajectory import Tool, ToolCall, Trajectory, Turn
from mor_ext.tools.families import REFUSAL_AXES, all_specs, specs

BY_NAME = {s.name: s for s in all_specs()}


def gen(n: int, **kwargs):
    return generate(n, skip_decontamination_for_generator_tests=True, **kwargs)


@pytest.fixture(scope="module")
def heldout():
    return gen(400, seed=2, split="heldout")


def test_near_miss_offers_only_same_family_tools_that_cannot_answer():
    batch = gen(150, seed=4, mix={"refusal_near_miss": 1})
    axes = Counter()
    for t in batch:
        asked = BY_NAME[t.meta["asked"]]
        offered = [BY_NAME[tool.name] for tool in t.tools]
        assert asked.name not in {s.name for s in offered}
        assert {s.family for s in offered} == {asked.family}
        assert [x.role for x in t.turns] == ["user", "reasoner", "summarizer"] and t.turns[1].next == "summarizer"
        for s in offered:  # the reasoner says why each offered tool does not fit
            assert s.name in t.turns[1].content and s.does in t.turns[1].content
        axes[t.meta["refusal"]] += 1
        if "_into_" in asked.name:  # no two offered unit pairs chain into the asked conversion
            src, dst = asked.name.split("_into_")
            assert not any(s.name.startswith(src + "_into_") or s.name.endswith("_into_" + dst) for s in offered)
    assert set(axes) == set(REFUSAL_AXES)


def test_missing_argument_asks_instead_of_guessing():
    for t in gen(120, seed=5, mix={"missing_argument": 1}):
        asked = BY_NAME[t.meta["asked"]]
        param = t.meta["missing"]
        assert param in asked.tool.required and asked.name in {tool.name for tool in t.tools}
        assert f"{param} (" in t.turns[1].content and t.turns[1].next == "summarizer"
        what = asked.tool.parameters["properties"][param]["description"].rstrip(".").lower()
        assert what[:12] in t.turns[2].content.lower()
        assert "?" in t.turns[2].content or "please tell me" in t.turns[2].content.lower()


def test_same_tool_calls_use_every_surface_form_and_forms_can_be_restricted():
    batch = gen(200, seed=6, mix={"parallel_same": 1})
    assert set(Counter(t.meta["form"] for t in batch)) == set(SURFACE_FORMS)
    respectively = [t for t in batch if t.meta["form"] == "respectively"]
    assert all("respectively" in t.query for t in respectively)
    assert all(t.query.count("\n- ") + t.query.startswith("- ") >= 2 for t in batch if t.meta["form"] == "bullets")
    assert {t.meta["form"] for t in gen(30, seed=6, mix={"parallel_same": 1}, forms=("for_each",))} == {"for_each"}
    sizes = Counter(t.meta["calls"][0] for t in batch)
    assert set(sizes) >= {2, 3, 4}


def test_parallel_multiple_mixes_a_same_tool_group_with_other_tools():
    shapes = Counter()
    for t in gen(120, seed=7, mix={"parallel_multiple": 1}):
        names = [c.name for c in t.turns[2].calls]
        shapes["mixed" if len(set(names)) < len(names) else "different"] += 1
    assert shapes["mixed"] > shapes["different"] > 0


def _shown(value) -> str:
    return synthetic.episodes.show(value)


def test_slot_list_puts_every_varied_value_in_one_phrase_and_is_off_by_default():
    """``slot_list`` (README, "Synthetic data: the tool families and the pattern mix"): one sentence, the varied values listed where one value
    would stand, every call's value in the query, one call per value."""
    batch = gen(80, seed=11, mix={"parallel_same": 1}, forms=("slot_list",))
    assert {t.meta["form"] for t in batch} == {"slot_list"}
    for t in batch:
        calls = t.turns[2].calls
        spec = BY_NAME[calls[0].name]
        assert len(calls) >= 2 and {c.name for c in calls} == {spec.name}
        assert "\n" not in t.query and " and " in t.query
        for call in calls:
            assert _shown(call.arguments[spec.vary]) in t.query
    # a phrase that states a varied value once: the list is in the slot, not the whole item repeated
    once = [t for t in batch if all(t.query.count(_shown(c.arguments[BY_NAME[c.name].vary])) == 1 for c in t.turns[2].calls)]
    assert len(once) > len(batch) // 2
    assert "slot_list" not in {t.meta["form"] for t in gen(200, seed=6, mix={"parallel_same": 1})}


def test_joined_form_asks_every_parallel_multiple_request_in_one_sentence():
    plain = gen(60, seed=12, mix={"parallel_multiple": 1})
    joined = gen(60, seed=12, mix={"parallel_multiple": 1}, forms=SURFACE_FORMS + ("joined",))
    opening = re.compile(r"^(What are|Find|I need|Get me) ")
    one_sentence = [t for t in joined if opening.match(t.query) and "Also," not in t.query and "(1)" not in t.query]
    assert len(one_sentence) >= 10
    assert sum(bool(opening.match(t.query)) and "Also," not in t.query and "(1)" not in t.query for t in plain) < len(one_sentence)
    for t in one_sentence:  # every call's tool is asked for: its item phrase is in the query
        for call in t.turns[2].calls:
            spec = BY_NAME[call.name]
            assert any(_shown(v) in t.query for v in call.arguments.values()) or not call.arguments, (t.query, call)
    with pytest.raises(ValueError, match="same-tool form"):
        gen(5, forms=("joined",))


def test_also_keeps_the_capital_i_and_acronyms():
    batch = gen(150, seed=13, mix={"parallel_multiple": 1})
    also = [t.query for t in batch if " Also, " in t.query]
    assert len(also) > 20
    assert not [q for q in also if re.search(r" Also, (i|i'\w+|[a-z][A-Z]+) ", q)]
    assert any(re.search(r" Also, [a-z]", q) for q in also)


def test_heldout_split_uses_only_heldout_tools_and_covers_the_patterns(heldout):
    held_names = {s.name for s in specs("heldout")}
    kinds = Counter(t.meta["kind"] for t in heldout)
    assert {"parallel_same", "parallel_multiple", "refusal_near_miss", "missing_argument", "single", "no_tool"} <= set(kinds)
    assert "multi_step" not in kinds
    for t in heldout:
        assert {tool.name for tool in t.tools} <= held_names and t.meta["split"] == "heldout"
    train = gen(1500, seed=2)
    used = {tool.name for t in train for tool in t.tools} | {c.name for t in train for turn in t.turns for c in turn.calls}
    assert not used & held_names
    assert gen(50, seed=9, split="heldout") == gen(50, seed=9, split="heldout")


def _traj(calls: list[list[str]], tools: int, meta: dict) -> Trajectory:
    offered = tuple(Tool(f"t{i}", "", {"type": "object", "properties": {}}) for i in range(tools))
    turns = [Turn("user", "q")]
    for names in calls:
        turns += [Turn("reasoner", "r", "executor"), Turn("executor", calls=tuple(ToolCall(n, {}) for n in names)),
                  Turn("observation", "o")]
    turns += [Turn("reasoner", "r", "summarizer"), Turn("summarizer", "s")]
    return Trajectory(offered, tuple(turns), meta=meta)


def test_pattern_report_counts_from_the_trajectories():
    data = [_traj([["a", "a", "a"]], 2, {"kind": "parallel_same", "form": "bullets"}),
            _traj([["a", "a", "b"]], 3, {"kind": "parallel_multiple"}),
            _traj([["a", "b"]], 3, {"kind": "parallel_multiple"}),
            _traj([["a"], ["b"]], 1, {"kind": "multi_step"}),
            _traj([], 2, {"kind": "refusal_near_miss", "refusal": "wrong_quantity"}),
            _traj([], 1, {})]
    r = pattern_report(data)
    assert r["executor_turns"] == 5
    assert {k: v["count"] for k, v in r["calls_per_executor_turn"].items()} == {"1": 2, "2": 1, "3": 2}
    assert {k: v["count"] for k, v in r["executor_turn_shapes"].items()} == {
        "single_call": 2, "same_tool": 1, "mixed": 1, "different_tools": 1}
    assert {k: v["count"] for k, v in r["episodes_without_calls"].items()} == {"wrong_quantity": 1, "no_call": 1}
    assert {k: v["count"] for k, v in r["tools_per_episode"].items()} == {"1": 2, "2": 2, "3": 2}
    assert r["same_tool_surface_forms"]["bullets"]["count"] == 1 and r["distinct_tools"] == 3
    assert "tokens" not in r and "calls per turn" in format_report(r)


@pytest.mark.integration
def test_most_trajectories_fit_768_smollm2_tokens():
    """The share of a 600-trajectory set (each split) that fits the training length; README reports
    the 3,000-set numbers. Threshold 0.93 (measured about 0.95)."""
    from transformers import AutoTokenizer

    from mor_ext.models import ModelNotFoundError, resolve_model

    try:
        directory, gguf = resolve_model(None)
    except ModelNotFoundError as exc:
        pytest.skip(f"default model not installed: {exc}")
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=gguf, local_files_only=True)
    for split in ("train", "heldout"):
        r = pattern_report(gen(600, seed=1, split=split), tok, 768)
        assert r["tokens"]["share_fits"] >= 0.93, (split, r["tokens"])
    unbounded = pattern_report(gen(300, seed=1, max_chars=None), tok, 768)
    assert unbounded["tokens"]["mean"] > pattern_report(gen(300, seed=1), tok, 768)["tokens"]["mean"]


@pytest.mark.bfcl
def test_decontamination_catches_a_planted_bfcl_name_in_the_families(monkeypatch):
    from mor_ext.data.decontamination import ContaminationError

    planted = tuple(replace(s, tool=replace(s.tool, name="calculate_triangle_area")) if s.name == "circle_area_calc" else s
                    for s in specs("train"))
    monkeypatch.setattr(synthetic.generator, "specs", lambda split: planted)
    with pytest.raises(ContaminationError, match="calculate_triangle_area"):
        generate(3, seed=0, mix={"single": 1})


@pytest.mark.bfcl
def test_generated_sets_are_clean_for_both_splits():
    from mor_ext.data.decontamination import check

    for split in ("train", "heldout"):
        data = generate(300, seed=8, split=split)  # generate() itself raises if not clean
        assert check(data).clean


def _first_tool_at(t: Trajectory) -> float:
    """Where the first reasoner turn first names an offered tool (infinity if it names none)."""
    plan = t.turns[1].content
    return min((plan.find(tool.name) for tool in t.tools if tool.name in plan), default=float("inf"))


DECLINE = re.compile(r"\b(no call|no tool|none|not|won't|don't|doesn't|can't|cannot)\b", re.IGNORECASE)


def test_every_first_plan_names_an_offered_tool_before_any_decline():
    """Whether to call is decided after a tool and what it does are written, never at the opening:
    with declines that opened "The user wants X. The offered tools look close" or
    "Checking the tools:" right where single plans name their tool, tuned models declined about half
    of BFCL's call-needing questions, naming the right tool only afterwards (RESULTS.md)."""
    batch = gen(700, seed=7)
    declining = 0
    for t in batch:
        plan = t.turns[1].content
        hit = DECLINE.search(plan)
        if t.turns[1].next != "summarizer" and not hit:
            continue
        assert hit, plan  # every plan that goes straight to the summarizer says why
        assert _first_tool_at(t) < hit.start(), (t.meta["kind"], plan)
        declining += t.turns[1].next == "summarizer"
    assert declining >= 100  # near-miss, missing-argument and no-tool episodes were all checked


ORDERING = re.compile(r"\b(steps?|turn|together|independent|first|at once)\b", re.IGNORECASE)


def test_chain_and_several_tool_plans_name_tools_before_they_order_the_calls():
    """Whether the calls wait for each other (a chain: two steps) or not (several tools: one turn) is
    written after the tools are, as with the declines above: an opening such as "This takes two steps"
    became the tuned reasoner's start for most of BFCL's parallel questions, and it then made only the
    first call (RESULTS.md, stage five)."""
    batch = gen(300, seed=8, mix={"multi_step": 1, "parallel_multiple": 1})
    for t in batch:
        plan = t.turns[1].content
        hit = ORDERING.search(plan)
        assert hit, plan
        assert _first_tool_at(t) < hit.start(), (t.meta["kind"], plan)
    assert {t.meta["kind"] for t in batch} == {"multi_step", "parallel_multiple"}


LISTED = re.compile(r"(?:^Asked: |; )(\d+)\) ")


def test_listed_requests_open_every_first_plan_one_per_call_and_change_nothing_else():
    """``list_requests`` (``data generate --list-requests``) opens each first plan with the user's
    requests, numbered, as many as the first executor turn's calls (one for an episode without
    calls, and for a chain, whose first turn makes one call): the count is then copied from the
    query a request at a time instead of chosen at an opening (RESULTS.md, stages three to six).
    The episodes are the same draws as without it, so only that opening differs."""
    kinds = {k: 1 for k in synthetic.KINDS}
    plain = gen(350, seed=6, mix=kinds, max_chars=None)
    listed = gen(350, seed=6, mix=kinds, max_chars=None, list_requests=True)
    seen = Counter()
    for a, b in zip(plain, listed):
        assert a.meta == b.meta and REQUESTS not in b.meta and a.tools == b.tools
        first = next(i for i, t in enumerate(a.turns) if t.role == "reasoner")
        assert a.turns[:first] == b.turns[:first] and a.turns[first + 1:] == b.turns[first + 1:]
        opened, rest = b.turns[first].content, a.turns[first].content
        assert opened.startswith("Asked: 1) ") and opened.endswith(". " + rest), opened
        listing = opened[: -len(rest) - 1]
        numbers = [int(n) for n in LISTED.findall(listing)]
        executors = [t for t in a.turns if t.role == "executor"]
        want = len(executors[0].calls) if executors else 1
        assert numbers == list(range(1, want + 1)), (a.meta["kind"], listing, want)
        assert count_listed_requests(opened) == want, opened  # the reader of the whole plan agrees
        seen[a.meta["kind"], want > 1] += 1
    # every kind is covered, and both one-request and several-request listings occur
    assert {k for k, _ in seen} == set(synthetic.KINDS)
    assert seen["parallel_same", True] and seen["parallel_multiple", True] and seen["single", False]


@pytest.mark.parametrize("plan, count", [
    ("Asked: 1) the factorial of 5; 2) the factorial of 10; 3) the factorial of 15. 1) math.factorial(number=5); "
     "2) math.factorial(number=10)", 3),
    ("Asked: 1) 5.6 ft in meters. One request: one call of length_ft_into_m.", 1),
    ("Asked: 1) the area of a circle with radius 0.5; 2) its circumference.", 2),
    ("Asked: 1) 17 seconds in minutes; 2) 6.7 seconds in minutes", 2),  # no closing full stop
    ("Asked: 1) a; 3) b.", 1),  # the numbers must follow on
    ("The user wants the factorial of 5; 2) no.", None),
    ("Asked: the factorial of 5.", None),
    ("", None),
])
def test_count_listed_requests_reads_the_opening_only(plan, count):
    """The reader of :func:`requests_listed`'s opening (``--calls-from-plan`` decoding, the per-role
    report): the requests listed, not the numbered calls that follow the list; None without it."""
    assert count_listed_requests(plan) == count


def test_listed_requests_need_one_request():
    from mor_ext.data.synthetic.episodes import requests_listed

    assert requests_listed(["52 quarts in pints"]) == "Asked: 1) 52 quarts in pints."
    assert requests_listed(["a", "b"]) == "Asked: 1) a; 2) b."
    with pytest.raises(ValueError, match="at least one request"):
        requests_listed([])
