"""Synthetic multi-role training trajectories over the real tools of :mod:`mor_ext.data.tools`.

:func:`generate` builds varied, correct trajectories from templates: several phrasings per query,
randomised values, templated but varied reasoner thoughts, and observations produced by actually
running the tools with :func:`~mor_ext.data.tools.execute`; the summarizer's answer states the
executed result. Four kinds, mixed in configurable proportions (:data:`DEFAULT_MIX`):

* ``single``: one call (reasoner -> executor -> observation -> reasoner -> summarizer);
* ``multi_step``: two calls in sequence, the second using the first call's result (convert, then
  compute; look up, then convert; ...);
* ``parallel``: one executor turn with 2-3 independent calls; its observation is the JSON list of
  their observations, in call order (:func:`~mor_ext.data.tools.execute_all`);
* ``no_tool``: no tool applies; the reasoner goes straight to the summarizer, who answers from
  general knowledge or declines (live data, real-world actions).

Each trajectory offers the needed tools plus 2-5 random distractor tools, in random order, and has
``meta = {"source": "synthetic", "kind": ...}``. Output is deterministic for a seed. Before
returning, :func:`generate` checks the data against BFCL (evaluation data) with
:func:`mor_ext.data.decontamination.assert_clean` and refuses to return contaminated data.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from .decontamination import assert_clean
from .tools import (
    COUNTRIES,
    CURRENCY_PER_USD,
    ELEMENTS,
    PLANETS,
    TOOLS,
    UTC_OFFSET_MINUTES,
    execute,
    execute_all,
)
from .trajectory import Tool, ToolCall, Trajectory, Turn, parse_trajectory

__all__ = ["KINDS", "DEFAULT_MIX", "generate", "result_text", "single_tool_tasks"]

KINDS = ("single", "multi_step", "parallel", "no_tool")
DEFAULT_MIX: dict[str, float] = {"single": 0.4, "multi_step": 0.25, "parallel": 0.2, "no_tool": 0.15}
_DISTRACTORS = (2, 5)  # inclusive range of distractor tools per trajectory
_Fields = dict[str, Any]


# ------------------------------------------------------------------------------------- formatting
def _fmt(value: Any) -> str:
    """How a value reads in text: numbers as JSON writes them, lists as ``a, b and c``."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        items = [_fmt(v) for v in value]
        return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]
    return str(value)


def _joined(phrases: list[str]) -> str:
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1]


def _fill(template: str, fields: Mapping[str, Any]) -> str:
    return template.format(**{k: _fmt(v) for k, v in fields.items()})


def _bool_text(yes: str, no: str) -> Callable[[Any], str]:
    # ``yes`` must not be a substring of ``no``, so that tests can tell the answers apart.
    return lambda result: yes if result else no


# ---------------------------------------------------------------------------------- single tasks
@dataclass(frozen=True)
class _Task:
    """How to ask for one tool call: sampled fields (the tool's arguments plus display-only values),
    query phrasings, the goal as an infinitive phrase for the reasoner, and answer phrasings."""

    tool: str
    sample: Callable[[random.Random], _Fields]
    queries: tuple[str, ...]
    goal: str
    answers: tuple[str, ...]
    show: Callable[[Any], str] = _fmt

    def arguments(self, fields: _Fields) -> dict[str, Any]:
        props = TOOLS[self.tool].tool.parameters["properties"]
        return {k: v for k, v in fields.items() if k in props}


def _values(rng: random.Random, lo: int = 1, hi: int = 100, k: tuple[int, int] = (4, 8)) -> list[Any]:
    n = rng.randint(*k)
    if rng.random() < 0.3:
        return [round(rng.uniform(lo, hi), 1) for _ in range(n)]
    return [rng.randint(lo, hi) for _ in range(n)]


def _random_date(rng: random.Random, lo: int = 1990, hi: int = 2030) -> str:
    start = dt.date(lo, 1, 1).toordinal()
    return dt.date.fromordinal(rng.randint(start, dt.date(hi, 12, 31).toordinal())).isoformat()


def _random_clock(rng: random.Random) -> str:
    return f"{rng.randint(0, 23):02d}:{rng.choice(range(0, 60, 5)):02d}"


def _random_amount(rng: random.Random, lo: float, hi: float) -> float | int:
    value = round(rng.uniform(lo, hi), rng.choice((0, 2)))
    return int(value) if float(value).is_integer() else value


_WORDS = ("river", "silver", "morning", "quiet", "garden", "window", "coffee", "yellow", "mountain",
          "paper", "little", "orange", "bright", "summer", "travel", "music", "forest", "planet",
          "simple", "harbor", "lantern", "meadow", "pencil", "rocket", "violet", "winter", "copper",
          "island", "marble", "thunder", "velvet", "puzzle", "candle", "falcon", "glacier", "jungle",
          "kettle", "ladder", "nectar", "ocean", "pepper", "saddle", "tunnel", "walnut", "zebra")
_PALINDROMES = ("Never odd or even", "Step on no pets", "racecar", "No lemon, no melon", "level", "Top spot",
                "rotor", "Was it a rat I saw?", "Borrow or rob?", "Don't nod", "Red rum, sir, is murder",
                "Taco cat", "Stats", "Refer", "Live on time, emit no evil")
_ACRONYM_PHRASES = ("portable network graphics", "frequently asked questions", "graphical user interface",
                    "random access memory", "central processing unit", "application programming interface",
                    "hypertext markup language", "universal serial bus", "global positioning system",
                    "liquid crystal display", "search engine optimization", "key performance indicator")


def _phrase(rng: random.Random, lo: int = 2, hi: int = 7) -> str:
    return " ".join(rng.choice(_WORDS) for _ in range(rng.randint(lo, hi)))


def _title(rng: random.Random) -> str:
    words = [rng.choice(_WORDS).capitalize() for _ in range(rng.randint(2, 6))]
    if rng.random() < 0.5:
        words[rng.randrange(len(words))] += rng.choice((":", ",", "!", "?", " &"))
    return " ".join(words)


# Units: code -> how it reads; sensible (from, to, low, high) pairs so results are not all rounding.
_LENGTH_WORDS = {"mm": "millimeters", "cm": "centimeters", "m": "meters", "km": "kilometers", "in": "inches",
                 "ft": "feet", "yd": "yards", "mi": "miles", "nmi": "nautical miles"}
_LENGTH_PAIRS = (("mi", "km", 1, 500), ("km", "mi", 1, 800), ("ft", "m", 1, 3000), ("m", "ft", 1, 1000),
                 ("in", "cm", 1, 100), ("cm", "in", 1, 250), ("yd", "m", 1, 500), ("nmi", "km", 1, 300),
                 ("km", "nmi", 1, 500), ("mm", "in", 1, 500), ("m", "yd", 1, 400))
_MASS_WORDS = {"mg": "milligrams", "g": "grams", "kg": "kilograms", "t": "metric tons", "oz": "ounces",
               "lb": "pounds", "st": "stone"}
_MASS_PAIRS = (("lb", "kg", 1, 400), ("kg", "lb", 1, 200), ("oz", "g", 1, 64), ("g", "oz", 10, 2000),
               ("st", "kg", 5, 30), ("kg", "st", 30, 150), ("t", "lb", 1, 40), ("mg", "g", 100, 50000))
_VOLUME_WORDS = {"ml": "milliliters", "l": "liters", "m3": "cubic meters", "tsp": "teaspoons",
                 "tbsp": "tablespoons", "cup": "cups", "pint": "pints", "quart": "quarts", "gal": "gallons"}
_VOLUME_PAIRS = (("gal", "l", 1, 60), ("l", "gal", 1, 200), ("cup", "ml", 1, 12), ("tbsp", "ml", 1, 20),
                 ("tsp", "ml", 1, 15), ("quart", "l", 1, 20), ("pint", "ml", 1, 8), ("m3", "gal", 1, 30),
                 ("ml", "cup", 100, 2000))
_SPEED_WORDS = {"m/s": "meters per second", "km/h": "km/h", "mph": "mph", "knot": "knots", "ft/s": "feet per second"}
_SPEED_PAIRS = (("mph", "km/h", 5, 120), ("km/h", "mph", 5, 200), ("m/s", "km/h", 1, 100), ("knot", "km/h", 1, 40),
                ("km/h", "m/s", 5, 300), ("ft/s", "m/s", 1, 200), ("mph", "knot", 5, 150))
