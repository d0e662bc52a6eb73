"""String utilities and calendar arithmetic, one tool per operation."""

from __future__ import annotations

import calendar
import datetime as dt
import re
import string as _string
from collections import Counter

from .rows import row
from .spec import ToolSpec

__all__ = ["SPECS"]


def _date(text: str) -> dt.date:
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        raise ValueError(f"dates are YYYY-MM-DD, got {text!r}")
    return dt.date.fromisoformat(text)


_STRINGS = (
    ("text_word_count", "Count the words of a text.", lambda text: len(text.split()), "the number of words in \"{text}\"", "the word count"),
    ("text_vowel_count", "Count the vowels (a, e, i, o, u) of a text.", lambda text: sum(c in "aeiou" for c in text.lower()),
     "the number of vowels in \"{text}\"", "the vowel count"),
    ("text_to_upper_case", "The text in upper case.", lambda text: text.upper(), "\"{text}\" in upper case", "the upper-case text"),
    ("text_to_title_case", "The text with each word capitalised.", lambda text: _string.capwords(text), "\"{text}\" in title case", "the title-case text"),
    ("text_reverse_word_order", "The words of a text in reverse order.", lambda text: " ".join(reversed(text.split())),
     "the words of \"{text}\" in reverse order", "the reversed word order"),
    ("text_to_snake_case", "The text as a snake_case identifier.", lambda text: "_".join(text.lower().split()),
     "\"{text}\" as snake_case", "the snake_case form"),
    ("text_to_camel_case", "The text as a camelCase identifier.",
     lambda text: (lambda w: w[0].lower() + "".join(x.capitalize() for x in w[1:]) if w else "")(text.split()),
     "\"{text}\" as camelCase", "the camelCase form"),
    ("text_to_url_slug", "A URL slug of the text (lower case, words joined by hyphens).",
     lambda text: "-".join(re.findall(r"[a-z0-9]+", text.lower())), "a URL slug of \"{text}\"", "the URL slug"),
    ("text_longest_word", "The longest word of a text (the first one on ties).", lambda text: max(text.split(), key=len),
     "the longest word in \"{text}\"", "the longest word"),
    ("text_letter_frequencies", "How often each letter occurs in a text.",
     lambda text: dict(sorted(Counter(c for c in text.lower() if c.isalpha()).items())), "the letter counts of \"{text}\"",
     "the letter frequencies"),
    ("text_unique_words", "The distinct words of a text, in order of first use.", lambda text: list(dict.fromkeys(text.lower().split())),
     "the distinct words of \"{text}\"", "the distinct words"),
    ("text_rot13_cipher", "Apply the ROT13 letter substitution to a text.",
     lambda text: text.translate(str.maketrans(_string.ascii_lowercase, _string.ascii_lowercase[13:] + _string.ascii_lowercase[:13])),
     "\"{text}\" in ROT13", "the ROT13 text"),
    ("text_initials_only", "The first letter of every word, upper case.", lambda text: "".join(w[0].upper() for w in text.split()),
     "the initials of \"{text}\"", "the initials"),
    ("text_character_count", "The number of characters of a text, spaces included.", lambda text: len(text),
     "the length of \"{text}\" in characters", "the character count"),
)
_STRINGS_EXTRA = (
    row("text_utilities", "text", "text_count_occurrences", "Count the non-overlapping occurrences of a substring in a text.",
        "text:text:The text.; needle:word:The substring to count.", lambda text, needle: text.count(needle),
        ("How many times does \"{needle}\" occur in \"{text}\"?",), "the number of \"{needle}\" in \"{text}\"", "the occurrence count",
        "counts a substring", axis="wrong_operation", vary="needle",
        many=("How many times does each of {list} occur in \"{text}\"?",),
        partial={"text": "How often does \"{needle}\" appear in my text?"}),
    row("text_utilities", "text", "text_truncate_with_ellipsis", "Shorten a text to at most a number of characters, ending with '...' when cut.",
        "text:text:The text.; max_chars:small:The maximum length (at least 4).",
        lambda text, max_chars: text if len(text) <= max_chars else text[: max(max_chars - 3, 1)] + "...",
        ("Cut \"{text}\" down to {max_chars} characters.",), "\"{text}\" cut to {max_chars} characters", "the truncated text",
        "shortens a text", axis="wrong_operation", vary="max_chars", many=("Truncate \"{text}\" to {list} characters.",)),
    row("text_utilities", "text", "text_repeat_joined", "Repeat a word a number of times, joined by a separator.",
        "word:word:The word.; times:small:How many times.; separator:word?=-:What goes between copies.",
        lambda word, times, separator="-": separator.join([word] * times),
        ("Repeat \"{word}\" {times} times.",), "\"{word}\" repeated {times} times", "the repeated word", "repeats a word",
        axis="wrong_operation", vary="times", many=("Repeat \"{word}\" {list} times.",)),
)


