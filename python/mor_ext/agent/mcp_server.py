"""A small MCP server of our own, over stdio: tools of the built-in catalogue and the code sandbox.

    python -m mor_ext.agent.mcp_server [--tools NAME ...] [--sandbox] [--http PORT]

It exists so that the agent's MCP path is tested against a real server process (and can be tried
without installing one): ``mor-ext agent --mcp "python -m mor_ext.agent.mcp_server --sandbox" ...``.
The server derives each tool's input schema from the function's signature (the SDK's way); the
agent validates calls against what the server lists. Needs the ``mcp`` package.
"""

from __future__ import annotations

import argparse
import functools
from collections.abc import Sequence
from typing import Any

__all__ = ["build_server", "main", "DEFAULT_TOOLS"]

DEFAULT_TOOLS = ("country_capital_city", "percentage_of_number", "convert_temperature_scale", "factorial_of_integer")


def build_server(tool_names: Sequence[str] = DEFAULT_TOOLS, sandbox: bool = False) -> Any:
    """An MCP server (``MCPServer`` in mcp 2.x, ``FastMCP`` in 1.x) with the named catalogue tools."""
    try:
        from mcp.server.mcpserver import MCPServer as Server
        from mcp.server.mcpserver.exceptions import ToolError
    except ImportError:  # mcp 1.x
        from mcp.server.fastmcp import FastMCP as Server
        from mcp.server.fastmcp.exceptions import ToolError

    def reported(fn: Any) -> Any:
        """A tool whose exceptions reach the client as their message (not as a logged crash)."""
        @functools.wraps(fn)
        def call(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:
                raise ToolError(f"{type(exc).__name__}: {exc}") from None
        return call

    from ..tools.catalogue import CATALOGUE

    server = Server("mor_ext-tools")
    for name in tool_names:
        item = CATALOGUE[name]
        server.add_tool(reported(item.fn), name=item.name, description=item.description)
    if sandbox:
        from .sandbox import run_python as _run

        def run_python(code: str) -> dict:
            """Run Python code in a sandbox (no network, no files outside its directory, limited CPU time and
            memory) and return what it printed."""
            return _run(code).observation()

        server.add_tool(run_python, name="run_python", description=run_python.__doc__)
    return server


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m mor_ext.agent.mcp_server", description=__doc__.splitlines()[0])
    parser.add_argument("--tools", nargs="*", default=list(DEFAULT_TOOLS), help="catalogue tool names")
    parser.add_argument("--sandbox", action="store_true", help="also serve run_python (the code sandbox)")
    parser.add_argument("--http", type=int, default=None, metavar="PORT",
                        help="serve streamable HTTP on 127.0.0.1:PORT/mcp instead of stdio (mcp 2.x)")
    args = parser.parse_args(argv)
    server = build_server(args.tools, args.sandbox)
    if args.http is None:
        server.run("stdio")
    else:
        server.run("streamable-http", host="127.0.0.1", port=args.http)


if __name__ == "__main__":
    main()