_DATA_WORDS = {"bit": "bits", "B": "bytes", "KB": "KB", "MB": "MB", "GB": "GB", "TB": "TB", "KiB": "KiB",
               "MiB": "MiB", "GiB": "GiB", "TiB": "TiB"}
_DATA_PAIRS = (("GiB", "GB", 1, 512), ("GB", "GiB", 1, 2000), ("MB", "MiB", 1, 5000), ("TB", "TiB", 1, 20),
               ("MB", "bit", 1, 100), ("KiB", "KB", 1, 4096), ("GB", "MB", 1, 64), ("TiB", "GiB", 1, 8))
_AREA_WORDS = {"mm2": "square millimeters", "cm2": "square centimeters", "m2": "square meters",
               "km2": "square kilometers", "ha": "hectares", "acre": "acres", "in2": "square inches",
               "ft2": "square feet", "mi2": "square miles"}
_AREA_PAIRS = (("acre", "ha", 1, 500), ("ha", "acre", 1, 300), ("ft2", "m2", 100, 5000), ("m2", "ft2", 10, 500),
               ("mi2", "km2", 1, 300), ("km2", "mi2", 1, 800), ("in2", "cm2", 1, 200), ("m2", "ha", 1000, 90000))
_TEMP_WORDS = {"celsius": "degrees Celsius", "fahrenheit": "degrees Fahrenheit", "kelvin": "kelvin"}
_TEMP_RANGES = {"celsius": (-40, 120), "fahrenheit": (-40, 250), "kelvin": (200, 500)}


def _unit_sampler(words: Mapping[str, str], pairs: tuple) -> Callable[[random.Random], _Fields]:
    def sample(rng: random.Random) -> _Fields:
        frm, to, lo, hi = rng.choice(pairs)
        value = rng.randint(lo, hi) if rng.random() < 0.7 else round(rng.uniform(lo, hi), 1)
        return {"value": value, "from_unit": frm, "to_unit": to, "from_w": words[frm], "to_w": words[to]}
    return sample


_UNIT_QUERIES = ("How many {to_w} are in {value} {from_w}?", "Convert {value} {from_w} to {to_w}.",
                 "What's {value} {from_w} expressed in {to_w}?", "{value} {from_w} equals how many {to_w}?",
                 "I need {value} {from_w} in {to_w}, please.")
_UNIT_ANSWERS = ("{value} {from_w} is {result} {to_w}.", "That's {result} {to_w}.",
                 "{value} {from_w} comes to {result} {to_w}.")


def _unit_task(tool: str, words: Mapping[str, str], pairs: tuple, extra: tuple[str, ...] = ()) -> _Task:
    return _Task(tool, _unit_sampler(words, pairs), _UNIT_QUERIES + extra, "convert {value} {from_w} to {to_w}",
                 _UNIT_ANSWERS)


def _sample_temperature(rng: random.Random) -> _Fields:
    frm, to = rng.sample(list(_TEMP_WORDS), 2)
    value = rng.randint(*_TEMP_RANGES[frm])
    return {"value": value, "from_scale": frm, "to_scale": to, "from_w": _TEMP_WORDS[frm], "to_w": _TEMP_WORDS[to]}


_CURRENCIES = tuple(CURRENCY_PER_USD)


def _sample_currency(rng: random.Random) -> _Fields:
    frm, to = rng.sample(_CURRENCIES, 2)
    return {"amount": _random_amount(rng, 1, 5000), "from_currency": frm, "to_currency": to}


def _sample_zones(rng: random.Random) -> _Fields:
    frm, to = rng.sample(list(UTC_OFFSET_MINUTES), 2)
    return {"time": _random_clock(rng), "from_zone": frm, "to_zone": to,
            "from_w": frm.replace("_", " ").replace("St Johns", "St. John's"),
            "to_w": to.replace("_", " ").replace("St Johns", "St. John's")}


def _sample_days_between(rng: random.Random) -> _Fields:
    start = _random_date(rng)
    end = (dt.date.fromisoformat(start) + dt.timedelta(days=rng.randint(1, 2000))).isoformat()
    return {"start_date": start, "end_date": end}


def _sample_age(rng: random.Random) -> _Fields:
    born = _random_date(rng, 1940, 2010)
    on = (dt.date.fromisoformat(born) + dt.timedelta(days=rng.randint(400, 30000))).isoformat()
    return {"birth_date": born, "on_date": on}


def _sample_gcd(rng: random.Random) -> _Fields:
    k = rng.randint(2, 30)
    return {"a": k * rng.randint(1, 40), "b": k * rng.randint(1, 40)}


def _sample_triangle(rng: random.Random) -> _Fields:
    a, b = rng.randint(3, 30), rng.randint(3, 30)
    return {"a": a, "b": b, "c": rng.randint(abs(a - b) + 1, a + b - 1)}


_POLYGONS = {3: "triangle", 4: "square", 5: "pentagon", 6: "hexagon", 7: "heptagon", 8: "octagon",
             9: "nonagon", 10: "decagon", 12: "dodecagon"}


def _sample_polygon(rng: random.Random) -> _Fields:
    sides = rng.choice(list(_POLYGONS) + [rng.randint(13, 40)])
    return {"sides": sides, "shape": _POLYGONS.get(sides, f"{sides}-sided polygon")}


_PERIODS = {1: "annually", 2: "semiannually", 4: "quarterly", 12: "monthly", 365: "daily"}

_CITIES = (("Paris", 48.8566, 2.3522), ("London", 51.5074, -0.1278), ("Tokyo", 35.6762, 139.6503),
           ("New York", 40.7128, -74.006), ("Sydney", -33.8688, 151.2093), ("Cairo", 30.0444, 31.2357),
           ("Rio de Janeiro", -22.9068, -43.1729), ("Nairobi", -1.2921, 36.8219), ("Toronto", 43.6532, -79.3832),
           ("Mumbai", 19.076, 72.8777), ("Reykjavik", 64.1466, -21.9426), ("Lima", -12.0464, -77.0428),
           ("Singapore", 1.3521, 103.8198), ("Cape Town", -33.9249, 18.4241), ("Anchorage", 61.2181, -149.9003))


def _sample_cities(rng: random.Random) -> _Fields:
    (c1, la1, lo1), (c2, la2, lo2) = rng.sample(_CITIES, 2)
    return {"city1": c1, "lat1": la1, "lon1": lo1, "city2": c2, "lat2": la2, "lon2": lo2}


_ELEMENT_PROPS = {"symbol": "chemical symbol", "atomic_number": "atomic number", "atomic_mass": "standard atomic mass",
                  "category": "element category", "period": "period in the periodic table",
                  "group": "group in the periodic table"}
_PLANET_FACTS = {"diameter_km": "diameter in kilometers", "moons": "number of known moons",
                 "orbital_period_days": "orbital period in Earth days",
                 "distance_from_sun_million_km": "mean distance from the Sun in millions of kilometers",
                 "surface_gravity_m_s2": "surface gravity in m/s^2"}


def _pick(rng: random.Random, table: Mapping[str, Any]) -> str:
    return rng.choice(list(table))


