"""Trajectories in JSON Lines files: reading that reports every bad record, writing that is atomic.

A record is named by its line number (1-based, as an editor shows it): every line has one, while ids
are optional and may repeat, so the line number is what finds the record in the file. Blank lines are
not records and are skipped.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Literal

from ..files import atomic_write, fsync_dir
from .trajectory import Trajectory, TrajectoryError, parse_trajectory

__all__ = [
    "iter_json_lines", "read_trajectories", "write_trajectories", "validate_file", "error_counts", "error_dicts",
    "check_on_error", "parse_records",
]

logger = logging.getLogger(__name__)

OnError = Literal["skip", "raise"]
PathLike = str | os.PathLike


def check_on_error(on_error: str) -> None:
    """Raise ValueError unless ``on_error`` is "skip" or "raise"."""
    if on_error not in ("skip", "raise"):
        raise ValueError(f"on_error must be 'skip' or 'raise', got {on_error!r}")


def iter_json_lines(path: PathLike) -> Iterator[tuple[int, Any]]:
    """``(line_number, value)`` for each non-blank line; ``value`` is the decoded JSON or, for a line
    that is not valid UTF-8 JSON, a :class:`TrajectoryError` with field ``"<json>"``."""
    # Bytes, decoded line by line: one bad byte then spoils its own record, not the whole file.
    with open(path, "rb") as f:
        for line_no, raw in enumerate(f, start=1):
            if line_no == 1 and raw.startswith(b"\xef\xbb\xbf"):  # a BOM some editors write
                raw = raw[3:]
            if not raw.strip():
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                yield line_no, TrajectoryError(line_no, "<json>", f"not valid UTF-8 (byte {e.start})")
                continue
            try:
                yield line_no, json.loads(text)
            except json.JSONDecodeError as e:
                yield line_no, TrajectoryError(line_no, "<json>", f"invalid JSON: {e.msg} at column {e.colno}")


def parse_records(
    records: Iterable[tuple[int, Any]],
    parse: Callable[[Any, int], Trajectory],
    *,
    on_error: OnError,
    errors: list[TrajectoryError],
    source: PathLike,
) -> Iterator[Trajectory]:
    """``parse(value, number)`` for each ``(number, value)`` record, yielding the trajectories.

    A :class:`TrajectoryError` (raised by ``parse``, or given as the value by a reader) is raised with
    ``on_error="raise"``; with ``"skip"`` it is appended to ``errors`` and logged as a warning naming
    ``source`` and the record number, so that no record is dropped silently.
    """
    check_on_error(on_error)
    for number, value in records:
        if not isinstance(value, TrajectoryError):
            try:
                value = parse(value, number)
            except TrajectoryError as e:
                value = e
        if isinstance(value, TrajectoryError):
            if on_error == "raise":
                raise value
            logger.warning("%s:%d: skipped: %s", os.fspath(source), number, value)
            errors.append(value)
        else:
            yield value


def read_trajectories(
    path: PathLike, *, on_error: OnError = "skip"
) -> tuple[list[Trajectory], list[TrajectoryError]]:
    """The valid trajectories of a JSON Lines file and the errors of the invalid ones.

    ``on_error="skip"``: every bad record is returned as an error (its ``record`` is the line number)
    and logged as a warning; nothing is dropped silently. ``on_error="raise"``: the first bad record's
    :class:`TrajectoryError` is raised and nothing is returned.
    """
    errors: list[TrajectoryError] = []
    trajectories = list(parse_records(
        iter_json_lines(path), lambda value, line_no: parse_trajectory(value, record=line_no),
        on_error=on_error, errors=errors, source=path))
    return trajectories, errors


def _json_line(record: dict[str, Any], name: str | int) -> str:
    try:
        # allow_nan=False: NaN/Infinity are not JSON, and strict readers reject the whole file.
        line = json.dumps(record, ensure_ascii=False, allow_nan=False)
    except ValueError as e:
        raise TrajectoryError(name, "<json>", f"cannot be written as JSON: {e}") from None
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        # A lone surrogate (legal in a JSON "\ud800" escape) has no UTF-8 form; escaped it round-trips.
        line = json.dumps(record, ensure_ascii=True, allow_nan=False)
    return line


def write_trajectories(path: PathLike, trajectories: Iterable[Trajectory]) -> int:
    """Write one trajectory per line, atomically; return how many were written.

    The lines go to a temporary file in the same directory, which is fsynced and then moved over
    ``path`` with ``os.replace``: a reader sees the old file or the new one, never a half-written one.
    Each trajectory is checked with :func:`parse_trajectory` first, so the file always reads back; on
    any error (including one raised by the ``trajectories`` iterable) ``path`` is left untouched.
    """
    count = 0

    def write(tmp: Path) -> None:
        nonlocal count
        with open(tmp, "wb") as f:
            for i, traj in enumerate(trajectories):
                name = traj.id if traj.id is not None else i
                record = traj.to_dict()
                parse_trajectory(record, record=name)
                f.write(_json_line(record, name).encode("utf-8") + b"\n")
                count += 1

    path = Path(os.path.abspath(os.fspath(path)))
    atomic_write(path, write)
    fsync_dir(path.parent)
    return count


def error_counts(errors: Iterable[TrajectoryError]) -> dict[str, int]:
    """Errors per field, most frequent first; list indices are dropped (``turns[3].role`` counts as
    ``turns[].role``) so that one kind of problem is one entry however many records have it."""
    counts = Counter(re.sub(r"\[\d+\]", "[]", e.field) for e in errors)
    return dict(counts.most_common())


def error_dicts(errors: Iterable[TrajectoryError]) -> list[dict[str, Any]]:
    """Errors as JSON-ready ``{"record", "field", "message"}`` dicts."""
    return [{"record": e.record, "field": e.field, "message": str(e)} for e in errors]


def bfcl_report(trajectories: list[Trajectory]) -> dict[str, Any]:
    """The BFCL decontamination check of ``trajectories`` as a JSON-ready dict: ``{"checked",
    "clean", "name_overlaps", "query_overlaps", "summary"}``, or ``{"checked": False, "why"}`` where
    bfcl-eval is not installed."""
    from .decontamination import BfclNotInstalledError, check

    try:
        report = check(trajectories)
    except BfclNotInstalledError as exc:
        return {"checked": False, "why": str(exc)}
    return {"checked": True, "clean": report.clean, "name_overlaps": len(report.name_hits),
            "query_overlaps": len(report.query_hits), "summary": report.summary()}


def validate_file(path: PathLike, check_bfcl: bool = True) -> dict[str, Any]:
    """A report on a trajectory file: ``{"path", "records", "ok", "bad", "errors_by_field",
    "errors", "duplicate_ids", "placeholder_trajectories", "bfcl"}``; ``errors`` is one
    ``{"record", "field", "message"}`` per bad record, ``placeholder_trajectories`` counts converted
    trajectories whose placeholder turns still need a completer (training skips them), ``bfcl`` is
    :func:`bfcl_report` of the valid records (training refuses data that overlaps BFCL)."""
    trajectories, errors = read_trajectories(path, on_error="skip")
    ids = Counter(t.id for t in trajectories if t.id is not None)
    report = {
        "path": os.fspath(path),
        "records": len(trajectories) + len(errors),
        "ok": len(trajectories),
        "bad": len(errors),
        "errors_by_field": error_counts(errors),
        "errors": error_dicts(errors),
        "duplicate_ids": sorted(i for i, n in ids.items() if n > 1),
        "placeholder_trajectories": sum(t.has_placeholders for t in trajectories),
    }
    if check_bfcl:
        report["bfcl"] = bfcl_report(trajectories)
    return report
