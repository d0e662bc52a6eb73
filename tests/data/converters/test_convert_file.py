"""Converting whole files: skip and report, raise without touching the output, JSON arrays.

Every sample is hand-written (invented tools and queries) in the shape of its source format.
"""

from __future__ import annotations

import json
import os

import pytest

from mor_ext.data import TrajectoryError
from mor_ext.data.converters import convert_file
from mor_ext.data.jsonl import read_trajectories

from converter_samples import GLAIVE, XLAM, TOOLACE


def test_convert_file_skips_and_reports(tmp_path, caplog):
    src = tmp_path / "xlam.jsonl"
    bad = {**XLAM, "answers": "[{"}
    src.write_text("\n".join([json.dumps(XLAM), json.dumps(bad), "not json", "",
                              json.dumps({**XLAM, "id": 43})]) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    report = convert_file(src, "xlam", out)
    assert report["records"] == 4 and report["converted"] == 2 and report["bad"] == 2
    assert report["needs_completion"] == 2 and report["needs_observation"] == 2 and report["added_tools"] == 0
    assert report["errors_by_field"] == {"answers": 1, "<json>": 1}
    assert [e["record"] for e in report["errors"]] == [2, 3]  # line numbers
    assert sum("skipped" in r.getMessage() for r in caplog.records) == 2
    trajectories, errors = read_trajectories(out)
    assert errors == [] and [t.id for t in trajectories] == ["xlam-42", "xlam-43"]


def test_convert_file_raise_leaves_output_untouched(tmp_path):
    src = tmp_path / "glaive.jsonl"
    src.write_text(json.dumps(GLAIVE) + "\n" + json.dumps({"system": "", "chat": "nope"}) + "\n", encoding="utf-8")
    out = tmp_path / "out.jsonl"
    with pytest.raises(TrajectoryError) as info:
        convert_file(src, "glaive", out, on_error="raise")
    assert (info.value.record, info.value.field) == (2, "chat")
    assert not out.exists()
    out.write_text("old\n")
    with pytest.raises(TrajectoryError):
        convert_file(src, "glaive", out, on_error="raise")
    assert out.read_text() == "old\n"
    assert sorted(os.listdir(tmp_path)) == ["glaive.jsonl", "out.jsonl"]


def test_convert_file_reads_json_arrays_and_refuses_unknown_formats(tmp_path):
    src = tmp_path / "toolace.json"
    src.write_text(json.dumps([TOOLACE, {"conversations": []}], indent=2), encoding="utf-8")
    report = convert_file(src, "toolace", tmp_path / "out.jsonl")
    assert (report["converted"], report["bad"]) == (1, 1)
    assert report["errors"][0]["record"] == 1  # array index
    assert read_trajectories(tmp_path / "out.jsonl")[0][0].id == "toolace-0"
    with pytest.raises(ValueError, match="unknown format"):
        convert_file(src, "sharegpt", tmp_path / "x.jsonl")
    with pytest.raises(ValueError, match="on_error"):
        convert_file(src, "toolace", tmp_path / "x.jsonl", on_error="warn")
