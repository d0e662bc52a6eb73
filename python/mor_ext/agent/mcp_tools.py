"""Tools of an MCP server, through the official ``mcp`` SDK, as ordinary :class:`~mor_ext.tools.Tool`\\ s.

:class:`MCPToolServer` starts a server over stdio (``MCPToolServer(["python", "server.py"])``) or
connects to a running one over streamable HTTP (``MCPToolServer(url="http://host:port/mcp")``),
initialises a session, lists the server's tools and turns each into a ``Tool`` whose callable calls
it; from there the agent treats them like any Python tool (the one executor validates the arguments
against the server's schemas, and turns errors and timeouts into observations). The SDK is async;
the session lives on an event loop in a background thread so that tools stay plain synchronous
callables. Needs ``pip install mor_ext[agent]`` (``mcp>=1.0``; both the 1.x and 2.x APIs work).
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from typing import Any

from ..tools import Tool, ToolRegistry

__all__ = ["MCPToolServer", "MCPToolError"]


class MCPToolError(RuntimeError):
    """The server answered a call with an error result (the executor makes it an observation)."""


def _field(obj: Any, snake: str, camel: str, default: Any = None) -> Any:
    """mcp 2.x names fields in snake_case, 1.x in camelCase."""
    value = getattr(obj, snake, None)
    return getattr(obj, camel, default) if value is None else value


def _content_value(result: Any) -> Any:
    """A call result as JSON: structured content when the server gives it, else the text content
    (parsed as JSON where it is JSON)."""
    structured = _field(result, "structured_content", "structuredContent")
    if isinstance(structured, dict):
        return structured["result"] if set(structured) == {"result"} else structured  # unwrap non-object returns
    texts = [getattr(block, "text") for block in getattr(result, "content", []) or [] if hasattr(block, "text")]
    values = []
    for text in texts:
        try:
            values.append(json.loads(text))
        except ValueError:
            values.append(text)
    return values[0] if len(values) == 1 else values


class MCPToolServer:
    """An MCP server and a session with it; a context manager.

    ``command``: the command line of a server to start over stdio (``env``: extra environment
    variables, ``cwd``); or ``url``: a running server's streamable-HTTP endpoint. ``call_timeout``:
    seconds a call may take before it fails (the executor's own timeout also applies).
    """

    def __init__(self, command: Sequence[str] | None = None, *, url: str | None = None, env: dict[str, str] | None = None,
                 cwd: str | None = None, start_timeout: float = 60.0, call_timeout: float = 30.0) -> None:
        from mcp import ClientSession, StdioServerParameters
        from mcp.client.stdio import stdio_client

        if bool(command) == bool(url):
            raise ValueError("MCPToolServer needs a command line or a url (one of them)")
        self.command = list(command or [])
        self.url = url
        self.call_timeout = call_timeout
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="mor_ext-mcp", daemon=True)
        self._thread.start()
        self._ready: Future = Future()
        self._stop: asyncio.Event | None = None
        self._session: Any = None
        if url:
            try:
                from mcp.client.streamable_http import streamable_http_client as transport
            except ImportError:  # mcp 1.x
                from mcp.client.streamable_http import streamablehttp_client as transport
            connection = lambda: transport(url)  # noqa: E731
        else:
            params = StdioServerParameters(command=self.command[0], args=self.command[1:], env=env, cwd=cwd)
            connection = lambda: stdio_client(params)  # noqa: E731

        async def main() -> None:
            self._stop = asyncio.Event()
            try:
                async with connection() as streams:
                    async with ClientSession(streams[0], streams[1]) as session:
                        await session.initialize()
                        listed = await session.list_tools()
                        self._session = session
                        self._ready.set_result(list(listed.tools))
                        await self._stop.wait()
            except BaseException as exc:  # noqa: BLE001 - handed to the thread that waits for the start
                if not self._ready.done():
                    self._ready.set_exception(exc)
                raise

        self._main = asyncio.run_coroutine_threadsafe(main(), self._loop)
        try:
            self._listed = self._ready.result(timeout=start_timeout)
        except BaseException as exc:
            self.close()
            where = url or " ".join(self.command)
            raise OSError(f"MCP server {where!r} did not start: {type(exc).__name__}: {exc}") from exc

    def call(self, name: str, arguments: dict[str, Any]) -> Any:
        """Call tool ``name``; its result as JSON, or :class:`MCPToolError` for an error result."""
        future = asyncio.run_coroutine_threadsafe(self._session.call_tool(name, arguments), self._loop)
        result = future.result(timeout=self.call_timeout)
        value = _content_value(result)
        if _field(result, "is_error", "isError", False):
            raise MCPToolError(value if isinstance(value, str) else json.dumps(value))
        return value

    def tools(self) -> ToolRegistry:
        """The server's tools as a registry; calling one calls the server."""
        tools = []
        for listed in self._listed:
            name = listed.name
            schema = _field(listed, "input_schema", "inputSchema") or {"type": "object", "properties": {}}

            def fn(_name: str = name, **arguments: Any) -> Any:
                return self.call(_name, arguments)

            tools.append(Tool(name, listed.description or "", dict(schema), fn=fn, domain="mcp"))
        return ToolRegistry(tools)

    def close(self) -> None:
        """Stop the session and the server process (idempotent)."""
        if self._loop.is_closed():
            return
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        try:
            self._main.result(timeout=10)
        except BaseException:  # noqa: BLE001 - the server may already be gone; closing goes on
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def __enter__(self) -> "MCPToolServer":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()
