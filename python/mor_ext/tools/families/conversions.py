"""Unit conversions, one tool per (from, to) unit pair of each dimension, and currency conversion
into one fixed target currency per tool (the FICTIONAL rates of the catalogue)."""

from __future__ import annotations

import random
from itertools import permutations

from ..catalogue.common import money, rounded
from ..catalogue import units as catalogue_units
from .spec import ToolSpec, make_tool, prop

__all__ = ["SPECS", "DIMENSIONS"]

# dimension: (factor to a base unit per unit key, words per unit key, value sampler range)
_WORDS = {
    "mm": "millimeters", "cm": "centimeters", "m": "meters", "km": "kilometers", "in": "inches", "ft": "feet",
    "yd": "yards", "mi": "miles", "nmi": "nautical miles",
    "mg": "milligrams", "g": "grams", "kg": "kilograms", "t": "metric tons", "oz": "ounces", "lb": "pounds",
    "st": "stone",
    "ml": "milliliters", "l": "liters", "m3": "cubic meters", "tsp": "teaspoons", "tbsp": "tablespoons",
    "cup": "cups", "pint": "pints", "quart": "quarts", "gal": "gallons",
    "m/s": "meters per second", "km/h": "kilometers per hour", "mph": "miles per hour", "knot": "knots",
    "ft/s": "feet per second",
    "bit": "bits", "B": "bytes", "KB": "kilobytes", "MB": "megabytes", "GB": "gigabytes", "TB": "terabytes",
    "KiB": "kibibytes", "MiB": "mebibytes", "GiB": "gibibytes", "TiB": "tebibytes",
    "mm2": "square millimeters", "cm2": "square centimeters", "m2": "square meters", "km2": "square kilometers",
    "ha": "hectares", "acre": "acres", "in2": "square inches", "ft2": "square feet", "mi2": "square miles",
    "s": "seconds", "min": "minutes", "h": "hours", "day": "days", "week": "weeks",
    "Pa": "pascals", "kPa": "kilopascals", "bar": "bars", "atm": "atmospheres", "psi": "pounds per square inch",
    "mmHg": "millimeters of mercury",
    "J": "joules", "kJ": "kilojoules", "cal": "calories", "kcal": "kilocalories", "Wh": "watt-hours",
    "kWh": "kilowatt-hours", "BTU": "British thermal units",
    "deg": "degrees", "rad": "radians", "grad": "gradians", "turn": "full turns", "arcmin": "arcminutes",
    "W": "watts", "kW": "kilowatts", "hp": "horsepower", "BTU/h": "BTU per hour",
    "l/s": "liters per second", "l/min": "liters per minute", "m3/h": "cubic meters per hour",
    "gal/min": "gallons per minute", "N": "newtons", "kN": "kilonewtons", "lbf": "pounds-force",
    "kgf": "kilograms-force", "dyn": "dynes", "Nm": "newton-meters", "lbf_ft": "pound-feet", "kgf_m": "kilogram-force meters",
    "m/s2": "meters per second squared", "ft/s2": "feet per second squared", "g0": "standard gravities",
    "Hz": "hertz", "kHz": "kilohertz", "MHz": "megahertz", "GHz": "gigahertz", "rpm": "revolutions per minute",
}
_SLUG = {"m/s": "mps", "km/h": "kmh", "ft/s": "fps", "BTU/h": "btuh", "l/s": "lps", "l/min": "lpm", "m3/h": "m3ph",
         "gal/min": "gpm", "m/s2": "mps2", "ft/s2": "fps2"}

