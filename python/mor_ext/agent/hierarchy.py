"""Hierarchical tool selection (``docs/spec.md`` §7): with more tools than fit one prompt, the
selector first picks a category from a short list, then a tool within it.

:func:`build_hierarchy` groups tools (any :class:`~mor_ext.tools.Tool`: Python, schema-only, an MCP
server's) into :class:`Category` nodes, by given categories or by the first word of their names
(``convert_...``, ``pystd_...``, ``getWeather`` -> ``get``), splitting and nesting groups so that no
level holds more than ``max_tools`` entries. :func:`choose_tools` runs the selection for many
queries at once: each level is one batch of short agent episodes whose tools are the level's
entries (a category is a pseudo-tool without parameters, described by its tools' names), decoded
with the name constraint and stopped as soon as the name is written; the chosen category's tools
are what the real episode is then offered.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import torch

from ..data.tokenize import RoleTokenizer
from ..tools import Tool
from .batch import run_episodes
from .episode import CALLED, AgentConfig, Episode

__all__ = ["Category", "build_hierarchy", "category_key", "choose_tools"]

_NO_PARAMETERS = {"type": "object", "properties": {}}
_WORDS = re.compile(r"[_.\-\s/]+|(?<=[a-z0-9])(?=[A-Z])")


@dataclass(frozen=True)
class Category:
    """A named group of tools and subcategories."""

    name: str
    children: tuple["Category | Tool", ...]

    def tools(self) -> list[Tool]:
        """Every tool under this category, in order."""
        out: list[Tool] = []
        for child in self.children:
            out += child.tools() if isinstance(child, Category) else [child]
        return out

    def as_tool(self) -> Tool:
        """The pseudo-tool the selector sees for this category."""
        names = [t.name for t in self.tools()]
        shown = ", ".join(names[:12]) + (f", ... ({len(names)} tools)" if len(names) > 12 else "")
        return Tool(self.name, f"A category of tools: {shown}. Call it to choose among them.", _NO_PARAMETERS)


def category_key(name: str) -> str:
    """The derived category of a tool: the first word of its name, lower-cased."""
    return (_WORDS.split(name.strip(), maxsplit=1)[0] or name).lower()


def _group(name: str, items: list, max_tools: int) -> Category:
    if len(items) <= max_tools:
        return Category(name, tuple(items))
    chunks = [items[i:i + max_tools] for i in range(0, len(items), max_tools)]  # nested again if too many
    return _group(name, [_group(f"{name}_{j + 1}", chunk, max_tools) for j, chunk in enumerate(chunks)], max_tools)


def build_hierarchy(tools: Sequence[Tool], max_tools: int,
                    categories: Mapping[str, str] | None = None) -> list[Category | Tool]:
    """The top level of the tool hierarchy: at most ``max_tools`` entries, each a tool or a
    :class:`Category` whose every level again holds at most ``max_tools`` entries. ``categories``
    (tool name -> category) overrides the derived ones; a category of one tool is the tool itself."""
    if isinstance(max_tools, bool) or not isinstance(max_tools, int) or max_tools < 2:
        raise ValueError(f"max_tools must be an int >= 2, got {max_tools!r}")
    tools = list(tools)
    if len(tools) <= max_tools:
        return tools
    groups: dict[str, list[Tool]] = {}
    for tool in tools:
        key = (categories or {}).get(tool.name) or category_key(tool.name)
        groups.setdefault(key, []).append(tool)
    names = {t.name for t in tools}
    nodes: list[Category | Tool] = []
    for key, members in groups.items():
        if len(members) == 1:
            nodes.append(members[0])
            continue
        name = f"{key}_tools"
        while name in names:
            name += "_"
        nodes.append(_group(name, members, max_tools))
    if len(nodes) <= max_tools:
        return nodes
    return list(_group("tools", nodes, max_tools).children)


def _chosen_name(episode_result) -> str | None:
    turn = next((t for t in episode_result.trajectory.turns if t.role == "executor"), None)
    if episode_result.status != CALLED or turn is None or not turn.calls:
        return None
    return turn.calls[0].name


@torch.no_grad()
def choose_tools(model: torch.nn.Module, encoder: RoleTokenizer, queries: Sequence[str],
                 tools: Sequence[Sequence[Tool]], max_tools: int, *, system: str | Sequence[str | None] | None = None,
                 categories: Mapping[str, str] | None = None, batch_size: int = 8, max_turn_tokens: int = 64,
                 max_tokens: int = 4096, pad_id: int = 0,
                 progress: Callable[[int], None] | None = None) -> list[list[Tool] | None]:
    """For each query, the tools its episode is offered: all of them when they fit ``max_tools``,
    else those of the category the selector chooses, level by level (greedy, names constrained).
    None where the selector goes to the summarizer instead of choosing (no call)."""
    systems = list(system) if isinstance(system, (list, tuple)) else [system] * len(queries)
    levels: list[list[Category | Tool]] = [build_hierarchy(t, max_tools, categories) for t in tools]
    result: list[list[Tool] | None] = [None] * len(queries)
    pending = []
    for i, level in enumerate(levels):
        if all(isinstance(n, Tool) for n in level):
            result[i] = list(level)
        else:
            pending.append(i)
    config = AgentConfig(max_steps=1, max_tokens=max_tokens, max_turn_tokens=max_turn_tokens, first_call_only=True,
                         stop_after_name=True, constrain_names=True)
    while pending:
        def make(k: int) -> Episode:
            i = pending[k]
            offered = {n.name: (n.as_tool() if isinstance(n, Category) else n) for n in levels[i]}
            return Episode(encoder, offered, queries[i], config, system=systems[i], id=str(i))

        episodes = run_episodes(model, make, len(pending), batch_size=batch_size, pad_id=pad_id).episodes
        still = []
        for i, episode in zip(pending, episodes):
            by_name = {n.name: n for n in levels[i]}
            node = by_name.get(_chosen_name(episode) or "")
            if node is None:
                result[i] = None  # no call: the question is answered without a tool
            elif isinstance(node, Tool):
                result[i] = [n for n in levels[i] if isinstance(n, Tool)]
            elif all(isinstance(c, Tool) for c in node.children):
                result[i] = list(node.children)
            else:
                levels[i] = list(node.children)
                still.append(i)
                continue
            if progress is not None:
                progress(1)
        pending = still
    return result
