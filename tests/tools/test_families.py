"""The procedural tool families: over 1,000 distinct, valid, executable schemas; the train/heldout split."""

from __future__ import annotations

import random
import re

import jsonschema
import pytest

from mor_ext.tools import execute
from mor_ext.tools.catalogue import CATALOGUE
from mor_ext.tools.families import HELDOUT_FAMILIES, REFUSAL_AXES, all_specs, families, specs
from mor_ext.tools.families.stdlib import FUNCTIONS


def test_at_least_a_thousand_distinct_schemas_across_many_domains():
    tools = [s.tool for s in all_specs()]
    assert len(tools) >= 1000
    assert len({t.name for t in tools}) == len(tools)
    assert not {t.name for t in tools} & set(CATALOGUE)
    import json
    assert len({json.dumps(t.to_dict(), sort_keys=True) for t in tools}) == len(tools)
    assert len(families()) >= 60 and len({t.domain for t in tools}) >= 10


def test_every_schema_is_valid_json_schema_and_every_sample_validates_and_runs():
    for spec in all_specs():
        jsonschema.Draft202012Validator.check_schema(spec.tool.parameters)
        validator = jsonschema.Draft202012Validator(spec.tool.parameters)
        for i in range(5):
            args = spec.arguments(spec.sample(random.Random(f"{spec.name}:{i}")))
            validator.validate(args)
            result = execute({spec.name: spec.tool}, spec.name, args, timeout=None, coerce=False)
            assert result.ok, (spec.name, args, result.message)


def test_specs_are_deterministic_and_templates_fill():
    from mor_ext.data.synthetic.episodes import fill_spec

    for spec in all_specs():
        a, b = spec.sample(random.Random(7)), spec.sample(random.Random(7))
        assert a == b, spec.name
        for template in spec.ask + (spec.item,) + tuple(spec.partial.values()):
            assert "{" not in fill_spec(template, a), (spec.name, template)
        for template in spec.many:
            assert "{" not in fill_spec(template, a, list="1, 2 and 3"), (spec.name, template)
        assert spec.axis in REFUSAL_AXES


def test_partial_requests_omit_the_missing_value():
    """A missing-argument request must not contain the value it says is missing."""
    for spec in all_specs():
        fields = spec.sample(random.Random(3))
        for param, template in spec.partial.items():
            value = fields.get(param)
            if isinstance(value, (int, float, str)) and len(str(value)) > 2:
                from mor_ext.data.synthetic.episodes import fill_spec, show
                text = fill_spec(template, fields)
                assert not re.search(rf"(?<![\w.]){re.escape(show(value))}(?![\w.])", text), (spec.name, param, text)


def test_stdlib_tools_come_from_introspection():
    import inspect
    by_name = {s.name: s for s in all_specs()}
    for module, fn_name, params, _ in FUNCTIONS:
        spec = by_name[f"pystd_{module.__name__.split('.')[-1]}_{fn_name}"]
        assert list(spec.tool.parameters["properties"]) == [p for p in inspect.signature(getattr(module, fn_name)).parameters
                                                              if p in params]
        assert spec.tool.description.startswith(f"Python {module.__name__}.{fn_name}: ")
    import math
    sqrt = by_name["pystd_math_sqrt"]
    assert execute({sqrt.name: sqrt.tool}, sqrt.name, {"x": 16}).result == 4
    assert execute({sqrt.name: sqrt.tool}, sqrt.name, {"x": -1}).error_kind == "bad_arguments"  # exclusiveMinimum
    assert math.isclose(execute({"t": by_name["pystd_math_cos"].tool}, "t", {"x": 0}).result, 1)


def test_records_tools_have_nested_objects_arrays_enums_and_defaults():
    from mor_ext.data.synthetic.report import schema_features

    feats = [schema_features(s.tool) for s in all_specs()]
    for f in ("nested", "array", "enum", "optional", "default"):
        assert sum(f in x for x in feats) >= 40, f
    by_name = {s.name: s for s in all_specs()}
    book = by_name["hotel_stay_make_booking"]
    ok = execute({book.name: book.tool}, book.name, {"city": "Oslo", "date": "2026-05-01", "room_type": "suite",
                                                    "contact": {"name": "A B", "email": "a@b.c"}, "amenities": ["pool"]})
    assert ok.ok and ok.result["confirmation"].startswith("HTL-") and ok.result["status"] == "confirmed"
    again = execute({book.name: book.tool}, book.name, ok.arguments)
    assert again.result == ok.result  # a deterministic backend
    bad = execute({book.name: book.tool}, book.name, {"city": "Oslo", "date": "2026-05-01", "room_type": "suite",
                                                     "contact": {"name": "A B"}})
    assert bad.error_kind == "bad_arguments" and "email" in bad.message


def test_split_is_deterministic_disjoint_and_covers_every_pattern():
    train, held = specs("train"), specs("heldout")
    assert {s.name for s in train}.isdisjoint({s.name for s in held})
    assert len(train) + len(held) == len(all_specs())
    assert {s.family for s in held} == set(HELDOUT_FAMILIES)
    assert [s.name for s in specs("heldout")] == [s.name for s in held]
    held_fams = families("heldout")
    assert sum(len(v) >= 3 for v in held_fams.values()) >= 5  # near-miss siblings
    assert sum(any(s.vary for s in v) for v in held_fams.values()) >= 5  # same-tool parallel
    assert sum(any(s.partial for s in v) for v in held_fams.values()) >= 5  # missing arguments
    assert {s.axis for s in held} == set(REFUSAL_AXES)
    with pytest.raises(ValueError, match="split"):
        specs("test")


@pytest.mark.bfcl
def test_no_family_tool_name_is_a_bfcl_name():
    from mor_ext.data.decontamination import check

    report = check([], tools=[s.tool for s in all_specs()])
    assert report.clean, report.summary()


def test_workspace_tools_take_a_variable_named_in_the_request_and_compute_on_its_value():
    """The workspace family (``workspace.py``): each call passes the name of a variable that the
    request names in prose, and the tool computes on that variable's value (not on the name)."""
    from mor_ext.tools.families.workspace import SPECS, WORKSPACE

    rng = random.Random(11)
    assert len(SPECS) >= 12 and len({s.family for s in SPECS}) == 4
    assert any("." in s.name for s in SPECS) and any(re.fullmatch(r"[a-z]+(?:[A-Z][a-z]+)+", s.name) for s in SPECS)
    for spec in SPECS:
        ref = spec.vary
        for _ in range(10):
            fields = spec.sample(rng)
            args = spec.arguments(fields)
            assert args[ref] in WORKSPACE and set(args) <= set(spec.tool.parameters["properties"])
            request = spec.ask[rng.randrange(len(spec.ask))].format(**fields)
            assert args[ref] in request
            result = execute({spec.name: spec.tool}, spec.name, args, timeout=None)
            assert result.ok, (spec.name, args, result)
    sort_values = next(s for s in SPECS if s.name == "NumberList.sortValues")
    assert execute({sort_values.name: sort_values.tool}, sort_values.name, {"values": "queueSizes", "descending": True}).result == [11, 9, 7, 5, 4, 2]
    total = next(s for s in SPECS if s.name == "NumberList.totalOf")
    assert execute({total.name: total.tool}, total.name, {"values": "dailyTotals"}).result == 42 + 17 + 88 + 23 + 61
    unknown = execute({total.name: total.tool}, total.name, {"values": "noSuchList"}, timeout=None)
    assert not unknown.ok and "noSuchList" in unknown.message and "dailyTotals" in unknown.message
