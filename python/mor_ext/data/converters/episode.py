"""What every converter shares: the episode being built (:class:`Episode`), reading record fields
with errors that name the record and field, chat messages, and the :data:`PLACEHOLDER` marking."""

from __future__ import annotations

import json
from typing import Any

from ..trajectory import ROLE_TURNS, ToolCall, Trajectory, TrajectoryError, parse_trajectory
from .schemas import RecordId, EMPTY_SCHEMA


PLACEHOLDER = "[needs completion]"  # content of a turn the source lacks; see meta["placeholder_turns"]



class Episode:
    """Builds the turns of one episode from a source's events, inserting marked placeholders where
    the source lacks a turn the format requires."""

    def __init__(self, query: str) -> None:
        self.turns: list[dict[str, Any]] = [{"role": "user", "content": query}]
        self.placeholders: list[int] = []
        self.thoughts: list[str] = []
        self.done = False
        self.dropped = 0

    def _add(self, turn: dict[str, Any], placeholder: bool = False) -> None:
        if placeholder:
            self.placeholders.append(len(self.turns))
        self.turns.append(turn)

    def thought(self, text: str | None) -> None:
        if text and text.strip():
            self.thoughts.append(text.strip())

    def _reasoner(self, next_role: str, thought: str | None) -> None:
        self.thought(thought)
        text = "\n\n".join(self.thoughts)
        self.thoughts = []
        self._add({"role": "reasoner", "content": text or PLACEHOLDER, "next": next_role}, placeholder=not text)

    def _close_executor(self) -> None:
        if self.turns[-1]["role"] == "executor":
            self._add({"role": "observation", "content": PLACEHOLDER}, placeholder=True)

    def calls(self, calls: list[ToolCall], thought: str | None = None) -> None:
        self._close_executor()
        self._reasoner("executor", thought)
        self._add({"role": "executor", "calls": [c.to_dict() for c in calls]})

    def observation(self, text: str) -> bool:
        """Add a tool's output; False if no call is waiting for one."""
        last = len(self.turns) - 1
        if self.turns[last]["role"] == "executor":
            self._add({"role": "observation", "content": text})
        elif self.turns[last]["role"] == "observation" and last not in self.placeholders:
            # Parallel calls answered in separate messages: one observation turn holds them all.
            self.turns[last]["content"] += "\n" + text
        else:
            return False
        return True

    def answer(self, text: str | None, thought: str | None = None) -> None:
        self._close_executor()
        self._reasoner("summarizer", thought)
        self._add({"role": "summarizer", "content": text or PLACEHOLDER}, placeholder=not text)
        self.done = True

    def run(self, events: list[tuple], rid: RecordId) -> None:
        """Apply ``(kind, payload, thought, field)`` events: kind "calls", "observation", "answer", or
        "text" (a final answer when it is the last event, else a thought for the next reasoner)."""
        for k, (kind, payload, thought, field) in enumerate(events):
            if self.done:
                self.dropped += len(events) - k
                return
            if kind == "calls":
                self.calls(payload, thought)
            elif kind == "observation":
                if not self.observation(payload):
                    raise TrajectoryError(rid, field, "a tool response with no tool call before it")
            elif kind == "answer" or k == len(events) - 1:
                self.answer(payload, thought)
            else:
                self.thought(payload)

    def finish(self) -> list[dict[str, Any]]:
        if not self.done:
            self.answer(None)
        return self.turns

    def meta(self) -> dict[str, Any]:
        roles = {self.turns[i]["role"] for i in self.placeholders}
        meta: dict[str, Any] = {}
        if roles & set(ROLE_TURNS):
            meta["needs_completion"] = [r for r in ROLE_TURNS if r in roles]
        if "observation" in roles:
            meta["needs_observation"] = True
        if self.placeholders:
            meta["placeholder_turns"] = list(self.placeholders)
        if self.dropped:
            meta["dropped_messages"] = self.dropped
        return meta


def resolve_record_id(record: Any, record_id: RecordId) -> RecordId:
    """The name errors use: ``record_id`` if given, else the record's own id."""
    if record_id is not None:
        return record_id
    if isinstance(record, dict) and isinstance(record.get("id"), (str, int)):
        return record["id"]
    return None


def check_record(record: Any, rid: RecordId) -> None:
    if not isinstance(record, dict):
        raise TrajectoryError(rid, "<record>", f"must be a JSON object, got {type(record).__name__}")


def text_field(record: dict[str, Any], key: str, rid: RecordId, *, required: bool = True) -> str:
    value = record.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise TrajectoryError(rid, key, f"must be a {'non-empty ' if required else ''}string, got {value!r:.60}")
    return value