_TASKS: tuple[_Task, ...] = (
    # statistics and arithmetic
    _Task("stats_mean_of_list", lambda r: {"values": _values(r)},
          ("What's the average of {values}?", "Compute the mean of these numbers: {values}.",
           "My quiz scores were {values}. What is my mean score?", "Give me the arithmetic mean of {values}."),
          "average the numbers {values}", ("The mean of {values} is {result}.", "The average comes out to {result}.")),
    _Task("stats_median_of_list", lambda r: {"values": _values(r)},
          ("What's the median of {values}?", "Find the middle value of this data: {values}.",
           "Daily step counts in thousands were {values}. What is the median?"),
          "find the median of {values}", ("The median is {result}.", "The median of {values} is {result}.")),
    _Task("stats_standard_deviation", lambda r: {"values": _values(r), "kind": r.choice(("sample", "population"))},
          ("What is the {kind} standard deviation of {values}?",
           "Compute the {kind} standard deviation for the data {values}.",
           "How spread out are {values}? Give me the {kind} standard deviation."),
          "compute the {kind} standard deviation of {values}",
          ("The {kind} standard deviation is {result}.", "For {values}, the {kind} standard deviation is {result}.")),
    _Task("stats_value_range", lambda r: {"values": _values(r, -10, 40)},
          ("What's the range, max minus min, of {values}?",
           "How far apart are the largest and smallest of {values}?",
           "Temperatures this week were {values}. What was the spread between the warmest and coldest day?"),
          "find the spread between the largest and smallest of {values}",
          ("The range is {result}.", "The largest and smallest values differ by {result}.")),
    _Task("weighted_average_of_values",
          lambda r: (lambda n: {"values": [r.randint(50, 100) for _ in range(n)],
                                "weights": [r.randint(1, 5) for _ in range(n)]})(r.randint(2, 5)),
          ("My course grades are {values} with credit weights {weights}. What's my weighted average?",
           "Compute the weighted mean of {values} using weights {weights}.",
           "Values {values}, weights {weights}: what is the weighted average?"),
          "take the weighted average of {values} with weights {weights}",
          ("The weighted average is {result}.", "Weighted by {weights}, the average is {result}.")),
    _Task("percent_change_between", lambda r: {"old_value": r.randint(10, 1000), "new_value": r.randint(10, 1000)},
          ("By what percent did the price change going from {old_value} to {new_value}?",
           "A stock went from {old_value} to {new_value}. What's the percentage change?",
           "What is the percent change from {old_value} to {new_value}?"),
          "find the percent change from {old_value} to {new_value}",
          ("The change is {result}%.", "Going from {old_value} to {new_value} is a change of {result} percent.")),
    _Task("percentage_of_number",
          lambda r: {"percent": r.choice((5, 10, 12.5, 15, 18, 20, 25, 33, 40, 75)), "number": r.randint(10, 5000)},
          ("What is {percent}% of {number}?", "How much is {percent} percent of {number}?",
           "Work out {percent}% of {number} for me."),
          "take {percent}% of {number}", ("{percent}% of {number} is {result}.", "That's {result}.")),
    _Task("greatest_common_divisor_of", _sample_gcd,
          ("What's the greatest common divisor of {a} and {b}?", "Find the GCD of {a} and {b}.",
           "What is the largest number that divides both {a} and {b}?"),
          "find the greatest common divisor of {a} and {b}",
          ("The greatest common divisor of {a} and {b} is {result}.", "GCD({a}, {b}) = {result}.")),
    _Task("least_common_multiple_of", lambda r: {"a": r.randint(2, 60), "b": r.randint(2, 60)},
          ("What's the least common multiple of {a} and {b}?", "Find the LCM of {a} and {b}.",
           "What is the smallest number that both {a} and {b} divide evenly?"),
          "find the least common multiple of {a} and {b}",
          ("The least common multiple of {a} and {b} is {result}.", "LCM({a}, {b}) = {result}.")),
    _Task("primality_check_integer", lambda r: {"n": r.randint(2, 10000)},
          ("Is {n} a prime number?", "Can you check whether {n} is prime?", "Tell me if {n} is prime or not."),
          "check whether {n} is prime", ("{n} {result}.", "I checked: {n} {result}."),
          _bool_text("is prime", "is not prime")),
    _Task("factorial_of_integer", lambda r: {"n": r.randint(0, 20)},
          ("What is {n} factorial?", "Compute {n}! for me.",
           "In how many orders can {n} distinct books be arranged on a shelf?"),
          "compute {n} factorial", ("{n}! = {result}.", "{n} factorial is {result}.")),
    _Task("nth_fibonacci_number", lambda r: {"n": r.randint(0, 90)},
          ("What is Fibonacci number F({n})?", "Give me the Fibonacci number at index {n}, with F(0) = 0.",
           "Compute F_{n} of the Fibonacci sequence."),
          "find Fibonacci number F({n})", ("F({n}) = {result}.", "The Fibonacci number at index {n} is {result}.")),
    # unit conversion
    _unit_task("convert_length_units", _LENGTH_WORDS, _LENGTH_PAIRS,
               ("I walked {value} {from_w} today; how far is that in {to_w}?",)),
    _unit_task("convert_mass_units", _MASS_WORDS, _MASS_PAIRS,
               ("My parcel weighs {value} {from_w}. What is that in {to_w}?",)),
    _unit_task("convert_volume_units", _VOLUME_WORDS, _VOLUME_PAIRS,
               ("A recipe calls for {value} {from_w}. How many {to_w} is that?",)),
    _unit_task("convert_speed_units", _SPEED_WORDS, _SPEED_PAIRS,
               ("The sign says {value} {from_w}. What's that speed in {to_w}?",)),
    _unit_task("convert_data_size_units", _DATA_WORDS, _DATA_PAIRS,
               ("My disk holds {value} {from_w}. How much is that in {to_w}?",)),
    _unit_task("convert_area_units", _AREA_WORDS, _AREA_PAIRS,
               ("The plot of land covers {value} {from_w}. What's that in {to_w}?",)),
    _Task("convert_temperature_scale", _sample_temperature,
          ("Convert {value} {from_w} to {to_w}.", "What is {value} {from_w} in {to_w}?",
           "The thermometer reads {value} {from_w}. What is that in {to_w}?"),
          "convert {value} {from_w} to {to_w}", ("{value} {from_w} is {result} {to_w}.", "That's {result} {to_w}.")),
    _Task("convert_currency_fixed_rates", _sample_currency,
          ("How much is {amount} {from_currency} in {to_currency}?",
           "Convert {amount} {from_currency} to {to_currency} with the built-in rates.",
           "I have {amount} {from_currency}. What would that be in {to_currency}?"),
          "convert {amount} {from_currency} to {to_currency}",
          ("{amount} {from_currency} is {result} {to_currency} at the fixed built-in rate.",
           "At the tool's fixed rates that's {result} {to_currency}.")),
    # dates and times
    _Task("days_between_dates", _sample_days_between,
          ("How many days are there from {start_date} to {end_date}?", "Count the days between {start_date} and {end_date}.",
           "My trip starts {start_date} and ends {end_date}. How many days apart are those dates?"),
          "count the days from {start_date} to {end_date}",
          ("There are {result} days from {start_date} to {end_date}.", "They are {result} days apart.")),
    _Task("date_after_adding_days", lambda r: {"date": _random_date(r), "days": r.randint(1, 1000)},
          ("What date is {days} days after {date}?", "If today is {date}, what's the date in {days} days?",
           "Add {days} days to {date}."),
          "add {days} days to {date}", ("{days} days after {date} is {result}.", "The date will be {result}.")),
    _Task("weekday_of_date", lambda r: {"date": _random_date(r)},
          ("What day of the week was {date}?", "Which weekday does {date} fall on?",
           "Was {date} on a weekend? Tell me its weekday."),
          "find the weekday of {date}", ("{date} is a {result}.", "It falls on a {result}.")),
    _Task("iso_week_of_date", lambda r: {"date": _random_date(r)},
          ("Which ISO week is {date} in?", "Give me the ISO 8601 week of {date}.",
           "What ISO week does {date} belong to?"),
          "find the ISO week of {date}", ("{date} is in ISO week {result}.", "The ISO week is {result}.")),
    _Task("day_of_year_for_date", lambda r: {"date": _random_date(r)},
          ("What day of the year is {date}?", "What is the ordinal day number of {date} within its year?",
           "How many days into its year is {date}, counting January 1 as day 1?"),
          "find the day of the year of {date}", ("{date} is day {result} of the year.", "It's day number {result}.")),
    _Task("leap_year_check", lambda r: {"year": r.choice((r.randint(1600, 2400), 4 * r.randint(400, 600)))},
          ("Is {year} a leap year?", "Does the year {year} have a February 29?", "Check whether {year} is a leap year."),
          "check whether {year} is a leap year", ("{year} {result}.", "According to the Gregorian rules, {year} {result}."),
          _bool_text("is a leap year", "is not a leap year")),
    _Task("clock_time_after_minutes", lambda r: {"time": _random_clock(r), "minutes": r.randint(5, 1500)},
          ("What time will it be {minutes} minutes after {time}?",
           "If I start at {time} and it takes {minutes} minutes, when do I finish?", "Add {minutes} minutes to {time}."),
          "add {minutes} minutes to {time}", ("{minutes} minutes after {time} it will be {result}.", "You'd finish at {result}.")),
    _Task("convert_time_between_zones", _sample_zones,
          ("When it's {time} in {from_w}, what time is it in {to_w}?", "Convert {time} {from_w} time to {to_w} time.",
           "I have a call at {time} {from_w} time. What's that in {to_w}?"),
          "convert {time} from {from_w} time to {to_w} time",
          ("{time} in {from_w} is {result} in {to_w}, using standard time without daylight saving.",
           "In {to_w} it's {result} (standard time).")),
    _Task("age_in_full_years", _sample_age,
          ("How old is someone born on {birth_date} as of {on_date}?",
           "I was born {birth_date}. How old will I be on {on_date}?",
           "Compute the age in completed years on {on_date} for a birth date of {birth_date}."),
          "compute the age on {on_date} of someone born {birth_date}",
          ("On {on_date} the age is {result} years.", "That's {result} full years.")),
    # text
    _Task("count_words_in_text", lambda r: {"text": _phrase(r, 2, 12)},
          ('How many words are in "{text}"?', "Count the words in this: {text}", 'Word count for "{text}", please.'),
          'count the words in "{text}"', ("That text has {result} words.", 'There are {result} words in "{text}".')),
    _Task("reverse_text_string", lambda r: {"text": _phrase(r, 1, 3)},
          ('Reverse the string "{text}".', 'What is "{text}" spelled backwards?', 'Write "{text}" in reverse order.'),
          'reverse "{text}"', ('Reversed, it reads "{result}".', 'Backwards: "{result}".')),
    _Task("palindrome_phrase_check", lambda r: {"text": r.choice(_PALINDROMES) if r.random() < 0.5 else _phrase(r, 1, 3)},
          ('Is "{text}" a palindrome?', 'Does "{text}" read the same forwards and backwards?',
           'Check if the phrase "{text}" is a palindrome, ignoring spaces and punctuation.'),
          'check whether "{text}" is a palindrome', ('"{text}" {result}.', "Ignoring case and punctuation, it {result}."),
          _bool_text("is a palindrome", "is not a palindrome")),
    _Task("caesar_shift_text",
          lambda r: (lambda d: {"text": _phrase(r, 1, 4), "shift": r.randint(1, 25), "direction": d,
                                "verb": d.capitalize(), "done": d + "d"})(r.choice(("encode", "decode"))),
          ('{verb} "{text}" with a Caesar shift of {shift}.', 'Use a Caesar cipher with shift {shift} to {direction} "{text}".',
           'Apply Caesar shift {shift} to "{text}" ({direction}).'),
          '{direction} "{text}" with a Caesar shift of {shift}', ('The {done} text is "{result}".', 'Result: "{result}".')),
    _Task("make_url_slug", lambda r: {"text": _title(r)},
          ('Make a URL slug from the title "{text}".', 'What slug should a blog post called "{text}" get?',
           'Turn "{text}" into a lowercase hyphenated slug.'),
          'make a URL slug of "{text}"', ('The slug is "{result}".', 'Use "{result}".')),
    _Task("count_character_occurrences",
          lambda r: (lambda t: {"text": t, "character": r.choice([c for c in t if c.isalpha()])})(_phrase(r, 2, 6)),
          ("How many times does the letter '{character}' appear in \"{text}\"?",
           "Count the occurrences of '{character}' in \"{text}\".",
           "In the phrase \"{text}\", how often does '{character}' occur?"),
          "count the letter '{character}' in \"{text}\"",
          ("'{character}' appears {result} times.", "The letter '{character}' occurs {result} times.")),
    _Task("count_vowels_in_text", lambda r: {"text": _phrase(r, 1, 6)},
          ('How many vowels are in "{text}"?', 'Count the vowels in the phrase "{text}".',
           'Tell me the number of vowels (a, e, i, o, u) in "{text}".'),
          'count the vowels in "{text}"', ('"{text}" has {result} vowels.', "I count {result} vowels.")),
    _Task("most_common_letter", lambda r: {"text": _phrase(r, 2, 6)},
          ('Which letter appears most often in "{text}"?', 'What\'s the most frequent letter in "{text}"?',
           'Find the most common letter in the text "{text}".'),
          'find the most common letter in "{text}"',
          ("The most common letter is '{result}'.", "'{result}' appears most often.")),
    _Task("acronym_from_phrase", lambda r: {"phrase": r.choice(_ACRONYM_PHRASES) if r.random() < 0.6 else _phrase(r, 2, 5)},
          ('What\'s the acronym for "{phrase}"?', 'Make an acronym out of "{phrase}".',
           'Abbreviate "{phrase}" using the first letter of each word.'),
          'make the acronym of "{phrase}"', ("The acronym is {result}.", '"{phrase}" becomes {result}.')),
    # lookups
    _Task("chemical_element_property",
          lambda r: (lambda e, p: {"element": e, "property": p, "element_w": e.capitalize(), "prop_w": _ELEMENT_PROPS[p]})(
              _pick(r, ELEMENTS), _pick(r, _ELEMENT_PROPS)),
          ("What is the {prop_w} of {element_w}?", "Look up the {prop_w} of {element_w}.",
           "Tell me {element_w}'s {prop_w}."),
          "look up the {prop_w} of {element_w}",
          ("The {prop_w} of {element_w} is {result}.", "{element_w}: {prop_w} {result}.")),
    _Task("country_capital_city", lambda r: {"country": _pick(r, COUNTRIES)},
          ("Which city is the capital of {country}?", "Name the capital city of {country}.",
           "I'm writing about {country}. What's its capital?"),
          "look up the capital of {country}", ("The capital of {country} is {result}.", "It's {result}.")),
    _Task("country_currency_code", lambda r: {"country": _pick(r, COUNTRIES)},
          ("Which currency does {country} use? Give me the ISO code.", "What is the ISO 4217 currency code for {country}?",
           "What currency code should I use for prices in {country}?"),
          "look up the currency code of {country}", ("{country} uses {result}.", "The currency code is {result}.")),
    _Task("country_continent_name", lambda r: {"country": _pick(r, COUNTRIES)},
          ("Which continent is {country} on?", "On what continent would I find {country}?",
           "Tell me the continent of {country}."),
          "look up the continent of {country}", ("{country} is in {result}.", "It's in {result}.")),
    _Task("planet_fact_lookup",
          lambda r: (lambda p, f: {"planet": p, "fact": f, "fact_w": _PLANET_FACTS[f]})(_pick(r, PLANETS), _pick(r, _PLANET_FACTS)),
          ("What is the {fact_w} of {planet}?", "Look up {planet}'s {fact_w}.",
           "From your planet table, give me the {fact_w} for {planet}."),
          "look up the {fact_w} of {planet}", ("The {fact_w} of {planet} is {result}.", "{planet}'s {fact_w}: {result}.")),
    # geometry
    _Task("circle_area_from_radius", lambda r: {"radius": r.choice((r.randint(1, 100), round(r.uniform(0.5, 50), 1)))},
          ("What's the area of a circle whose radius is {radius}?",
           "A round table top has a radius of {radius} m. How much surface does it have?",
           "Find the area enclosed by a circle of radius {radius}."),
          "find the area of a circle of radius {radius}",
          ("The area is {result}.", "A circle of radius {radius} has an area of {result}.")),
    _Task("circle_circumference_from_radius", lambda r: {"radius": r.choice((r.randint(1, 100), round(r.uniform(0.5, 50), 1)))},
          ("What is the circumference of a circle of radius {radius}?",
           "How long is the edge of a circular track with radius {radius} m?",
           "Find the perimeter of a circle whose radius is {radius}."),
          "find the circumference of a circle of radius {radius}",
          ("The circumference is {result}.", "Its circumference is {result}.")),
    _Task("rectangle_area_from_sides", lambda r: {"length": r.randint(1, 200), "width": r.choice((r.randint(1, 200), round(r.uniform(1, 50), 1)))},
          ("How much area does a {length} by {width} rectangle cover?",
           "A room measures {length} m by {width} m. What is its floor area?", "Find the area of a {length} x {width} rectangle."),
          "find the area of a {length} by {width} rectangle", ("The area is {result}.", "That rectangle covers {result}.")),
    _Task("triangle_area_from_three_sides", _sample_triangle,
          ("A triangular plot has sides of {a} m, {b} m and {c} m. How big is it?",
           "Use Heron's formula for a triangle whose sides measure {a}, {b} and {c}.",
           "Sides {a}, {b}, {c}: what area does that triangle enclose?"),
          "find the area of the triangle with sides {a}, {b} and {c}",
          ("The triangle's area is {result}.", "Its area is {result}.")),
    _Task("sphere_volume_from_radius", lambda r: {"radius": r.choice((r.randint(1, 50), round(r.uniform(0.5, 20), 1)))},
          ("What's the volume of a sphere with radius {radius}?", "How much space does a ball of radius {radius} cm take up?",
           "Find the volume enclosed by a sphere whose radius is {radius}."),
          "find the volume of a sphere of radius {radius}", ("The volume is {result}.", "It holds a volume of {result}.")),
    _Task("cylinder_volume_from_dims", lambda r: {"radius": r.randint(1, 40), "height": r.randint(1, 100)},
          ("What's the volume of a cylinder with radius {radius} and height {height}?",
           "A can has a radius of {radius} cm and is {height} cm tall. What's its volume?",
           "Find how much a cylindrical tank holds if its radius is {radius} and its height is {height}."),
          "find the volume of a cylinder with radius {radius} and height {height}",
          ("The volume is {result}.", "The cylinder holds {result}.")),
    _Task("cone_volume_from_dims", lambda r: {"radius": r.randint(1, 40), "height": r.randint(1, 100)},
          ("How much does a cone hold if its base radius is {radius} and it is {height} tall?",
           "A conical pile of sand is {height} m high with a base radius of {radius} m. What volume is that?",
           "Find the volume of a right cone, radius {radius}, height {height}."),
          "find the volume of a cone with radius {radius} and height {height}",
          ("The volume is {result}.", "The cone's volume is {result}.")),
    _Task("cartesian_point_distance", lambda r: {k: r.randint(-50, 50) for k in ("x1", "y1", "x2", "y2")},
          ("How far apart are the points ({x1}, {y1}) and ({x2}, {y2})?",
           "What's the Euclidean distance from ({x1}, {y1}) to ({x2}, {y2})?",
           "Find the straight-line distance between ({x1}, {y1}) and ({x2}, {y2})."),
          "find the distance from ({x1}, {y1}) to ({x2}, {y2})",
          ("The distance is {result}.", "They are {result} apart.")),
    _Task("haversine_great_circle_km", _sample_cities,
          ("How far is {city1} ({lat1}, {lon1}) from {city2} ({lat2}, {lon2}) as the crow flies?",
           "What's the great-circle distance between {city1} at ({lat1}, {lon1}) and {city2} at ({lat2}, {lon2})?",
           "Using coordinates ({lat1}, {lon1}) for {city1} and ({lat2}, {lon2}) for {city2}, how many km apart are they?"),
          "find the great-circle distance from {city1} to {city2}",
          ("{city1} and {city2} are about {result} km apart.", "The great-circle distance is {result} km.")),
    _Task("regular_polygon_interior_angle", _sample_polygon,
          ("What is each interior angle of a regular {shape}?",
           "How many degrees is one interior angle of a regular polygon with {sides} sides?",
           "Find the interior angle of a regular {sides}-gon."),
          "find the interior angle of a regular polygon with {sides} sides",
          ("Each interior angle is {result} degrees.", "A regular {shape} has interior angles of {result} degrees.")),
    # finance
    _Task("compound_interest_balance",
          lambda r: (lambda p: {"principal": r.choice((1000, 2500, 5000, 10000, r.randint(100, 50000))),
                                "annual_rate_percent": r.choice((1.5, 2, 3, 3.5, 4, 5, 6, 7.25, 8)),
                                "years": r.randint(1, 30), "periods_per_year": p, "period_w": _PERIODS[p]})(r.choice(list(_PERIODS))),
          ("If I invest {principal} at {annual_rate_percent}% a year compounded {period_w} for {years} years, what will it grow to?",
           "What's the balance after {years} years on {principal} at {annual_rate_percent}% compounded {period_w}?",
           "I'm putting {principal} into savings at {annual_rate_percent}% annual interest, compounded {period_w}. How much after {years} years?"),
          "compound {principal} at {annual_rate_percent}% {period_w} for {years} years",
          ("After {years} years the balance will be {result}.", "It grows to {result}.")),
    _Task("loan_monthly_installment",
          lambda r: {"principal": r.choice((5000, 12000, 20000, 250000, r.randint(1000, 500000))),
                     "annual_rate_percent": r.choice((0, 2.9, 3.5, 4.25, 5, 6.5, 7, 9.9)), "years": r.randint(1, 30)},
          ("What's the monthly payment on a {principal} loan at {annual_rate_percent}% over {years} years?",
           "I'm borrowing {principal} for {years} years at {annual_rate_percent}% APR. How much is each monthly installment?",
           "Work out the monthly installment for a loan of {principal} at {annual_rate_percent}% per year for {years} years."),
          "find the monthly payment on {principal} at {annual_rate_percent}% over {years} years",
          ("The monthly payment is {result}.", "Each month you'd pay {result}.")),
    _Task("simple_interest_amount",
          lambda r: {"principal": r.randint(100, 100000), "annual_rate_percent": r.choice((1, 2, 2.5, 3, 4, 5, 6)),
                     "years": r.randint(1, 20)},
          ("How much simple interest does {principal} earn at {annual_rate_percent}% per year over {years} years?",
           "What's the simple interest on {principal} at {annual_rate_percent}% for {years} years?",
           "Without compounding, what interest does {principal} make in {years} years at {annual_rate_percent}%?"),
          "find the simple interest on {principal} at {annual_rate_percent}% for {years} years",
          ("The simple interest is {result}.", "It earns {result} in interest.")),
    _Task("bill_split_with_tip",
          lambda r: {"bill": _random_amount(r, 10, 600), "tip_percent": r.choice((10, 12, 15, 18, 20, 25)), "people": r.randint(2, 12)},
          ("Our bill is {bill} and we want to tip {tip_percent}%. Split among {people} people, how much does each pay?",
           "Split a {bill} bill plus {tip_percent}% tip between {people} people.",
           "{people} friends share a {bill} dinner bill and add a {tip_percent}% tip. What's each person's share?"),
          "split {bill} plus a {tip_percent}% tip among {people} people",
          ("Each person pays {result}.", "Everyone owes {result}.")),
    _Task("discounted_price_after_percent",
          lambda r: {"price": _random_amount(r, 5, 2000), "discount_percent": r.choice((5, 10, 15, 20, 25, 30, 40, 50, 70))},
          ("What's the price of a {price} item after a {discount_percent}% discount?",
           "A jacket costs {price} and is {discount_percent}% off. What do I pay?", "Apply a {discount_percent}% discount to {price}."),
          "take {discount_percent}% off {price}", ("The discounted price is {result}.", "You'd pay {result}.")),
    _Task("price_with_sales_tax",
          lambda r: {"price": _random_amount(r, 1, 3000), "tax_percent": r.choice((4, 5, 6, 7.25, 8, 8.875, 10, 20))},
          ("What's the total for a {price} purchase with {tax_percent}% sales tax?", "Add {tax_percent}% sales tax to {price}.",
           "How much will I pay for something priced {price} once {tax_percent}% tax is included?"),
          "add {tax_percent}% sales tax to {price}", ("With tax the total is {result}.", "The total comes to {result}.")),
    _Task("break_even_unit_count",
          lambda r: (lambda v: {"fixed_costs": r.randint(500, 200000), "variable_cost_per_unit": v,
                                "price_per_unit": v + r.randint(1, 50)})(r.randint(1, 100)),
          ("My fixed costs are {fixed_costs}, I sell each unit for {price_per_unit} and each costs {variable_cost_per_unit} to make. How many units until I break even?",
           "How many units must be sold to break even with fixed costs of {fixed_costs}, price {price_per_unit} per unit and variable cost {variable_cost_per_unit} per unit?"),
          "find the break-even unit count for fixed costs {fixed_costs}, price {price_per_unit} and unit cost {variable_cost_per_unit}",
          ("You need to sell {result} units to break even.", "Break-even is at {result} units.")),
    _Task("return_on_investment_pct", lambda r: {"cost": r.randint(100, 100000), "gain": r.randint(50, 150000)},
          ("I invested {cost} and got back {gain}. What's my ROI in percent?",
           "What's the return on investment if {cost} turned into {gain}?",
           "Put in {cost}, came out with {gain}: what percentage return is that?"),
          "find the ROI of turning {cost} into {gain}",
          ("The return on investment is {result}%.", "That's an ROI of {result} percent.")),
    _Task("compound_annual_growth_rate",
          lambda r: {"start_value": r.randint(100, 10000), "end_value": r.randint(100, 30000), "years": r.randint(1, 25)},
          ("An investment grew from {start_value} to {end_value} in {years} years. What's the CAGR?",
           "Compute the compound annual growth rate from {start_value} to {end_value} over {years} years.",
           "Revenue moved from {start_value} to {end_value} across {years} years. What yearly growth rate does that imply?"),
          "find the CAGR from {start_value} to {end_value} over {years} years",
          ("The compound annual growth rate is {result}%.", "That's {result}% per year.")),
    # everyday
    _Task("body_mass_index_metric",
          lambda r: {"weight_kg": r.randint(40, 140), "height_m": round(r.uniform(1.45, 2.05), 2)},
          ("What's the BMI of someone who weighs {weight_kg} kg and is {height_m} m tall?",
           "I'm {height_m} m and {weight_kg} kg. What's my body mass index?",
           "Body mass index for {weight_kg} kg at {height_m} m, please."),
          "compute the BMI for {weight_kg} kg and {height_m} m",
          ("The body mass index is {result}.", "That gives a BMI of {result}.")),
    _Task("travel_time_hours", lambda r: {"distance_km": r.randint(5, 2000), "speed_kmh": r.choice((40, 50, 60, 80, 90, 100, 110, 120, 300))},
          ("How long does it take to drive {distance_km} km at {speed_kmh} km/h?",
           "At a steady {speed_kmh} km/h, how many hours for a {distance_km} km trip?",
           "Travel time for {distance_km} km at {speed_kmh} km/h?"),
          "find the travel time for {distance_km} km at {speed_kmh} km/h",
          ("It takes {result} hours.", "The trip takes {result} hours.")),
)
_TASK_BY_TOOL = {t.tool: t for t in _TASKS}


