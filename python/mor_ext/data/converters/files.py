"""Converting whole files: :data:`CONVERTERS` by format name, :func:`convert_file`."""

from __future__ import annotations

import json
import os
from collections import Counter
from typing import Any, Callable, Iterator

from ..jsonl import OnError, PathLike, check_on_error, error_counts, error_dicts, iter_json_lines, parse_records, write_trajectories
from ..trajectory import Trajectory, TrajectoryError
from .glaive import from_glaive
from .xlam import from_xlam
from .toolace import from_toolace
from .toolbench import from_toolbench


CONVERTERS: dict[str, Callable[..., Trajectory]] = {
    "glaive": from_glaive,
    "xlam": from_xlam,
    "toolace": from_toolace,
    "toolbench": from_toolbench,
}


def iter_source_records(path: PathLike) -> Iterator[tuple[int, Any]]:
    """``(record_number, value)`` for each record of a JSON Lines file (1-based line numbers) or of a
    file holding one JSON array (0-based indices, as ``data[i]`` finds them). For JSON Lines, a line
    that is not JSON gives a :class:`TrajectoryError` value; an array file that is not JSON raises
    ValueError, since no record of it can be read."""
    with open(path, "rb") as f:
        head = f.read(4096).lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"["):
        yield from iter_json_lines(path)
        return
    # The whole array is loaded: these datasets ship as arrays of a few hundred MB at most.
    try:
        with open(path, encoding="utf-8-sig") as f:
            data = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{os.fspath(path)}: starts with '[' but is not a JSON array: {e}") from None
    if not isinstance(data, list):
        raise ValueError(f"{os.fspath(path)}: expected a JSON array, got {type(data).__name__}")
    yield from enumerate(data)


def convert_file(in_path: PathLike, fmt: str, out_path: PathLike, *, on_error: OnError = "skip") -> dict[str, Any]:
    """Convert every record of ``in_path`` (JSON Lines or a JSON array) from format ``fmt`` (a key of
    :data:`CONVERTERS`) and write the trajectories to ``out_path`` atomically, as JSON Lines.

    ``on_error="skip"``: bad records are logged (a warning each) and reported; ``"raise"``: the first
    :class:`TrajectoryError` is raised and ``out_path`` is not touched. Returns ``{"format", "input",
    "output", "records", "converted", "bad", "needs_completion", "needs_observation", "added_tools",
    "errors_by_field", "errors"}``, the middle three counting trajectories so marked.
    """
    check_on_error(on_error)
    if fmt not in CONVERTERS:
        raise ValueError(f"unknown format {fmt!r}; expected one of {sorted(CONVERTERS)}")
    convert = CONVERTERS[fmt]
    errors: list[TrajectoryError] = []
    counts: Counter[str] = Counter()

    def counted(records: Iterator[tuple[int, Any]]) -> Iterator[tuple[int, Any]]:
        for number_and_value in records:
            counts["records"] += 1
            yield number_and_value

    def converted() -> Iterator[Trajectory]:
        for traj in parse_records(counted(iter_source_records(in_path)),
                                  lambda record, number: convert(record, record_id=number),
                                  on_error=on_error, errors=errors, source=in_path):
            for key in ("needs_completion", "needs_observation", "added_tools"):
                counts[key] += key in traj.meta
            yield traj

    written = write_trajectories(out_path, converted())
    return {
        "format": fmt,
        "input": os.fspath(in_path),
        "output": os.fspath(out_path),
        "records": counts["records"],
        "converted": written,
        "bad": len(errors),
        "needs_completion": counts["needs_completion"],
        "needs_observation": counts["needs_observation"],
        "added_tools": counts["added_tools"],
        "errors_by_field": error_counts(errors),
        "errors": error_dicts(errors),
    }
