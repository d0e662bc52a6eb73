"""ToolACE: chat messages whose assistant turns write Python-like call lists."""

from __future__ import annotations

import re
from typing import Any

from ..trajectory import ToolCall, Trajectory, TrajectoryError
from .calls import parse_pythonic_calls
from .schemas import RecordId, tool_specs_in_text, tool_dicts
from .episode import Episode, check_record, json_list_field, chat_messages, resolve_record_id, split_episode, text_field, build_trajectory


_CALL_HEAD = re.compile(r"\[\s*([^\[\](){}\"'=,]+?)\s*\(")
_IDENTIFIER = re.compile(r"[A-Za-z_][\w.\-]*")


def _toolace_calls(text: str, tool_names: set[str], rid: RecordId, field: str) -> list[ToolCall] | None:
    """The calls of an assistant message in ToolACE's ``[f(a=1)]`` syntax, or None for plain text."""
    s = text.strip()
    head = _CALL_HEAD.match(s)
    if not (head and s.endswith("]")):
        return None
    name = head.group(1).strip()
    # "[Note (see below)]" is prose; a known tool or an identifier before "(" is a call list, and
    # one that cannot be read is an error rather than a final answer.
    if name not in tool_names and not _IDENTIFIER.fullmatch(name):
        return None
    try:
        return parse_pythonic_calls(s)
    except ValueError as e:
        raise TrajectoryError(rid, field, f"cannot read the call list: {e}") from None


def from_toolace(record: dict[str, Any], *, record_id: RecordId = None) -> Trajectory:
    """A ToolACE record ``{"system": "... [tool specs as JSON] ...", "conversations": [{"from":
    "user"|"assistant"|"tool", "value"}, ...]}``; a ``"tools"`` field, if present, is used instead
    of the specs in the system prompt.

    An assistant message ``[f(a=1), g(b="x")]`` is one executor turn of parallel calls (read with
    :func:`parse_pythonic_calls`, never evaluated), a tool message its observation, and the last
    assistant text the summary. ToolACE has no thoughts, so reasoner turns are placeholders.
    """
    rid = resolve_record_id(record, record_id)
    check_record(record, rid)
    system = text_field(record, "system", rid, required=False)
    specs = json_list_field(record, "tools", rid) if "tools" in record else tool_specs_in_text(system)
    tools = tool_dicts(specs, rid, "tools" if "tools" in record else "system")
    query, episode, dropped = split_episode(chat_messages(record, rid), rid)
    names = {t["name"] for t in tools}
    events: list[tuple] = []
    for speaker, text, field in episode:
        if speaker == "tool":
            events.append(("observation", text.strip(), None, field))
            continue
        calls = _toolace_calls(text, names, rid, field)
        events.append(("calls", calls, None, field) if calls else ("text", text.strip(), None, field))
    ep = Episode(query)
    ep.run(events, rid)
    ep.dropped += dropped
    return build_trajectory("toolace", record, record_id, tools, ep)