def _from_json_string(value: Any, rid: RecordId, field: str) -> Any:
    """``value``, decoded first if it is a string: sources store lists and objects both ways."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError as e:
        raise TrajectoryError(rid, field, f"invalid JSON: {e.msg} at column {e.colno}") from None


def json_list_field(record: dict[str, Any], key: str, rid: RecordId) -> list[Any]:
    value = _from_json_string(record.get(key), rid, key)
    if not isinstance(value, list):
        raise TrajectoryError(rid, key, f"must be a list (or a JSON string of one), got {type(value).__name__}")
    return value


def _arguments(value: Any, rid: RecordId, field: str) -> dict[str, Any]:
    """Call arguments: an object, a JSON string of one, or nothing (no arguments)."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return {}
    value = _from_json_string(value, rid, field)
    if not isinstance(value, dict):
        raise TrajectoryError(rid, field, f"must be an object, got {type(value).__name__}")
    return value


def call_from(obj: Any, rid: RecordId, field: str) -> ToolCall:
    if not isinstance(obj, dict):
        raise TrajectoryError(rid, field, f"a call must be an object, got {type(obj).__name__}")
    name = obj.get("name")
    if not isinstance(name, str) or not name.strip():
        raise TrajectoryError(rid, f"{field}.name", f"must be a non-empty string, got {name!r:.60}")
    return ToolCall(name.strip(), _arguments(obj.get("arguments"), rid, f"{field}.arguments"))


def build_trajectory(fmt: str, record: dict[str, Any], record_id: RecordId, tools: list[dict[str, Any]],
                episode: Episode, **meta: Any) -> Trajectory:
    """The validated trajectory, with provenance and completion marks in ``meta``."""
    rid = resolve_record_id(record, record_id)
    turns = episode.finish()
    known = {t["name"] for t in tools}
    added: list[str] = []
    for turn in turns:
        for call in turn.get("calls", ()):
            if call["name"] not in known and call["name"] not in added:
                added.append(call["name"])
    tools = tools + [{"name": n, "description": "", "parameters": dict(EMPTY_SCHEMA)} for n in added]
    source_id = record.get("id")
    name = source_id if source_id is not None else record_id
    full_meta: dict[str, Any] = {"source": fmt}
    if source_id is not None:
        full_meta["source_id"] = source_id
    full_meta.update(episode.meta())
    if added:
        full_meta["added_tools"] = added
    full_meta.update(meta)
    raw = {"tools": tools, "turns": turns, "meta": full_meta}
    if name is not None:
        raw["id"] = f"{fmt}-{name}"
    return parse_trajectory(raw, record=rid)


SPEAKERS = {
    "user": "user", "human": "user",
    "assistant": "assistant", "gpt": "assistant",
    "tool": "tool", "function": "tool", "observation": "tool",
    "system": "system",
}


def chat_messages(record: dict[str, Any], rid: RecordId) -> list[tuple[str, str, str]]:
    """``(speaker, text, field)`` for each message of ``record["conversations"]``, speakers
    normalised to user / assistant / tool / system."""
    conversations = record.get("conversations")
    if not isinstance(conversations, list) or not conversations:
        raise TrajectoryError(rid, "conversations", "must be a non-empty list of messages")
    out = []
    for i, msg in enumerate(conversations):
        field = f"conversations[{i}]"
        if not isinstance(msg, dict):
            raise TrajectoryError(rid, field, f"a message must be an object, got {type(msg).__name__}")
        speaker = msg.get("from", msg.get("role"))
        if not isinstance(speaker, str) or speaker not in SPEAKERS:
            raise TrajectoryError(rid, f"{field}.from", f"must be one of {sorted(SPEAKERS)}, got {speaker!r:.40}")
        text = msg.get("value", msg.get("content"))
        if not isinstance(text, str):
            raise TrajectoryError(rid, f"{field}.value", f"must be a string, got {type(text).__name__}")
        out.append((SPEAKERS[speaker], text, f"{field}.value"))
    return out


def split_episode(messages: list[tuple[str, str, str]], rid: RecordId) -> tuple[str, list, int]:
    """The first user message, the messages answering it, and how many later messages are dropped."""
    rest = [m for m in messages if m[0] != "system"]
    if not rest or rest[0][0] != "user":
        raise TrajectoryError(rid, "conversations", "the first message (after system ones) must be the user's")
    query, field = rest[0][1].strip(), rest[0][2]
    if not query:
        raise TrajectoryError(rid, field, "the user's message is empty")
    episode = rest[1:]
    following_user = next((k for k, m in enumerate(episode) if m[0] == "user"), len(episode))
    if following_user == 0:
        raise TrajectoryError(rid, "conversations", "no assistant message answers the first user message")
    return query, episode[:following_user], len(episode) - following_user
