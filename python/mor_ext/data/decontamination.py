"""Keep BFCL out of training data: name and n-gram overlap checks against the BFCL files.

BFCL (the Berkeley Function Calling Leaderboard) is EVALUATION data. This module is the only place
in ``mor_ext`` that reads it, and it reads it only to make sure that training data does not overlap
it. It reads the JSON files that the ``bfcl-eval`` package ships, without importing the package (its
dependencies are large and pin numpy), so install it without them::

    pip install --no-deps bfcl-eval

What is indexed: every ``*.json`` under ``bfcl_eval/data`` except the ground-truth answers
(``possible_answer/``) and the API sanity checks; that is the ``BFCL_v4_*`` categories, the
multi-turn function docs (``multi_turn_func_doc/``), the memory pre-conversations and the older
categories in ``unused_datasets/question/``. From them it collects

* every function name (any object with a string ``name`` and a ``parameters`` object), and
* every message text (any object with ``role`` and a string ``content``: the questions).

What counts as contamination (:func:`check`):

* a training tool or called-function name that equals a BFCL function name after
  :func:`normalize_function_name`; each name is compared both whole and without its module prefix
  (``math.factorial`` matches ``factorial`` and ``math_factorial``);
* a training query (every user turn) that shares a word n-gram with a BFCL question, after
  :func:`normalize_words` (lower case, punctuation to spaces). The default n is 8 (:data:`NGRAM_N`):
  long enough that common phrases ("what is the area of a circle") do not count, short enough that a
  copied or lightly edited question does. A query with fewer than n words counts when it equals a
  whole BFCL question.

:func:`assert_clean` raises :class:`ContaminationError` listing the offenders.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from .trajectory import Tool, Trajectory

__all__ = [
    "NGRAM_N", "BFCL_INSTALL", "BfclNotInstalledError", "ContaminationError", "BfclIndex",
    "NameHit", "QueryHit", "DecontaminationReport", "bfcl_data_dir", "load_bfcl_index", "check",
    "assert_clean", "normalize_function_name", "normalize_words",
]

NGRAM_N = 8
BFCL_INSTALL = "pip install --no-deps bfcl-eval"
_SKIPPED_DIRS = ("possible_answer", "executable_eval_sanity_check")


class BfclNotInstalledError(ImportError):
    """The ``bfcl-eval`` package (which holds the BFCL data files) is not installed."""


class ContaminationError(ValueError):
    """Training data overlaps BFCL; ``report`` lists every offender."""

    def __init__(self, report: "DecontaminationReport") -> None:
        self.report = report
        super().__init__(report.summary())


# ------------------------------------------------------------------------------------ normalisation
def _strip(name: str) -> str:
    return re.sub(r"[^0-9a-z]", "", unicodedata.normalize("NFKC", name).lower())


def normalize_function_name(name: str) -> str:
    """``name`` without its module prefix, lower case, without separators: ``Math.Circle_Area`` -> ``circlearea``."""
    return _strip(re.split(r"[./:]", name)[-1])


def _name_keys(name: str) -> set[str]:
    """The forms a name is compared in: whole and without its module prefix, both normalised."""
    return {k for k in (_strip(name), normalize_function_name(name)) if k}


def normalize_words(text: str) -> tuple[str, ...]:
    """The words of ``text`` in lower case, with punctuation (and underscores) treated as spaces."""
    return tuple(re.sub(r"[\W_]+", " ", unicodedata.normalize("NFKC", text).lower()).split())


def _ngrams(words: tuple[str, ...], n: int) -> Iterator[tuple[str, ...]]:
    return (words[i:i + n] for i in range(len(words) - n + 1))


# ------------------------------------------------------------------------------------------ the index
@dataclass(frozen=True)
class BfclIndex:
    """What BFCL holds, in the forms :func:`check` compares: function-name keys and question words."""

    names: dict[str, tuple[str, ...]]  # normalised key -> the BFCL names with that key
    questions: tuple[tuple[str, ...], ...]  # normalised words of every distinct BFCL message text
    data_dir: str
    files: int
    _ngram_cache: dict[int, frozenset[tuple[str, ...]]] = field(default_factory=dict, compare=False, repr=False)

    def ngrams(self, n: int = NGRAM_N) -> frozenset[tuple[str, ...]]:
        """Every word n-gram of every BFCL question (computed once per n)."""
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        if n not in self._ngram_cache:
            self._ngram_cache[n] = frozenset(g for q in self.questions for g in _ngrams(q, n))
        return self._ngram_cache[n]

    @functools.cached_property
    def whole_questions(self) -> frozenset[tuple[str, ...]]:
        return frozenset(self.questions)


def bfcl_data_dir() -> Path:
    """The ``data`` folder of the installed ``bfcl-eval`` package, found without importing it."""
    spec = importlib.util.find_spec("bfcl_eval")
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    for loc in locations:
        data = Path(loc) / "data"
        if data.is_dir():
            return data
    if spec is None:
        raise BfclNotInstalledError(
            "the BFCL data is needed to check training data for contamination, but the bfcl-eval package "
            f"is not installed; install it (without its large dependencies) with: {BFCL_INSTALL}")
    raise BfclNotInstalledError(f"bfcl-eval is installed at {locations} but has no data/ folder; "
                                f"reinstall it with: {BFCL_INSTALL} --force-reinstall")


def _records(path: Path) -> Iterator[Any]:
    """The JSON values of a BFCL file: JSON Lines, or (a few files) one JSON document."""
    text = path.read_text(encoding="utf-8")
    try:
        for line in text.splitlines():
            if line.strip():
                yield json.loads(line)
    except json.JSONDecodeError:
        yield json.loads(text)


def _walk(value: Any, names: set[str], texts: set[str]) -> None:
    stack = [value]
    while stack:
        v = stack.pop()
        if isinstance(v, dict):
            if isinstance(v.get("name"), str) and isinstance(v.get("parameters"), dict):
                names.add(v["name"])
            if isinstance(v.get("role"), str) and isinstance(v.get("content"), str):
                texts.add(v["content"])
            stack.extend(v.values())
        elif isinstance(v, list):
            stack.extend(v)


@functools.lru_cache(maxsize=4)
def _load(data_dir: str) -> BfclIndex:
    root = Path(data_dir)
    files = [p for p in sorted(root.rglob("*.json")) if not set(_SKIPPED_DIRS) & set(p.relative_to(root).parts)]
    if not files:
        raise BfclNotInstalledError(f"no BFCL JSON files under {root}; reinstall with: {BFCL_INSTALL}")
    names: set[str] = set()
    texts: set[str] = set()
    for path in files:
        try:
            for record in _records(path):
                _walk(record, names, texts)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise RuntimeError(f"cannot read BFCL file {path}: {exc}") from exc
    by_key: dict[str, list[str]] = {}
    for name in sorted(names):
        for key in _name_keys(name):
            by_key.setdefault(key, []).append(name)
    questions = tuple(sorted({w for w in map(normalize_words, texts) if w}))
    return BfclIndex({k: tuple(v) for k, v in by_key.items()}, questions, str(root), len(files))


def load_bfcl_index(data_dir: str | Path | None = None) -> BfclIndex:
    """The BFCL index (cached per folder), from the installed ``bfcl-eval`` unless ``data_dir`` is given.

    Raises :class:`BfclNotInstalledError` (saying how to install it) when the data cannot be found.
    """
    return _load(str(Path(data_dir) if data_dir is not None else bfcl_data_dir()))


# ------------------------------------------------------------------------------------------ checking
@dataclass(frozen=True)
class NameHit:
    """A training tool name that equals a BFCL function name (after normalisation)."""

    name: str
    bfcl_names: tuple[str, ...]
    where: str  # "tool library", or the trajectory id / index


@dataclass(frozen=True)
class QueryHit:
    """A training query that shares a word n-gram with a BFCL question (or, if short, equals one)."""

    query: str
    ngram: str  # the first shared n-gram (or the whole short query), as normalised words
    where: str


@dataclass(frozen=True)
class DecontaminationReport:
    """The result of :func:`check`; ``clean`` is true when nothing overlaps."""

    name_hits: tuple[NameHit, ...]
    query_hits: tuple[QueryHit, ...]
    trajectories: int
    tool_names: int
    n: int

    @property
    def clean(self) -> bool:
        return not self.name_hits and not self.query_hits

    def summary(self, limit: int = 20) -> str:
        head = (f"checked {self.trajectories} trajectories and {self.tool_names} tool names against BFCL "
                f"(word {self.n}-grams)")
        if self.clean:
            return head + ": clean"
        lines = [head + f": {len(self.name_hits)} tool-name and {len(self.query_hits)} query overlaps"]
        for h in self.name_hits[:limit]:
            lines.append(f"  name {h.name!r} ({h.where}) equals BFCL function(s) {list(h.bfcl_names)}")
        for h in self.query_hits[:limit]:
            lines.append(f"  query ({h.where}) {h.query!r} shares {h.ngram!r} with a BFCL question")
        hidden = max(0, len(self.name_hits) - limit) + max(0, len(self.query_hits) - limit)
        if hidden:
            lines.append(f"  ... and {hidden} more")
        return "\n".join(lines)


def _query_hit(words: tuple[str, ...], index: BfclIndex, n: int) -> str | None:
    if len(words) < n:
        return " ".join(words) if words and words in index.whole_questions else None
    grams = index.ngrams(n)
    for g in _ngrams(words, n):
        if g in grams:
            return " ".join(g)
    return None


def check(trajectories: Iterable[Trajectory], index: BfclIndex | None = None, *, n: int = NGRAM_N,
          tools: Iterable[Tool | str] = ()) -> DecontaminationReport:
    """Every overlap between training data and BFCL: tool/function names and query n-grams.

    Checks the candidate tools and the called functions of each trajectory, every user turn's text,
    and the extra ``tools`` (e.g. a whole tool library). ``index`` defaults to :func:`load_bfcl_index`.
    """
    index = index if index is not None else load_bfcl_index()
    name_hits: list[NameHit] = []
    query_hits: list[QueryHit] = []
    seen_names: set[str] = set()

    def check_name(name: str, where: str) -> None:
        if name in seen_names:
            return
        seen_names.add(name)
        bfcl = sorted({b for k in _name_keys(name) for b in index.names.get(k, ())})
        if bfcl:
            name_hits.append(NameHit(name, tuple(bfcl), where))

    for t in tools:
        check_name(t.name if isinstance(t, Tool) else t, "tool library")
    count = 0
    for i, traj in enumerate(trajectories):
        count += 1
        where = traj.id if traj.id is not None else f"trajectory {i}"
        for tool in traj.tools:
            check_name(tool.name, where)
        for turn in traj.turns:
            for call in turn.calls:
                check_name(call.name, where)
            if turn.role == "user":
                hit = _query_hit(normalize_words(turn.content), index, n)
                if hit is not None:
                    query_hits.append(QueryHit(turn.content, hit, where))
    return DecontaminationReport(tuple(name_hits), tuple(query_hits), count, len(seen_names), n)


def assert_clean(trajectories: Iterable[Trajectory], index: BfclIndex | None = None, *, n: int = NGRAM_N,
                 tools: Iterable[Tool | str] = ()) -> DecontaminationReport:
    """:func:`check`, raising :class:`ContaminationError` (which lists the offenders) unless clean."""
    report = check(trajectories, index, n=n, tools=tools)
    if not report.clean:
        raise ContaminationError(report)
    return report
