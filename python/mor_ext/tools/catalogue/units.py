"""Unit conversion (length, mass, volume, speed, data size, area, temperature) and currency conversion
with FICTIONAL fixed rates (:data:`CURRENCY_PER_USD`, not market data)."""

from __future__ import annotations

from typing import Any, Callable

from ..tool import Tool
from .common import rounded, money, number, one_of, define

__all__ = [
    "LENGTH_TO_METERS", "MASS_TO_KILOGRAMS", "VOLUME_TO_LITERS", "SPEED_TO_METERS_PER_SECOND", "DATA_SIZE_TO_BYTES",
    "AREA_TO_SQUARE_METERS", "TEMPERATURE_SCALES", "CURRENCY_PER_USD", "DOMAIN_TOOLS",
]

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


def _linear_converter(table: dict[str, float]) -> Callable[[float, str, str], float]:
    """The implementation of a unit tool: ``value`` scaled through ``table``'s common base unit."""

    def convert(value: float, from_unit: str, to_unit: str) -> float:
        return rounded(value * table[from_unit] / table[to_unit])

    return convert


def _convert_temperature(value: float, from_scale: str, to_scale: str) -> float:
    kelvin = {"celsius": value + 273.15, "fahrenheit": (value - 32) * 5 / 9 + 273.15, "kelvin": value}[from_scale]
    if kelvin < 0:
        raise ValueError(f"{value} {from_scale} is below absolute zero")
    out = {"celsius": kelvin - 273.15, "fahrenheit": (kelvin - 273.15) * 9 / 5 + 32, "kelvin": kelvin}[to_scale]
    return rounded(out, 2)


def _convert_currency(amount: float, from_currency: str, to_currency: str) -> float:
    return money(amount / CURRENCY_PER_USD[from_currency] * CURRENCY_PER_USD[to_currency])


def _unit_tool(name: str, what: str, table: dict[str, float], example: dict[str, Any]) -> Tool:
    units = list(table)
    return define("units", name, f"Convert a {what} value between units using fixed conversion factors.", {
        "value": number(f"The {what} value to convert."),
        "from_unit": one_of(units, "The unit of the given value."),
        "to_unit": one_of(units, "The unit to convert to."),
    }, _linear_converter(table), example)


DOMAIN_TOOLS: tuple[Tool, ...] = (
    _unit_tool("convert_length_units", "length", LENGTH_TO_METERS,
               {"value": 5, "from_unit": "mi", "to_unit": "km"}),
    _unit_tool("convert_mass_units", "mass", MASS_TO_KILOGRAMS,
               {"value": 10, "from_unit": "lb", "to_unit": "kg"}),
    _unit_tool("convert_volume_units", "volume (US customary units)", VOLUME_TO_LITERS,
               {"value": 2, "from_unit": "gal", "to_unit": "l"}),
    _unit_tool("convert_speed_units", "speed", SPEED_TO_METERS_PER_SECOND,
               {"value": 60, "from_unit": "mph", "to_unit": "km/h"}),
    _unit_tool("convert_data_size_units", "digital data size", DATA_SIZE_TO_BYTES,
               {"value": 2, "from_unit": "GiB", "to_unit": "MB"}),
    _unit_tool("convert_area_units", "area", AREA_TO_SQUARE_METERS,
               {"value": 3, "from_unit": "acre", "to_unit": "m2"}),
    define("units", "convert_temperature_scale", "Convert a temperature between Celsius, Fahrenheit and Kelvin.",
           {"value": number("The temperature."),
            "from_scale": one_of(TEMPERATURE_SCALES, "The scale of the given temperature."),
            "to_scale": one_of(TEMPERATURE_SCALES, "The scale to convert to.")},
           _convert_temperature, {"value": 100, "from_scale": "fahrenheit", "to_scale": "celsius"}),
    define("currency", "convert_currency_fixed_rates",
           "Convert money between currencies with a FIXED, fictional built-in rate table (not live market rates).",
           {"amount": number("The amount of money.", minimum=0),
            "from_currency": one_of(CURRENCY_PER_USD, "ISO code of the given currency."),
            "to_currency": one_of(CURRENCY_PER_USD, "ISO code of the target currency.")},
           _convert_currency, {"amount": 100, "from_currency": "USD", "to_currency": "EUR"}),
)
