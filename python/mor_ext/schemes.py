"""`RoleScheme`: which role each token of a rendered trajectory runs under (``docs/spec.md`` §7).

A scheme maps the *kinds* of token that a trajectory renders to role names:

* ``reasoner``, ``summarizer``: the whole turn of that name (header, content, end-of-turn marker);
* inside an executor turn, a rule-based split by :func:`call_segments`: ``syntax`` (what precedes a
  function name: ``{"name": "``, ``[``, a code fence, the ``, {"name": "`` between calls),
  ``name`` (the function name itself) and ``arguments`` (from the character that ends the name to
  the end of that call's object, the arguments included).

Presets: :meth:`RoleScheme.moragent` (reasoner / executor / summarizer, the default and what an
adapter without a saved scheme means), :meth:`RoleScheme.agentflux` (``selector`` on the reasoner's
turn, the call syntax and the names; ``arguments`` on the rest of each call, optionally one
arguments role per tool group; ``summarizer``) and :meth:`RoleScheme.combined` (MoRAgent's reasoner
kept, the executor split into selector and arguments). Any other mapping is a user-defined scheme.

The split is a pure function of the text, decided left to right: the kind of character ``p``
depends on ``text[:p + 1]`` only, so a decoder that knows a generated token's text assigns it the
same role that training gave it (a token's role is the kind of its first character).

Imports nothing of mor_ext (a :class:`~mor_ext.MoRSpec` is only read, by ``check_spec``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = ["KINDS", "RoleScheme", "CallScanner", "call_segments", "token_roles"]

#: Token kinds a scheme maps to roles (see the module docstring).
KINDS = ("reasoner", "syntax", "name", "arguments", "summarizer")
SYNTAX, NAME, ARGUMENTS = "syntax", "name", "arguments"


class CallScanner:
    """Reads an executor's text one character at a time and says which kind each character is.

    JSON strings and nesting are tracked inside brackets only (prose outside any bracket, e.g. text
    around a code fence, is ``syntax``). The value of a ``"name"`` key is a function name unless the
    scanner is already inside a call's arguments; the call's object is the innermost object holding
    that key, and the arguments kind lasts until it closes (an argument called ``name`` is therefore
    part of the arguments).
    """

    def __init__(self) -> None:
        self.state = SYNTAX
        self.stack: list[str] = []  # open brackets
        self.in_string = False
        self.escape = False
        self.string = ""  # the string being read (keys only matter when short)
        self.last_string: str | None = None  # the last closed string at the current level
        self.expect_name = False  # after `"name":`, the next string is a function name
        self.call_depth = -1  # depth of the current call's object
        self.name = ""  # the function name being read / last read
        self.names: list[str] = []  # every function name read so far

    def feed(self, ch: str) -> str:
        """Consume ``ch`` and return its kind."""
        if self.in_string:
            if self.escape:
                self.escape = False
            elif ch == "\\":
                self.escape = True
            elif ch == '"':
                self.in_string = False
                if self.state == NAME:  # the closing quote ends the name: it is the arguments' first character
                    self.state = ARGUMENTS
                    self.names.append(self.name)
                    return ARGUMENTS
                self.last_string = self.string
                return self.state
            if self.state == NAME:
                self.name += ch
            elif len(self.string) < 8:
                self.string += ch
            return self.state
        if not self.stack:  # prose: only an opening bracket matters
            if ch in "{[":
                self.stack.append(ch)
            return self.state
        if ch == '"':
            self.in_string = True
            self.string = ""
            if self.expect_name and self.state == SYNTAX:
                self.expect_name = False
                self.state, self.name, self.call_depth = NAME, "", len(self.stack)
                return SYNTAX  # the opening quote precedes the name
            self.expect_name = False
            return self.state
        if ch == ":":
            self.expect_name = self.last_string == "name" and self.stack[-1] == "{"
            self.last_string = None
            return self.state
        if ch in "{[":
            self.stack.append(ch)
            self.last_string = None
        elif ch in "}]":
            depth = len(self.stack)
            self.stack.pop()
            self.last_string = None
            if self.state == ARGUMENTS and depth == self.call_depth:
                self.state = SYNTAX  # the call's closing brace is still the arguments'
                return ARGUMENTS
        elif ch == ",":
            self.last_string = None
        if not ch.isspace():
            self.expect_name = False
        return self.state


def call_segments(text: str) -> list[tuple[int, int, str]]:
    """``(start, end, kind)`` runs of an executor's text (character offsets, end-exclusive)."""
    scanner, runs = CallScanner(), []
    for i, ch in enumerate(text):
        kind = scanner.feed(ch)
        if runs and runs[-1][2] == kind:
            runs[-1] = (runs[-1][0], i + 1, kind)
        else:
            runs.append((i, i + 1, kind))
    return runs


