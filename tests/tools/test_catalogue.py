"""The built-in catalogue (mor_ext.tools.catalogue): schemas, every tool on its sample call,
hand-checked values, and error observations from the executor."""

from __future__ import annotations

import inspect
import json
import math
import random

import pytest

from mor_ext.data.trajectory import parse_trajectory
from mor_ext.tools import Tool, execute, observation_text
from mor_ext.tools.catalogue import CATALOGUE, common, dates, everyday, finance, geo, lookup, math as math_tools, text, units

MODULES = (common, math_tools, units, dates, text, lookup, geo, finance, everyday)


def run(name: str, **arguments) -> dict:
    return json.loads(execute(CATALOGUE, name, arguments).observation_text())


def result(name: str, **arguments):
    obs = run(name, **arguments)
    assert "error" not in obs, obs
    return obs["result"]


def test_library_has_dozens_of_tools_across_domains():
    assert len(CATALOGUE) >= 40
    for domain in ("math", "units", "currency", "dates", "text", "lookup", "geometry", "finance"):
        assert domain in CATALOGUE.domains and CATALOGUE.in_domain(domain), domain
    assert sum(len(CATALOGUE.in_domain(d)) for d in CATALOGUE.domains) == len(CATALOGUE)
    # each domain module's tools, in the catalogue's order (the generator samples from that order)
    assert [t.name for m in MODULES[1:] for t in m.DOMAIN_TOOLS] == list(CATALOGUE)


def test_schemas_are_valid_tool_definitions():
    record = {"tools": CATALOGUE.schemas(),
              "turns": [{"role": "user", "content": "hi"}, {"role": "reasoner", "content": "x", "next": "summarizer"},
                        {"role": "summarizer", "content": "hi"}]}
    parse_trajectory(record)  # names unique, required names are properties, type object
    for spec in CATALOGUE.values():
        params = spec.parameters
        assert spec.description and params["required"], spec.name
        for pname, prop in params["properties"].items():
            assert prop.get("type") in ("number", "integer", "string", "boolean", "array"), (spec.name, pname)
            assert prop.get("description"), (spec.name, pname)
        # every required parameter is a parameter of the implementation, and optional ones have defaults
        sig = inspect.signature(spec.fn)
        assert set(sig.parameters) == set(params["properties"]), spec.name
        for pname, p in sig.parameters.items():
            assert (p.default is inspect.Parameter.empty) == (pname in params["required"]), (spec.name, pname)


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_tool_runs_its_sample_call(name: str):
    spec: Tool = CATALOGUE[name]
    obs = run(name, **spec.example)
    assert set(obs) == {"result"}, obs
    assert obs["result"] is not None


