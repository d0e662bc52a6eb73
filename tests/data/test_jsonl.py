"""JSON Lines trajectory files: every bad record reported (skip) or the first raised (raise), atomic writes."""

from __future__ import annotations

import json
import logging
import os

import pytest

from mor_ext.data import Trajectory, TrajectoryError, Turn, parse_trajectory
from mor_ext.data import jsonl
from mor_ext.data.jsonl import read_trajectories, validate_file, write_trajectories


def make_record(i: int, **overrides) -> dict:
    """A valid trajectory record: one call of a small unit-conversion tool."""
    record = {
        "id": f"conv-{i}",
        "tools": [{"name": "to_celsius", "description": "Fahrenheit to Celsius.",
                   "parameters": {"type": "object", "properties": {"f": {"type": "number"}}, "required": ["f"]}}],
        "turns": [
            {"role": "user", "content": f"What is {50 + i} °F in Celsius?"},
            {"role": "reasoner", "content": "Convert with the tool.", "next": "executor"},
            {"role": "executor", "calls": [{"name": "to_celsius", "arguments": {"f": 50 + i}}]},
            {"role": "observation", "content": json.dumps({"c": round((50 + i - 32) / 1.8, 2)})},
            {"role": "reasoner", "content": "Done.", "next": "summarizer"},
            {"role": "summarizer", "content": "That is about 10 °C."},
        ],
    }
    record.update(overrides)
    return record


def make_trajectory(i: int, **overrides) -> Trajectory:
    return parse_trajectory(make_record(i, **overrides))


def write_lines(path, lines: list[str | bytes]) -> None:
    with open(path, "wb") as f:
        for line in lines:
            f.write((line if isinstance(line, bytes) else line.encode("utf-8")) + b"\n")


# ------------------------------------------------------------------------------------------ round trip
def test_write_then_read_round_trips(tmp_path):
    trajectories = [make_trajectory(i) for i in range(3)]
    trajectories.append(make_trajectory(3, meta={"source": "hand", "note": "ünïcode ✓"}))
    path = tmp_path / "out.jsonl"
    assert write_trajectories(path, trajectories) == 4
    read, errors = read_trajectories(path)
    assert errors == []
    assert read == trajectories
    assert "ünïcode ✓" in path.read_text(encoding="utf-8")  # written as UTF-8, not \u escapes


def test_lone_surrogate_is_escaped_and_round_trips(tmp_path):
    traj = make_trajectory(0, meta={"odd": "\ud800"})
    path = tmp_path / "out.jsonl"
    write_trajectories(path, [traj])
    assert read_trajectories(path) == ([traj], [])


def test_blank_lines_and_bom_are_not_records(tmp_path):
    path = tmp_path / "in.jsonl"
    write_lines(path, [b"\xef\xbb\xbf" + json.dumps(make_record(0)).encode(), "", "   ", json.dumps(make_record(1))])
    read, errors = read_trajectories(path)
    assert [t.id for t in read] == ["conv-0", "conv-1"] and errors == []


# ------------------------------------------------------------------------------------ skip and raise
def bad_file(tmp_path):
    path = tmp_path / "mixed.jsonl"
    bad_role = make_record(3)
    bad_role["turns"][0]["role"] = "assistant"
    write_lines(path, [
        json.dumps(make_record(1)),            # line 1: ok
        '{"tools": [], "turns": [',             # line 2: not JSON
        json.dumps(bad_role),                  # line 3: not a trajectory
        "",                                    # line 4: blank, not a record
        b'{"id": "x\xff"}',                    # line 5: not UTF-8
        json.dumps(make_record(6)),            # line 6: ok
        json.dumps([1, 2]),                    # line 7: not an object
    ])
    return path


