"""Synthetic multi-role training trajectories over the real tools of :mod:`mor_ext.tools.catalogue`.

:func:`generate` builds varied, correct trajectories from templates: several phrasings per query,
randomised values, templated but varied reasoner thoughts, and observations produced by actually
running the tools with :func:`mor_ext.tools.execute`; the summarizer's answer states the
executed result. Four kinds, mixed in configurable proportions (:data:`DEFAULT_MIX`):

* ``single``: one call (reasoner -> executor -> observation -> reasoner -> summarizer);
* ``multi_step``: two calls in sequence, the second using the first call's result (convert, then
  compute; look up, then convert; ...);
* ``parallel``: one executor turn with 2-3 independent calls; its observation is the JSON list of
  their observations, in call order (:func:`mor_ext.tools.observation_text`);
* ``no_tool``: no tool applies; the reasoner goes straight to the summarizer, who answers from
  general knowledge or declines (live data, real-world actions).

Each trajectory offers the needed tools plus 2-5 random distractor tools, in random order, and has
``meta = {"source": "synthetic", "kind": ...}``. Output is deterministic for a seed. Before
returning, :func:`generate` checks the data against BFCL (evaluation data) with
:func:`mor_ext.data.decontamination.assert_clean` and refuses to return contaminated data.

    formatting.py  how values read in text          tasks.py     the single-call task table
    chains.py      the two-call task table          phrasing.py  no-tool requests, reasoner phrasings
    generator.py   :func:`generate`

Imports ``mor_ext.tools`` (the catalogue and its executor) and the rest of ``mor_ext.data``.
"""

from .generator import DEFAULT_MIX, KINDS, generate
from .tasks import result_text, single_tool_tasks

__all__ = ["KINDS", "DEFAULT_MIX", "generate", "result_text", "single_tool_tasks"]
