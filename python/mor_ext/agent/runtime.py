""":class:`Agent`: a MoR-patched model, its tokenizer and tools, answering queries role by role.

The reasoner, executor and summarizer take turns inside one model and one KV cache; only new tokens
(headers, observations, generated text) ever run through the model, each with its role id. The
per-episode logic is :class:`~.episode.Episode`; the decoding loop is :func:`~.batch.run_episodes`
(a single episode is a batch of one).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

import torch

from ..data.tokenize import RoleTokenizer
from ..spec import MoRSpec
from ..tools import Tool, ToolRegistry
from .batch import BatchResult, TokenChooser, run_episodes
from .episode import AgentConfig, Episode, EpisodeResult, Stream

__all__ = ["Agent", "role_encoder"]


class _OneRole:
    """Role ids of a one-role ablation: in training every role's tokens ran under role 0."""

    def role_index(self, name: str) -> int:
        return 0


def role_encoder(model: torch.nn.Module, tokenizer) -> RoleTokenizer:
    """The :class:`RoleTokenizer` that gives ``model``'s tokens the role ids it was trained with: its
    MoR spec, context role and role scheme; every role turn under role 0 for a one-role ablation; for a model
    without MoR (the base, a merged LoRA) the MoRAgent ids, which the decoder does not pass on."""
    config = getattr(model, "mor_config", None)
    if config is None:
        return RoleTokenizer(tokenizer, MoRSpec.moragent(), "reasoner")
    spec = config.spec
    if len(spec.roles) == 1:
        return RoleTokenizer(tokenizer, _OneRole(), config.context_role)  # type: ignore[arg-type]
    return RoleTokenizer(tokenizer, spec, config.context_role, scheme=config.scheme)


class Agent:
    """An agent over a patched ``model`` (:func:`mor_ext.patch`), its ``tokenizer`` and ``tools``.

    ``tools``: a registry or any iterable of :class:`~mor_ext.tools.Tool` (e.g. the sandbox's
    :func:`~.sandbox.python_tool`, an MCP server's tools from :class:`~.mcp_tools.MCPToolServer`).
    ``system``: the system prompt the model was trained with (the tools are rendered after it).
    ``choose``: replaces sampling, ``(logits, episode) -> token`` (tests force scripted outputs).
    ``max_tools``: with more tools than that, each query first selects a category of them
    hierarchically (:func:`~.hierarchy.choose_tools`; ``categories`` maps tool names to categories,
    else they are derived from the names) and its episode is offered that category's tools only.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, tools: Mapping[str, Tool] | Iterable[Tool] = (), *,
                 system: str | None = None, config: AgentConfig | None = None, encoder: RoleTokenizer | None = None,
                 choose: TokenChooser | None = None, max_tools: int | None = None,
                 categories: Mapping[str, str] | None = None) -> None:
        mor_config = getattr(model, "mor_config", None)
        if mor_config is None:
            raise ValueError("Agent needs a MoR-patched model (mor_ext.patch or mor_ext.load_adapter)")
        self.model, self.tokenizer = model, tokenizer
        self.tools = ToolRegistry.of(tools)
        self.system = system
        self.config = config or AgentConfig()
        self.encoder = encoder or role_encoder(model, tokenizer)
        self.choose = choose
        pad = tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else 0
        self.max_tools, self.categories = max_tools, categories

    def episode(self, query: str, *, id: str | None = None, stream: Stream | None = None,
                tools: Mapping[str, Tool] | None = None) -> Episode:
        """A new, not yet started episode for ``query`` (offered ``tools``, default all the agent's)."""
        return Episode(self.encoder, self.tools if tools is None else tools, query, self.config, system=self.system,
                       id=id, stream=stream)

    def offered_tools(self, queries: Sequence[str], batch_size: int = 8) -> list[dict[str, Tool]]:
        """The tools each query's episode is offered: all, or with ``max_tools`` the category the
        selector picks (none where it picks no category)."""
        if self.max_tools is None or len(self.tools) <= self.max_tools:
            return [dict(self.tools)] * len(queries)
        from .hierarchy import choose_tools

        chosen = choose_tools(self.model, self.encoder, queries, [list(self.tools.values())] * len(queries),
                              self.max_tools, system=self.system, categories=self.categories, batch_size=batch_size,
                              max_turn_tokens=self.config.max_turn_tokens, max_tokens=self.config.max_tokens,
                              pad_id=self.pad_id)
        return [{t.name: t for t in tools or ()} for tools in chosen]

    def run(self, query: str, *, stream: Stream | None = None, id: str | None = None) -> EpisodeResult:
        """Answer one query; ``stream(role, text)`` sees each role's text as it is decoded and each
        observation."""
        return self.run_batch([query], batch_size=1, stream=stream, ids=[id]).episodes[0]

    def run_batch(self, queries: Sequence[str], *, batch_size: int = 8, ids: Sequence[str | None] | None = None,
                  stream: Stream | None = None, refill_limit: int | None = None) -> BatchResult:
        """Answer many queries, ``batch_size`` rows at a time (see :mod:`.batch`); the episodes come
        back in query order with the run's throughput."""
        ids = list(ids) if ids is not None else [None] * len(queries)
        offered = self.offered_tools(queries, batch_size)

        def make(index: int) -> Episode:
            return self.episode(queries[index], id=ids[index], stream=stream, tools=offered[index])

        return run_episodes(self.model, make, len(queries), batch_size=batch_size, choose=self.choose,
                            pad_id=self.pad_id, refill_limit=refill_limit)