def single_tool_tasks() -> list[str]:
    """The tools that have single-call templates (every tool of the library)."""
    return list(_TASK_BY_TOOL)


def result_text(tool: str, result: Any) -> str:
    """How an answer states ``tool``'s ``result`` (``is prime`` / ``is not prime`` for yes-no tools)."""
    task = _TASK_BY_TOOL.get(tool)
    return task.show(result) if task is not None else _fmt(result)


# ------------------------------------------------------------------------------------ multi-step
@dataclass(frozen=True)
class _Chain:
    """Two calls in sequence; the second call's arguments use the first call's result."""

    tools: tuple[str, str]
    sample: Callable[[random.Random], _Fields]
    first: Callable[[_Fields], dict[str, Any]]
    second: Callable[[_Fields, Any], dict[str, Any]]
    queries: tuple[str, ...]
    goals: tuple[str, str]  # infinitive phrases; the second may not name the first result
    answers: tuple[str, ...]  # may use {r1} and {r2}


_TABLE_CURRENCY_COUNTRIES = tuple(c for c, (_, code, _) in COUNTRIES.items() if code in CURRENCY_PER_USD and code != "USD")

_CHAINS: tuple[_Chain, ...] = (
    _Chain(("convert_length_units", "circle_area_from_radius"), lambda r: {"v": r.randint(3, 200)},
           lambda f: {"value": f["v"], "from_unit": "ft", "to_unit": "m"}, lambda f, r1: {"radius": r1},
           ("A circular garden has a radius of {v} feet. What is its area in square meters?",
            "Our round pond is {v} ft in radius. How many square meters of surface is that?"),
           ("convert the {v} ft radius to meters", "find the area of a circle with that radius"),
           ("A radius of {v} ft is {r1} m, so the area is {r2} square meters.",
            "{v} feet = {r1} m; the circle's area is {r2} m^2.")),
    _Chain(("convert_currency_fixed_rates", "discounted_price_after_percent"),
           lambda r: dict(zip(("c1", "c2"), r.sample(_CURRENCIES, 2)), amount=r.randint(20, 2000), d=r.choice((10, 15, 20, 25, 30, 50))),
           lambda f: {"amount": f["amount"], "from_currency": f["c1"], "to_currency": f["c2"]},
           lambda f, r1: {"price": r1, "discount_percent": f["d"]},
           ("A coat costs {amount} {c1}. What would it cost in {c2} after a {d}% discount?",
            "Convert {amount} {c1} to {c2}, then take {d}% off. What's the final price?"),
           ("convert {amount} {c1} to {c2}", "apply the {d}% discount to the converted price"),
           ("{amount} {c1} is {r1} {c2}; after {d}% off it costs {r2} {c2}.",
            "In {c2} that's {r1}, and with the {d}% discount, {r2} {c2}.")),
    _Chain(("date_after_adding_days", "weekday_of_date"), lambda r: {"date": _random_date(r), "days": r.randint(1, 1000)},
           lambda f: {"date": f["date"], "days": f["days"]}, lambda f, r1: {"date": r1},
           ("What day of the week will it be {days} days after {date}?",
            "Starting from {date}, which weekday lands {days} days later?"),
           ("add {days} days to {date}", "find the weekday of the resulting date"),
           ("{days} days after {date} is {r1}, which is a {r2}.", "That date is {r1}, a {r2}.")),
    _Chain(("convert_mass_units", "body_mass_index_metric"),
           lambda r: {"w": r.randint(90, 320), "h": round(r.uniform(1.45, 2.05), 2)},
           lambda f: {"value": f["w"], "from_unit": "lb", "to_unit": "kg"},
           lambda f, r1: {"weight_kg": r1, "height_m": f["h"]},
           ("I weigh {w} pounds and I'm {h} m tall. What's my BMI?",
            "Body mass index for someone who is {w} lb and {h} meters tall?"),
           ("convert {w} lb to kilograms", "compute the BMI with that weight and {h} m"),
           ("{w} lb is {r1} kg, which gives a BMI of {r2}.", "At {r1} kg and {h} m, the BMI is {r2}.")),
    _Chain(("convert_speed_units", "travel_time_hours"), lambda r: {"s": r.randint(20, 80), "d": r.randint(10, 1500)},
           lambda f: {"value": f["s"], "from_unit": "mph", "to_unit": "km/h"},
           lambda f, r1: {"distance_km": f["d"], "speed_kmh": r1},
           ("I drive at a steady {s} mph. How many hours will {d} km take?",
            "At {s} miles per hour, how long is a {d} km journey in hours?"),
           ("convert {s} mph to km/h", "compute the travel time for {d} km at that speed"),
           ("{s} mph is {r1} km/h, so {d} km takes {r2} hours.", "The trip takes {r2} hours at {r1} km/h.")),
    _Chain(("stats_mean_of_list", "percent_change_between"),
           lambda r: {"old": r.randint(50, 500), "values": [r.randint(40, 600) for _ in range(r.randint(3, 6))]},
           lambda f: {"values": f["values"]}, lambda f, r1: {"old_value": f["old"], "new_value": r1},
           ("Last year our monthly sales averaged {old}. This year the months were {values}. By what percent did the average change?",
            "Old average: {old}. New readings: {values}. What's the percent change in the average?"),
           ("average this year's values {values}", "compute the percent change from {old} to that average"),
           ("This year's average is {r1}, a change of {r2}% from {old}.", "The new mean {r1} is {r2}% versus {old}.")),
    _Chain(("convert_currency_fixed_rates", "price_with_sales_tax"),
           lambda r: dict(zip(("c1", "c2"), r.sample(_CURRENCIES, 2)), amount=r.randint(50, 3000), t=r.choice((5, 7.25, 8, 10, 20))),
           lambda f: {"amount": f["amount"], "from_currency": f["c1"], "to_currency": f["c2"]},
           lambda f, r1: {"price": r1, "tax_percent": f["t"]},
           ("A laptop is priced at {amount} {c1}. What's that in {c2} including {t}% sales tax?",
            "Convert {amount} {c1} into {c2} and add {t}% tax."),
           ("convert {amount} {c1} to {c2}", "add {t}% sales tax to the converted price"),
           ("{amount} {c1} is {r1} {c2}; with {t}% tax that's {r2} {c2}.", "Total in {c2}: {r2} (before tax {r1}).")),
    _Chain(("caesar_shift_text", "reverse_text_string"), lambda r: {"text": _phrase(r, 1, 3), "shift": r.randint(1, 25)},
           lambda f: {"text": f["text"], "shift": f["shift"], "direction": "encode"}, lambda f, r1: {"text": r1},
           ('Encode "{text}" with a Caesar shift of {shift}, then reverse the result.',
            'Caesar-encode "{text}" (shift {shift}) and give it to me backwards.'),
           ('encode "{text}" with shift {shift}', "reverse the encoded text"),
           ('Encoded it is "{r1}"; reversed, "{r2}".', 'The final string is "{r2}".')),
    _Chain(("date_after_adding_days", "iso_week_of_date"), lambda r: {"date": _random_date(r), "days": r.randint(1, 500)},
           lambda f: {"date": f["date"], "days": f["days"]}, lambda f, r1: {"date": r1},
           ("Which ISO week will it be {days} days after {date}?",
            "I ship {days} days after {date}. What ISO week is the shipping date in?"),
           ("add {days} days to {date}", "find the ISO week of that date"),
           ("{days} days after {date} is {r1}, in ISO week {r2}.", "The date {r1} falls in ISO week {r2}.")),
    _Chain(("country_currency_code", "convert_currency_fixed_rates"),
           lambda r: {"country": r.choice(_TABLE_CURRENCY_COUNTRIES), "amount": r.randint(10, 5000)},
           lambda f: {"country": f["country"]},
           lambda f, r1: {"amount": f["amount"], "from_currency": "USD", "to_currency": r1},
           ("How much is {amount} USD in the local currency of {country}?",
            "I'm traveling to {country} with {amount} US dollars. What's that in the local money?"),
           ("look up the currency of {country}", "convert {amount} USD into that currency"),
           ("{country} uses {r1}; {amount} USD is {r2} {r1} at the fixed built-in rate.",
            "That's {r2} {r1} (fixed rate).")),
    _Chain(("compound_interest_balance", "percent_change_between"),
           lambda r: {"p": r.choice((1000, 2000, 5000, 10000)), "rate": r.choice((2, 3, 4, 5, 6)), "y": r.randint(2, 30)},
           lambda f: {"principal": f["p"], "annual_rate_percent": f["rate"], "years": f["y"], "periods_per_year": 12},
           lambda f, r1: {"old_value": f["p"], "new_value": r1},
           ("If {p} grows at {rate}% compounded monthly for {y} years, what's the total gain in percent?",
            "Savings of {p} at {rate}% a year, monthly compounding, {y} years: how many percent more do I end with?"),
           ("compound {p} at {rate}% monthly for {y} years", "compute the percent gain over {p}"),
           ("The balance reaches {r1}, a gain of {r2}%.", "From {p} to {r1} is {r2}% growth.")),
)