@dataclass(frozen=True)
class RoleScheme:
    """A name and the role of each token kind (:data:`KINDS`); ``tool_roles`` gives the arguments
    of particular tools their own role (AgentFlux's per-tool or per-group argument adapters)."""

    name: str
    kind_roles: Mapping[str, str]
    tool_roles: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"RoleScheme.name must be a non-empty string, got {self.name!r}")
        kinds = dict(self.kind_roles)
        if sorted(kinds) != sorted(KINDS):
            raise ValueError(f"RoleScheme {self.name!r}: kind_roles must map exactly the kinds {list(KINDS)}, "
                             f"got {sorted(kinds)}")
        for key, role in list(kinds.items()) + list(dict(self.tool_roles).items()):
            if not isinstance(role, str) or not role:
                raise ValueError(f"RoleScheme {self.name!r}: the role of {key!r} must be a non-empty string, got {role!r}")
        object.__setattr__(self, "kind_roles", kinds)
        object.__setattr__(self, "tool_roles", dict(self.tool_roles))

    # ------------------------------------------------------------------------------------- presets
    @classmethod
    def moragent(cls) -> "RoleScheme":
        """MoRAgent: each turn under the role that writes it (the executor's turn is not split)."""
        return cls("moragent", {"reasoner": "reasoner", SYNTAX: "executor", NAME: "executor",
                                ARGUMENTS: "executor", "summarizer": "summarizer"})

    @classmethod
    def agentflux(cls, tool_groups: Mapping[str, str] | None = None) -> "RoleScheme":
        """AgentFlux: ``selector`` writes the reasoner's turn (whose ``Next: summarizer`` is
        AgentFlux's ``summarize`` pseudo-tool), the call syntax and the function names;
        ``arguments`` the rest of each call; ``summarizer`` the answer. ``tool_groups`` (tool name
        -> group) gives each group's arguments the role ``arguments:<group>``."""
        return cls("agentflux", {"reasoner": "selector", SYNTAX: "selector", NAME: "selector",
                                 ARGUMENTS: "arguments", "summarizer": "summarizer"},
                   {tool: f"arguments:{group}" for tool, group in (tool_groups or {}).items()})

    @classmethod
    def combined(cls, tool_groups: Mapping[str, str] | None = None) -> "RoleScheme":
        """MoRAgent's reasoner and summarizer with AgentFlux's split of the executor's turn."""
        base = cls.agentflux(tool_groups)
        return cls("combined", {**base.kind_roles, "reasoner": "reasoner"}, base.tool_roles)

    @classmethod
    def preset(cls, name: str, tool_groups: Mapping[str, str] | None = None) -> "RoleScheme":
        """A preset by name: ``moragent``, ``agentflux`` or ``combined``."""
        makers = {"moragent": cls.moragent, "agentflux": cls.agentflux, "combined": cls.combined}
        if name not in makers:
            raise ValueError(f"unknown role scheme {name!r}; presets are {sorted(makers)}")
        if name == "moragent":
            if tool_groups:
                raise ValueError("the moragent scheme does not split calls, so it takes no tool groups")
            return cls.moragent()
        return makers[name](tool_groups)

    # ------------------------------------------------------------------------------------- roles
    @property
    def roles(self) -> tuple[str, ...]:
        """Every role the scheme uses, in a fixed order (first use in :data:`KINDS`, then tool roles)."""
        out: list[str] = []
        for role in [self.kind_roles[k] for k in KINDS] + sorted(set(self.tool_roles.values())):
            if role not in out:
                out.append(role)
        return tuple(out)

    @property
    def splits_calls(self) -> bool:
        """Whether an executor turn holds more than one role."""
        return len({self.kind_roles[k] for k in (SYNTAX, NAME, ARGUMENTS)} | set(self.tool_roles.values())) > 1

    def turn_role(self, header: str) -> str:
        """The role of a reasoner or summarizer turn, or of an executor turn's header (its first kind)."""
        return self.kind_roles[SYNTAX if header == "executor" else header]

    def executor_char_roles(self, text: str) -> list[str]:
        """The role of every character of an executor's text, then one more entry: the role of what
        follows the text (its end-of-turn marker)."""
        scanner, roles = CallScanner(), []
        for ch in text:
            kind = scanner.feed(ch)
            roles.append(self._role_of(kind, scanner))
        roles.append(self._role_of(scanner.state, scanner))
        return roles

    def _role_of(self, kind: str, scanner: CallScanner) -> str:
        if kind == ARGUMENTS and scanner.names:
            return self.tool_roles.get(scanner.names[-1], self.kind_roles[ARGUMENTS])
        return self.kind_roles[kind]

    def check_spec(self, spec) -> None:
        """ValueError unless every role of the scheme is a role of ``spec``."""
        missing = [r for r in self.roles if r not in spec.role_names]
        if missing:
            raise ValueError(f"role scheme {self.name!r} uses roles {missing} that the spec lacks; "
                             f"the spec has {list(spec.role_names)}")

    # ------------------------------------------------------------------------------------- (de)serialisation
    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "kind_roles": dict(self.kind_roles), "tool_roles": dict(self.tool_roles)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RoleScheme":
        try:
            return cls(data["name"], data["kind_roles"], data.get("tool_roles", {}))
        except (KeyError, TypeError) as exc:
            raise ValueError(f"not a valid RoleScheme dict ({exc}): {data!r}") from exc


def token_roles(scheme: RoleScheme, token_starts: Sequence[int], text: str) -> tuple[list[str], str]:
    """Roles of an executor turn's tokens (each the role of its first character; ``token_starts[k]``
    is token ``k``'s character offset in ``text``) and the role of the end-of-turn marker."""
    chars = scheme.executor_char_roles(text)
    return [chars[min(start, len(text))] for start in token_starts], chars[-1]