def _does(desc: str) -> str:
    """What a text tool does, as a verb phrase after its name ("text_to_snake_case gives the text as
    ...", "text_word_count counts the words ..."): plans and refusals read "{name} {does}"."""
    verb, rest = desc.rstrip(".").split(" ", 1)
    if verb in ("The", "A", "How"):
        return "gives " + desc[0].lower() + desc[1:].rstrip(".")
    return {"Apply": "applies"}.get(verb, verb.lower() + "s") + " " + rest


def _text_specs() -> list[ToolSpec]:
    return [row("text_utilities", "text", name, desc, "text:text:The text.", fn,
                (f"What is {item}?", f"Give me {item}.", f"Please find {item}."), item, label, _does(desc),
                axis="wrong_operation", many=(f"For each of these texts, {label}: {{list}}.",),
                partial={"text": f"I need {label} of my text."})
            for name, desc, fn, item, label in _STRINGS]


def _add_months(date: str, months: int) -> str:
    d = _date(date)
    total = d.year * 12 + d.month - 1 + months
    y, m = divmod(total, 12)
    return d.replace(year=y, month=m + 1, day=min(d.day, calendar.monthrange(y, m + 1)[1])).isoformat()


def _workdays(start: str, end: str) -> int:
    a, b = sorted((_date(start), _date(end)))
    full, rest = divmod((b - a).days, 7)
    return full * 5 + sum((a + dt.timedelta(days=i)).weekday() < 5 for i in range(rest))