CASES = [
    ("stats_mean_of_list", {"values": [2, 4, 9]}, 5),
    ("stats_median_of_list", {"values": [7, 1, 3, 10]}, 5),
    ("stats_standard_deviation", {"values": [2, 4, 4, 4, 5, 5, 7, 9], "kind": "population"}, 2),
    ("stats_standard_deviation", {"values": [1, 2, 3, 4]}, 1.291),
    ("percent_change_between", {"old_value": 80, "new_value": 60}, -25),
    ("greatest_common_divisor_of", {"a": 84, "b": 36}, 12),
    ("least_common_multiple_of", {"a": 4, "b": 6}, 12),
    ("primality_check_integer", {"n": 97}, True),
    ("primality_check_integer", {"n": 91}, False),
    ("factorial_of_integer", {"n": 10}, 3628800),
    ("nth_fibonacci_number", {"n": 10}, 55),
    ("compound_interest_balance", {"principal": 1000, "annual_rate_percent": 5, "years": 10, "periods_per_year": 1}, 1628.89),
    ("loan_monthly_installment", {"principal": 100000, "annual_rate_percent": 6, "years": 30}, 599.55),
    ("convert_length_units", {"value": 1, "from_unit": "mi", "to_unit": "km"}, 1.6093),
    ("convert_mass_units", {"value": 1, "from_unit": "kg", "to_unit": "lb"}, 2.2046),
    ("convert_volume_units", {"value": 1, "from_unit": "gal", "to_unit": "l"}, 3.7854),
    ("convert_temperature_scale", {"value": 100, "from_scale": "celsius", "to_scale": "fahrenheit"}, 212),
    ("convert_temperature_scale", {"value": 0, "from_scale": "kelvin", "to_scale": "celsius"}, -273.15),
    ("convert_speed_units", {"value": 36, "from_unit": "km/h", "to_unit": "m/s"}, 10),
    ("convert_data_size_units", {"value": 1, "from_unit": "GiB", "to_unit": "MiB"}, 1024),
    ("convert_area_units", {"value": 1, "from_unit": "ha", "to_unit": "m2"}, 10000),
    ("convert_currency_fixed_rates", {"amount": 100, "from_currency": "EUR", "to_currency": "USD"}, 111.11),
    ("days_between_dates", {"start_date": "2024-01-01", "end_date": "2024-03-01"}, 60),
    ("days_between_dates", {"start_date": "2023-03-01", "end_date": "2023-01-01"}, -59),
    ("date_after_adding_days", {"date": "2023-12-25", "days": 10}, "2024-01-04"),
    ("weekday_of_date", {"date": "2000-01-01"}, "Saturday"),
    ("iso_week_of_date", {"date": "2021-01-03"}, "2020-W53"),
    ("day_of_year_for_date", {"date": "2023-12-31"}, 365),
    ("leap_year_check", {"year": 1900}, False),
    ("leap_year_check", {"year": 2000}, True),
    ("clock_time_after_minutes", {"time": "23:50", "minutes": 20}, "00:10 (+1 day)"),
    ("clock_time_after_minutes", {"time": "00:10", "minutes": -20}, "23:50 (-1 day)"),
    ("convert_time_between_zones", {"time": "12:00", "from_zone": "UTC", "to_zone": "Kathmandu"}, "17:45"),
    ("convert_time_between_zones", {"time": "20:00", "from_zone": "New_York", "to_zone": "Tokyo"}, "10:00 (+1 day)"),
    ("age_in_full_years", {"birth_date": "2000-02-29", "on_date": "2021-02-28"}, 20),
    ("count_words_in_text", {"text": "  one two\tthree  "}, 3),
    ("palindrome_phrase_check", {"text": "A man, a plan, a canal: Panama"}, True),
    ("caesar_shift_text", {"text": "Hello, World!", "shift": 3}, "Khoor, Zruog!"),
    ("caesar_shift_text", {"text": "Khoor", "shift": 3, "direction": "decode"}, "Hello"),
    ("make_url_slug", {"text": "  Hello, World: A Tour!  "}, "hello-world-a-tour"),
    ("count_character_occurrences", {"text": "Mississippi", "character": "S"}, 4),
    ("count_character_occurrences", {"text": "Mississippi", "character": "S", "case_sensitive": True}, 0),
    ("most_common_letter", {"text": "abba"}, "a"),
    ("acronym_from_phrase", {"phrase": "as soon as possible"}, "ASAP"),
    ("chemical_element_property", {"element": "gold", "property": "symbol"}, "Au"),
    ("country_capital_city", {"country": "Australia"}, "Canberra"),
    ("country_currency_code", {"country": "Switzerland"}, "CHF"),
    ("planet_fact_lookup", {"planet": "Earth", "fact": "moons"}, 1),
    ("circle_area_from_radius", {"radius": 1}, 3.1416),
    ("triangle_area_from_three_sides", {"a": 3, "b": 4, "c": 5}, 6),
    ("sphere_volume_from_radius", {"radius": 1}, 4.1888),
    ("cartesian_point_distance", {"x1": 1, "y1": 1, "x2": 4, "y2": 5}, 5),
    ("haversine_great_circle_km", {"lat1": 0, "lon1": 0, "lat2": 0, "lon2": 180}, 20015.1),
    ("regular_polygon_interior_angle", {"sides": 8}, 135),
    ("bill_split_with_tip", {"bill": 100, "tip_percent": 20, "people": 3}, 40),
    ("break_even_unit_count", {"fixed_costs": 1001, "price_per_unit": 15, "variable_cost_per_unit": 5}, 101),
    ("compound_annual_growth_rate", {"start_value": 100, "end_value": 121, "years": 2}, 10),
    ("body_mass_index_metric", {"weight_kg": 72, "height_m": 1.8}, 22.2),
]


