"""Running untrusted Python (the agent's code for math and data questions) in a separate process.

Layers, each of which contains a different escape on its own:

* **namespaces** (``unshare -rnpf --mount-proc --kill-child``): no network (an empty network
  namespace: sockets fail with "Network is unreachable"), its own PID namespace (the code is PID 1,
  cannot see or signal the agent's process, and all its children die with it);
* **resource limits** set in the child (``resource.setrlimit``): CPU seconds, address space,
  processes, file size (also caps stdout/stderr, which go to files), open files; a wall-clock limit
  kills the whole process group. (The kernel does not apply the process limit to real uid 0: run as
  root, a fork bomb is stopped by the audit hook below and the PID namespace, not by the limit);
* **an audit hook** (PEP 578) installed before the code runs: reading outside the working directory
  and Python's own installation, writing outside the working directory, sockets, subprocesses,
  ``os.fork``/``exec``, signals and ``ctypes`` are refused with a ``PermissionError``;
* a fresh temporary working directory, deleted afterwards, and an isolated interpreter (``-I``).

Where the OS does not allow unprivileged namespaces, :func:`run_python` refuses (a result with
``error`` saying so) unless ``SandboxLimits(require_namespaces=False)``: the documented weaker mode
with resource limits and the audit hook only (no network isolation below Python, no PID isolation).
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..tools import Tool

__all__ = ["SandboxLimits", "SandboxResult", "run_python", "python_tool", "namespaces_available"]

_UNSHARE = ("unshare", "-rnpf", "--mount-proc", "--kill-child")


@dataclass(frozen=True)
class SandboxLimits:
    """Limits of one run. Sizes in bytes, times in seconds."""

    cpu_seconds: int = 5
    wall_seconds: float = 10.0
    memory_bytes: int = 512 * 2**20
    processes: int = 16  # counted per user, so also a cap on the user's other processes' growth
    file_bytes: int = 2 * 2**20  # any file the code writes, stdout and stderr included
    open_files: int = 64
    max_output_chars: int = 4000  # of stdout and of stderr, in the result
    require_namespaces: bool = True


@dataclass
class SandboxResult:
    """What happened: ``ok`` when the code exited with status 0 within its limits."""

    ok: bool
    exit_code: int | None
    stdout: str = ""
    stderr: str = ""
    truncated: bool = False
    killed: str | None = None  # "wall_clock", or the signal that ended it (SIGKILL, SIGXCPU, SIGXFSZ, ...)
    error: str | None = None  # why it did not run, or what stopped it
    seconds: float = 0.0
    isolation: str = "namespaces"

    def observation(self) -> dict[str, Any]:
        """The JSON an agent reads."""
        shown = {"ok": self.ok, "exit_code": self.exit_code}
        optional = {"stdout": self.stdout, "stderr": self.stderr, "truncated": self.truncated,
                    "killed": self.killed, "error": self.error}
        shown.update((k, v) for k, v in optional.items() if v)  # empty fields would only cost tokens
        return shown


@functools.lru_cache(maxsize=1)
def namespaces_available() -> bool:
    """Whether ``unshare`` can make user, network and PID namespaces here."""
    if shutil.which("unshare") is None:
        return False
    try:
        done = subprocess.run([*_UNSHARE, "true"], capture_output=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return False
    return done.returncode == 0


# PID 1 of the sandbox: forks the worker, which sets its limits and the audit hook and runs the code;
# PID 1 records how the worker ended (a signal is otherwise lost: unshare reports it as status 1).
_BOOT = r"""
import json, os, resource, sys, traceback
cfg = json.loads(sys.argv[1])
worker = os.fork()
if worker:
    _, status = os.waitpid(worker, 0)
    end = {"signal": os.WTERMSIG(status) if os.WIFSIGNALED(status) else None,
           "exit": os.WEXITSTATUS(status) if os.WIFEXITED(status) else None}
    with open(cfg["status"], "w") as f:
        json.dump(end, f)
    os._exit(end["exit"] if end["exit"] is not None else 128 + end["signal"])
