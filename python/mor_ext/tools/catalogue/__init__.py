"""The built-in catalogue: real, deterministic tools, one module per domain.

    common.py    rounding, date/clock parsing, schema pieces (:func:`~.common.define`)
    math.py      statistics and arithmetic            units.py   unit and (fixed-rate) currency conversion
    dates.py     dates, clock times, time zones       text.py    text utilities
    lookup.py    elements, countries, planets         geo.py     geometry, great-circle distance
    finance.py   interest, loans, prices              everyday.py  BMI, travel time

Implementations are side-effect free and deterministic: no network, no clock, no files, no
``eval``/``exec``. Values that change in the real world come from fixed tables: currency rates are
FICTIONAL, time zones ignore daylight saving, moon counts are as of 2024.

Tool names are descriptive and chosen not to collide with BFCL function names (BFCL is evaluation
data); ``mor_ext.data.decontamination`` checks this. :data:`CATALOGUE` keeps the order below: the
synthetic generator samples distractor tools from it, so reordering changes generated data.

Imports only ``mor_ext.tools``.
"""

from __future__ import annotations

from ..registry import ToolRegistry
from . import dates, everyday, finance, geo, lookup, math, text, units
from .dates import UTC_OFFSET_MINUTES
from .geo import EARTH_RADIUS_KM
from .lookup import COUNTRIES, ELEMENT_PROPERTIES, ELEMENTS, PLANET_FACTS, PLANETS
from .units import (
    AREA_TO_SQUARE_METERS,
    CURRENCY_PER_USD,
    DATA_SIZE_TO_BYTES,
    LENGTH_TO_METERS,
    MASS_TO_KILOGRAMS,
    SPEED_TO_METERS_PER_SECOND,
    TEMPERATURE_SCALES,
    VOLUME_TO_LITERS,
)

__all__ = [
    "CATALOGUE", "LENGTH_TO_METERS", "MASS_TO_KILOGRAMS", "VOLUME_TO_LITERS", "SPEED_TO_METERS_PER_SECOND",
    "DATA_SIZE_TO_BYTES", "AREA_TO_SQUARE_METERS", "TEMPERATURE_SCALES", "CURRENCY_PER_USD",
    "UTC_OFFSET_MINUTES", "ELEMENTS", "ELEMENT_PROPERTIES", "COUNTRIES", "PLANETS", "PLANET_FACTS",
    "EARTH_RADIUS_KM",
]

CATALOGUE = ToolRegistry(t for domain in (math, units, dates, text, lookup, geo, finance, everyday)
                         for t in domain.DOMAIN_TOOLS)
