"""The single-call task table: for every catalogue tool, how to sample its arguments, how a user
asks for it, the reasoner's goal and how the answer states the result. Data, not logic: the
generator (:mod:`.generator`) picks from :data:`TASKS`."""

from __future__ import annotations

import datetime as dt
import random
from dataclasses import dataclass
from typing import Any, Callable, Mapping

from ...tools.catalogue import CATALOGUE, COUNTRIES, CURRENCY_PER_USD, ELEMENTS, PLANETS, UTC_OFFSET_MINUTES
from .formatting import Fields, bool_text, fmt

__all__ = ["TASKS", "single_tool_tasks", "result_text"]


@dataclass(frozen=True)
class _Task:
    """How to ask for one tool call: sampled fields (the tool's arguments plus display-only values),
    query phrasings, the goal as an infinitive phrase for the reasoner, and answer phrasings."""

    tool: str
    sample: Callable[[random.Random], Fields]
    queries: tuple[str, ...]
    goal: str
    answers: tuple[str, ...]
    show: Callable[[Any], str] = fmt

    def arguments(self, fields: Fields) -> dict[str, Any]:
        props = CATALOGUE[self.tool].parameters["properties"]
        return {k: v for k, v in fields.items() if k in props}


def _values(rng: random.Random, lo: int = 1, hi: int = 100, k: tuple[int, int] = (4, 8)) -> list[Any]:
    n = rng.randint(*k)
    if rng.random() < 0.3:
        return [round(rng.uniform(lo, hi), 1) for _ in range(n)]
    return [rng.randint(lo, hi) for _ in range(n)]


def random_date(rng: random.Random, lo: int = 1990, hi: int = 2030) -> str:
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


def phrase(rng: random.Random, lo: int = 2, hi: int = 7) -> str:
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


def _unit_sampler(words: Mapping[str, str], pairs: tuple) -> Callable[[random.Random], Fields]:
    def sample(rng: random.Random) -> Fields:
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


def _sample_temperature(rng: random.Random) -> Fields:
    frm, to = rng.sample(list(_TEMP_WORDS), 2)
    value = rng.randint(*_TEMP_RANGES[frm])
    return {"value": value, "from_scale": frm, "to_scale": to, "from_w": _TEMP_WORDS[frm], "to_w": _TEMP_WORDS[to]}


CURRENCIES = tuple(CURRENCY_PER_USD)


def _sample_currency(rng: random.Random) -> Fields:
    frm, to = rng.sample(CURRENCIES, 2)
    return {"amount": _random_amount(rng, 1, 5000), "from_currency": frm, "to_currency": to}


def _sample_zones(rng: random.Random) -> Fields:
    frm, to = rng.sample(list(UTC_OFFSET_MINUTES), 2)
    return {"time": _random_clock(rng), "from_zone": frm, "to_zone": to,
            "from_w": frm.replace("_", " ").replace("St Johns", "St. John's"),
            "to_w": to.replace("_", " ").replace("St Johns", "St. John's")}


def _sample_days_between(rng: random.Random) -> Fields:
    start = random_date(rng)
    end = (dt.date.fromisoformat(start) + dt.timedelta(days=rng.randint(1, 2000))).isoformat()
    return {"start_date": start, "end_date": end}


def _sample_age(rng: random.Random) -> Fields:
    born = random_date(rng, 1940, 2010)
    on = (dt.date.fromisoformat(born) + dt.timedelta(days=rng.randint(400, 30000))).isoformat()
    return {"birth_date": born, "on_date": on}


def _sample_gcd(rng: random.Random) -> Fields:
    k = rng.randint(2, 30)
    return {"a": k * rng.randint(1, 40), "b": k * rng.randint(1, 40)}


def _sample_triangle(rng: random.Random) -> Fields:
    a, b = rng.randint(3, 30), rng.randint(3, 30)
    return {"a": a, "b": b, "c": rng.randint(abs(a - b) + 1, a + b - 1)}


_POLYGONS = {3: "triangle", 4: "square", 5: "pentagon", 6: "hexagon", 7: "heptagon", 8: "octagon",
             9: "nonagon", 10: "decagon", 12: "dodecagon"}


def _sample_polygon(rng: random.Random) -> Fields:
    sides = rng.choice(list(_POLYGONS) + [rng.randint(13, 40)])
    return {"sides": sides, "shape": _POLYGONS.get(sides, f"{sides}-sided polygon")}


_PERIODS = {1: "annually", 2: "semiannually", 4: "quarterly", 12: "monthly", 365: "daily"}

_CITIES = (("Paris", 48.8566, 2.3522), ("London", 51.5074, -0.1278), ("Tokyo", 35.6762, 139.6503),
           ("New York", 40.7128, -74.006), ("Sydney", -33.8688, 151.2093), ("Cairo", 30.0444, 31.2357),
           ("Rio de Janeiro", -22.9068, -43.1729), ("Nairobi", -1.2921, 36.8219), ("Toronto", 43.6532, -79.3832),
           ("Mumbai", 19.076, 72.8777), ("Reykjavik", 64.1466, -21.9426), ("Lima", -12.0464, -77.0428),
           ("Singapore", 1.3521, 103.8198), ("Cape Town", -33.9249, 18.4241), ("Anchorage", 61.2181, -149.9003))


def _sample_cities(rng: random.Random) -> Fields:
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


