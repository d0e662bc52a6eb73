"""Procedurally built tool families for synthetic training data: over a thousand distinct tools.

    spec.py         :class:`ToolSpec`: a tool plus its request templates; :func:`make_tool`
    rows.py         compact formula rows (parameter kinds -> JSON type and value sampler)
    conversions.py  one tool per unit pair of 12 dimensions; currency into a fixed target
    formulas.py     plane shapes, solids, finance formulas, physics/health, statistics, number theory
    textdates.py    string utilities, calendar arithmetic
    entities.py     lookups in small built-in tables (one tool per table attribute)
    records.py      booking/records APIs (search, book, cancel, status, change, quote) with nested
                    objects, arrays of enums, optional parameters and defaults; simulated backend
    stdlib.py       real standard-library functions made tools by introspection (``pystd_*``)
    workspace.py    program-style APIs (``NumberList.sortValues``) over named variables of a fixed table:
                    the argument is a variable's name given in the request's prose

Every tool has a real, deterministic implementation (no network, no clock, no files). Names are
chosen not to collide with BFCL function names; ``mor_ext.data.decontamination`` checks them.

The split (:data:`HELDOUT_FAMILIES`): whole families are held out of training so that tool
generalisation can be measured on tools never seen in training; :func:`specs` returns either side.

Imports only ``mor_ext.tools`` (the tool layer and the catalogue's tables).
"""

from __future__ import annotations

import functools

from .spec import REFUSAL_AXES, Fields, ToolSpec, make_tool, prop

__all__ = ["ToolSpec", "Fields", "REFUSAL_AXES", "SPLITS", "HELDOUT_FAMILIES", "make_tool", "prop", "all_specs", "specs",
           "families"]

SPLITS = ("train", "heldout", "all")

# Families never used for training: one of each kind (a conversion dimension, shape formulas,
# lookups, text, booking services, stdlib modules), each with same-tool parallel requests and
# siblings for near-miss refusals. Chosen by hand so that both splits cover every pattern.
HELDOUT_FAMILIES = frozenset({
    "convert_pressure", "convert_angle", "solids", "lookup_river", "lookup_instrument", "stdlib_colorsys",
    "stdlib_textwrap", "spa_session", "ferry_crossing", "vet_checkup", "physics_health",
})


@functools.lru_cache(maxsize=1)
def all_specs() -> tuple[ToolSpec, ...]:
    """Every family's specs, in a fixed order (built on first use, about 0.1 s)."""
    from . import conversions, entities, formulas, records, stdlib, textdates, workspace

    out = (conversions.SPECS + formulas.SPECS + textdates.SPECS + entities.SPECS + records.SPECS + stdlib.SPECS
           + workspace.SPECS)
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        dupes = sorted({n for n in names if names.count(n) > 1})
        raise RuntimeError(f"duplicate tool names in the families: {dupes}")
    return out


def specs(split: str = "train") -> tuple[ToolSpec, ...]:
    """The specs of one split: ``train`` (families not held out), ``heldout`` or ``all``."""
    if split not in SPLITS:
        raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
    if split == "all":
        return all_specs()
    held = split == "heldout"
    return tuple(s for s in all_specs() if (s.family in HELDOUT_FAMILIES) == held)


def families(split: str = "all") -> dict[str, tuple[ToolSpec, ...]]:
    """Family name -> its specs, in order."""
    out: dict[str, list[ToolSpec]] = {}
    for s in specs(split):
        out.setdefault(s.family, []).append(s)
    return {k: tuple(v) for k, v in out.items()}