for name, value in cfg["rlimits"].items():
    resource.setrlimit(getattr(resource, name), (value, value))
work = os.path.realpath(cfg["work"])
readable = tuple(os.path.realpath(p) for p in cfg["readable"]) + (work,)
blocked = ("socket.", "subprocess.", "os.system", "os.exec", "os.posix_spawn", "os.spawn", "os.fork",
           "os.forkpty", "os.kill", "os.killpg", "signal.pthread_kill", "ctypes.", "pty.", "os.chdir",
           "os.symlink", "os.link", "shutil.", "sys.addaudithook")
def inside(path, roots):
    try:
        real = os.path.realpath(os.fsdecode(path))
    except Exception:
        return False
    return any(real == r or real.startswith(r.rstrip("/") + "/") for r in roots)
def hook(event, args):
    if event == "open":
        path, mode, flags = args
        if isinstance(path, int):
            return
        writing = any(c in str(mode or "") for c in "wax+") or (isinstance(flags, int) and flags & (os.O_WRONLY | os.O_RDWR))
        if not inside(path, (work,) if writing else readable):
            raise PermissionError(f"sandbox: {'writing' if writing else 'reading'} {path!r} is not allowed")
    elif event in ("os.remove", "os.rename", "os.rmdir", "os.mkdir", "os.chmod", "os.chown", "os.truncate",
                   "os.utime", "os.listdir", "os.scandir"):
        path = args[0] if args else "."
        roots = readable if event in ("os.listdir", "os.scandir") else (work,)
        if not isinstance(path, int) and not inside(path, roots):
            raise PermissionError(f"sandbox: {event} on {path!r} is not allowed")
    elif event.startswith(blocked):
        raise PermissionError(f"sandbox: {event} is not allowed")
code = open(os.path.join(work, "main.py"), encoding="utf-8").read()
del cfg
sys.addaudithook(hook)
sys.argv = ["main.py"]
status = 0
try:
    exec(compile(code, "main.py", "exec"), {"__name__": "__main__"})
except SystemExit as exc:
    status = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
except BaseException:
    traceback.print_exc()
    status = 1
try:
    sys.stdout.flush()
    sys.stderr.flush()
finally:
    os._exit(status)
"""


def _readable_roots() -> list[str]:
    """Python's installation: the code may import the standard library (and installed packages)."""
    roots = {sys.prefix, sys.base_prefix, sys.exec_prefix, os.path.dirname(os.__file__)}
    return sorted(r for r in roots if r)