DIMENSIONS: dict[str, dict[str, float]] = {
    "length": catalogue_units.LENGTH_TO_METERS, "mass": catalogue_units.MASS_TO_KILOGRAMS,
    "volume": catalogue_units.VOLUME_TO_LITERS, "speed": catalogue_units.SPEED_TO_METERS_PER_SECOND,
    "data_size": catalogue_units.DATA_SIZE_TO_BYTES, "area": catalogue_units.AREA_TO_SQUARE_METERS,
    "duration": {"s": 1.0, "min": 60.0, "h": 3600.0, "day": 86400.0, "week": 604800.0},
    "pressure": {"Pa": 1.0, "kPa": 1e3, "bar": 1e5, "atm": 101325.0, "psi": 6894.757293168, "mmHg": 133.322387415},
    "energy": {"J": 1.0, "kJ": 1e3, "cal": 4.184, "kcal": 4184.0, "Wh": 3600.0, "kWh": 3.6e6, "BTU": 1055.05585262},
    "angle": {"deg": 1.0, "rad": 57.29577951308232, "grad": 0.9, "turn": 360.0, "arcmin": 1 / 60},
    "power": {"W": 1.0, "kW": 1e3, "hp": 745.69987158227, "BTU/h": 0.29307107},
    "flow_rate": {"l/s": 1.0, "l/min": 1 / 60, "m3/h": 1 / 3.6, "gal/min": 3.785411784 / 60},
    "force": {"N": 1.0, "kN": 1e3, "lbf": 4.4482216152605, "kgf": 9.80665, "dyn": 1e-5},
    "torque": {"Nm": 1.0, "lbf_ft": 1.3558179483314, "kgf_m": 9.80665},
    "acceleration": {"m/s2": 1.0, "ft/s2": 0.3048, "g0": 9.80665},
    "frequency": {"Hz": 1.0, "kHz": 1e3, "MHz": 1e6, "GHz": 1e9, "rpm": 1 / 60},
}


def _slug(unit: str) -> str:
    return _SLUG.get(unit, unit).lower()


def _value(rng: random.Random) -> int | float:
    return rng.choice((rng.randint(1, 500), round(rng.uniform(0.5, 200), 1), rng.randint(1, 20)))


def _sample(rng: random.Random) -> dict:
    return {"value": _value(rng)}


def _pair_spec(dimension: str, table: dict[str, float], a: str, b: str) -> ToolSpec:
    wa, wb = _WORDS[a], _WORDS[b]
    factor = table[a] / table[b]

    def convert(value: float) -> float:
        return rounded(value * factor, 6)

    name = f"{dimension}_{_slug(a)}_into_{_slug(b)}"
    tool = make_tool(name, f"Convert a {dimension.replace('_', ' ')} from {wa} ({a}) to {wb} ({b}).",
                     {"value": prop("number", f"The amount in {wa}.")}, convert, "units")
    return ToolSpec(
        tool, f"convert_{dimension}", _sample,
        ask=(f"How many {wb} is {{value}} {wa}?", f"Convert {{value}} {wa} to {wb}.",
             f"I have {{value}} {wa}; what is that in {wb}?"),
        item=f"{{value}} {wa} in {wb}", label=f"{wa} converted to {wb}", does=f"converts {wa} to {wb}",
        axis="wrong_object", vary="value",
        many=(f"Convert {{list}} {wa} to {wb}.", f"What are {{list}} {wa} in {wb}?"),
        partial={"value": f"Convert some {wa} to {wb} for me."})




def _currency_spec(target: str) -> ToolSpec:
    sources = [c for c in catalogue_units.CURRENCY_PER_USD if c != target]

    def convert(amount: float, from_currency: str) -> float:
        return money(amount / catalogue_units.CURRENCY_PER_USD[from_currency] * catalogue_units.CURRENCY_PER_USD[target])

    def sample(rng: random.Random) -> dict:
        return {"amount": rng.choice((rng.randint(5, 5000), round(rng.uniform(1, 900), 2))),
                "from_currency": rng.choice(sources)}

    tool = make_tool(f"fixed_rate_price_in_{target.lower()}",
                     f"Convert an amount of money into {target} using a FIXED, fictional built-in rate table "
                     "(not live rates).",
                     {"amount": prop("number", "The amount of money.", minimum=0),
                      "from_currency": prop("string", "ISO 4217 code of the amount's currency.", enum=sources)},
                     convert, "currency")
    return ToolSpec(
        tool, "currency_into_target", sample,
        ask=(f"What is {{amount}} {{from_currency}} in {target} at the built-in fixed rate?",
             f"Convert {{amount}} {{from_currency}} into {target}."),
        item=f"{{amount}} {{from_currency}} in {target}", label=f"the amount in {target}",
        does=f"converts money into {target} only", axis="wrong_object", vary="amount",
        many=(f"Convert {{list}} {{from_currency}} into {target}.",),
        partial={"amount": f"How much {target} would I get for my {{from_currency}}?",
                 "from_currency": f"Convert {{amount}} into {target}, please."})


SPECS: tuple[ToolSpec, ...] = tuple(
    _pair_spec(dim, table, a, b) for dim, table in DIMENSIONS.items() for a, b in permutations(table, 2)
) + tuple(_currency_spec(c) for c in catalogue_units.CURRENCY_PER_USD)