_DATES = (
    row("calendar", "dates", "date_day_of_year", "The day of the year (1-366) of a date.", "date:date:A date as YYYY-MM-DD.",
        lambda date: _date(date).timetuple().tm_yday, ("Which day of the year is {date}?", "What is the ordinal day of {date}?"),
        "the day of the year of {date}", "the day of the year", "gives the day of the year", axis="wrong_quantity",
        many=("Which day of the year is each of {list}?",), partial={"date": "What day of the year is my birthday?"}),
    row("calendar", "dates", "date_quarter_of_year", "The calendar quarter (1-4) of a date.", "date:date:A date as YYYY-MM-DD.",
        lambda date: (_date(date).month - 1) // 3 + 1, ("Which quarter is {date} in?",), "the quarter of {date}",
        "the quarter", "gives the quarter of a date", axis="wrong_quantity", many=("Which quarters are {list} in?",)),
    row("calendar", "dates", "date_month_length_days", "How many days the month of a date has.", "date:date:A date as YYYY-MM-DD.",
        lambda date: calendar.monthrange(_date(date).year, _date(date).month)[1],
        ("How many days does the month of {date} have?",), "the length of the month of {date}", "the month length",
        "gives the number of days in a month", axis="wrong_quantity", many=("How many days do the months of {list} have?",)),
    row("calendar", "dates", "date_plus_months", "Add a number of months to a date (the day is clipped to the month's end).",
        "date:date:A date as YYYY-MM-DD.; months:small:Months to add.", _add_months,
        ("What date is {months} months after {date}?", "Add {months} months to {date}."), "{months} months after {date}",
        "the date some months later", "adds months to a date", axis="wrong_operation", vary="months",
        many=("What dates are {list} months after {date}?",), partial={"date": "What date is it {months} months from my start date?"}),
    row("calendar", "dates", "date_weeks_between", "Whole weeks between two dates.", "start:date:The first date.; end:date:The second date.",
        lambda start, end: abs((_date(end) - _date(start)).days) // 7,
        ("How many whole weeks are there between {start} and {end}?",), "the whole weeks from {start} to {end}",
        "the number of weeks between dates", "counts weeks between dates", axis="wrong_quantity"),
    row("calendar", "dates", "date_workdays_between", "Monday-to-Friday days from the first date (included) to the second (excluded).",
        "start:date:The first date.; end:date:The second date.", _workdays,
        ("How many working days are there from {start} to {end}?",), "the workdays from {start} to {end}",
        "the number of working days", "counts working days", axis="wrong_quantity",
        partial={"end": "How many working days from {start} until my deadline?"}),
    row("calendar", "dates", "date_age_in_years", "Age in whole years on a date, from a birth date.",
        "birth_date:date:The birth date.; on_date:date:The date to measure at.",
        lambda birth_date, on_date: abs((lambda b, o: o.year - b.year - ((o.month, o.day) < (b.month, b.day)))(_date(birth_date), _date(on_date))),
        ("How old is someone born on {birth_date} on {on_date}?",), "the age on {on_date} of someone born {birth_date}",
        "an age in years", "computes an age in years", axis="wrong_quantity", vary="birth_date",
        many=("How old on {on_date} are people born on {list}?",), partial={"birth_date": "How old will I be on {on_date}?"}),
    row("calendar", "dates", "year_leap_days_between", "How many leap years there are from one year (included) to another (excluded).",
        "start_year:big:The first year.; end_year:big:The last year (excluded).",
        lambda start_year, end_year: calendar.leapdays(min(start_year, end_year), max(start_year, end_year)),
        ("How many leap years are there from {start_year} to {end_year}?",), "the leap years from {start_year} to {end_year}",
        "a count of leap years", "counts leap years", axis="wrong_quantity", vary="end_year",
        many=("How many leap years from {start_year} up to each of {list}?",)),
    row("calendar", "dates", "date_next_weekday_named", "The first date after a given date that falls on a named weekday.",
        "date:date:A date as YYYY-MM-DD.; weekday:word:Monday ... Sunday.",
        lambda date, weekday: (lambda d, w: (d + dt.timedelta(days=(w - d.weekday() - 1) % 7 + 1)).isoformat())(
            _date(date), [n.lower() for n in calendar.day_name].index(weekday.lower())),
        ("What is the first {weekday} after {date}?",), "the first {weekday} after {date}", "the next given weekday",
        "finds the next date on a weekday", axis="wrong_operation", vary="date", many=("What is the first {weekday} after each of {list}?",)),
)


def _fix_weekday(spec: ToolSpec) -> ToolSpec:
    """The weekday parameter is an enum; its samples come from the enum."""
    import random as _random
    from dataclasses import replace
    days = list(calendar.day_name)
    props = spec.tool.parameters["properties"]
    props["weekday"] = {"type": "string", "enum": days, "description": "The weekday."}

    def sample(rng: _random.Random) -> dict:
        fields = base(rng)
        fields["weekday"] = rng.choice(days)
        return fields

    base = spec.sample
    return replace(spec, sample=sample)


SPECS: tuple[ToolSpec, ...] = tuple(_text_specs() + list(_STRINGS_EXTRA) + list(_DATES[:-1]) + [_fix_weekday(_DATES[-1])])