# ------------------------------------------------------------------------------------ no tool
_NO_TOOL = (  # (queries, what the user wants, whether the answer declines, answers)
    (("What's the weather like in {city} right now?", "Will it rain in {city} this afternoon?"),
     "live weather for {city}", True,
     ("I can't check live weather: none of my tools provide forecasts or current conditions.",
      "Sorry, I have no access to weather data, so I can't tell you about {city} right now.")),
    (("Book a table for {n} at an Italian restaurant tonight.", "Reserve dinner for {n} people at 8 pm."),
     "a restaurant booking", True,
     ("I can't make reservations; my tools only compute and look things up. Please book directly with the restaurant.",
      "Booking tables is outside what I can do here, sorry.")),
    (("Send an email to my manager saying I'll be late.", "Text my sister that I'm on my way."),
     "a message sent on their behalf", True,
     ("I can't send messages for you. A short note like \"Running late, be there soon\" would do.",
      "Sending messages isn't something my tools can do.")),
    (("Set an alarm for {time} tomorrow.", "Remind me at {time} to call the dentist."),
     "an alarm or reminder", True,
     ("I can't set alarms or reminders; please use your phone's clock app.",
      "Sorry, I have no way to schedule reminders.")),
    (("What is {company}'s share price at the moment?", "How is {company} stock doing today?"),
     "a live stock quote for {company}", True,
     ("I don't have live market data, so I can't give you {company}'s current share price.",
      "Real-time stock prices are beyond my tools, sorry.")),
    (("Hi! What can you help me with?", "Hello there, what sorts of things can you do?"),
     "to know what I can do", False,
     ("Hello! I can do calculations and statistics, unit and currency conversions (fixed rates), date and time "
      "arithmetic, text utilities, geometry, simple finance, and a few fact lookups.",
      "Hi! Ask me for conversions, date math, geometry, finance calculations or quick lookups.")),
    (("Thanks, that's all for now.", "Great, thank you for the help!"),
     "to close the conversation", False,
     ("You're welcome! Come back any time.", "Glad I could help. Have a good day!")),
    (("Tell me a joke about computers.", "Got a programming joke for me?"),
     "a joke", False,
     ("Why do programmers prefer dark mode? Because light attracts bugs.",
      "There are 10 kinds of people: those who understand binary and those who don't.")),
    (("Write a two-line poem about the {season}.", "Give me a short rhyme about {season}."),
     "a short poem about {season}", False,
     ("The {season} light is soft and low,\nit lingers long, then turns to go.",
      "In {season} days the hours run slow,\nand quiet winds come and go.")),
    (("Order a large pizza to my address.", "Can you get me a taxi to the airport?"),
     "a real-world order", True,
     ("I can't place orders or call services; please use the provider's app.",
      "Sorry, ordering things isn't something my tools support.")),
    (("What are today's top news headlines?", "Anything big in the news this morning?"),
     "today's news", True,
     ("I have no access to news feeds, so I can't tell you today's headlines.",
      "I can't browse current news, sorry.")),
    (("Which is better for a beginner, Python or JavaScript?", "Should I learn Python or JavaScript first?"),
     "advice on a first programming language", False,
     ("Both are good first languages: Python reads more simply, JavaScript runs in every browser. Pick the one "
      "that matches what you want to build.",
      "Python is often easier to start with; choose JavaScript if you mainly want to build web pages.")),
    (("Who will win the next football world cup?", "Predict the winner of the next {season} league."),
     "a prediction of a future event", True,
     ("Nobody can know that in advance, and none of my tools can predict outcomes.",
      "I can't predict future results.")),
)
_NO_TOOL_FILL = {"city": ("Paris", "Oslo", "Lima", "Nairobi", "Seoul", "Denver"), "n": ("two", "four", "six"),
                 "time": ("6:30", "7:15", "8:00", "9:45"), "company": ("Acme Corp", "Globex", "Initech", "Umbrella Ltd"),
                 "season": ("autumn", "winter", "spring", "summer")}


