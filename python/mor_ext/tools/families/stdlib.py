"""Tools made from real Python standard-library functions by introspection: the signature (via
``inspect.signature``, which reads builtins' text signatures) and the docstring's first line become
a :func:`~mor_ext.tools.tool`-derived tool; a table gives each used parameter a type hint and a
sampler (builtins carry no annotations). Parameters the table leaves out keep their defaults and
are not offered. Results are made JSON (tuples -> lists, named tuples -> objects, floats rounded)."""

from __future__ import annotations

import calendar
import colorsys
import difflib
import fnmatch
import heapq
import html
import inspect
import math
import posixpath
import random
import shlex
import statistics
import string
import textwrap
import unicodedata
import urllib.parse
from typing import Annotated, Any, Callable

from ..catalogue.common import rounded
from ..tool import tool
from .rows import SAMPLERS, words
from .spec import ToolSpec

__all__ = ["SPECS", "FUNCTIONS"]

_HINTS = {"number": float, "integer": int, "string": str, "array": list[float]}
_UNIT = ("number", lambda r: round(r.uniform(0, 1), 2), {"minimum": 0, "maximum": 1})
_SMALLINT = ("integer", lambda r: r.randint(0, 20), {"minimum": 0})
_CHAR = ("string", lambda r: r.choice("aZ7$é½€ß"), {"minLength": 1, "maxLength": 1})
_PATH = ("string", lambda r: r.choice(("/home/ana/notes/todo.txt", "docs/report.final.pdf", "a/b/../c/./d.tar.gz",
                                       "/var/log//app.log", "photos/2024/beach.JPG")), {})
_NAMES = ("string", lambda r: r.choice(("data_*.csv", "*.txt", "img??.png", "[abc]*")), {})
_WORDS = ("array", lambda r: r.sample(["apple", "apply", "ample", "maple", "angle", "ankle", "apron", "happy"], 5),
          {"items": {"type": "string"}})
_FILENAME = ("string", lambda r: r.choice(("data_01.csv", "notes.txt", "img12.png", "beta.md")), {})
_HTML = ("string", lambda r: r.choice(('5 < 6 & "x"', "<b>bold</b>", "Tom & Jerry's", "a > b")), {})
_ESCAPED = ("string", lambda r: r.choice(("&lt;p&gt;", "5 &amp; 6", "&quot;hi&quot;", "caf&eacute;")), {})
_URLTEXT = ("string", lambda r: r.choice(("hello world", "a/b c?d=e", "café & bar", "100% sure")), {})
_URL = ("string", lambda r: r.choice(("https://example.com/shop/list?page=2#top", "http://test.org:8080/a/b.html",
                                     "https://docs.example.net/v1/guide/intro?lang=en")), {})
_ANGLE = ("number", lambda r: round(r.uniform(-3.1, 3.1), 3), {})
_RATIO = ("number", lambda r: round(r.uniform(-0.99, 0.99), 2), {"minimum": -1, "maximum": 1})
_SMALLX = ("number", lambda r: round(r.uniform(-5, 5), 2), {})
_POSX = ("number", lambda r: r.choice((r.randint(1, 500), round(r.uniform(0.1, 100), 2))), {"exclusiveMinimum": 0})
_GAMMA = ("number", lambda r: round(r.uniform(0.5, 10), 2), {"exclusiveMinimum": 0})
_YEAR = ("integer", lambda r: r.randint(1900, 2100), {})
_MONTH = ("integer", lambda r: r.randint(1, 12), {"minimum": 1, "maximum": 12})
_DAY = ("integer", lambda r: r.randint(1, 28), {"minimum": 1, "maximum": 31})
_WIDTH = ("integer", lambda r: r.randint(12, 30), {"minimum": 8})
_LONGTEXT = ("string", lambda r: words(r, 6, 12), {})
N, I, X, T = SAMPLERS["num"], SAMPLERS["int"], SAMPLERS["nums"], SAMPLERS["text"]
_NK = ("integer", lambda r: r.randint(5, 20), {"minimum": 0})
_KK = ("integer", lambda r: r.randint(0, 5), {"minimum": 0})

