"""ToolBench: ``Thought:`` / ``Action:`` / ``Action Input:`` steps; ``Finish`` carries the answer."""

from __future__ import annotations

import re
from typing import Any

from ..trajectory import ToolCall, Trajectory, TrajectoryError
from .schemas import RecordId, decode_json_text, tool_specs_in_text, tool_dicts
from .episode import Episode, check_record, chat_messages, resolve_record_id, split_episode, build_trajectory


_ACTION_LINE = re.compile(r"^[ \t]*Action:[ \t]*(.*?)[ \t]*$", re.M)
_ACTION_INPUT = re.compile(r"\s*Action Input:(.*)\Z", re.S)
_FINISH = "Finish"  # ToolBench's control action: its input carries the final answer


def _toolbench_step(text: str, rid: RecordId, field: str) -> tuple[tuple, str | None]:
    """The event of ``"Thought: ...\\nAction: name\\nAction Input: {json}"``, and Finish's
    ``return_type`` if it is not give_answer."""
    action = _ACTION_LINE.search(text)
    if action is None or not action.group(1):
        raise TrajectoryError(rid, field, "has no 'Action: <tool name>' line")
    thought = re.sub(r"^\s*Thought:", "", text[:action.start()]).strip()
    given = _ACTION_INPUT.match(text, action.end())
    if given is None:
        raise TrajectoryError(rid, field, f"has no 'Action Input:' after 'Action: {action.group(1)}'")
    raw_input = given.group(1).strip()
    try:
        arguments = decode_json_text(raw_input) if raw_input else {}
    except ValueError:
        raise TrajectoryError(rid, field, f"Action Input is not JSON: {raw_input[:80]!r}") from None
    if not isinstance(arguments, dict):
        raise TrajectoryError(rid, field, f"Action Input must be an object, got {type(arguments).__name__}")
    name = action.group(1)
    if name != _FINISH:
        return ("calls", [ToolCall(name, arguments)], thought, field), None
    return_type = arguments.get("return_type", "give_answer")
    if return_type != "give_answer":
        return ("answer", None, thought, field), str(return_type)
    final = arguments.get("final_answer")
    if not isinstance(final, str):
        raise TrajectoryError(rid, field, f"Finish with give_answer needs a string final_answer, got {final!r:.60}")
    return ("answer", final.strip(), thought, field), None


def from_toolbench(record: dict[str, Any], *, record_id: RecordId = None) -> Trajectory:
    """A ToolBench / ToolLLaMA conversation ``{"query", "conversations": [system, user, assistant
    "Thought/Action/Action Input", function, ..., assistant "Action: Finish"]}``.

    The tools are the specs listed in the system message (JSON or Python repr; ``Finish`` is a control
    action, not a tool). Thought → reasoner, Action → executor, function output → observation,
    Finish's final_answer → summarizer. The query is ``record["query"]``, else the user message without
    ToolLLaMA's trailing "Begin!". A Finish that gives up (``return_type`` other than give_answer)
    keeps its path with a placeholder summary and ``meta["finish"]`` set to the return type.
    """
    rid = resolve_record_id(record, record_id)
    check_record(record, rid)
    messages = chat_messages(record, rid)
    tools: list[dict[str, Any]] = []
    for speaker, text, field in messages:
        if speaker == "system":
            found = tool_dicts(tool_specs_in_text(text), rid, field)
            tools += [t for t in found if t["name"] != _FINISH and t not in tools]
    query, episode, dropped = split_episode(messages, rid)
    if isinstance(record.get("query"), str) and record["query"].strip():
        query = record["query"].strip()
    else:
        query = re.sub(r"\s*Begin!\s*$", "", query).strip()
    events: list[tuple] = []
    meta: dict[str, Any] = {}
    for k, (speaker, text, field) in enumerate(episode):
        if events and events[-1][0] == "answer":  # Finish ends the episode; what follows is not read
            dropped += len(episode) - k
            break
        if speaker == "tool":
            events.append(("observation", text.strip(), None, field))
        elif speaker == "assistant":
            event, gave_up = _toolbench_step(text, rid, field)
            if gave_up is not None:
                meta["finish"] = gave_up
            events.append(event)
    ep = Episode(query)
    ep.run(events, rid)
    ep.dropped += dropped
    return build_trajectory("toolbench", record, record_id, tools, ep, **meta)