# -------------------------------------------------------------------------------- reasoner text
_PLAN_SINGLE = ("The user wants to {goal}. The {tool} tool does exactly that, so I'll call it.",
                "I need to {goal}. {tool} is the right tool for this.",
                "To answer, I should {goal}. I'll call {tool} with the values from the question.",
                "This is a job for {tool}: I need to {goal}.",
                "Of the available tools, {tool} fits: it lets me {goal}.")
_DONE_SINGLE = ("{tool} returned {raw}. That answers the question.", "The result is {raw}; I can answer now.",
                "I have what I need: {raw}.", "The tool gave {raw}, which is what the user asked for.")
_PLAN_MULTI = ("This takes two steps: first {goal1}, then {goal2}. I'll start with {tool1}.",
               "I need to {goal1} before I can {goal2}. First, {tool1}.",
               "Two tools are needed: {tool1} to {goal1}, then {tool2} to {goal2}. Step one now.")
_MID_MULTI = ("{tool1} returned {raw1}. Now I'll {goal2} with {tool2}.",
              "Step one gave {raw1}. Next, {tool2} with that value.",
              "Got {raw1}. I'll pass it to {tool2} to {goal2}.")
_DONE_MULTI = ("{tool2} returned {raw2}, so I have the final answer.", "Both steps are done; the result is {raw2}.",
               "Final value: {raw2}. Time to answer.")
