"""Statistics and arithmetic."""

from __future__ import annotations

import math
import statistics

from ..tool import Tool
from .common import rounded, nonempty, number, integer, one_of, numbers, define

__all__ = ["DOMAIN_TOOLS"]

def _mean(values: list[float]) -> float:
    return rounded(statistics.fmean(nonempty(values)))


def _median(values: list[float]) -> float:
    return rounded(statistics.median(nonempty(values)))


def _stdev(values: list[float], kind: str = "sample") -> float:
    if kind == "sample" and len(values) < 2:
        raise ValueError("the sample standard deviation needs at least 2 values")
    fn = statistics.stdev if kind == "sample" else statistics.pstdev
    return rounded(fn(nonempty(values)))


def _value_range(values: list[float]) -> float:
    return rounded(max(nonempty(values)) - min(values))


def _weighted_average(values: list[float], weights: list[float]) -> float:
    if len(values) != len(weights):
        raise ValueError(f"values and weights differ in length ({len(values)} vs {len(weights)})")
    total = sum(weights)
    if total == 0:
        raise ValueError("weights sum to zero")
    return rounded(sum(v * w for v, w in zip(nonempty(values), weights)) / total)


def _percent_change(old_value: float, new_value: float) -> float:
    if old_value == 0:
        raise ValueError("old_value must not be zero")
    return rounded((new_value - old_value) / abs(old_value) * 100, 2)


def _percentage_of(percent: float, number: float) -> float:
    return rounded(percent / 100 * number)


def _gcd(a: int, b: int) -> int:
    return math.gcd(a, b)


def _lcm(a: int, b: int) -> int:
    return math.lcm(a, b)


def _is_prime(n: int) -> bool:
    if n < 2:
        return False
    return all(n % d for d in range(2, math.isqrt(n) + 1))


def _factorial(n: int) -> int:
    return math.factorial(n)


def _fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


DOMAIN_TOOLS: tuple[Tool, ...] = (
    define("math", "stats_mean_of_list", "Arithmetic mean (average) of a list of numbers.",
           {"values": numbers("The numbers to average.")}, _mean, {"values": [2, 4, 9]}),
    define("math", "stats_median_of_list", "Median (middle value) of a list of numbers.",
           {"values": numbers("The numbers.")}, _median, {"values": [7, 1, 3, 10]}),
    define("math", "stats_standard_deviation", "Standard deviation of a list of numbers (sample or population).",
           {"values": numbers("The numbers."),
            "kind": one_of(["sample", "population"], "Sample (n - 1) or population (n) deviation; default sample.")},
           _stdev, {"values": [2, 4, 4, 4, 5, 5, 7, 9], "kind": "population"}, optional=("kind",)),
    define("math", "stats_value_range", "Spread of a list of numbers: the largest minus the smallest.",
           {"values": numbers("The numbers.")}, _value_range, {"values": [3, 18, 7]}),
    define("math", "weighted_average_of_values", "Weighted average of values with matching weights.",
           {"values": numbers("The values."), "weights": numbers("One weight per value.")},
           _weighted_average, {"values": [80, 90], "weights": [1, 3]}),
    define("math", "percent_change_between", "Percent change from an old value to a new value, rounded to 2 decimals.",
           {"old_value": number("The starting value (not zero)."), "new_value": number("The later value.")},
           _percent_change, {"old_value": 80, "new_value": 100}),
    define("math", "percentage_of_number", "A given percent of a number, e.g. 15 percent of 240.",
           {"percent": number("The percentage."), "number": number("The base number.")},
           _percentage_of, {"percent": 15, "number": 240}),
    define("math", "greatest_common_divisor_of", "Greatest common divisor of two integers.",
           {"a": integer("First integer."), "b": integer("Second integer.")}, _gcd, {"a": 84, "b": 36}),
    define("math", "least_common_multiple_of", "Least common multiple of two integers.",
           {"a": integer("First integer."), "b": integer("Second integer.")}, _lcm, {"a": 4, "b": 6}),
    define("math", "primality_check_integer", "Whether a whole number is prime.",
           {"n": integer("The integer to test.", minimum=0, maximum=10**12)}, _is_prime, {"n": 97}),
    define("math", "factorial_of_integer", "Factorial n! of a whole number from 0 to 20.",
           {"n": integer("The integer.", minimum=0, maximum=20)}, _factorial, {"n": 5}),
    define("math", "nth_fibonacci_number", "The n-th Fibonacci number (F0 = 0, F1 = 1), n from 0 to 90.",
           {"n": integer("The index.", minimum=0, maximum=90)}, _fibonacci, {"n": 10}),
)