def test_skip_reports_every_bad_record_with_its_line(tmp_path, caplog):
    path = bad_file(tmp_path)
    with caplog.at_level(logging.WARNING, logger="mor_ext.data.jsonl"):
        read, errors = read_trajectories(path, on_error="skip")
    assert [t.id for t in read] == ["conv-1", "conv-6"]
    assert [(e.record, e.field) for e in errors] == [
        (2, "<json>"), (3, "turns[0].role"), (5, "<json>"), (7, "<record>")]
    assert "UTF-8" in str(errors[2])
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 4
    for line_no, message in zip((2, 3, 5, 7), warnings):
        assert f"mixed.jsonl:{line_no}:" in message


def test_raise_raises_the_first_error(tmp_path):
    with pytest.raises(TrajectoryError) as info:
        read_trajectories(bad_file(tmp_path), on_error="raise")
    assert (info.value.record, info.value.field) == (2, "<json>")


def test_unknown_on_error_is_refused(tmp_path):
    path = tmp_path / "a.jsonl"
    write_lines(path, [json.dumps(make_record(0))])
    with pytest.raises(ValueError, match="on_error"):
        read_trajectories(path, on_error="ignore")


def test_validate_file_counts_errors_by_field(tmp_path):
    path = tmp_path / "v.jsonl"
    r2 = make_record(2)
    r2["turns"][2]["calls"][0]["arguments"] = [1]
    r3 = make_record(3)
    r3["turns"][2]["calls"][0]["arguments"] = "f=1"
    write_lines(path, [json.dumps(make_record(1)), json.dumps(r2), json.dumps(r3), "nope",
                       json.dumps(make_record(1))])
    report = validate_file(path)
    assert report["records"] == 5 and report["ok"] == 2 and report["bad"] == 3
    assert report["errors_by_field"] == {"turns[].calls[].arguments": 2, "<json>": 1}
    assert [e["record"] for e in report["errors"]] == [2, 3, 4]
    assert report["duplicate_ids"] == ["conv-1"]
    json.dumps(report)  # the report is JSON-ready


# ------------------------------------------------------------------------------------- atomic write
def test_crash_in_replace_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "data.jsonl"
    write_trajectories(path, [make_trajectory(0)])
    before = path.read_bytes()

    def crash(src, dst):
        raise OSError("simulated crash during rename")

    monkeypatch.setattr(jsonl.os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        write_trajectories(path, [make_trajectory(i) for i in range(5)])
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["data.jsonl"]  # the temporary file was removed


def test_error_while_writing_leaves_the_old_file(tmp_path):
    path = tmp_path / "data.jsonl"
    write_trajectories(path, [make_trajectory(0)])
    before = path.read_bytes()

    def trajectories():
        yield make_trajectory(1)
        raise RuntimeError("producer failed")

    with pytest.raises(RuntimeError):
        write_trajectories(path, trajectories())
    # An invalid trajectory is caught before anything reaches the file.
    invalid = Trajectory(tools=(), turns=(Turn("user", "hi"),), id="no-summary")
    with pytest.raises(TrajectoryError) as info:
        write_trajectories(path, [make_trajectory(1), invalid])
    assert info.value.record == "no-summary"
    with pytest.raises(TrajectoryError, match="JSON"):
        write_trajectories(path, [make_trajectory(1, meta={"x": float("nan")})])
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["data.jsonl"]


def test_write_keeps_the_mode_of_the_file_it_replaces(tmp_path):
    path = tmp_path / "data.jsonl"
    write_trajectories(path, [make_trajectory(0)])
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask  # like open(), not mkstemp's 0600
    os.chmod(path, 0o640)
    write_trajectories(path, [make_trajectory(1)])
    assert os.stat(path).st_mode & 0o777 == 0o640


def test_writing_into_a_missing_directory_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match=f"the directory {tmp_path / 'missing'} does not exist"):
        write_trajectories(tmp_path / "missing" / "data.jsonl", [make_trajectory(0)])


def test_written_files_get_the_usual_mode_not_mkstemps(tmp_path):
    import os
    import stat

    path = tmp_path / "data.jsonl"
    write_trajectories(path, [make_trajectory(0)])
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
