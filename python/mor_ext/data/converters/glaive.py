"""glaive-function-calling-v2: a system prompt listing the tools, and a ``USER:``/``ASSISTANT:`` chat
with ``<functioncall>`` blobs."""

from __future__ import annotations

import json
import re
from typing import Any

from ..trajectory import ToolCall, Trajectory, TrajectoryError
from .schemas import RecordId, tool_specs_in_text, tool_dicts
from .episode import Episode, call_from, check_record, resolve_record_id, text_field, build_trajectory


_GLAIVE_SPEAKER = re.compile(r"(?:^|(?<=\s))(USER|ASSISTANT|FUNCTION RESPONSE):")
_GLAIVE_CALL = re.compile(r'\{\s*"name"\s*:\s*"((?:[^"\\]|\\.)*)"\s*,\s*"arguments"\s*:\s*\'(.*)\'\s*\}', re.S)


def _glaive_call(blob: str, rid: RecordId) -> ToolCall:
    blob = blob.strip()
    try:
        obj, _ = json.JSONDecoder().raw_decode(blob)
    except json.JSONDecodeError:
        # Glaive writes the arguments as a single-quoted JSON string: {"name": "f", "arguments": '{"a": 1}'}.
        # Greedy up to the last quote, because the JSON inside may hold apostrophes.
        m = _GLAIVE_CALL.fullmatch(blob)
        if m is None:
            raise TrajectoryError(rid, "chat", f"cannot read the function call {blob[:80]!r}") from None
        obj = {"name": json.loads(f'"{m.group(1)}"'), "arguments": m.group(2)}
    return call_from(obj, rid, "chat")


def from_glaive(record: dict[str, Any], *, record_id: RecordId = None) -> Trajectory:
    """A glaive-function-calling-v2 record ``{"system": "SYSTEM: ... {spec} {spec}", "chat": "USER: ...
    ASSISTANT: <functioncall> {...} <|endoftext|> FUNCTION RESPONSE: ... ASSISTANT: ..."}``.

    The tools are the JSON specs in the system prompt. Text before ``<functioncall>`` becomes the
    reasoner's thought (glaive rarely has any, so the reasoner turns are mostly placeholders); the
    assistant's last message of the episode is the summary.
    """
    rid = resolve_record_id(record, record_id)
    check_record(record, rid)
    system = text_field(record, "system", rid, required=False)
    chat = text_field(record, "chat", rid)
    tools = tool_dicts(tool_specs_in_text(system), rid, "system")
    parts = _GLAIVE_SPEAKER.split(chat)
    if parts[0].strip() or len(parts) < 3 or parts[1] != "USER":
        raise TrajectoryError(rid, "chat", "must start with 'USER:'")
    messages = [(parts[i], parts[i + 1].replace("<|endoftext|>", "").strip()) for i in range(1, len(parts), 2)]
    query = messages[0][1]
    if not query:
        raise TrajectoryError(rid, "chat", "the first USER message is empty")
    episode = messages[1:]
    following_user = next((k for k, (speaker, _) in enumerate(episode) if speaker == "USER"), len(episode))
    episode, dropped = episode[:following_user], len(episode) - following_user
    if not episode:
        raise TrajectoryError(rid, "chat", "no ASSISTANT message answers the first USER message")
    events: list[tuple] = []
    for speaker, text in episode:
        if speaker == "FUNCTION RESPONSE":
            events.append(("observation", text, None, "chat"))
        elif "<functioncall>" in text:
            thought, *blobs = text.split("<functioncall>")
            events.append(("calls", [_glaive_call(b, rid) for b in blobs], thought, "chat"))
        else:
            events.append(("text", text, None, "chat"))
    ep = Episode(query)
    ep.run(events, rid)
    ep.dropped += dropped
    return build_trajectory("glaive", record, record_id, tools, ep)
