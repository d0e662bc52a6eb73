"""Lookups in small fixed tables: chemical elements, countries, planets (moon counts as of 2024)."""

from __future__ import annotations

from typing import Any

from ..tool import Tool
from .common import rounded, one_of, define

__all__ = ["ELEMENTS", "ELEMENT_PROPERTIES", "COUNTRIES", "PLANETS", "PLANET_FACTS", "DOMAIN_TOOLS"]

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
    return rounded(PLANETS[planet][fact])


DOMAIN_TOOLS: tuple[Tool, ...] = (
    define("lookup", "chemical_element_property", "A property of a chemical element from a small built-in table.",
           {"element": one_of(ELEMENTS, "Element name in lower case."),
            "property": one_of(ELEMENT_PROPERTIES, "The property to look up.")},
           _element, {"element": "iron", "property": "atomic_number"}),
    define("lookup", "country_capital_city", "The capital city of a country from a built-in table.",
           {"country": one_of(COUNTRIES, "The country.")}, _capital, {"country": "Kenya"}),
    define("lookup", "country_currency_code", "The ISO 4217 currency code used by a country, from a built-in table.",
           {"country": one_of(COUNTRIES, "The country.")}, _currency_code, {"country": "Japan"}),
    define("lookup", "country_continent_name", "The continent a country lies on, from a built-in table.",
           {"country": one_of(COUNTRIES, "The country.")}, _continent, {"country": "Peru"}),
    define("lookup", "planet_fact_lookup", "A fact about a planet of the Solar System from a built-in table.",
           {"planet": one_of(PLANETS, "The planet."), "fact": one_of(PLANET_FACTS, "The fact to look up.")},
           _planet, {"planet": "Mars", "fact": "moons"}),
)
