"""Converters from public tool-use data formats into multi-role :class:`Trajectory` records.

Each ``from_<format>(record, *, record_id=None)`` turns one decoded source record into one trajectory
or raises :class:`TrajectoryError` naming the record (``record_id``, else the record's own ``id``) and
the source field it could not understand. :data:`CONVERTERS` maps format names to them and
:func:`convert_file` runs one over a whole file (JSON Lines, or one JSON array as these datasets ship).

Choices that hold for every format:

- **One episode per record.** A trajectory is one query answered with tools, so a multi-turn chat keeps
  its first user message and everything up to the next user message; later messages are dropped and
  counted in ``meta["dropped_messages"]``. (A follow-up question depends on the earlier exchange, so
  splitting it into a trajectory of its own would give a query that cannot be understood alone.)
- **No source system prompt.** The system prompts of these datasets teach their own call syntax
  (``<functioncall>``, ``[f(x=1)]``, ``Action:``), which contradicts the executor's JSON calls; only
  the tools they list are kept (``system`` is None) and the training template supplies its own.
- **Placeholders, marked.** What a source lacks (a reasoner's thought, an observation, a final answer)
  becomes a turn with content :data:`PLACEHOLDER`; ``meta["placeholder_turns"]`` lists their indices,
  ``meta["needs_completion"]`` the role turns a completer must write and ``meta["needs_observation"]``
  says a tool must be run. Such trajectories are not training-ready until completed.
- **Every called tool is declared.** A call of a tool the record does not list adds a Tool with an
  empty schema, named in ``meta["added_tools"]``.
- **Source schemas are normalised** to JSON schema: Python type names (``str``, ``dict``,
  ``List[int]``, ...) become JSON-schema types; a type that cannot be mapped is kept in
  ``"x-source-type"``.
- **Nothing is evaluated.** Python-like call syntax and Python-repr tool lists are read with
  ``ast.parse`` and a whitelist of literal nodes.

    calls.py      Python-like call syntax, read without evaluating
    schemas.py    source schemas -> JSON schema; tool lists in free text
    episode.py    the episode under construction, field readers, PLACEHOLDER
    glaive.py  xlam.py  toolace.py  toolbench.py    one module per source format
    files.py      CONVERTERS by name, convert_file, iter_source_records
"""

from .calls import parse_pythonic_calls
from .episode import PLACEHOLDER
from .files import CONVERTERS, convert_file, iter_source_records
from .glaive import from_glaive
from .toolace import from_toolace
from .toolbench import from_toolbench
from .xlam import from_xlam

__all__ = [
    "PLACEHOLDER", "CONVERTERS", "from_glaive", "from_xlam", "from_toolace", "from_toolbench",
    "convert_file", "parse_pythonic_calls", "iter_source_records",
]
