""":class:`ToolRegistry`: the tools an agent (or a data set) can call, by name."""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping
from typing import Any, Callable

from .tool import Tool, tool

__all__ = ["ToolRegistry"]


class ToolRegistry(Mapping[str, Tool]):
    """Name -> :class:`Tool`, in the order the tools were added (the order is part of the contract:
    the synthetic generator samples from it). Names are unique."""

    def __init__(self, tools: Iterable[Tool] = ()) -> None:
        self._tools: dict[str, Tool] = {}
        for t in tools:
            self.add(t)

    def add(self, item: Tool) -> Tool:
        """Add one tool; a name that is already taken is a ValueError."""
        if not isinstance(item, Tool):
            raise TypeError(f"a ToolRegistry holds Tool objects, got {type(item).__name__}")
        if item.name in self._tools:
            raise ValueError(f"duplicate tool name {item.name!r}")
        self._tools[item.name] = item
        return item

    def register(self, fn: Callable[..., Any] | None = None, **options: Any) -> Any:
        """Decorator: ``@registry.register`` (or ``register(domain=...)``) = :func:`tool` + :meth:`add`."""
        if fn is None:
            return lambda f: self.add(tool(f, **options))
        return self.add(tool(fn, **options))

    def __getitem__(self, name: str) -> Tool:
        return self._tools[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._tools)

    def __len__(self) -> int:
        return len(self._tools)

    def __repr__(self) -> str:
        return f"ToolRegistry({list(self._tools)})"

    @property
    def domains(self) -> tuple[str, ...]:
        """The tools' domains, in order of first appearance."""
        return tuple(dict.fromkeys(t.domain for t in self._tools.values() if t.domain is not None))

    def in_domain(self, domain: str) -> list[Tool]:
        """The tools of one domain, in registry order."""
        return [t for t in self._tools.values() if t.domain == domain]

    def subset(self, names: Iterable[str]) -> "ToolRegistry":
        """A registry of the named tools, in the order given (an unknown name is a KeyError)."""
        return ToolRegistry(self._tools[n] for n in names)

    def schemas(self) -> list[dict[str, Any]]:
        """Every tool's trajectory-format / OpenAI ``function`` schema, in order."""
        return [t.to_dict() for t in self._tools.values()]

    @classmethod
    def of(cls, tools: "Mapping[str, Tool] | Iterable[Tool]") -> "ToolRegistry":
        """``tools`` as a registry (returned as is when it already is one)."""
        if isinstance(tools, ToolRegistry):
            return tools
        return cls(tools.values() if isinstance(tools, Mapping) else tools)