def _read_capped(path: Path, limit: int, tail: bool = False) -> tuple[str, bool]:
    """At most ``limit`` characters of a file: its head, or its tail (where a traceback ends)."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        if tail:
            f.seek(max(0, size - limit * 4))
        data = f.read(limit * 4)
    text = data.decode("utf-8", errors="replace")
    if len(text) <= limit and len(data) == size:
        return text, False
    return ("[... output truncated]\n" + text[-limit:]) if tail else (text[:limit] + "\n[... output truncated]"), True


def run_python(code: str, limits: SandboxLimits | None = None) -> SandboxResult:
    """Run ``code`` in a fresh sandboxed process (see the module docstring); never raises for
    anything the code does."""
    limits = limits or SandboxLimits()
    isolated = namespaces_available()
    if not isolated and limits.require_namespaces:
        return SandboxResult(False, None, error="refused: this OS does not allow unprivileged user, network and "
                             "PID namespaces (unshare -rnpf); pass SandboxLimits(require_namespaces=False) for the "
                             "weaker mode (resource limits and an audit hook only)", isolation="none")
    work = Path(tempfile.mkdtemp(prefix="mor_ext-sandbox-"))
    outputs = Path(tempfile.mkdtemp(prefix="mor_ext-sandbox-out-"))  # outside the code's reach
    try:
        (work / "main.py").write_text(code, encoding="utf-8")
        config = {"work": str(work), "readable": _readable_roots(), "status": str(outputs / "status"), "rlimits": {
            "RLIMIT_CPU": limits.cpu_seconds, "RLIMIT_AS": limits.memory_bytes, "RLIMIT_NPROC": limits.processes,
            "RLIMIT_FSIZE": limits.file_bytes, "RLIMIT_NOFILE": limits.open_files, "RLIMIT_CORE": 0}}
        command = [sys.executable, "-I", "-c", _BOOT, json.dumps(config)]
        if isolated:
            command = [*_UNSHARE, "--", *command]
        env = {"PATH": "/usr/bin:/bin", "LANG": "C.UTF-8", "PYTHONIOENCODING": "utf-8", "HOME": str(work)}
        start = time.perf_counter()
        with open(outputs / "stdout", "wb") as out, open(outputs / "stderr", "wb") as err:
            proc = subprocess.Popen(command, cwd=work, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                                    start_new_session=True)
            killed = None
            try:
                proc.wait(timeout=limits.wall_seconds)
            except subprocess.TimeoutExpired:
                killed = "wall_clock"
            finally:
                try:  # everything it started, whether it finished or not
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait()
        seconds = time.perf_counter() - start
        stdout, cut_out = _read_capped(outputs / "stdout", limits.max_output_chars)
        stderr, cut_err = _read_capped(outputs / "stderr", limits.max_output_chars, tail=True)
        try:
            end = json.loads((outputs / "status").read_text())
        except (OSError, ValueError):  # the wall clock (or something outside) killed PID 1 first
            end = {"signal": None, "exit": None}
        code_ = end["exit"]
        if killed is None and end["signal"]:
            try:
                killed = signal.Signals(end["signal"]).name
            except ValueError:
                killed = f"signal {end['signal']}"
        if killed is None and code_ is None:
            killed, code_ = "unknown", proc.returncode
        error = None
        if killed == "wall_clock":
            error = f"killed after {limits.wall_seconds:g} s of wall-clock time"
        elif killed == "SIGXCPU":
            error = f"killed after {limits.cpu_seconds} s of CPU time"
        elif killed == "SIGXFSZ":
            error = f"killed for writing more than {limits.file_bytes} bytes to a file or its output"
        elif killed:
            error = f"killed by {killed}"
        elif "File too large" in stderr:  # Python ignores SIGXFSZ: the write fails instead
            error = f"stopped for writing more than {limits.file_bytes} bytes to a file or its output"
        elif "MemoryError" in stderr:
            error = f"ran out of its {limits.memory_bytes // 2**20} MiB of memory"
        elif "PermissionError: sandbox:" in stderr:
            error = "the code tried something the sandbox does not allow (see stderr)"
        ok = killed is None and code_ == 0
        return SandboxResult(ok, code_ if killed is None else None, stdout, stderr, cut_out or cut_err, killed,
                             error, seconds, "namespaces" if isolated else "rlimits+audit")
    finally:
        shutil.rmtree(work, ignore_errors=True)
        shutil.rmtree(outputs, ignore_errors=True)


def python_tool(limits: SandboxLimits | None = None, name: str = "run_python") -> Tool:
    """The sandbox as an agent tool: ``{"code": "..."}`` -> stdout, stderr, exit code, what stopped it."""
    limits = limits or SandboxLimits()

    def run(code: str) -> dict[str, Any]:
        return run_python(code, limits).observation()

    return Tool(name, "Run Python code in a sandbox (no network, no files outside its directory, limited CPU time "
                "and memory) and return what it printed. Use print() for the answer.",
                {"type": "object", "properties": {"code": {"type": "string", "description": "Python source code"}},
                 "required": ["code"]}, fn=run, domain="code")
