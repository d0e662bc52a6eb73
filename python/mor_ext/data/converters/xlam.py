"""xLAM / APIGen: a query, its tools and the answer's calls (no observations, no final answer)."""

from __future__ import annotations

from typing import Any

from ..trajectory import Trajectory
from .schemas import RecordId, tool_dicts
from .episode import Episode, call_from, check_record, json_list_field, resolve_record_id, text_field, build_trajectory


def from_xlam(record: dict[str, Any], *, record_id: RecordId = None) -> Trajectory:
    """An xLAM / APIGen record ``{"query", "tools", "answers"}`` (tools and answers as lists or JSON
    strings; tool parameters as a flat ``{param: {"type", "description", "default"?}}``).

    xLAM has calls but no thoughts, tool outputs or answers: the result is reasoner → executor (all
    answers as parallel calls) → observation → reasoner → summarizer with every turn but the user's
    and the executor's a placeholder (``needs_completion = ["reasoner", "summarizer"]``,
    ``needs_observation``). A record with no answers becomes reasoner → summarizer, both placeholders.
    """
    rid = resolve_record_id(record, record_id)
    check_record(record, rid)
    query = text_field(record, "query", rid)
    tools = tool_dicts(json_list_field(record, "tools", rid), rid, "tools", flat=True)
    calls = [call_from(a, rid, f"answers[{i}]") for i, a in enumerate(json_list_field(record, "answers", rid))]
    ep = Episode(query)
    if calls:
        ep.calls(calls)
    return build_trajectory("xlam", record, record_id, tools, ep)