_PLAN_PARALLEL = ("The user asks for {k} independent things: to {goals}. None depends on another, so I'll make {all_k} calls at once.",
                  "There are {k} separate requests; I need to {goals}. I can run them in parallel.",
                  "I need to {goals}. These are independent, so one executor turn with {k} calls will do.")
_DONE_PARALLEL = ("{All_k} calls returned: {raws}.", "I have every result ({raws}) and can answer.",
                  "The results are in: {raws}.")
_PLAN_NONE = ("The user wants {need}. None of the available tools ({tools}) can help with that, so no call is needed; I'll {plan}.",
              "This asks for {need}. The tools I have ({tools}) don't cover it. I'll {plan}.",
              "No tool applies here: the request is {need}, and {tools} are unrelated. I'll {plan}.")
_JOIN_PARALLEL = (("{0} Also: {1}", "{0} Also: {1} And: {2}"), ("{0} Next: {1}", "{0} Next: {1} Finally: {2}"),
                  ("Two things. First: {0} Second: {1}", "Three questions. 1) {0} 2) {1} 3) {2}"),
                  ("{0} Plus: {1}", "{0} Plus: {1} One more: {2}"))
_NUMBER_WORDS = {2: ("two", "both"), 3: ("three", "all three")}


# ------------------------------------------------------------------------------------ building
def _run(call: ToolCall) -> tuple[str, Any]:
    """The observation text and result of a call run by :func:`execute` (a failing call is a template bug)."""
    text = execute(call)
    obs = json.loads(text)
    if "error" in obs:
        raise RuntimeError(f"synthetic template made a failing call {call}: {obs['error']}")
    return text, obs["result"]


