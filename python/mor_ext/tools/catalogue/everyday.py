"""Everyday calculations (body mass index, travel time)."""

from __future__ import annotations

from ..tool import Tool
from .common import rounded, number, define

__all__ = ["DOMAIN_TOOLS"]

def _bmi(weight_kg: float, height_m: float) -> float:
    return rounded(weight_kg / height_m**2, 1)


def _travel_time(distance_km: float, speed_kmh: float) -> float:
    return rounded(distance_km / speed_kmh, 2)


DOMAIN_TOOLS: tuple[Tool, ...] = (
    define("everyday", "body_mass_index_metric", "Body mass index from weight in kilograms and height in meters.",
           {"weight_kg": number("Weight in kg.", exclusiveMinimum=0), "height_m": number("Height in m.", exclusiveMinimum=0)},
           _bmi, {"weight_kg": 72, "height_m": 1.8}),
    define("everyday", "travel_time_hours", "Hours needed to travel a distance at a constant speed.",
           {"distance_km": number("Distance in km.", minimum=0), "speed_kmh": number("Speed in km/h.", exclusiveMinimum=0)},
           _travel_time, {"distance_km": 150, "speed_kmh": 60}),
)