# (module, function, {parameter: (json type, sampler, extra schema)}, what it computes (noun phrase))
FUNCTIONS: tuple[tuple[Any, str, dict[str, tuple], str], ...] = (
    (math, "sqrt", {"x": _POSX}, "the square root"), (math, "cbrt", {"x": N}, "the cube root"),
    (math, "exp", {"x": _SMALLX}, "e raised to a power"), (math, "expm1", {"x": _SMALLX}, "exp(x) - 1"),
    (math, "log10", {"x": _POSX}, "the base-10 logarithm"), (math, "log2", {"x": _POSX}, "the base-2 logarithm"),
    (math, "log1p", {"x": _POSX}, "the natural logarithm of 1 + x"),
    (math, "sin", {"x": _ANGLE}, "the sine (radians)"), (math, "cos", {"x": _ANGLE}, "the cosine (radians)"),
    (math, "tan", {"x": _RATIO}, "the tangent (radians)"), (math, "asin", {"x": _RATIO}, "the arc sine"),
    (math, "acos", {"x": _RATIO}, "the arc cosine"), (math, "atan", {"x": _SMALLX}, "the arc tangent"),
    (math, "atan2", {"y": _SMALLX, "x": _SMALLX}, "the angle of the point (x, y)"),
    (math, "sinh", {"x": _SMALLX}, "the hyperbolic sine"), (math, "cosh", {"x": _SMALLX}, "the hyperbolic cosine"),
    (math, "tanh", {"x": _SMALLX}, "the hyperbolic tangent"), (math, "asinh", {"x": _SMALLX}, "the inverse hyperbolic sine"),
    (math, "degrees", {"x": _ANGLE}, "radians in degrees"), (math, "radians", {"x": N}, "degrees in radians"),
    (math, "ceil", {"x": N}, "the ceiling"), (math, "floor", {"x": N}, "the floor"), (math, "trunc", {"x": N}, "the integer part"),
    (math, "fabs", {"x": N}, "the absolute value"), (math, "factorial", {"n": _NK}, "the factorial"),
    (math, "comb", {"n": _NK, "k": _KK}, "the number of combinations"),
    (math, "perm", {"n": _NK, "k": _KK}, "the number of permutations"), (math, "isqrt", {"n": SAMPLERS["big"]}, "the integer square root"),
    (math, "copysign", {"x": N, "y": N}, "x with the sign of y"), (math, "fmod", {"x": N, "y": _POSX}, "the floating-point remainder"),
    (math, "remainder", {"x": N, "y": _POSX}, "the IEEE remainder"), (math, "erf", {"x": _SMALLX}, "the error function"),
    (math, "erfc", {"x": _SMALLX}, "the complementary error function"), (math, "gamma", {"x": _GAMMA}, "the gamma function"),
    (math, "lgamma", {"x": _GAMMA}, "the log of the gamma function"), (math, "pow", {"x": _GAMMA, "y": _SMALLX}, "x to the power y"),
    (math, "fsum", {"seq": X}, "the exact floating-point sum"), (math, "prod", {"iterable": X}, "the product"),
    (math, "dist", {"p": ("array", lambda r: [r.randint(-9, 9) for _ in range(2)], {"items": {"type": "number"}}),
                    "q": ("array", lambda r: [r.randint(-9, 9) for _ in range(2)], {"items": {"type": "number"}})},
     "the Euclidean distance between two points"),
    (statistics, "fmean", {"data": X}, "the arithmetic mean"), (statistics, "median_low", {"data": X}, "the low median"),
    (statistics, "median_high", {"data": X}, "the high median"), (statistics, "multimode", {"data": SAMPLERS["ints"]}, "the most common values"),
    (statistics, "pstdev", {"data": X}, "the population standard deviation"), (statistics, "variance", {"data": X}, "the sample variance"),
    (statistics, "quantiles", {"data": X}, "the quartile cut points"),
    (statistics, "correlation", {"x": ("array", lambda r: [r.randint(1, 9) for _ in range(5)], {"items": {"type": "number"}}),
                                 "y": ("array", lambda r: [r.randint(1, 9) for _ in range(5)], {"items": {"type": "number"}})},
     "the Pearson correlation"),
    (statistics, "covariance", {"x": ("array", lambda r: [r.randint(1, 9) for _ in range(5)], {"items": {"type": "number"}}),
                                "y": ("array", lambda r: [r.randint(1, 9) for _ in range(5)], {"items": {"type": "number"}})},
     "the sample covariance"),
    (colorsys, "rgb_to_hsv", {"r": _UNIT, "g": _UNIT, "b": _UNIT}, "the HSV form of an RGB color"),
    (colorsys, "hsv_to_rgb", {"h": _UNIT, "s": _UNIT, "v": _UNIT}, "the RGB form of an HSV color"),
    (colorsys, "rgb_to_hls", {"r": _UNIT, "g": _UNIT, "b": _UNIT}, "the HLS form of an RGB color"),
    (colorsys, "hls_to_rgb", {"h": _UNIT, "l": _UNIT, "s": _UNIT}, "the RGB form of an HLS color"),
    (colorsys, "rgb_to_yiq", {"r": _UNIT, "g": _UNIT, "b": _UNIT}, "the YIQ form of an RGB color"),
    (textwrap, "fill", {"text": _LONGTEXT, "width": _WIDTH}, "the text wrapped to a width"),
    (textwrap, "shorten", {"text": _LONGTEXT, "width": _WIDTH}, "the text shortened to a width"),
    (textwrap, "wrap", {"text": _LONGTEXT, "width": _WIDTH}, "the lines of the wrapped text"),
    (textwrap, "dedent", {"text": ("string", lambda r: "    " + words(r) + "\n      " + words(r), {})}, "the text without common indentation"),
    (string, "capwords", {"s": T}, "the text with capitalised words"),
    (calendar, "isleap", {"year": _YEAR}, "whether a year is a leap year"),
    (calendar, "leapdays", {"y1": _YEAR, "y2": _YEAR}, "the number of leap years in a range"),
    (calendar, "weekday", {"year": _YEAR, "month": _MONTH, "day": _DAY}, "the weekday number (Monday = 0)"),
    (calendar, "monthrange", {"year": _YEAR, "month": _MONTH}, "the first weekday and length of a month"),
    (unicodedata, "category", {"chr": _CHAR}, "the Unicode category of a character"),
    (unicodedata, "decomposition", {"chr": _CHAR}, "the Unicode decomposition of a character"),
    (unicodedata, "normalize", {"form": ("string", lambda r: r.choice(("NFC", "NFD", "NFKC", "NFKD")),
                                         {"enum": ["NFC", "NFD", "NFKC", "NFKD"]}),
                                "unistr": ("string", lambda r: r.choice(("café", "Å", "ﬁ", "½")), {})},
     "the Unicode normal form of a text"),
    (html, "escape", {"s": _HTML}, "the HTML-escaped text"), (html, "unescape", {"s": _ESCAPED}, "the HTML-unescaped text"),
    (urllib.parse, "quote", {"string": _URLTEXT}, "the percent-encoded text"),
    (urllib.parse, "unquote", {"string": ("string", lambda r: r.choice(("a%20b", "caf%C3%A9", "100%25")), {})}, "the decoded URL text"),
    (posixpath, "basename", {"p": _PATH}, "the last component of a path"), (posixpath, "dirname", {"p": _PATH}, "the directory of a path"),
    (posixpath, "splitext", {"p": _PATH}, "a path split into root and extension"),
    (posixpath, "normpath", {"path": _PATH}, "the normalised path"),
    (fnmatch, "fnmatch", {"name": _FILENAME, "pat": _NAMES}, "whether a file name matches a shell pattern"),
    (shlex, "quote", {"s": ("string", lambda r: r.choice(("my file.txt", "it's", "a;b", "plain")), {})}, "a shell-escaped string"),
    (shlex, "split", {"s": ("string", lambda r: r.choice(('ls -l "my dir"', "echo 'a b' c", "cp x y")), {})}, "the shell-style tokens"),
    (difflib, "get_close_matches", {"word": ("string", lambda r: r.choice(("appel", "mapel", "angel")), {}), "possibilities": _WORDS},
     "the closest matches of a word"),
    (math, "acosh", {"x": ("number", lambda r: round(r.uniform(1, 20), 2), {"minimum": 1})}, "the inverse hyperbolic cosine"),
    (math, "atanh", {"x": _RATIO}, "the inverse hyperbolic tangent"), (math, "ldexp", {"x": N, "i": _KK}, "x times 2 to the power i"),
    (math, "ulp", {"x": _POSX}, "the unit in the last place"),
    (statistics, "mean", {"data": X}, "the mean"), (statistics, "median", {"data": X}, "the median"),
    (statistics, "mode", {"data": SAMPLERS["ints"]}, "the most common value"), (statistics, "stdev", {"data": X}, "the sample standard deviation"),
    (statistics, "pvariance", {"data": X}, "the population variance"), (statistics, "harmonic_mean", {"data": X}, "the harmonic mean"),
    (statistics, "geometric_mean", {"data": X}, "the geometric mean"), (statistics, "median_grouped", {"data": X}, "the grouped median"),
    (calendar, "monthcalendar", {"year": _YEAR, "month": _MONTH}, "the weeks of a month as day-number rows"),
    (textwrap, "indent", {"text": ("string", lambda r: words(r) + "\n" + words(r), {}),
                          "prefix": ("string", lambda r: r.choice(("> ", "# ", "    ", "- ")), {})}, "the text with every line prefixed"),
    (urllib.parse, "urlsplit", {"url": _URL}, "the parts of a URL"),
    (urllib.parse, "parse_qs", {"qs": ("string", lambda r: r.choice(("a=1&b=2&a=3", "q=shoes&size=42", "x=&y=ok")), {})},
     "the parameters of a query string"),
    (urllib.parse, "urljoin", {"base": _URL, "url": ("string", lambda r: r.choice(("../img/a.png", "/about", "page2.html")), {})},
     "a URL resolved against a base URL"),
    (heapq, "nlargest", {"n": ("integer", lambda r: r.randint(1, 3), {"minimum": 0}), "iterable": X}, "the n largest values"),
    (heapq, "nsmallest", {"n": ("integer", lambda r: r.randint(1, 3), {"minimum": 0}), "iterable": X}, "the n smallest values"),
)