@pytest.mark.parametrize("name,arguments,expected", CASES, ids=[f"{c[0]}-{i}" for i, c in enumerate(CASES)])
def test_hand_checked_values(name, arguments, expected):
    got = result(name, **arguments)
    if isinstance(expected, float):
        assert got == pytest.approx(expected, abs=1e-9), got
    else:
        assert got == expected and type(got) is type(expected), got


@pytest.mark.parametrize("name,arguments,fragment", [
    ("no_such_tool", {}, "unknown tool"),
    ("stats_mean_of_list", {}, "missing required argument"),
    ("circle_area_from_radius", {"radius": 1, "units": "m"}, "unexpected argument"),
    ("circle_area_from_radius", {"radius": "three"}, "'radius' must be a number, got str"),
    ("circle_area_from_radius", {"radius": True}, "must be a number"),
    ("factorial_of_integer", {"n": 5.5}, "'n' must be an integer"),
    ("stats_mean_of_list", {"values": "1, 2, 3"}, "must be an array"),
    ("stats_mean_of_list", {"values": [1, "two"]}, "'values[1]' must be a number"),
    ("stats_mean_of_list", {"values": []}, "at least 1 item"),
    ("convert_length_units", {"value": 1, "from_unit": "parsec", "to_unit": "m"}, "must be one of"),
    ("circle_area_from_radius", {"radius": -1}, "must be >= 0"),
    ("factorial_of_integer", {"n": 500}, "must be <= 20"),
    ("circle_area_from_radius", {"radius": math.inf}, "must be a number"),
    # failures inside the implementation
    ("triangle_area_from_three_sides", {"a": 1, "b": 2, "c": 10}, "do not form a triangle"),
    ("percent_change_between", {"old_value": 0, "new_value": 5}, "must not be zero"),
    ("weekday_of_date", {"date": "2024-02-30"}, "ValueError"),
    ("weekday_of_date", {"date": "March 3rd"}, "YYYY-MM-DD"),
    ("clock_time_after_minutes", {"time": "25:00", "minutes": 1}, "HH:MM"),
    ("count_character_occurrences", {"text": "abc", "character": "ab"}, "exactly one character"),
    ("convert_temperature_scale", {"value": -500, "from_scale": "celsius", "to_scale": "kelvin"}, "absolute zero"),
    ("compound_interest_balance", {"principal": 1, "annual_rate_percent": 1e6, "years": 1e6}, "failed"),
    ("weighted_average_of_values", {"values": [1, 2], "weights": [1]}, "differ in length"),
    ("break_even_unit_count", {"fixed_costs": 10, "price_per_unit": 5, "variable_cost_per_unit": 5}, "must exceed"),
])
def test_bad_calls_give_error_observations(name, arguments, fragment):
    obs = run(name, **arguments)
    assert set(obs) == {"error"}, obs
    assert fragment in obs["error"], obs["error"]


def test_execute_never_raises_on_garbage():
    rng = random.Random(0)
    junk = [None, "", "x", -1, 0, 1e300, -1e300, 10**30, [], [None], {}, True, 2.5, "2024-13-01", "99:99"]
    for name, spec in CATALOGUE.items():
        props = list(spec.parameters["properties"])
        for _ in range(25):
            args = {p: rng.choice(junk) for p in props if rng.random() < 0.9}
            obs = run(name, **args)  # valid JSON, one key, never an exception
            assert set(obs) in ({"result"}, {"error"}), (name, args, obs)
    assert not execute(CATALOGUE, "stats_mean_of_list", ["not", "a", "dict"]).ok
    assert execute(CATALOGUE, None, {}).error_kind == "unknown_tool"


def test_observation_of_one_and_several_calls():
    one = execute(CATALOGUE, "country_capital_city", {"country": "Peru"})
    assert observation_text([one]) == one.observation_text() == '{"result": "Lima"}'
    results = [one, execute(CATALOGUE, "nope", {}), execute(CATALOGUE, "factorial_of_integer", {"n": 3})]
    several = json.loads(observation_text(results))
    assert several[0] == {"result": "Lima"} and "error" in several[1] and several[2] == {"result": 6}
    assert "error" in json.loads(observation_text([]))


def test_implementations_never_evaluate_code():
    for module in MODULES:
        source = inspect.getsource(module)
        for forbidden in ("eval(", "exec(", "__import__", "compile(", "subprocess", "open("):
            assert forbidden not in source, (module.__name__, forbidden)
