"""MCP tools through the official SDK: our own server as a separate process, and a full episode."""

from __future__ import annotations

import json
import sys

import pytest
import torch

pytest.importorskip("mcp")

from agent_helpers import SYSTEM, Script, build_model, build_tokenizer  # noqa: E402
from mor_ext.agent import Agent, AgentConfig  # noqa: E402
from mor_ext.agent.mcp_tools import MCPToolServer  # noqa: E402
from mor_ext.tools import execute  # noqa: E402

SERVER = [sys.executable, "-m", "mor_ext.agent.mcp_server", "--tools", "country_capital_city",
          "factorial_of_integer", "--sandbox"]


@pytest.fixture(scope="module")
def server():
    with MCPToolServer(SERVER) as s:
        yield s


def test_lists_and_calls_the_server_tools(server):
    tools = server.tools()
    assert list(tools) == ["country_capital_city", "factorial_of_integer", "run_python"]
    assert tools["country_capital_city"].parameters["required"] == ["country"]
    assert execute(tools, "country_capital_city", {"country": "Norway"}).result == "Oslo"
    assert execute(tools, "run_python", {"code": "print(2 ** 10)"}).result["stdout"].strip() == "1024"
    failed = execute(tools, "factorial_of_integer", {"n": -3})
    assert failed.error_kind == "tool_error" and "negative" in failed.message
    assert execute(tools, "factorial_of_integer", {}).error_kind == "bad_arguments"  # the server's schema


def test_full_episode_against_the_server(server):
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer))
    script = Script(tokenizer, [
        "Look it up.\nNext: executor", '{"name": "country_capital_city", "arguments": {"country": "Norway"}}',
        "Compute too.\nNext: executor", '[{"name": "factorial_of_integer", "arguments": {"n": 5}}, '
                                        '{"name": "run_python", "arguments": {"code": "print(3 * 4)"}}]',
        "Done.\nNext: summarizer", "Oslo; 120; 12."])
    agent = Agent(model, tokenizer, server.tools(), system=SYSTEM, config=AgentConfig(max_tokens=8192), choose=script)
    result = agent.run("Capital of Norway, 5! and 3 * 4?")
    assert result.status == "answered" and result.answer == "Oslo; 120; 12."
    observations = [json.loads(t.content) for t in result.trajectory.turns if t.role == "observation"]
    assert observations[0] == {"result": "Oslo"}
    assert observations[1][0] == {"result": 120} and observations[1][1]["result"]["stdout"].strip() == "12"


def test_a_server_that_does_not_start_is_a_clear_error():
    with pytest.raises(OSError, match="did not start"):
        MCPToolServer([sys.executable, "-c", "import sys; sys.exit(3)"], start_timeout=20)


def test_connects_to_a_running_server_over_http():
    import socket
    import subprocess
    import time

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mor_ext.agent.mcp_server", "--tools", "country_capital_city",
                             "--http", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while True:  # wait until it listens
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.monotonic() < deadline and proc.poll() is None, "the HTTP server did not come up"
                time.sleep(0.2)
        with MCPToolServer(url=f"http://127.0.0.1:{port}/mcp") as server:
            assert execute(server.tools(), "country_capital_city", {"country": "Peru"}).result == "Lima"
    finally:
        proc.kill()
        proc.wait()
