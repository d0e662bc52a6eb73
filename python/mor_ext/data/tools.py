"""A library of real, deterministic tools for synthetic agent trajectories, and their executor.

Every tool is a :class:`ToolSpec`: the :class:`~mor_ext.data.trajectory.Tool` the model sees (name,
description, JSON-schema parameters) plus a pure Python implementation. Implementations are
side-effect free and deterministic: no network, no clock, no files, no ``eval``/``exec``. Values
that would change in the real world come from fixed built-in tables:

* currency rates (:data:`CURRENCY_PER_USD`) are FICTIONAL, fixed illustrative rates, not market data;
* time zones (:data:`UTC_OFFSET_MINUTES`) are standard-time offsets; daylight saving is ignored;
* element, country and planet facts are small fixed tables (moon counts as of 2024).

:func:`execute` runs one :class:`~mor_ext.data.trajectory.ToolCall` and returns the observation as
JSON text, ``{"result": ...}`` or ``{"error": "..."}``. It never raises: an unknown tool, a missing,
unexpected or wrongly typed argument, a value outside the schema, or an exception inside the tool all
become error observations, so an agent loop can show them to the model. :func:`execute_all` runs the
calls of one executor turn and returns the single observation for that turn: one call's observation
as is, several calls' observations as a JSON list in call order.

Tool names are descriptive and chosen not to collide with BFCL function names (BFCL is evaluation
data); ``mor_ext.data.decontamination`` checks this.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import statistics
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .trajectory import Tool, ToolCall

__all__ = [
    "ToolSpec", "TOOLS", "DOMAINS", "execute", "execute_all", "tools_in_domain",
    "LENGTH_TO_METERS", "MASS_TO_KILOGRAMS", "VOLUME_TO_LITERS", "SPEED_TO_METERS_PER_SECOND",
    "DATA_SIZE_TO_BYTES", "AREA_TO_SQUARE_METERS", "TEMPERATURE_SCALES", "CURRENCY_PER_USD",
    "UTC_OFFSET_MINUTES", "ELEMENTS", "COUNTRIES", "PLANETS", "EARTH_RADIUS_KM",
]


@dataclass(frozen=True)
class ToolSpec:
    """One tool: what the model sees (``tool``), what runs (``fn``), and a valid sample call."""

    tool: Tool
    fn: Callable[..., Any]
    domain: str
    example: dict[str, Any] = field(default_factory=dict)  # a valid argument set (docs and tests)

    @property
    def name(self) -> str:
        return self.tool.name


# ------------------------------------------------------------------------------------- fixed tables
LENGTH_TO_METERS = {
    "mm": 0.001, "cm": 0.01, "m": 1.0, "km": 1000.0, "in": 0.0254, "ft": 0.3048, "yd": 0.9144,
    "mi": 1609.344, "nmi": 1852.0,
}
MASS_TO_KILOGRAMS = {
    "mg": 1e-6, "g": 0.001, "kg": 1.0, "t": 1000.0, "oz": 0.028349523125, "lb": 0.45359237,
    "st": 6.35029318,
}
VOLUME_TO_LITERS = {  # US customary units
    "ml": 0.001, "l": 1.0, "m3": 1000.0, "tsp": 0.00492892159375, "tbsp": 0.01478676478125,
    "cup": 0.2365882365, "pint": 0.473176473, "quart": 0.946352946, "gal": 3.785411784,
}
SPEED_TO_METERS_PER_SECOND = {
    "m/s": 1.0, "km/h": 1 / 3.6, "mph": 0.44704, "knot": 1852 / 3600, "ft/s": 0.3048,
}
DATA_SIZE_TO_BYTES = {
    "bit": 0.125, "B": 1.0, "KB": 1e3, "MB": 1e6, "GB": 1e9, "TB": 1e12,
    "KiB": 1024.0, "MiB": 1024.0**2, "GiB": 1024.0**3, "TiB": 1024.0**4,
}
AREA_TO_SQUARE_METERS = {
    "mm2": 1e-6, "cm2": 1e-4, "m2": 1.0, "km2": 1e6, "ha": 1e4, "acre": 4046.8564224,
    "in2": 0.00064516, "ft2": 0.09290304, "mi2": 2589988.110336,
}
TEMPERATURE_SCALES = ("celsius", "fahrenheit", "kelvin")

# FICTIONAL fixed rates (units of each currency per 1 USD), for reproducible examples only.
CURRENCY_PER_USD = {
    "USD": 1.0, "EUR": 0.9, "GBP": 0.8, "JPY": 150.0, "CHF": 0.88, "CAD": 1.35, "AUD": 1.5,
    "NZD": 1.65, "CNY": 7.2, "INR": 83.0, "KRW": 1350.0, "BRL": 5.0, "MXN": 17.0, "SEK": 10.5,
    "NOK": 10.6, "DKK": 6.9, "PLN": 4.0, "ZAR": 18.5, "TRY": 32.0, "THB": 36.0,
}

# Standard-time offsets from UTC in minutes; daylight saving time is deliberately ignored.
UTC_OFFSET_MINUTES = {
    "UTC": 0, "London": 0, "Lisbon": 0, "Paris": 60, "Berlin": 60, "Cairo": 120, "Helsinki": 120,
    "Moscow": 180, "Dubai": 240, "Karachi": 300, "Delhi": 330, "Kathmandu": 345, "Dhaka": 360,
    "Bangkok": 420, "Beijing": 480, "Singapore": 480, "Tokyo": 540, "Adelaide": 570, "Sydney": 600,
    "Auckland": 720, "Honolulu": -600, "Anchorage": -540, "Los_Angeles": -480, "Denver": -420,
    "Chicago": -360, "New_York": -300, "Sao_Paulo": -180, "St_Johns": -210,
}

# name: (symbol, atomic number, standard atomic mass, category, period, group)
ELEMENTS: dict[str, tuple[str, int, float, str, int, int]] = {
    "hydrogen": ("H", 1, 1.008, "nonmetal", 1, 1),
    "helium": ("He", 2, 4.0026, "noble gas", 1, 18),
    "lithium": ("Li", 3, 6.94, "alkali metal", 2, 1),
    "carbon": ("C", 6, 12.011, "nonmetal", 2, 14),
    "nitrogen": ("N", 7, 14.007, "nonmetal", 2, 15),
    "oxygen": ("O", 8, 15.999, "nonmetal", 2, 16),
    "fluorine": ("F", 9, 18.998, "halogen", 2, 17),
    "neon": ("Ne", 10, 20.18, "noble gas", 2, 18),
    "sodium": ("Na", 11, 22.99, "alkali metal", 3, 1),
    "magnesium": ("Mg", 12, 24.305, "alkaline earth metal", 3, 2),
    "aluminium": ("Al", 13, 26.982, "post-transition metal", 3, 13),
    "silicon": ("Si", 14, 28.085, "metalloid", 3, 14),
    "phosphorus": ("P", 15, 30.974, "nonmetal", 3, 15),
    "sulfur": ("S", 16, 32.06, "nonmetal", 3, 16),
    "chlorine": ("Cl", 17, 35.45, "halogen", 3, 17),
    "argon": ("Ar", 18, 39.948, "noble gas", 3, 18),
    "potassium": ("K", 19, 39.098, "alkali metal", 4, 1),
    "calcium": ("Ca", 20, 40.078, "alkaline earth metal", 4, 2),
    "iron": ("Fe", 26, 55.845, "transition metal", 4, 8),
    "copper": ("Cu", 29, 63.546, "transition metal", 4, 11),
    "zinc": ("Zn", 30, 65.38, "transition metal", 4, 12),
    "silver": ("Ag", 47, 107.87, "transition metal", 5, 11),
    "gold": ("Au", 79, 196.97, "transition metal", 6, 11),
}
ELEMENT_PROPERTIES = ("symbol", "atomic_number", "atomic_mass", "category", "period", "group")

# name: (capital, ISO 4217 currency code, continent)
COUNTRIES: dict[str, tuple[str, str, str]] = {
    "France": ("Paris", "EUR", "Europe"), "Germany": ("Berlin", "EUR", "Europe"),
    "Italy": ("Rome", "EUR", "Europe"), "Spain": ("Madrid", "EUR", "Europe"),
    "Portugal": ("Lisbon", "EUR", "Europe"), "Netherlands": ("Amsterdam", "EUR", "Europe"),
    "Austria": ("Vienna", "EUR", "Europe"), "Ireland": ("Dublin", "EUR", "Europe"),
    "Greece": ("Athens", "EUR", "Europe"), "Finland": ("Helsinki", "EUR", "Europe"),
    "Poland": ("Warsaw", "PLN", "Europe"), "Sweden": ("Stockholm", "SEK", "Europe"),
    "Norway": ("Oslo", "NOK", "Europe"), "Denmark": ("Copenhagen", "DKK", "Europe"),
    "Switzerland": ("Bern", "CHF", "Europe"), "United Kingdom": ("London", "GBP", "Europe"),
    "Japan": ("Tokyo", "JPY", "Asia"), "China": ("Beijing", "CNY", "Asia"),
    "India": ("New Delhi", "INR", "Asia"), "South Korea": ("Seoul", "KRW", "Asia"),
    "Thailand": ("Bangkok", "THB", "Asia"), "Turkey": ("Ankara", "TRY", "Asia"),
    "Australia": ("Canberra", "AUD", "Oceania"), "New Zealand": ("Wellington", "NZD", "Oceania"),
    "Canada": ("Ottawa", "CAD", "North America"), "United States": ("Washington, D.C.", "USD", "North America"),
    "Mexico": ("Mexico City", "MXN", "North America"), "Brazil": ("Brasilia", "BRL", "South America"),
    "Argentina": ("Buenos Aires", "ARS", "South America"), "Peru": ("Lima", "PEN", "South America"),
    "Chile": ("Santiago", "CLP", "South America"), "Kenya": ("Nairobi", "KES", "Africa"),
    "Egypt": ("Cairo", "EGP", "Africa"), "Nigeria": ("Abuja", "NGN", "Africa"),
    "South Africa": ("Pretoria", "ZAR", "Africa"), "Morocco": ("Rabat", "MAD", "Africa"),
}

# name: facts (NASA planetary fact sheet values, rounded; moon counts as of 2024)
PLANETS: dict[str, dict[str, float]] = {
    "Mercury": {"diameter_km": 4879, "moons": 0, "orbital_period_days": 88.0, "distance_from_sun_million_km": 57.9, "surface_gravity_m_s2": 3.7},
    "Venus": {"diameter_km": 12104, "moons": 0, "orbital_period_days": 224.7, "distance_from_sun_million_km": 108.2, "surface_gravity_m_s2": 8.9},
    "Earth": {"diameter_km": 12756, "moons": 1, "orbital_period_days": 365.2, "distance_from_sun_million_km": 149.6, "surface_gravity_m_s2": 9.8},
    "Mars": {"diameter_km": 6792, "moons": 2, "orbital_period_days": 687.0, "distance_from_sun_million_km": 228.0, "surface_gravity_m_s2": 3.7},
    "Jupiter": {"diameter_km": 142984, "moons": 95, "orbital_period_days": 4331.0, "distance_from_sun_million_km": 778.5, "surface_gravity_m_s2": 23.1},
    "Saturn": {"diameter_km": 120536, "moons": 146, "orbital_period_days": 10747.0, "distance_from_sun_million_km": 1432.0, "surface_gravity_m_s2": 9.0},
    "Uranus": {"diameter_km": 51118, "moons": 28, "orbital_period_days": 30589.0, "distance_from_sun_million_km": 2867.0, "surface_gravity_m_s2": 8.7},
    "Neptune": {"diameter_km": 49528, "moons": 16, "orbital_period_days": 59800.0, "distance_from_sun_million_km": 4515.0, "surface_gravity_m_s2": 11.0},
}
PLANET_FACTS = tuple(PLANETS["Earth"])

EARTH_RADIUS_KM = 6371.0  # mean Earth radius, fixed for the haversine tool


# -------------------------------------------------------------------------------------------- helpers
def _num(x: float, digits: int = 4) -> int | float:
    """``x`` rounded to ``digits`` decimals; an int when the rounded value is whole (for clean text)."""
    r = round(float(x), digits)
    if r == 0:
        return 0  # no "-0.0"
    return int(r) if r.is_integer() and abs(r) < 1e15 else r


def _money(x: float) -> int | float:
    return _num(x, 2)


def _date(text: str, what: str = "date") -> _dt.date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"{what} must be YYYY-MM-DD, got {text!r}")
    return _dt.date.fromisoformat(text)


def _clock(text: str) -> int:
    """Minutes after midnight of an ``HH:MM`` 24-hour time."""
    m = re.fullmatch(r"(\d{1,2}):(\d{2})", text)
    if not m or int(m.group(1)) > 23 or int(m.group(2)) > 59:
        raise ValueError(f"time must be HH:MM (24-hour), got {text!r}")
    return int(m.group(1)) * 60 + int(m.group(2))


def _clock_text(minutes: int) -> str:
    """``HH:MM``, with `` (+N day)``/`` (-N day)`` when ``minutes`` leaves the day."""
    days, rest = divmod(minutes, 24 * 60)
    text = f"{rest // 60:02d}:{rest % 60:02d}"
    if days:
        text += f" ({days:+d} day{'s' if abs(days) > 1 else ''})"
    return text


def _nonempty(values: list[float], what: str = "values") -> list[float]:
    if not values:
        raise ValueError(f"{what} must not be empty")
    return values


# ---------------------------------------------------------------------------------- implementations
# statistics and arithmetic
def _mean(values: list[float]) -> float:
    return _num(statistics.fmean(_nonempty(values)))


def _median(values: list[float]) -> float:
    return _num(statistics.median(_nonempty(values)))


def _stdev(values: list[float], kind: str = "sample") -> float:
    if kind == "sample" and len(values) < 2:
        raise ValueError("the sample standard deviation needs at least 2 values")
    fn = statistics.stdev if kind == "sample" else statistics.pstdev
    return _num(fn(_nonempty(values)))


def _value_range(values: list[float]) -> float:
    return _num(max(_nonempty(values)) - min(values))


def _weighted_average(values: list[float], weights: list[float]) -> float:
    if len(values) != len(weights):
        raise ValueError(f"values and weights differ in length ({len(values)} vs {len(weights)})")
    total = sum(weights)
    if total == 0:
        raise ValueError("weights sum to zero")
    return _num(sum(v * w for v, w in zip(_nonempty(values), weights)) / total)


def _percent_change(old_value: float, new_value: float) -> float:
    if old_value == 0:
        raise ValueError("old_value must not be zero")
    return _num((new_value - old_value) / abs(old_value) * 100, 2)


def _percentage_of(percent: float, number: float) -> float:
    return _num(percent / 100 * number)


def _gcd(a: int, b: int) -> int:
    return math.gcd(a, b)


def _lcm(a: int, b: int) -> int:
    return math.lcm(a, b)


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def _factorial(n: int) -> int:
    return math.factorial(n)


def _fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


# unit conversion
def _linear_convert(table: dict[str, float], value: float, from_unit: str, to_unit: str) -> float:
    return _num(value * table[from_unit] / table[to_unit])


def _convert_length(value: float, from_unit: str, to_unit: str) -> float:
    return _linear_convert(LENGTH_TO_METERS, value, from_unit, to_unit)


def _convert_mass(value: float, from_unit: str, to_unit: str) -> float:
    return _linear_convert(MASS_TO_KILOGRAMS, value, from_unit, to_unit)


def _convert_volume(value: float, from_unit: str, to_unit: str) -> float:
    return _linear_convert(VOLUME_TO_LITERS, value, from_unit, to_unit)


def _convert_speed(value: float, from_unit: str, to_unit: str) -> float:
    return _linear_convert(SPEED_TO_METERS_PER_SECOND, value, from_unit, to_unit)


def _convert_data_size(value: float, from_unit: str, to_unit: str) -> float:
    return _linear_convert(DATA_SIZE_TO_BYTES, value, from_unit, to_unit)


def _convert_area(value: float, from_unit: str, to_unit: str) -> float:
    return _linear_convert(AREA_TO_SQUARE_METERS, value, from_unit, to_unit)


def _convert_temperature(value: float, from_scale: str, to_scale: str) -> float:
    kelvin = {"celsius": value + 273.15, "fahrenheit": (value - 32) * 5 / 9 + 273.15, "kelvin": value}[from_scale]
    if kelvin < 0:
        raise ValueError(f"{value} {from_scale} is below absolute zero")
    out = {"celsius": kelvin - 273.15, "fahrenheit": (kelvin - 273.15) * 9 / 5 + 32, "kelvin": kelvin}[to_scale]
    return _num(out, 2)


def _convert_currency(amount: float, from_currency: str, to_currency: str) -> float:
    return _money(amount / CURRENCY_PER_USD[from_currency] * CURRENCY_PER_USD[to_currency])


# dates and times
def _days_between(start_date: str, end_date: str) -> int:
    return (_date(end_date, "end_date") - _date(start_date, "start_date")).days


def _add_days(date: str, days: int) -> str:
    return (_date(date) + _dt.timedelta(days=days)).isoformat()


def _weekday(date: str) -> str:
    return _date(date).strftime("%A")


def _iso_week(date: str) -> str:
    year, week, _ = _date(date).isocalendar()
    return f"{year}-W{week:02d}"


def _day_of_year(date: str) -> int:
    return _date(date).timetuple().tm_yday


def _is_leap_year(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _time_after_minutes(time: str, minutes: int) -> str:
    return _clock_text(_clock(time) + minutes)


def _convert_zone(time: str, from_zone: str, to_zone: str) -> str:
    return _clock_text(_clock(time) - UTC_OFFSET_MINUTES[from_zone] + UTC_OFFSET_MINUTES[to_zone])


def _age_years(birth_date: str, on_date: str) -> int:
    born, on = _date(birth_date, "birth_date"), _date(on_date, "on_date")
    if on < born:
        raise ValueError("on_date is before birth_date")
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


# text
def _word_count(text: str) -> int:
    return len(text.split())


def _reverse(text: str) -> str:
    return text[::-1]


def _is_palindrome(text: str) -> bool:
    letters = [c.lower() for c in text if c.isalnum()]
    if not letters:
        raise ValueError("text has no letters or digits")
    return letters == letters[::-1]


def _caesar(text: str, shift: int, direction: str = "encode") -> str:
    k = shift % 26 if direction == "encode" else -shift % 26
    out = []
    for c in text:
        if "a" <= c <= "z":
            out.append(chr((ord(c) - 97 + k) % 26 + 97))
        elif "A" <= c <= "Z":
            out.append(chr((ord(c) - 65 + k) % 26 + 65))
        else:
            out.append(c)
    return "".join(out)


def _slug(text: str) -> str:
    slug = re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")
    if not slug:
        raise ValueError("text has no letters or digits")
    return slug


def _count_char(text: str, character: str, case_sensitive: bool = False) -> int:
    if len(character) != 1:
        raise ValueError(f"character must be exactly one character, got {character!r}")
    return text.count(character) if case_sensitive else text.lower().count(character.lower())


def _count_vowels(text: str) -> int:
    return sum(c in "aeiou" for c in text.lower())


def _most_common_letter(text: str) -> str:
    counts = Counter(c for c in text.lower() if c.isalpha())
    if not counts:
        raise ValueError("text has no letters")
    top = max(counts.values())
    return min(c for c, k in counts.items() if k == top)  # ties: alphabetically first


def _acronym(phrase: str) -> str:
    words = re.findall(r"[A-Za-z0-9]+", phrase)
    if not words:
        raise ValueError("phrase has no words")
    return "".join(w[0].upper() for w in words)


# lookups
def _element(element: str, property: str) -> Any:
    row = ELEMENTS[element]
    return row[ELEMENT_PROPERTIES.index(property)]


def _capital(country: str) -> str:
    return COUNTRIES[country][0]


def _currency_code(country: str) -> str:
    return COUNTRIES[country][1]


def _continent(country: str) -> str:
    return COUNTRIES[country][2]


def _planet(planet: str, fact: str) -> int | float:
    return _num(PLANETS[planet][fact])


# geometry
def _circle_area(radius: float) -> float:
    return _num(math.pi * radius**2)


def _circle_circumference(radius: float) -> float:
    return _num(2 * math.pi * radius)


def _rectangle_area(length: float, width: float) -> float:
    return _num(length * width)


def _triangle_area(a: float, b: float, c: float) -> float:
    s = (a + b + c) / 2
    sq = s * (s - a) * (s - b) * (s - c)
    if sq <= 0:
        raise ValueError(f"sides {a}, {b}, {c} do not form a triangle")
    return _num(math.sqrt(sq))


def _sphere_volume(radius: float) -> float:
    return _num(4 / 3 * math.pi * radius**3)


def _cylinder_volume(radius: float, height: float) -> float:
    return _num(math.pi * radius**2 * height)


def _cone_volume(radius: float, height: float) -> float:
    return _num(math.pi * radius**2 * height / 3)


def _point_distance(x1: float, y1: float, x2: float, y2: float) -> float:
    return _num(math.hypot(x2 - x1, y2 - y1))


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return _num(2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h))), 1)


def _polygon_interior_angle(sides: int) -> float:
    return _num((sides - 2) * 180 / sides, 2)


# finance
def _compound_balance(principal: float, annual_rate_percent: float, years: float, periods_per_year: int = 12) -> float:
    r = annual_rate_percent / 100 / periods_per_year
    return _money(principal * (1 + r) ** (periods_per_year * years))


def _loan_installment(principal: float, annual_rate_percent: float, years: int) -> float:
    n, r = years * 12, annual_rate_percent / 100 / 12
    return _money(principal / n if r == 0 else principal * r / (1 - (1 + r) ** -n))


def _simple_interest(principal: float, annual_rate_percent: float, years: float) -> float:
    return _money(principal * annual_rate_percent / 100 * years)


def _split_bill(bill: float, tip_percent: float, people: int) -> float:
    return _money(bill * (1 + tip_percent / 100) / people)


def _discounted_price(price: float, discount_percent: float) -> float:
    return _money(price * (1 - discount_percent / 100))


def _price_with_tax(price: float, tax_percent: float) -> float:
    return _money(price * (1 + tax_percent / 100))


def _break_even(fixed_costs: float, price_per_unit: float, variable_cost_per_unit: float) -> int:
    margin = price_per_unit - variable_cost_per_unit
    if margin <= 0:
        raise ValueError("price_per_unit must exceed variable_cost_per_unit")
    return math.ceil(fixed_costs / margin - 1e-9)


def _roi(gain: float, cost: float) -> float:
    return _num((gain - cost) / cost * 100, 2)


def _cagr(start_value: float, end_value: float, years: float) -> float:
    return _num(((end_value / start_value) ** (1 / years) - 1) * 100, 2)


# everyday
def _bmi(weight_kg: float, height_m: float) -> float:
    return _num(weight_kg / height_m**2, 1)


def _travel_time(distance_km: float, speed_kmh: float) -> float:
    return _num(distance_km / speed_kmh, 2)


# ------------------------------------------------------------------------------------- the registry
def _number(description: str, **limits: float) -> dict[str, Any]:
    return {"type": "number", "description": description, **limits}


def _integer(description: str, **limits: int) -> dict[str, Any]:
    return {"type": "integer", "description": description, **limits}


def _string(description: str) -> dict[str, Any]:
    return {"type": "string", "description": description}


def _enum(values: Iterable[Any], description: str) -> dict[str, Any]:
    values = list(values)
    kind = "integer" if all(isinstance(v, int) for v in values) else "string"
    return {"type": kind, "enum": values, "description": description}


def _numbers(description: str, min_items: int = 1) -> dict[str, Any]:
    return {"type": "array", "items": {"type": "number"}, "minItems": min_items, "description": description}


_DATE = "A calendar date as YYYY-MM-DD."
_CLOCK = "A 24-hour clock time as HH:MM."


def _spec(domain: str, name: str, description: str, properties: dict[str, dict[str, Any]],
          fn: Callable[..., Any], example: dict[str, Any], optional: tuple[str, ...] = ()) -> ToolSpec:
    required = [p for p in properties if p not in optional]
    params = {"type": "object", "properties": properties, "required": required}
    return ToolSpec(Tool(name, description, params), fn, domain, example)


def _unit_spec(name: str, what: str, table: dict[str, float], fn: Callable[..., Any], example: dict[str, Any]) -> ToolSpec:
    units = list(table)
    return _spec("units", name, f"Convert a {what} value between units using fixed conversion factors.", {
        "value": _number(f"The {what} value to convert."),
        "from_unit": _enum(units, "The unit of the given value."),
        "to_unit": _enum(units, "The unit to convert to."),
    }, fn, example)


_SPECS: list[ToolSpec] = [
    # statistics and arithmetic
    _spec("math", "stats_mean_of_list", "Arithmetic mean (average) of a list of numbers.",
          {"values": _numbers("The numbers to average.")}, _mean, {"values": [2, 4, 9]}),
    _spec("math", "stats_median_of_list", "Median (middle value) of a list of numbers.",
          {"values": _numbers("The numbers.")}, _median, {"values": [7, 1, 3, 10]}),
    _spec("math", "stats_standard_deviation", "Standard deviation of a list of numbers (sample or population).",
          {"values": _numbers("The numbers."),
           "kind": _enum(["sample", "population"], "Sample (n - 1) or population (n) deviation; default sample.")},
          _stdev, {"values": [2, 4, 4, 4, 5, 5, 7, 9], "kind": "population"}, optional=("kind",)),
    _spec("math", "stats_value_range", "Spread of a list of numbers: the largest minus the smallest.",
          {"values": _numbers("The numbers.")}, _value_range, {"values": [3, 18, 7]}),
    _spec("math", "weighted_average_of_values", "Weighted average of values with matching weights.",
          {"values": _numbers("The values."), "weights": _numbers("One weight per value.")},
          _weighted_average, {"values": [80, 90], "weights": [1, 3]}),
    _spec("math", "percent_change_between", "Percent change from an old value to a new value, rounded to 2 decimals.",
          {"old_value": _number("The starting value (not zero)."), "new_value": _number("The later value.")},
          _percent_change, {"old_value": 80, "new_value": 100}),
    _spec("math", "percentage_of_number", "A given percent of a number, e.g. 15 percent of 240.",
          {"percent": _number("The percentage."), "number": _number("The base number.")},
          _percentage_of, {"percent": 15, "number": 240}),
    _spec("math", "greatest_common_divisor_of", "Greatest common divisor of two integers.",
          {"a": _integer("First integer."), "b": _integer("Second integer.")}, _gcd, {"a": 84, "b": 36}),
    _spec("math", "least_common_multiple_of", "Least common multiple of two integers.",
          {"a": _integer("First integer."), "b": _integer("Second integer.")}, _lcm, {"a": 4, "b": 6}),
    _spec("math", "primality_check_integer", "Whether a whole number is prime.",
          {"n": _integer("The integer to test.", minimum=0, maximum=10**12)}, _is_prime, {"n": 97}),
    _spec("math", "factorial_of_integer", "Factorial n! of a whole number from 0 to 20.",
          {"n": _integer("The integer.", minimum=0, maximum=20)}, _factorial, {"n": 5}),
    _spec("math", "nth_fibonacci_number", "The n-th Fibonacci number (F0 = 0, F1 = 1), n from 0 to 90.",
          {"n": _integer("The index.", minimum=0, maximum=90)}, _fibonacci, {"n": 10}),
    # unit conversion
    _unit_spec("convert_length_units", "length", LENGTH_TO_METERS, _convert_length,
               {"value": 5, "from_unit": "mi", "to_unit": "km"}),
    _unit_spec("convert_mass_units", "mass", MASS_TO_KILOGRAMS, _convert_mass,
               {"value": 10, "from_unit": "lb", "to_unit": "kg"}),
    _unit_spec("convert_volume_units", "volume (US customary units)", VOLUME_TO_LITERS, _convert_volume,
               {"value": 2, "from_unit": "gal", "to_unit": "l"}),
    _unit_spec("convert_speed_units", "speed", SPEED_TO_METERS_PER_SECOND, _convert_speed,
               {"value": 60, "from_unit": "mph", "to_unit": "km/h"}),
    _unit_spec("convert_data_size_units", "digital data size", DATA_SIZE_TO_BYTES, _convert_data_size,
               {"value": 2, "from_unit": "GiB", "to_unit": "MB"}),
    _unit_spec("convert_area_units", "area", AREA_TO_SQUARE_METERS, _convert_area,
               {"value": 3, "from_unit": "acre", "to_unit": "m2"}),
    _spec("units", "convert_temperature_scale", "Convert a temperature between Celsius, Fahrenheit and Kelvin.",
          {"value": _number("The temperature."),
           "from_scale": _enum(TEMPERATURE_SCALES, "The scale of the given temperature."),
           "to_scale": _enum(TEMPERATURE_SCALES, "The scale to convert to.")},
          _convert_temperature, {"value": 100, "from_scale": "fahrenheit", "to_scale": "celsius"}),
    _spec("currency", "convert_currency_fixed_rates",
          "Convert money between currencies with a FIXED, fictional built-in rate table (not live market rates).",
          {"amount": _number("The amount of money.", minimum=0),
           "from_currency": _enum(CURRENCY_PER_USD, "ISO code of the given currency."),
           "to_currency": _enum(CURRENCY_PER_USD, "ISO code of the target currency.")},
          _convert_currency, {"amount": 100, "from_currency": "USD", "to_currency": "EUR"}),
    # dates and times
    _spec("dates", "days_between_dates", "Number of days from a start date to an end date (negative if the end is earlier).",
          {"start_date": _string(_DATE), "end_date": _string(_DATE)}, _days_between,
          {"start_date": "2024-01-01", "end_date": "2024-03-01"}),
    _spec("dates", "date_after_adding_days", "The date a given number of days after (or, if negative, before) a date.",
          {"date": _string(_DATE), "days": _integer("Days to add; may be negative.", minimum=-100000, maximum=100000)},
          _add_days, {"date": "2024-02-20", "days": 10}),
    _spec("dates", "weekday_of_date", "Day of the week (Monday to Sunday) of a calendar date.",
          {"date": _string(_DATE)}, _weekday, {"date": "2024-07-04"}),
    _spec("dates", "iso_week_of_date", "ISO 8601 week of a date, as YYYY-Www.",
          {"date": _string(_DATE)}, _iso_week, {"date": "2024-12-30"}),
    _spec("dates", "day_of_year_for_date", "Ordinal day of the year (1 to 366) of a date.",
          {"date": _string(_DATE)}, _day_of_year, {"date": "2024-03-01"}),
    _spec("dates", "leap_year_check", "Whether a year of the Gregorian calendar is a leap year.",
          {"year": _integer("The year.", minimum=1, maximum=9999)}, _is_leap_year, {"year": 2024}),
    _spec("dates", "clock_time_after_minutes", "The clock time a number of minutes after a given time, with any day change.",
          {"time": _string(_CLOCK), "minutes": _integer("Minutes to add; may be negative.", minimum=-100000, maximum=100000)},
          _time_after_minutes, {"time": "22:30", "minutes": 150}),
    _spec("dates", "convert_time_between_zones",
          "Convert a clock time between cities' time zones using fixed standard-time offsets (daylight saving ignored).",
          {"time": _string(_CLOCK),
           "from_zone": _enum(UTC_OFFSET_MINUTES, "Time zone of the given time."),
           "to_zone": _enum(UTC_OFFSET_MINUTES, "Time zone to convert to.")},
          _convert_zone, {"time": "09:00", "from_zone": "London", "to_zone": "Delhi"}),
    _spec("dates", "age_in_full_years", "Age in completed years of someone born on a date, on another date.",
          {"birth_date": _string(_DATE), "on_date": _string(_DATE)}, _age_years,
          {"birth_date": "1990-06-15", "on_date": "2024-06-14"}),
    # text
    _spec("text", "count_words_in_text", "Number of whitespace-separated words in a text.",
          {"text": _string("The text.")}, _word_count, {"text": "the quick brown fox"}),
    _spec("text", "reverse_text_string", "The text with its characters in reverse order.",
          {"text": _string("The text.")}, _reverse, {"text": "stressed"}),
    _spec("text", "palindrome_phrase_check", "Whether a phrase reads the same backwards, ignoring case, spaces and punctuation.",
          {"text": _string("The phrase.")}, _is_palindrome, {"text": "Never odd or even"}),
    _spec("text", "caesar_shift_text", "Encode or decode text with a Caesar cipher (letters shifted through the alphabet).",
          {"text": _string("The text."), "shift": _integer("How many letters to shift.", minimum=0, maximum=25),
           "direction": _enum(["encode", "decode"], "Shift forward (encode) or back (decode); default encode.")},
          _caesar, {"text": "Hello", "shift": 3, "direction": "encode"}, optional=("direction",)),
    _spec("text", "make_url_slug", "A URL slug of a title: lower case, words joined by hyphens.",
          {"text": _string("The title.")}, _slug, {"text": "Hello, World: A Tour!"}),
    _spec("text", "count_character_occurrences", "How many times a single character occurs in a text.",
          {"text": _string("The text."), "character": _string("The single character to count."),
           "case_sensitive": {"type": "boolean", "description": "Match case exactly; default false."}},
          _count_char, {"text": "Mississippi", "character": "s"}, optional=("case_sensitive",)),
    _spec("text", "count_vowels_in_text", "Number of vowels (a, e, i, o, u) in a text.",
          {"text": _string("The text.")}, _count_vowels, {"text": "education"}),
    _spec("text", "most_common_letter", "The letter that occurs most often in a text, case-insensitive (ties: alphabetically first).",
          {"text": _string("The text.")}, _most_common_letter, {"text": "banana bread"}),
    _spec("text", "acronym_from_phrase", "The acronym of a phrase: the first letter of each word, in capitals.",
          {"phrase": _string("The phrase.")}, _acronym, {"phrase": "portable network graphics"}),
    # lookups in built-in tables
    _spec("lookup", "chemical_element_property", "A property of a chemical element from a small built-in table.",
          {"element": _enum(ELEMENTS, "Element name in lower case."),
           "property": _enum(ELEMENT_PROPERTIES, "The property to look up.")},
          _element, {"element": "iron", "property": "atomic_number"}),
    _spec("lookup", "country_capital_city", "The capital city of a country from a built-in table.",
          {"country": _enum(COUNTRIES, "The country.")}, _capital, {"country": "Kenya"}),
    _spec("lookup", "country_currency_code", "The ISO 4217 currency code used by a country, from a built-in table.",
          {"country": _enum(COUNTRIES, "The country.")}, _currency_code, {"country": "Japan"}),
    _spec("lookup", "country_continent_name", "The continent a country lies on, from a built-in table.",
          {"country": _enum(COUNTRIES, "The country.")}, _continent, {"country": "Peru"}),
    _spec("lookup", "planet_fact_lookup", "A fact about a planet of the Solar System from a built-in table.",
          {"planet": _enum(PLANETS, "The planet."), "fact": _enum(PLANET_FACTS, "The fact to look up.")},
          _planet, {"planet": "Mars", "fact": "moons"}),
    # geometry
    _spec("geometry", "circle_area_from_radius", "Area of a circle from its radius.",
          {"radius": _number("The radius.", minimum=0)}, _circle_area, {"radius": 2}),
    _spec("geometry", "circle_circumference_from_radius", "Circumference of a circle from its radius.",
          {"radius": _number("The radius.", minimum=0)}, _circle_circumference, {"radius": 2}),
    _spec("geometry", "rectangle_area_from_sides", "Area of a rectangle from its length and width.",
          {"length": _number("The length.", minimum=0), "width": _number("The width.", minimum=0)},
          _rectangle_area, {"length": 4, "width": 2.5}),
    _spec("geometry", "triangle_area_from_three_sides", "Area of a triangle from its three side lengths (Heron's formula).",
          {"a": _number("First side.", minimum=0), "b": _number("Second side.", minimum=0),
           "c": _number("Third side.", minimum=0)}, _triangle_area, {"a": 3, "b": 4, "c": 5}),
    _spec("geometry", "sphere_volume_from_radius", "Volume of a sphere from its radius.",
          {"radius": _number("The radius.", minimum=0)}, _sphere_volume, {"radius": 3}),
    _spec("geometry", "cylinder_volume_from_dims", "Volume of a right circular cylinder from its radius and height.",
          {"radius": _number("The radius.", minimum=0), "height": _number("The height.", minimum=0)},
          _cylinder_volume, {"radius": 1, "height": 2}),
    _spec("geometry", "cone_volume_from_dims", "Volume of a right circular cone from its base radius and height.",
          {"radius": _number("The base radius.", minimum=0), "height": _number("The height.", minimum=0)},
          _cone_volume, {"radius": 3, "height": 4}),
    _spec("geometry", "cartesian_point_distance", "Straight-line distance between two points in the plane.",
          {"x1": _number("x of the first point."), "y1": _number("y of the first point."),
           "x2": _number("x of the second point."), "y2": _number("y of the second point.")},
          _point_distance, {"x1": 0, "y1": 0, "x2": 3, "y2": 4}),
    _spec("geometry", "haversine_great_circle_km",
          f"Great-circle distance in km between two latitude/longitude points (haversine, Earth radius {EARTH_RADIUS_KM:g} km).",
          {"lat1": _number("Latitude of the first point in degrees.", minimum=-90, maximum=90),
           "lon1": _number("Longitude of the first point in degrees.", minimum=-180, maximum=180),
           "lat2": _number("Latitude of the second point in degrees.", minimum=-90, maximum=90),
           "lon2": _number("Longitude of the second point in degrees.", minimum=-180, maximum=180)},
          _haversine, {"lat1": 0, "lon1": 0, "lat2": 0, "lon2": 90}),
    _spec("geometry", "regular_polygon_interior_angle", "Interior angle in degrees of a regular polygon with n sides.",
          {"sides": _integer("Number of sides.", minimum=3, maximum=1000)}, _polygon_interior_angle, {"sides": 6}),
    # finance
    _spec("finance", "compound_interest_balance", "Balance after compounding a principal at an annual rate for some years.",
          {"principal": _number("The starting amount.", minimum=0),
           "annual_rate_percent": _number("Annual interest rate in percent.", minimum=0),
           "years": _number("Number of years.", minimum=0),
           "periods_per_year": _enum([1, 2, 4, 12, 365], "Compounding periods per year; default 12.")},
          _compound_balance, {"principal": 1000, "annual_rate_percent": 5, "years": 10, "periods_per_year": 1},
          optional=("periods_per_year",)),
    _spec("finance", "loan_monthly_installment", "Monthly payment of a fixed-rate amortising loan.",
          {"principal": _number("The amount borrowed.", minimum=0),
           "annual_rate_percent": _number("Annual interest rate in percent.", minimum=0),
           "years": _integer("Loan term in years.", minimum=1, maximum=50)},
          _loan_installment, {"principal": 12000, "annual_rate_percent": 0, "years": 1}),
    _spec("finance", "simple_interest_amount", "Simple (non-compounded) interest earned on a principal.",
          {"principal": _number("The amount.", minimum=0),
           "annual_rate_percent": _number("Annual interest rate in percent.", minimum=0),
           "years": _number("Number of years.", minimum=0)},
          _simple_interest, {"principal": 2000, "annual_rate_percent": 3, "years": 4}),
    _spec("finance", "bill_split_with_tip", "Each person's share of a bill after adding a tip.",
          {"bill": _number("The bill before tip.", minimum=0), "tip_percent": _number("Tip in percent.", minimum=0),
           "people": _integer("Number of people sharing.", minimum=1)},
          _split_bill, {"bill": 90, "tip_percent": 20, "people": 4}),
    _spec("finance", "discounted_price_after_percent", "Price after a percentage discount.",
          {"price": _number("The original price.", minimum=0),
           "discount_percent": _number("Discount in percent.", minimum=0, maximum=100)},
          _discounted_price, {"price": 80, "discount_percent": 25}),
    _spec("finance", "price_with_sales_tax", "Price including a percentage sales tax.",
          {"price": _number("The price before tax.", minimum=0), "tax_percent": _number("Tax rate in percent.", minimum=0)},
          _price_with_tax, {"price": 50, "tax_percent": 8}),
    _spec("finance", "break_even_unit_count", "Units to sell to cover fixed costs, rounded up.",
          {"fixed_costs": _number("Fixed costs.", minimum=0), "price_per_unit": _number("Selling price per unit."),
           "variable_cost_per_unit": _number("Variable cost per unit.")},
          _break_even, {"fixed_costs": 1000, "price_per_unit": 15, "variable_cost_per_unit": 5}),
    _spec("finance", "return_on_investment_pct", "Return on investment in percent: (gain - cost) / cost.",
          {"gain": _number("Final value received."), "cost": _number("Amount invested.", exclusiveMinimum=0)},
          _roi, {"gain": 1500, "cost": 1200}),
    _spec("finance", "compound_annual_growth_rate", "Compound annual growth rate in percent between two values.",
          {"start_value": _number("Starting value.", exclusiveMinimum=0),
           "end_value": _number("Ending value.", minimum=0),
           "years": _number("Number of years.", exclusiveMinimum=0)},
          _cagr, {"start_value": 100, "end_value": 121, "years": 2}),
    # everyday
    _spec("everyday", "body_mass_index_metric", "Body mass index from weight in kilograms and height in meters.",
          {"weight_kg": _number("Weight in kg.", exclusiveMinimum=0), "height_m": _number("Height in m.", exclusiveMinimum=0)},
          _bmi, {"weight_kg": 72, "height_m": 1.8}),
    _spec("everyday", "travel_time_hours", "Hours needed to travel a distance at a constant speed.",
          {"distance_km": _number("Distance in km.", minimum=0), "speed_kmh": _number("Speed in km/h.", exclusiveMinimum=0)},
          _travel_time, {"distance_km": 150, "speed_kmh": 60}),
]

TOOLS: dict[str, ToolSpec] = {s.name: s for s in _SPECS}
assert len(TOOLS) == len(_SPECS), "duplicate tool names"
DOMAINS: tuple[str, ...] = tuple(dict.fromkeys(s.domain for s in _SPECS))


def tools_in_domain(domain: str) -> list[ToolSpec]:
    """The tools of one domain (see :data:`DOMAINS`), in registry order."""
    return [s for s in _SPECS if s.domain == domain]


# ------------------------------------------------------------------------------------- validation
_TYPE_NAMES = {"number": "a number", "integer": "an integer", "string": "a string", "boolean": "a boolean",
               "array": "an array", "object": "an object"}


def _type_ok(value: Any, kind: str) -> bool:
    if kind == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if kind == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, {"string": str, "boolean": bool, "array": list, "object": dict}[kind])


def _check_value(value: Any, schema: dict[str, Any], where: str) -> str | None:
    """An error message if ``value`` breaks ``schema`` (the subset of JSON schema the tools use)."""
    kind = schema.get("type")
    if kind and not _type_ok(value, kind):
        return f"{where} must be {_TYPE_NAMES[kind]}, got {type(value).__name__} {value!r}"
    if "enum" in schema and value not in schema["enum"]:
        return f"{where} must be one of {schema['enum']}, got {value!r}"
    if "minimum" in schema and value < schema["minimum"]:
        return f"{where} must be >= {schema['minimum']}, got {value!r}"
    if "exclusiveMinimum" in schema and value <= schema["exclusiveMinimum"]:
        return f"{where} must be > {schema['exclusiveMinimum']}, got {value!r}"
    if "maximum" in schema and value > schema["maximum"]:
        return f"{where} must be <= {schema['maximum']}, got {value!r}"
    if kind == "array":
        if len(value) < schema.get("minItems", 0):
            return f"{where} must have at least {schema['minItems']} item(s), got {len(value)}"
        for i, item in enumerate(value):
            err = _check_value(item, schema.get("items", {}), f"{where}[{i}]")
            if err:
                return err
    return None


def _check_arguments(spec: ToolSpec, arguments: Any) -> str | None:
    if not isinstance(arguments, dict):
        return f"arguments of {spec.name} must be an object, got {type(arguments).__name__}"
    props = spec.tool.parameters["properties"]
    missing = [p for p in spec.tool.required if p not in arguments]
    if missing:
        return f"{spec.name}: missing required argument(s) {missing}"
    unexpected = [a for a in arguments if a not in props]
    if unexpected:
        return f"{spec.name}: unexpected argument(s) {unexpected}; it takes {list(props)}"
    for name, value in arguments.items():
        err = _check_value(value, props[name], f"{spec.name}: argument {name!r}")
        if err:
            return err
    return None


# --------------------------------------------------------------------------------------- execution
def _error(message: str) -> str:
    return json.dumps({"error": message}, ensure_ascii=False)


def execute(call: ToolCall) -> str:
    """Run one tool call; the observation as JSON text, ``{"result": ...}`` or ``{"error": "..."}``.

    Never raises: unknown tools, bad arguments and failures inside the tool become error observations.
    """
    name = getattr(call, "name", None)
    spec = TOOLS.get(name) if isinstance(name, str) else None
    if spec is None:
        return _error(f"unknown tool {name!r}")
    err = _check_arguments(spec, getattr(call, "arguments", None))
    if err:
        return _error(err)
    try:
        result = spec.fn(**call.arguments)
        return json.dumps({"result": result}, ensure_ascii=False, allow_nan=False)
    except Exception as exc:  # the tool's failure is the agent's observation, not a crash
        return _error(f"{spec.name} failed: {type(exc).__name__}: {exc}")


def execute_all(calls: Iterable[ToolCall]) -> str:
    """The observation of one executor turn: one call's observation, or a JSON list of several."""
    observations = [json.loads(execute(c)) for c in calls]
    if not observations:
        return _error("no tool calls")
    return json.dumps(observations[0] if len(observations) == 1 else observations, ensure_ascii=False)
