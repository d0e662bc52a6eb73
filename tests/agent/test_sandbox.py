"""The code sandbox: each escape attempt is contained and reported (docs: mor_ext.agent.sandbox)."""

from __future__ import annotations

import os
import textwrap

import pytest

from mor_ext.agent.sandbox import SandboxLimits, namespaces_available, python_tool, run_python
from mor_ext.tools import execute

pytestmark = pytest.mark.skipif(not namespaces_available(), reason="unprivileged namespaces are not allowed here")

FAST = SandboxLimits(cpu_seconds=2, wall_seconds=4.0, memory_bytes=256 * 2**20, file_bytes=256 * 1024,
                     max_output_chars=500)


def run(code: str, limits: SandboxLimits = FAST):
    return run_python(textwrap.dedent(code), limits)


def test_runs_code_and_captures_output():
    r = run("import math\nprint(sum(i * i for i in range(10)), math.factorial(5))")
    assert r.ok and r.exit_code == 0 and r.stdout.strip() == "285 120" and r.isolation == "namespaces"


def test_a_failing_program_reports_its_traceback():
    r = run("1 / 0")
    assert not r.ok and r.exit_code == 1 and "ZeroDivisionError" in r.stderr and r.killed is None


def test_files_inside_the_working_directory_work():
    r = run("open('data.txt', 'w').write('42')\nprint(open('data.txt').read())")
    assert r.ok and r.stdout.strip() == "42"


@pytest.mark.parametrize("path", ["/etc/passwd", os.path.expanduser("~/.bashrc"), os.path.abspath(__file__)])
def test_reading_outside_is_refused(path):
    r = run(f"print(open({path!r}).read()[:50])")
    assert not r.ok and "PermissionError: sandbox: reading" in r.stderr and r.error


def test_writing_outside_is_refused(tmp_path):
    target = tmp_path / "escaped.txt"
    r = run(f"open({str(target)!r}, 'w').write('x')")
    assert not r.ok and "writing" in r.stderr and not target.exists()
    r = run("import os\nos.remove('/tmp')")
    assert not r.ok and "not allowed" in r.stderr


def test_no_network():
    r = run("import socket\ns = socket.create_connection(('1.1.1.1', 80), timeout=1)")
    assert not r.ok and "socket" in r.stderr


def test_no_network_even_below_the_audit_hook():
    # The namespace holds on its own: ctypes is refused, and even a raw _socket has no route.
    r = run("""
        import _socket
        s = _socket.socket()
        try:
            s.connect(('1.1.1.1', 80))
        except OSError as e:
            print('contained', e.errno)
    """)
    assert "contained" in r.stdout or "not allowed" in r.stderr


def test_fork_bomb_is_contained():
    r = run("""
        import os
        while True:
            os.fork()
    """)
    assert not r.ok and "not allowed" in r.stderr


def test_subprocess_is_refused():
    r = run("import subprocess\nprint(subprocess.run(['ls', '/'], capture_output=True).stdout)")
    assert not r.ok and "subprocess" in r.stderr


def test_infinite_loop_hits_the_cpu_limit():
    r = run("while True:\n    pass", SandboxLimits(cpu_seconds=1, wall_seconds=5.0))
    assert not r.ok and r.killed in ("SIGXCPU", "SIGKILL") and r.error


def test_sleeping_forever_hits_the_wall_clock():
    r = run("import time\ntime.sleep(60)", SandboxLimits(wall_seconds=1.0))
    assert not r.ok and r.killed == "wall_clock" and r.seconds < 10


def test_huge_allocation_fails_inside():
    r = run("x = bytearray(2 * 1024**3)\nprint(len(x))")
    assert not r.ok and "MemoryError" in r.stderr and "memory" in r.error


def test_huge_output_is_cut():
    r = run("while True:\n    print('y' * 1000)")
    assert not r.ok and len(r.stdout) < 1000 and r.truncated and "bytes to a file or its output" in r.error


def test_killing_the_parent_is_contained():
    parent = os.getpid()
    r = run(f"import os, signal\nos.kill({parent}, signal.SIGKILL)")
    assert not r.ok and "not allowed" in r.stderr  # and we are still here
    r = run("import os\nprint(os.getppid())")
    assert int(r.stdout) <= 1  # PID namespace: its parent is the sandbox's PID 1, ours is not visible


def test_as_an_agent_tool():
    tool = python_tool(FAST)
    result = execute({tool.name: tool}, "run_python", {"code": "print(6 * 7)"})
    assert result.ok and result.result["stdout"].strip() == "42"
    bad = execute({tool.name: tool}, "run_python", {"code": "import socket; socket.socket().connect(('1.1.1.1', 80))"})
    assert bad.ok and bad.result["ok"] is False and "error" in bad.result
