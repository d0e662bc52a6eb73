"""The two-call task table (multi-step trajectories): the second call uses the first call's result."""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

from ...tools.catalogue import COUNTRIES, CURRENCY_PER_USD
from .formatting import Fields
from .tasks import CURRENCIES, phrase, random_date

__all__ = ["CHAINS"]


@dataclass(frozen=True)
class _Chain:
    """Two calls in sequence; the second call's arguments use the first call's result."""

    tools: tuple[str, str]
    sample: Callable[[random.Random], Fields]
    first: Callable[[Fields], dict[str, Any]]
    second: Callable[[Fields, Any], dict[str, Any]]
    queries: tuple[str, ...]
    goals: tuple[str, str]  # infinitive phrases; the second may not name the first result
    answers: tuple[str, ...]  # may use {r1} and {r2}


_TABLE_CURRENCY_COUNTRIES = tuple(c for c, (_, code, _) in COUNTRIES.items() if code in CURRENCY_PER_USD and code != "USD")

CHAINS: tuple[_Chain, ...] = (
    _Chain(("convert_length_units", "circle_area_from_radius"), lambda r: {"v": r.randint(3, 200)},
           lambda f: {"value": f["v"], "from_unit": "ft", "to_unit": "m"}, lambda f, r1: {"radius": r1},
           ("A circular garden has a radius of {v} feet. What is its area in square meters?",
            "Our round pond is {v} ft in radius. How many square meters of surface is that?"),
           ("convert the {v} ft radius to meters", "find the area of a circle with that radius"),
           ("A radius of {v} ft is {r1} m, so the area is {r2} square meters.",
            "{v} feet = {r1} m; the circle's area is {r2} m^2.")),
    _Chain(("convert_currency_fixed_rates", "discounted_price_after_percent"),
           lambda r: dict(zip(("c1", "c2"), r.sample(CURRENCIES, 2)), amount=r.randint(20, 2000), d=r.choice((10, 15, 20, 25, 30, 50))),
           lambda f: {"amount": f["amount"], "from_currency": f["c1"], "to_currency": f["c2"]},
           lambda f, r1: {"price": r1, "discount_percent": f["d"]},
           ("A coat costs {amount} {c1}. What would it cost in {c2} after a {d}% discount?",
            "Convert {amount} {c1} to {c2}, then take {d}% off. What's the final price?"),
           ("convert {amount} {c1} to {c2}", "apply the {d}% discount to the converted price"),
           ("{amount} {c1} is {r1} {c2}; after {d}% off it costs {r2} {c2}.",
            "In {c2} that's {r1}, and with the {d}% discount, {r2} {c2}.")),
    _Chain(("date_after_adding_days", "weekday_of_date"), lambda r: {"date": random_date(r), "days": r.randint(1, 1000)},
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
           lambda r: dict(zip(("c1", "c2"), r.sample(CURRENCIES, 2)), amount=r.randint(50, 3000), t=r.choice((5, 7.25, 8, 10, 20))),
           lambda f: {"amount": f["amount"], "from_currency": f["c1"], "to_currency": f["c2"]},
           lambda f, r1: {"price": r1, "tax_percent": f["t"]},
           ("A laptop is priced at {amount} {c1}. What's that in {c2} including {t}% sales tax?",
            "Convert {amount} {c1} into {c2} and add {t}% tax."),
           ("convert {amount} {c1} to {c2}", "add {t}% sales tax to the converted price"),
           ("{amount} {c1} is {r1} {c2}; with {t}% tax that's {r2} {c2}.", "Total in {c2}: {r2} (before tax {r1}).")),
    _Chain(("caesar_shift_text", "reverse_text_string"), lambda r: {"text": phrase(r, 1, 3), "shift": r.randint(1, 25)},
           lambda f: {"text": f["text"], "shift": f["shift"], "direction": "encode"}, lambda f, r1: {"text": r1},
           ('Encode "{text}" with a Caesar shift of {shift}, then reverse the result.',
            'Caesar-encode "{text}" (shift {shift}) and give it to me backwards.'),
           ('encode "{text}" with shift {shift}', "reverse the encoded text"),
           ('Encoded it is "{r1}"; reversed, "{r2}".', 'The final string is "{r2}".')),
    _Chain(("date_after_adding_days", "iso_week_of_date"), lambda r: {"date": random_date(r), "days": r.randint(1, 500)},
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
