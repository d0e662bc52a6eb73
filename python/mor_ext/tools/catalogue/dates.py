"""Dates and clock times; time zones are standard-time offsets (:data:`UTC_OFFSET_MINUTES`), daylight
saving is ignored."""

from __future__ import annotations

import datetime as _dt

from ..tool import Tool
from .common import parse_date, parse_clock, clock_text, integer, string, one_of, DATE, CLOCK, define

__all__ = ["UTC_OFFSET_MINUTES", "DOMAIN_TOOLS"]

# Standard-time offsets from UTC in minutes; daylight saving time is deliberately ignored.
UTC_OFFSET_MINUTES = {
    "UTC": 0, "London": 0, "Lisbon": 0, "Paris": 60, "Berlin": 60, "Cairo": 120, "Helsinki": 120,
    "Moscow": 180, "Dubai": 240, "Karachi": 300, "Delhi": 330, "Kathmandu": 345, "Dhaka": 360,
    "Bangkok": 420, "Beijing": 480, "Singapore": 480, "Tokyo": 540, "Adelaide": 570, "Sydney": 600,
    "Auckland": 720, "Honolulu": -600, "Anchorage": -540, "Los_Angeles": -480, "Denver": -420,
    "Chicago": -360, "New_York": -300, "Sao_Paulo": -180, "St_Johns": -210,
}


def _days_between(start_date: str, end_date: str) -> int:
    return (parse_date(end_date, "end_date") - parse_date(start_date, "start_date")).days


def _add_days(date: str, days: int) -> str:
    return (parse_date(date) + _dt.timedelta(days=days)).isoformat()


def _weekday(date: str) -> str:
    return parse_date(date).strftime("%A")


def _iso_week(date: str) -> str:
    year, week, _ = parse_date(date).isocalendar()
    return f"{year}-W{week:02d}"


def _day_of_year(date: str) -> int:
    return parse_date(date).timetuple().tm_yday


def _is_leap_year(year: int) -> bool:
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)


def _time_after_minutes(time: str, minutes: int) -> str:
    return clock_text(parse_clock(time) + minutes)


def _convert_zone(time: str, from_zone: str, to_zone: str) -> str:
    return clock_text(parse_clock(time) - UTC_OFFSET_MINUTES[from_zone] + UTC_OFFSET_MINUTES[to_zone])


def _age_years(birth_date: str, on_date: str) -> int:
    born, on = parse_date(birth_date, "birth_date"), parse_date(on_date, "on_date")
    if on < born:
        raise ValueError("on_date is before birth_date")
    return on.year - born.year - ((on.month, on.day) < (born.month, born.day))


DOMAIN_TOOLS: tuple[Tool, ...] = (
    define("dates", "days_between_dates", "Number of days from a start date to an end date (negative if the end is earlier).",
           {"start_date": string(DATE), "end_date": string(DATE)}, _days_between,
           {"start_date": "2024-01-01", "end_date": "2024-03-01"}),
    define("dates", "date_after_adding_days", "The date a given number of days after (or, if negative, before) a date.",
           {"date": string(DATE), "days": integer("Days to add; may be negative.", minimum=-100000, maximum=100000)},
           _add_days, {"date": "2024-02-20", "days": 10}),
    define("dates", "weekday_of_date", "Day of the week (Monday to Sunday) of a calendar date.",
           {"date": string(DATE)}, _weekday, {"date": "2024-07-04"}),
    define("dates", "iso_week_of_date", "ISO 8601 week of a date, as YYYY-Www.",
           {"date": string(DATE)}, _iso_week, {"date": "2024-12-30"}),
    define("dates", "day_of_year_for_date", "Ordinal day of the year (1 to 366) of a date.",
           {"date": string(DATE)}, _day_of_year, {"date": "2024-03-01"}),
    define("dates", "leap_year_check", "Whether a year of the Gregorian calendar is a leap year.",
           {"year": integer("The year.", minimum=1, maximum=9999)}, _is_leap_year, {"year": 2024}),
    define("dates", "clock_time_after_minutes", "The clock time a number of minutes after a given time, with any day change.",
           {"time": string(CLOCK), "minutes": integer("Minutes to add; may be negative.", minimum=-100000, maximum=100000)},
           _time_after_minutes, {"time": "22:30", "minutes": 150}),
    define("dates", "convert_time_between_zones",
           "Convert a clock time between cities' time zones using fixed standard-time offsets (daylight saving ignored).",
           {"time": string(CLOCK),
            "from_zone": one_of(UTC_OFFSET_MINUTES, "Time zone of the given time."),
            "to_zone": one_of(UTC_OFFSET_MINUTES, "Time zone to convert to.")},
           _convert_zone, {"time": "09:00", "from_zone": "London", "to_zone": "Delhi"}),
    define("dates", "age_in_full_years", "Age in completed years of someone born on a date, on another date.",
           {"birth_date": string(DATE), "on_date": string(DATE)}, _age_years,
           {"birth_date": "1990-06-15", "on_date": "2024-06-14"}),
)