def _jsonable(value: Any) -> Any:
    if isinstance(value, float):
        return rounded(value, 6)
    if hasattr(value, "_asdict"):
        return {k: _jsonable(v) for k, v in value._asdict().items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _tool_name(module: Any, fn_name: str) -> str:
    return f"pystd_{module.__name__.split('.')[-1]}_{fn_name}"


def _introspect(module: Any, fn_name: str, params: dict[str, tuple]) -> Callable[..., Any]:
    """A keyword-callable wrapper of ``module.fn_name`` with hints and the real docstring."""
    fn = getattr(module, fn_name)
    sig = inspect.signature(fn)
    names = list(sig.parameters)
    missing = set(params) - set(names)
    if missing:
        raise TypeError(f"{module.__name__}.{fn_name} has no parameter(s) {sorted(missing)}")
    positional = [n for n in names if sig.parameters[n].kind in (inspect.Parameter.POSITIONAL_ONLY,
                                                                 inspect.Parameter.POSITIONAL_OR_KEYWORD)]

    def wrapper(**kw: Any) -> Any:
        args = [kw.pop(n) for n in positional if n in kw]
        return _jsonable(fn(*args, **kw))

    used = [sig.parameters[n].replace(kind=inspect.Parameter.KEYWORD_ONLY, default=inspect.Parameter.empty,
                                      annotation=Annotated[_HINTS[params[n][0]] if params[n][0] != "array" or "items" not in params[n][2]
                                                           else list[_HINTS[params[n][2]["items"]["type"]]],
                                                           {"description": f"The {n} argument of {module.__name__}.{fn_name}.",
                                                            **params[n][2]}])
            for n in names if n in params]
    wrapper.__signature__ = inspect.Signature(used)  # type: ignore[attr-defined]
    wrapper.__annotations__ = {p.name: p.annotation for p in used}
    first = (inspect.getdoc(fn) or "").strip().splitlines()
    doc = next((line for line in first if line.strip() and "(" not in line.split(" ")[0]), f"{module.__name__}.{fn_name}")
    wrapper.__doc__ = f"Python {module.__name__}.{fn_name}: {doc.strip()}"
    wrapper.__name__ = fn_name
    return wrapper


def _spec(module: Any, fn_name: str, params: dict[str, tuple], what: str) -> ToolSpec:
    made = tool(_introspect(module, fn_name, params), name=_tool_name(module, fn_name), domain="python_stdlib")
    qualified = f"{module.__name__}.{fn_name}"
    given = ", ".join(f"{p} = {{{p}}}" for p in params)
    first = next(iter(params))

    def sample(rng: random.Random) -> dict:
        return {p: s[1](rng) for p, s in params.items()}

    return ToolSpec(made, f"stdlib_{module.__name__.split('.')[-1]}", sample,
                    (f"Using Python's {qualified}, what is {what} for {given}?", f"Compute {what} with {given}.",
                     f"What does {qualified} return for {given}?"),
                    f"{what} for {given}", what, f"runs {qualified} ({what})", axis="wrong_operation", vary=first,
                    many=(f"Compute {what} for {first} = {{list}}" + ("" if len(params) == 1 else " (other inputs: "
                          + ", ".join(f"{p} = {{{p}}}" for p in list(params)[1:]) + ")") + ".",),
                    partial={first: f"Compute {what} for me" + ("" if len(params) == 1 else " with "
                             + ", ".join(f"{p} = {{{p}}}" for p in list(params)[1:])) + "."})


SPECS: tuple[ToolSpec, ...] = tuple(_spec(*entry) for entry in FUNCTIONS)