TASKS: tuple[_Task, ...] = (
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
          bool_text("is prime", "is not prime")),
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
    _Task("date_after_adding_days", lambda r: {"date": random_date(r), "days": r.randint(1, 1000)},
          ("What date is {days} days after {date}?", "If today is {date}, what's the date in {days} days?",
           "Add {days} days to {date}."),
          "add {days} days to {date}", ("{days} days after {date} is {result}.", "The date will be {result}.")),
    _Task("weekday_of_date", lambda r: {"date": random_date(r)},
          ("What day of the week was {date}?", "Which weekday does {date} fall on?",
           "Was {date} on a weekend? Tell me its weekday."),
          "find the weekday of {date}", ("{date} is a {result}.", "It falls on a {result}.")),
    _Task("iso_week_of_date", lambda r: {"date": random_date(r)},
          ("Which ISO week is {date} in?", "Give me the ISO 8601 week of {date}.",
           "What ISO week does {date} belong to?"),
          "find the ISO week of {date}", ("{date} is in ISO week {result}.", "The ISO week is {result}.")),
    _Task("day_of_year_for_date", lambda r: {"date": random_date(r)},
          ("What day of the year is {date}?", "What is the ordinal day number of {date} within its year?",
           "How many days into its year is {date}, counting January 1 as day 1?"),
          "find the day of the year of {date}", ("{date} is day {result} of the year.", "It's day number {result}.")),
    _Task("leap_year_check", lambda r: {"year": r.choice((r.randint(1600, 2400), 4 * r.randint(400, 600)))},
          ("Is {year} a leap year?", "Does the year {year} have a February 29?", "Check whether {year} is a leap year."),
          "check whether {year} is a leap year", ("{year} {result}.", "According to the Gregorian rules, {year} {result}."),
          bool_text("is a leap year", "is not a leap year")),
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
    _Task("count_words_in_text", lambda r: {"text": phrase(r, 2, 12)},
          ('How many words are in "{text}"?', "Count the words in this: {text}", 'Word count for "{text}", please.'),
          'count the words in "{text}"', ("That text has {result} words.", 'There are {result} words in "{text}".')),
    _Task("reverse_text_string", lambda r: {"text": phrase(r, 1, 3)},
          ('Reverse the string "{text}".', 'What is "{text}" spelled backwards?', 'Write "{text}" in reverse order.'),
          'reverse "{text}"', ('Reversed, it reads "{result}".', 'Backwards: "{result}".')),
    _Task("palindrome_phrase_check", lambda r: {"text": r.choice(_PALINDROMES) if r.random() < 0.5 else phrase(r, 1, 3)},
          ('Is "{text}" a palindrome?', 'Does "{text}" read the same forwards and backwards?',
           'Check if the phrase "{text}" is a palindrome, ignoring spaces and punctuation.'),
          'check whether "{text}" is a palindrome', ('"{text}" {result}.', "Ignoring case and punctuation, it {result}."),
          bool_text("is a palindrome", "is not a palindrome")),
    _Task("caesar_shift_text",
          lambda r: (lambda d: {"text": phrase(r, 1, 4), "shift": r.randint(1, 25), "direction": d,
                                "verb": d.capitalize(), "done": d + "d"})(r.choice(("encode", "decode"))),
          ('{verb} "{text}" with a Caesar shift of {shift}.', 'Use a Caesar cipher with shift {shift} to {direction} "{text}".',
           'Apply Caesar shift {shift} to "{text}" ({direction}).'),
          '{direction} "{text}" with a Caesar shift of {shift}', ('The {done} text is "{result}".', 'Result: "{result}".')),
    _Task("make_url_slug", lambda r: {"text": _title(r)},
          ('Make a URL slug from the title "{text}".', 'What slug should a blog post called "{text}" get?',
           'Turn "{text}" into a lowercase hyphenated slug.'),
          'make a URL slug of "{text}"', ('The slug is "{result}".', 'Use "{result}".')),
    _Task("count_character_occurrences",
          lambda r: (lambda t: {"text": t, "character": r.choice([c for c in t if c.isalpha()])})(phrase(r, 2, 6)),
          ("How many times does the letter '{character}' appear in \"{text}\"?",
           "Count the occurrences of '{character}' in \"{text}\".",
           "In the phrase \"{text}\", how often does '{character}' occur?"),
          "count the letter '{character}' in \"{text}\"",
          ("'{character}' appears {result} times.", "The letter '{character}' occurs {result} times.")),
    _Task("count_vowels_in_text", lambda r: {"text": phrase(r, 1, 6)},
          ('How many vowels are in "{text}"?', 'Count the vowels in the phrase "{text}".',
           'Tell me the number of vowels (a, e, i, o, u) in "{text}".'),
          'count the vowels in "{text}"', ('"{text}" has {result} vowels.', "I count {result} vowels.")),
    _Task("most_common_letter", lambda r: {"text": phrase(r, 2, 6)},
          ('Which letter appears most often in "{text}"?', 'What\'s the most frequent letter in "{text}"?',
           'Find the most common letter in the text "{text}".'),
          'find the most common letter in "{text}"',
          ("The most common letter is '{result}'.", "'{result}' appears most often.")),
    _Task("acronym_from_phrase", lambda r: {"phrase": r.choice(_ACRONYM_PHRASES) if r.random() < 0.6 else phrase(r, 2, 5)},
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
_TASK_BY_TOOL = {t.tool: t for t in TASKS}


def single_tool_tasks() -> list[str]:
    """The tools that have single-call templates (every tool of the library)."""
    return list(_TASK_BY_TOOL)


def result_text(tool: str, result: Any) -> str:
    """How an answer states ``tool``'s ``result`` (``is prime`` / ``is not prime`` for yes-no tools)."""
    task = _TASK_BY_TOOL.get(tool)
    return task.show(result) if task is not None else fmt(result)
