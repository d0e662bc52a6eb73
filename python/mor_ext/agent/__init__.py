"""The role-switching agent runtime: one MoR-patched model, one KV cache, real tools.

The reasoner, executor and summarizer take turns inside one model; every token runs under the role
that produced it (context under ``config.context_role``), exactly as in training, and only new
tokens ever go through the model.

    runtime.py    :class:`Agent` (model + tokenizer + tools): ``run(query)``, ``run_batch(queries)``;
                  :func:`role_encoder` (the role ids a model was trained with: MoR, one role, none)
    episode.py    :class:`Episode`, one episode as a token state machine (turn ends, observations,
                  limits) and its :class:`EpisodeResult` (a training-format ``Trajectory``);
                  :class:`AgentConfig`
    decoding.py   :class:`CacheDecoder`: per-row incremental decoding on one KV cache; sampling
    batch.py      :func:`run_episodes`: the decoding loop, many episodes per batch, rows refilled or
                  dropped as they finish; :class:`BatchResult` with throughput
    parsing.py    executor text -> tool calls (single object, list, code fences, trailing text)
    selection.py  tool selection (docs/spec.md §7): the name constraint, AgentFlux's majority vote
    arguments.py  ``constrain_args``: the turn's grammar from the tools' schemas (llguidance's masks)
    hierarchy.py  hierarchical selection: a category of tools first, then a tool in it
    sandbox.py    :func:`run_python` in a separate, resource-limited, network-less process, and the
                  :func:`python_tool` that exposes it to the agent
    mcp_tools.py  tools of an MCP server (official ``mcp`` SDK, stdio), as :class:`~mor_ext.tools.Tool`
    mcp_server.py a small MCP server of our own (catalogue tools + the sandbox), for tests and demos
    command.py    ``mor-ext agent``

Layering: may import ``mor_ext.tools``, ``mor_ext.data`` (tokenize, trajectory), ``mor_ext.spec``,
``mor_ext.patching`` / ``mor_ext.generation`` (public helpers only), and in ``command.py`` the model
loaders and adapters; never ``demo``, ``train`` or ``cli`` (above it), and nothing below imports
this package. ``mcp`` and ``llguidance`` are optional dependencies (``pip install
mor_ext[agent]``), imported only by the MCP modules and ``arguments.py``.
"""

from .batch import BatchResult, run_episodes
from .decoding import CacheDecoder, sample_token
from .episode import ANSWERED, CALLED, NO_CALL, STEP_LIMIT, TOKEN_LIMIT, AgentConfig, Episode, EpisodeResult
from .parsing import ParsedCalls, parse_executor_output
from .runtime import Agent, role_encoder
from .sandbox import SandboxLimits, SandboxResult, python_tool, run_python

__all__ = [
    "Agent", "role_encoder", "AgentConfig", "Episode", "EpisodeResult", "ANSWERED", "STEP_LIMIT", "TOKEN_LIMIT", "CALLED",
    "NO_CALL",
    "BatchResult", "run_episodes", "CacheDecoder", "sample_token", "ParsedCalls", "parse_executor_output",
    "SandboxLimits", "SandboxResult", "python_tool", "run_python",
]
