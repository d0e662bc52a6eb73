"""Geometry, including great-circle distances on a fixed-radius Earth (:data:`EARTH_RADIUS_KM`)."""

from __future__ import annotations

import math

from ..tool import Tool
from .common import rounded, number, integer, define

__all__ = ["EARTH_RADIUS_KM", "DOMAIN_TOOLS"]

EARTH_RADIUS_KM = 6371.0  # mean Earth radius, fixed for the haversine tool


def _circle_area(radius: float) -> float:
    return rounded(math.pi * radius**2)


def _circle_circumference(radius: float) -> float:
    return rounded(2 * math.pi * radius)


def _rectangle_area(length: float, width: float) -> float:
    return rounded(length * width)


def _triangle_area(a: float, b: float, c: float) -> float:
    s = (a + b + c) / 2
    sq = s * (s - a) * (s - b) * (s - c)
    if sq <= 0:
        raise ValueError(f"sides {a}, {b}, {c} do not form a triangle")
    return rounded(math.sqrt(sq))


def _sphere_volume(radius: float) -> float:
    return rounded(4 / 3 * math.pi * radius**3)


def _cylinder_volume(radius: float, height: float) -> float:
    return rounded(math.pi * radius**2 * height)


def _cone_volume(radius: float, height: float) -> float:
    return rounded(math.pi * radius**2 * height / 3)


def _point_distance(x1: float, y1: float, x2: float, y2: float) -> float:
    return rounded(math.hypot(x2 - x1, y2 - y1))


def _haversine(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return rounded(2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(h))), 1)


def _polygon_interior_angle(sides: int) -> float:
    return rounded((sides - 2) * 180 / sides, 2)


DOMAIN_TOOLS: tuple[Tool, ...] = (
    define("geometry", "circle_area_from_radius", "Area of a circle from its radius.",
           {"radius": number("The radius.", minimum=0)}, _circle_area, {"radius": 2}),
    define("geometry", "circle_circumference_from_radius", "Circumference of a circle from its radius.",
           {"radius": number("The radius.", minimum=0)}, _circle_circumference, {"radius": 2}),
    define("geometry", "rectangle_area_from_sides", "Area of a rectangle from its length and width.",
           {"length": number("The length.", minimum=0), "width": number("The width.", minimum=0)},
           _rectangle_area, {"length": 4, "width": 2.5}),
    define("geometry", "triangle_area_from_three_sides", "Area of a triangle from its three side lengths (Heron's formula).",
           {"a": number("First side.", minimum=0), "b": number("Second side.", minimum=0),
            "c": number("Third side.", minimum=0)}, _triangle_area, {"a": 3, "b": 4, "c": 5}),
    define("geometry", "sphere_volume_from_radius", "Volume of a sphere from its radius.",
           {"radius": number("The radius.", minimum=0)}, _sphere_volume, {"radius": 3}),
    define("geometry", "cylinder_volume_from_dims", "Volume of a right circular cylinder from its radius and height.",
           {"radius": number("The radius.", minimum=0), "height": number("The height.", minimum=0)},
           _cylinder_volume, {"radius": 1, "height": 2}),
    define("geometry", "cone_volume_from_dims", "Volume of a right circular cone from its base radius and height.",
           {"radius": number("The base radius.", minimum=0), "height": number("The height.", minimum=0)},
           _cone_volume, {"radius": 3, "height": 4}),
    define("geometry", "cartesian_point_distance", "Straight-line distance between two points in the plane.",
           {"x1": number("x of the first point."), "y1": number("y of the first point."),
            "x2": number("x of the second point."), "y2": number("y of the second point.")},
           _point_distance, {"x1": 0, "y1": 0, "x2": 3, "y2": 4}),
    define("geometry", "haversine_great_circle_km",
           f"Great-circle distance in km between two latitude/longitude points (haversine, Earth radius {EARTH_RADIUS_KM:g} km).",
           {"lat1": number("Latitude of the first point in degrees.", minimum=-90, maximum=90),
            "lon1": number("Longitude of the first point in degrees.", minimum=-180, maximum=180),
            "lat2": number("Latitude of the second point in degrees.", minimum=-90, maximum=90),
            "lon2": number("Longitude of the second point in degrees.", minimum=-180, maximum=180)},
           _haversine, {"lat1": 0, "lon1": 0, "lat2": 0, "lon2": 90}),
    define("geometry", "regular_polygon_interior_angle", "Interior angle in degrees of a regular polygon with n sides.",
           {"sides": integer("Number of sides.", minimum=3, maximum=1000)}, _polygon_interior_angle, {"sides": 6}),
)
