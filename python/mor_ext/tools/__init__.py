"""Tools an agent can call: one definition, one validator, one executor, one catalogue.

    tool.py        :class:`Tool` (name, description, JSON-schema parameters, the callable) and the
                   :func:`tool` decorator that derives the schema from type hints and the docstring
    validation.py  argument coercion (a small documented set) and ``jsonschema`` validation
    executor.py    :func:`execute` -> :class:`ToolResult`: every failure is a result, never an exception
    registry.py    :class:`ToolRegistry`, name -> Tool (what "the tools" means everywhere)
    catalogue/     the built-in deterministic tools by domain (:data:`~.catalogue.CATALOGUE`)
    families/      1,000+ procedurally built tools with request templates for synthetic data, and
                   the train / held-out split of tool families (:func:`~.families.specs`)

Layering: this package imports nothing of ``mor_ext`` (only the standard library, ``jsonschema`` and
``docstring-parser``), so the data pipeline, the demo and the agent runtime can all build on it.
"""

from .executor import ERROR_KINDS, ToolResult, execute, observation_text
from .registry import ToolRegistry
from .tool import Tool, tool
from .validation import ArgumentError, CheckedArguments, Coercion, check_arguments, coerce_arguments, validate_arguments

__all__ = [
    "Tool", "tool", "ToolRegistry", "ToolResult", "ERROR_KINDS", "execute", "observation_text",
    "ArgumentError", "Coercion", "CheckedArguments", "check_arguments", "coerce_arguments", "validate_arguments",
]