def _raw(result: Any) -> str:
    return json.dumps(result, ensure_ascii=False)


def _tools(rng: random.Random, needed: list[str]) -> tuple[Tool, ...]:
    others = [name for name in TOOLS if name not in needed]
    names = list(dict.fromkeys(needed)) + rng.sample(others, rng.randint(*_DISTRACTORS))
    rng.shuffle(names)
    return tuple(TOOLS[n].tool for n in names)


def _single(rng: random.Random) -> tuple[list[str], list[Turn]]:
    task = rng.choice(_TASKS)
    fields = task.sample(rng)
    call = ToolCall(task.tool, task.arguments(fields))
    observation, result = _run(call)
    text = {**fields, "result": task.show(result)}
    turns = [
        Turn("user", _fill(rng.choice(task.queries), fields)),
        Turn("reasoner", rng.choice(_PLAN_SINGLE).format(goal=_fill(task.goal, fields), tool=task.tool), "executor"),
        Turn("executor", calls=(call,)),
        Turn("observation", observation),
        Turn("reasoner", rng.choice(_DONE_SINGLE).format(tool=task.tool, raw=_raw(result)), "summarizer"),
        Turn("summarizer", _fill(rng.choice(task.answers), text)),
    ]
    return [task.tool], turns


def _multi_step(rng: random.Random) -> tuple[list[str], list[Turn]]:
    chain = rng.choice(_CHAINS)
    fields = chain.sample(rng)
    call1 = ToolCall(chain.tools[0], chain.first(fields))
    obs1, r1 = _run(call1)
    call2 = ToolCall(chain.tools[1], chain.second(fields, r1))
    obs2, r2 = _run(call2)
    goal1, goal2 = (_fill(g, fields) for g in chain.goals)
    names = {"tool1": chain.tools[0], "tool2": chain.tools[1]}
    turns = [
        Turn("user", _fill(rng.choice(chain.queries), fields)),
        Turn("reasoner", rng.choice(_PLAN_MULTI).format(goal1=goal1, goal2=goal2, **names), "executor"),
        Turn("executor", calls=(call1,)),
        Turn("observation", obs1),
        Turn("reasoner", rng.choice(_MID_MULTI).format(raw1=_raw(r1), goal2=goal2, **names), "executor"),
        Turn("executor", calls=(call2,)),
        Turn("observation", obs2),
        Turn("reasoner", rng.choice(_DONE_MULTI).format(raw2=_raw(r2), **names), "summarizer"),
        Turn("summarizer", _fill(rng.choice(chain.answers),
                                 {**fields, "r1": r1, "r2": result_text(chain.tools[1], r2)})),
    ]
    return list(chain.tools), turns


def _parallel(rng: random.Random) -> tuple[list[str], list[Turn]]:
    k = rng.choice((2, 2, 3))
    if rng.random() < 0.3:  # the same tool with different values ("capital of X and of Y")
        tasks = [rng.choice(_TASKS)] * k
    else:
        tasks = rng.sample(_TASKS, k)
    calls, queries, goals, answers = [], [], [], []
    for task in tasks:
        for _ in range(20):  # distinct calls (a repeated tool with repeated values would be odd)
            fields = task.sample(rng)
            call = ToolCall(task.tool, task.arguments(fields))
            if call not in calls:
                break
        _, result = _run(call)
        calls.append(call)
        queries.append(_fill(rng.choice(task.queries), fields))
        goals.append(_fill(task.goal, fields))
        answers.append(_fill(rng.choice(task.answers), {**fields, "result": task.show(result)}))
    observation = execute_all(calls)
    count, every = _NUMBER_WORDS[k]
    raws = "; ".join(_raw(o.get("result")) for o in json.loads(observation))
    turns = [
        Turn("user", rng.choice(_JOIN_PARALLEL)[k - 2].format(*queries)),
        Turn("reasoner", rng.choice(_PLAN_PARALLEL).format(k=count, all_k=every, goals=_joined(goals)), "executor"),
        Turn("executor", calls=tuple(calls)),
        Turn("observation", observation),
        Turn("reasoner", rng.choice(_DONE_PARALLEL).format(All_k=every.capitalize(), raws=raws), "summarizer"),
        # numbered in question order, so answers stay unambiguous when a tool is asked twice
        Turn("summarizer", rng.choice(("", "Here you go. ", "Here are the results. "))
             + " ".join(f"{j}) {a}" for j, a in enumerate(answers, 1))),
    ]
    return [t.tool for t in tasks], turns


def _no_tool(rng: random.Random, tools: tuple[Tool, ...]) -> list[Turn]:
    queries, need, declines, answers = rng.choice(_NO_TOOL)
    fill = {k: rng.choice(v) for k, v in _NO_TOOL_FILL.items()}
    tool_names = _joined([t.name for t in tools])
    plan = rng.choice(("say that I can't do this", "explain politely that this is outside what I can do")
                      if declines else ("answer directly", "reply from what I know"))
    return [
        Turn("user", rng.choice(queries).format(**fill)),
        Turn("reasoner", rng.choice(_PLAN_NONE).format(need=need.format(**fill), tools=tool_names, plan=plan), "summarizer"),
        Turn("summarizer", rng.choice(answers).format(**fill)),
    ]


def _kind_counts(n: int, mix: Mapping[str, float]) -> dict[str, int]:
    """Exact per-kind counts for ``n`` items (largest remainder), so proportions hold for small n."""
    total = sum(mix.values())
    shares = {k: n * w / total for k, w in mix.items()}
    counts = {k: math.floor(s) for k, s in shares.items()}
    for k in sorted(shares, key=lambda k: (counts[k] - shares[k], KINDS.index(k)))[: n - sum(counts.values())]:
        counts[k] += 1
    return counts


def _check_mix(mix: Mapping[str, float] | None) -> dict[str, float]:
    if mix is None:
        return dict(DEFAULT_MIX)
    unknown = [k for k in mix if k not in KINDS]
    if unknown:
        raise ValueError(f"mix has unknown kind(s) {unknown}; the kinds are {list(KINDS)}")
    bad = {k: w for k, w in mix.items() if not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0}
    if bad:
        raise ValueError(f"mix weights must be finite and >= 0, got {bad}")
    if sum(mix.values()) <= 0:
        raise ValueError(f"mix weights must not all be zero, got {dict(mix)}")
    return {k: float(w) for k, w in mix.items() if w > 0}


def generate(n: int, *, seed: int = 0, mix: Mapping[str, float] | None = None,
             skip_decontamination_for_generator_tests: bool = False) -> list[Trajectory]:
    """``n`` synthetic trajectories, deterministic for ``seed``, kinds in proportion to ``mix``.

    ``mix`` maps kinds (:data:`KINDS`) to weights (default :data:`DEFAULT_MIX`); counts are exact up to
    rounding. Every trajectory passes :func:`parse_trajectory`, and its summarizer states the executed
    result. The output is checked against BFCL and a :class:`~mor_ext.data.decontamination.ContaminationError`
    is raised instead of returning contaminated data (needs ``pip install --no-deps bfcl-eval``).
    ``skip_decontamination_for_generator_tests`` skips that check; it exists only for tests of the
    generator itself and must not be set when making training data.
    """
    if not isinstance(n, int) or n < 0:
        raise ValueError(f"n must be a non-negative integer, got {n!r}")
    weights = _check_mix(mix)
    master = random.Random(seed)
    kinds = [k for k, c in _kind_counts(n, weights).items() for _ in range(c)]
    master.shuffle(kinds)
    out: list[Trajectory] = []
    for i, kind in enumerate(kinds):
        rng = random.Random(f"mor_ext.synthetic:{seed}:{i}")
        if kind == "no_tool":
            tools = _tools(rng, [])
            turns = _no_tool(rng, tools)
        else:
            needed, turns = {"single": _single, "multi_step": _multi_step, "parallel": _parallel}[kind](rng)
            tools = _tools(rng, needed)
        traj = Trajectory(tools, tuple(turns), id=f"synthetic-{seed}-{i}", meta={"source": "synthetic", "kind": kind})
        parse_trajectory(traj.to_dict(), traj.id)  # the generator's own output must always be valid
        out.append(traj)
    if not skip_decontamination_for_generator_tests:
        assert_clean(out, tools=[s.tool for s in TOOLS.values()])
    return out
