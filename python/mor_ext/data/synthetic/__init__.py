"""Synthetic multi-role training trajectories over real tools: the hand-written catalogue
(:mod:`mor_ext.tools.catalogue`) and the 1,000+ procedural tools of :mod:`mor_ext.tools.families`.

:func:`generate` builds varied, correct trajectories from templates; observations come from
actually running the tools (:func:`mor_ext.tools.execute`) and the summarizer states the results.
Each episode offers 1-4 tools (the needed ones plus distractors, often same-family siblings), like
BFCL. Kinds, mixed in configurable proportions (:data:`DEFAULT_MIX`):

* ``single``: one call (a quarter of them from the catalogue's hand-written tasks);
* ``multi_step``: two catalogue calls in sequence, the second using the first call's result;
* ``parallel_same``: one executor turn calling one tool 2-4 times with different arguments, the
  request in one of four surface forms ("A, B and C", "respectively", "for each of", a list);
* ``parallel_multiple``: one turn calling several tools, usually a same-tool group plus others;
* ``refusal_near_miss``: only same-family tools that cannot answer (wrong quantity, object or
  operation) are offered; the reasoner says why and goes to the summarizer;
* ``missing_argument``: the right tool is offered but a required value is missing; the summarizer
  asks for it;
* ``no_tool``: off-topic chat or requests for live data / real-world actions beside unrelated tools.

``split`` picks the tools: ``train`` or ``heldout`` (tool families never used in training, for
measuring tool generalisation). Output is deterministic for a seed and split. Episodes are redrawn
until their rendered text fits ``max_chars`` (about 768 SmolLM2 tokens) and their query shares no
n-gram with BFCL; :func:`generate` then checks the whole set and the tool library against BFCL with
:func:`mor_ext.data.decontamination.assert_clean` and refuses to return contaminated data.

    formatting.py  how catalogue values read in text   tasks.py     the catalogue's single-call tasks
    chains.py      the catalogue's two-call tasks      phrasing.py  no-tool requests, reasoner phrasings
    episodes.py    the family-based episode builders   report.py    :func:`pattern_report` of any set
    generator.py   :func:`generate`

Imports ``mor_ext.tools`` (the catalogue, the families and the executor) and the rest of ``mor_ext.data``.
"""

from .generator import DEFAULT_MIX, HELDOUT_MIX, KINDS, generate
from .report import format_report, pattern_report
from .tasks import result_text, single_tool_tasks

__all__ = ["KINDS", "DEFAULT_MIX", "HELDOUT_MIX", "generate", "pattern_report", "format_report", "result_text",
           "single_tool_tasks"]
