"""Formula tools by family: plane shapes, solids, finance, physics, health, statistics, number theory.
Each is a real implementation (results rounded to 4 decimals, as in the catalogue)."""

from __future__ import annotations

import math
from itertools import accumulate
import statistics as st

from ..catalogue.common import money, rounded
from .rows import row
from .spec import ToolSpec

__all__ = ["SPECS"]

R = rounded


def _tri_ok(f: dict) -> bool:
    a, b, c = f["a"], f["b"], f["c"]
    return a + b > c and a + c > b and b + c > a


def _heron(a: float, b: float, c: float) -> float:
    s = (a + b + c) / 2
    area2 = s * (s - a) * (s - b) * (s - c)
    if area2 <= 0:
        raise ValueError("the sides do not form a triangle")
    return R(math.sqrt(area2))


_PLANE = (
    ("circle", "radius:pos:The radius.", (("area", lambda radius: R(math.pi * radius**2)),
                                          ("perimeter", lambda radius: R(2 * math.pi * radius)),
                                          ("diameter", lambda radius: R(2 * radius)))),
    ("square", "side:pos:The side length.", (("area", lambda side: R(side**2)), ("perimeter", lambda side: R(4 * side)),
                                             ("diagonal", lambda side: R(side * math.sqrt(2))))),
    ("rectangle", "length:pos:The length.; width:pos:The width.",
     (("perimeter", lambda length, width: R(2 * (length + width))),
      ("diagonal", lambda length, width: R(math.hypot(length, width))))),
    ("ellipse", "semi_major:pos:The semi-major axis.; semi_minor:pos:The semi-minor axis.",
     (("area", lambda semi_major, semi_minor: R(math.pi * semi_major * semi_minor)),
      ("perimeter", lambda semi_major, semi_minor: R(math.pi * (3 * (semi_major + semi_minor) - math.sqrt(
          (3 * semi_major + semi_minor) * (semi_major + 3 * semi_minor))))))),
    ("trapezoid", "base_a:pos:One parallel side.; base_b:pos:The other parallel side.; height:pos:The height.",
     (("area", lambda base_a, base_b, height: R((base_a + base_b) / 2 * height)),)),
    ("parallelogram", "base:pos:The base.; height:pos:The height to that base.",
     (("area", lambda base, height: R(base * height)),)),
    ("rhombus", "diagonal_p:pos:The first diagonal.; diagonal_q:pos:The second diagonal.",
     (("area", lambda diagonal_p, diagonal_q: R(diagonal_p * diagonal_q / 2)),
      ("perimeter", lambda diagonal_p, diagonal_q: R(2 * math.hypot(diagonal_p, diagonal_q))))),
    ("equilateral_triangle", "side:pos:The side length.",
     (("area", lambda side: R(math.sqrt(3) / 4 * side**2)), ("height", lambda side: R(math.sqrt(3) / 2 * side)))),
    ("regular_hexagon", "side:pos:The side length.",
     (("area", lambda side: R(3 * math.sqrt(3) / 2 * side**2)), ("perimeter", lambda side: R(6 * side)))),
    ("annulus", "outer_radius:pos:The outer radius.; inner_radius:pos:The inner radius.",
     (("area", lambda outer_radius, inner_radius: R(math.pi * (outer_radius**2 - inner_radius**2))),)),
    ("circular_sector", "radius:pos:The radius.; angle_deg:angle:The central angle in degrees.",
     (("area", lambda radius, angle_deg: R(math.pi * radius**2 * angle_deg / 360)),
      ("arc_length", lambda radius, angle_deg: R(math.pi * radius * angle_deg / 180)))),
)
_SOLIDS = (
    ("sphere", "radius:pos:The radius.", (("surface_area", lambda radius: R(4 * math.pi * radius**2)),)),
    ("cube", "edge:pos:The edge length.", (("volume", lambda edge: R(edge**3)), ("surface_area", lambda edge: R(6 * edge**2)),
                                          ("space_diagonal", lambda edge: R(edge * math.sqrt(3))))),
    ("cuboid", "length:pos:The length.; width:pos:The width.; height:pos:The height.",
     (("volume", lambda length, width, height: R(length * width * height)),
      ("surface_area", lambda length, width, height: R(2 * (length * width + length * height + width * height))))),
    ("cylinder", "radius:pos:The base radius.; height:pos:The height.",
     (("surface_area", lambda radius, height: R(2 * math.pi * radius * (radius + height))),
      ("lateral_area", lambda radius, height: R(2 * math.pi * radius * height)))),
    ("cone", "radius:pos:The base radius.; height:pos:The height.",
     (("slant_height", lambda radius, height: R(math.hypot(radius, height))),
      ("surface_area", lambda radius, height: R(math.pi * radius * (radius + math.hypot(radius, height)))))),
    ("square_pyramid", "base_edge:pos:The base edge.; height:pos:The height.",
     (("volume", lambda base_edge, height: R(base_edge**2 * height / 3)),)),
    ("hemisphere", "radius:pos:The radius.", (("volume", lambda radius: R(2 / 3 * math.pi * radius**3)),)),
    ("torus", "major_radius:pos:Distance from the centre to the tube's centre.; minor_radius:pos:The tube radius.",
     (("volume", lambda major_radius, minor_radius: R(2 * math.pi**2 * major_radius * minor_radius**2)),)),
)


def _shape_specs(family: str, shapes) -> list[ToolSpec]:
    out = []
    for shape, params, quantities in shapes:
        shape_w = shape.replace("_", " ")
        pnames = [p.split(":")[0] for p in params.split(";")]
        given = " and ".join(f"{p.strip().replace('_', ' ')} {{{p.strip()}}}" for p in pnames)
        for quantity, fn in quantities:
            q = quantity.replace("_", " ")
            out.append(row(
                family, "geometry", f"{shape}_{quantity}_calc", f"The {q} of a {shape_w}.", params, fn,
                (f"A {shape_w} has {given}. What is its {q}?", f"Find the {q} of a {shape_w} ({given}).",
                 f"I have a {shape_w} with {given}. How big is its {q}?"),
                f"the {q} of a {shape_w} with {given}", f"the {q} of a {shape_w}", f"gives the {q} of a {shape_w}",
                axis="wrong_quantity",
                many=(f"Find the {q} of a {shape_w} for each {pnames[0].strip().replace('_', ' ')} in {{list}}"
                      + ("" if len(pnames) == 1 else " (the other measures fixed: "
                         + ", ".join(f"{p.strip().replace('_', ' ')} {{{p.strip()}}}" for p in pnames[1:]) + ")")
                      + "?",),
                partial={pnames[0].strip(): f"What is the {q} of my {shape_w}"
                         + "".join(f"{' with' if i == 0 else ' and'} {p.strip().replace('_', ' ')} {{{p.strip()}}}"
                                   for i, p in enumerate(pnames[1:])) + "?"}))
    return out


def _amortized(principal: float, rate_percent: float, years: int) -> float:
    r, n = rate_percent / 1200, years * 12
    return money(principal / n if r == 0 else principal * r / (1 - (1 + r) ** -n))


_FINANCE = (
    ("future_value_of_savings", "The future value of a lump sum with yearly compounding.",
     "principal:money:The amount invested now.; rate_percent:pct:The yearly interest rate in percent.; years:years:How many years.",
     lambda principal, rate_percent, years: money(principal * (1 + rate_percent / 100) ** years),
     "what {principal} grows to at {rate_percent}% a year over {years} years"),
    ("present_value_of_future_sum", "The present value of a future amount discounted yearly.",
     "future_amount:money:The amount received later.; rate_percent:pct:The yearly discount rate in percent.; years:years:Years until it is received.",
     lambda future_amount, rate_percent, years: money(future_amount / (1 + rate_percent / 100) ** years),
     "today's value of {future_amount} received in {years} years at {rate_percent}%"),
    ("annuity_future_value", "The future value of equal yearly deposits (ordinary annuity).",
     "deposit:money:The deposit each year.; rate_percent:pct:The yearly interest rate in percent.; years:years:How many deposits.",
     lambda deposit, rate_percent, years: money(deposit * years if rate_percent == 0 else
                                                deposit * ((1 + rate_percent / 100) ** years - 1) / (rate_percent / 100)),
     "the value after {years} yearly deposits of {deposit} at {rate_percent}%"),
    ("mortgage_payment_monthly", "The monthly payment of a fully amortising loan.",
     "principal:money:The loan amount.; rate_percent:pct:The yearly interest rate in percent.; years:years:The term in years.",
     _amortized, "the monthly payment on {principal} at {rate_percent}% over {years} years"),
    ("straight_line_depreciation_yearly", "Yearly depreciation of an asset, straight-line method.",
     "cost:money:The purchase cost.; salvage:money?=0:The value left at the end.; years:years:The useful life in years.",
     lambda cost, years, salvage=0: money((cost - salvage) / years),
     "the yearly straight-line depreciation of an asset costing {cost} over {years} years"),
    ("gross_margin_percent", "Gross margin in percent from revenue and cost of goods sold.",
     "revenue:money:Revenue.; cost:money:Cost of goods sold.",
     lambda revenue, cost: R(100 * (revenue - cost) / revenue, 2), "the gross margin with revenue {revenue} and cost {cost}"),
    ("markup_percent_from_cost", "Markup in percent of a selling price over its cost.",
     "cost:money:What the item cost.; price:money:The selling price.",
     lambda cost, price: R(100 * (price - cost) / cost, 2), "the markup of selling at {price} what cost {cost}"),
    ("sales_commission_amount", "The commission earned on a sale at a percentage rate.",
     "sale_amount:money:The sale amount.; commission_percent:pct:The commission rate in percent.",
     lambda sale_amount, commission_percent: money(sale_amount * commission_percent / 100),
     "the commission on a {sale_amount} sale at {commission_percent}%"),
    ("inflation_adjusted_amount", "What an amount is worth after years of constant inflation.",
     "amount:money:Today's amount.; inflation_percent:pct:The yearly inflation in percent.; years:years:How many years.",
     lambda amount, inflation_percent, years: money(amount / (1 + inflation_percent / 100) ** years),
     "the real value of {amount} after {years} years of {inflation_percent}% inflation"),
    ("doubling_time_rule_of_72", "Approximate years for money to double (the rule of 72).",
     "rate_percent:pct:The yearly growth rate in percent.",
     lambda rate_percent: R(72 / rate_percent, 2), "how long money takes to double at {rate_percent}%"),
    ("dividend_yield_percent", "Dividend yield in percent from the yearly dividend and the share price.",
     "annual_dividend:money:Dividend per share per year.; share_price:money:The share price.",
     lambda annual_dividend, share_price: R(100 * annual_dividend / share_price, 2),
     "the dividend yield of a {annual_dividend} dividend on a {share_price} share"),
    ("price_earnings_ratio", "The price-to-earnings ratio.",
     "share_price:money:The share price.; earnings_per_share:money:Earnings per share.",
     lambda share_price, earnings_per_share: R(share_price / earnings_per_share, 2),
     "the P/E ratio at price {share_price} and earnings {earnings_per_share} per share"),
    ("net_present_value_flows", "Net present value of yearly cash flows (the first flow is at year 0).",
     "rate_percent:pct:The discount rate in percent.; cash_flows:nums:Cash flows, one per year, from year 0.",
     lambda rate_percent, cash_flows: money(sum(c / (1 + rate_percent / 100) ** t for t, c in enumerate(cash_flows))),
     "the NPV of cash flows {cash_flows} at {rate_percent}%"),
    ("hourly_to_annual_salary", "Yearly pay from an hourly wage.",
     "hourly_wage:money:Pay per hour.; hours_per_week:small?=40:Hours worked per week.",
     lambda hourly_wage, hours_per_week=40: money(hourly_wage * hours_per_week * 52),
     "the yearly salary for {hourly_wage} per hour"),
    ("unit_price_per_item", "The price of one item from a pack price and a count.",
     "pack_price:money:The price of the pack.; items:count:How many items are in it.",
     lambda pack_price, items: money(pack_price / max(items, 1)), "the price of one item of a {items}-pack costing {pack_price}"),
)

_SCIENCE = (
    ("kinetic_energy_joules", "Kinetic energy in joules of a moving mass.", "mass_kg:mass:Mass in kg.; speed_mps:speed:Speed in m/s.",
     lambda mass_kg, speed_mps: R(0.5 * mass_kg * speed_mps**2), "the kinetic energy of {mass_kg} kg at {speed_mps} m/s"),
    ("potential_energy_joules", "Gravitational potential energy in joules near Earth's surface (g = 9.81).",
     "mass_kg:mass:Mass in kg.; height_m:pos:Height in meters.",
     lambda mass_kg, height_m: R(mass_kg * 9.81 * height_m), "the potential energy of {mass_kg} kg raised {height_m} m"),
    ("momentum_kg_mps", "Momentum of a mass at a speed.", "mass_kg:mass:Mass in kg.; speed_mps:speed:Speed in m/s.",
     lambda mass_kg, speed_mps: R(mass_kg * speed_mps), "the momentum of {mass_kg} kg moving at {speed_mps} m/s"),
    ("ohms_law_current_amps", "Current in amperes from voltage and resistance (Ohm's law).",
     "voltage:pos:Voltage in volts.; resistance:pos:Resistance in ohms.",
     lambda voltage, resistance: R(voltage / resistance), "the current through {resistance} ohms at {voltage} V"),
    ("ohms_law_voltage_volts", "Voltage in volts from current and resistance (Ohm's law).",
     "current:pos:Current in amperes.; resistance:pos:Resistance in ohms.",
     lambda current, resistance: R(current * resistance), "the voltage across {resistance} ohms carrying {current} A"),
    ("electric_power_watts", "Electric power in watts from voltage and current.", "voltage:pos:Volts.; current:pos:Amperes.",
     lambda voltage, current: R(voltage * current), "the power drawn at {voltage} V and {current} A"),
    ("density_from_mass_volume", "Density from mass and volume.", "mass:pos:The mass.; volume:pos:The volume.",
     lambda mass, volume: R(mass / volume), "the density of {mass} units of mass in {volume} units of volume"),
    ("pressure_from_force_area", "Pressure in pascals from force (N) and area (m2).", "force_n:pos:Force in newtons.; area_m2:pos:Area in square meters.",
     lambda force_n, area_m2: R(force_n / area_m2), "the pressure of {force_n} N on {area_m2} m2"),
    ("free_fall_distance_m", "Distance fallen from rest after some seconds (no air resistance, g = 9.81).",
     "seconds:time:Time in seconds.", lambda seconds: R(0.5 * 9.81 * seconds**2), "how far an object falls in {seconds} s"),
    ("average_speed_from_trip", "Average speed from distance and time.", "distance:pos:Distance.; time:time:Time taken.",
     lambda distance, time: R(distance / time), "the average speed over {distance} in {time}"),
    ("uniform_acceleration_final_speed", "Final speed after constant acceleration from an initial speed.",
     "initial_speed:speed:Initial speed in m/s.; acceleration:pos:Acceleration in m/s2.; seconds:time:Duration in s.",
     lambda initial_speed, acceleration, seconds: R(initial_speed + acceleration * seconds),
     "the final speed from {initial_speed} m/s accelerating at {acceleration} m/s2 for {seconds} s"),
    ("wave_speed_from_frequency", "Wave speed from frequency and wavelength.", "frequency_hz:pos:Frequency in Hz.; wavelength_m:pos:Wavelength in m.",
     lambda frequency_hz, wavelength_m: R(frequency_hz * wavelength_m), "the speed of a wave at {frequency_hz} Hz with wavelength {wavelength_m} m"),
    ("ideal_gas_pressure_kpa", "Pressure (kPa) of an ideal gas from moles, temperature (K) and volume (L).",
     "moles:pos:Amount in moles.; temperature_k:big:Temperature in kelvin.; volume_l:pos:Volume in liters.",
     lambda moles, temperature_k, volume_l: R(moles * 8.314462618 * temperature_k / volume_l),
     "the pressure of {moles} mol at {temperature_k} K in {volume_l} L"),
    ("basal_metabolic_rate_kcal", "Basal metabolic rate (Mifflin-St Jeor) in kcal per day.",
     "weight_kg:mass:Weight in kg.; height_cm:big:Height in cm.; age_years:years:Age in years.; sex:word?=female:male or female.",
     lambda weight_kg, height_cm, age_years, sex="female": R(10 * weight_kg + 6.25 * height_cm - 5 * age_years
                                                             + (5 if sex == "male" else -161), 1),
     "the BMR of a {age_years}-year-old weighing {weight_kg} kg at {height_cm} cm"),
    ("max_heart_rate_estimate", "Estimated maximum heart rate (220 minus age).", "age_years:years:Age in years.",
     lambda age_years: 220 - age_years, "the estimated maximum heart rate at age {age_years}"),
    ("daily_water_intake_liters", "A rule-of-thumb daily water intake: 33 ml per kg of body weight.",
     "weight_kg:mass:Body weight in kg.", lambda weight_kg: R(weight_kg * 0.033, 2), "the daily water intake for {weight_kg} kg"),
    ("running_pace_min_per_km", "Running pace in minutes per km from distance and time.",
     "distance_km:pos:Distance in km.; minutes:big:Total time in minutes.",
     lambda distance_km, minutes: R(minutes / distance_km, 2), "the pace for {distance_km} km in {minutes} minutes"),
    ("recipe_quantity_scaled", "Scale an ingredient quantity from one number of servings to another.",
     "quantity:pos:The amount in the recipe.; servings_from:small:Servings the recipe makes.; servings_to:small:Servings wanted.",
     lambda quantity, servings_from, servings_to: R(quantity * servings_to / servings_from, 2),
     "{quantity} units of an ingredient scaled from {servings_from} to {servings_to} servings"),
    ("paint_liters_for_wall", "Liters of paint for a wall, given its size, coats and coverage (10 m2 per liter by default).",
     "width_m:pos:Wall width in m.; height_m:pos:Wall height in m.; coats:small?=2:Number of coats.",
     lambda width_m, height_m, coats=2: R(width_m * height_m * coats / 10, 2), "the paint for a {width_m} m by {height_m} m wall"),
    ("fuel_cost_for_trip", "Fuel cost of a trip from distance, consumption (L/100 km) and fuel price per liter.",
     "distance_km:big:Distance in km.; liters_per_100km:pos:Consumption in L/100 km.; price_per_liter:pos:Fuel price per liter.",
     lambda distance_km, liters_per_100km, price_per_liter: money(distance_km * liters_per_100km / 100 * price_per_liter),
     "the fuel cost of {distance_km} km at {liters_per_100km} L/100 km and {price_per_liter} per liter"),
)


def _trimmed(values, trim_percent=10):
    v = sorted(values)
    k = int(len(v) * trim_percent / 100)
    return R(st.fmean(v[k:len(v) - k] or v))


_STATS = (
    ("values_median", "The median of a list of numbers.", lambda values: R(st.median(values)), "the median"),
    ("values_population_variance", "The population variance of a list of numbers.", lambda values: R(st.pvariance(values)), "the population variance"),
    ("values_sample_stdev", "The sample standard deviation of a list of numbers (at least two).",
     lambda values: R(st.stdev(values)), "the sample standard deviation"),
    ("values_range_spread", "The range (maximum minus minimum) of a list of numbers.", lambda values: R(max(values) - min(values)), "the range"),
    ("values_sum_total", "The sum of a list of numbers.", lambda values: R(sum(values)), "the sum"),
    ("values_geometric_mean", "The geometric mean of a list of positive numbers.", lambda values: R(st.geometric_mean(values)), "the geometric mean"),
    ("values_harmonic_mean", "The harmonic mean of a list of positive numbers.", lambda values: R(st.harmonic_mean(values)), "the harmonic mean"),
    ("values_maximum", "The largest of a list of numbers.", lambda values: max(values), "the maximum"),
    ("values_minimum", "The smallest of a list of numbers.", lambda values: min(values), "the minimum"),
    ("values_cumulative_sums", "The running totals of a list of numbers.", lambda values: [R(x) for x in accumulate(values)], "the running totals"),
    ("values_sorted_ascending", "The numbers sorted from smallest to largest.", lambda values: sorted(values), "the sorted order"),
    ("values_mean_absolute_deviation", "The mean absolute deviation from the mean.",
     lambda values: R(st.fmean(abs(x - st.fmean(values)) for x in values)), "the mean absolute deviation"),
    ("values_interquartile_range", "The interquartile range (Q3 - Q1, exclusive method) of at least two numbers.",
     lambda values: R((lambda q: q[2] - q[0])(st.quantiles(values, n=4))), "the interquartile range"),
    ("values_coefficient_of_variation", "The coefficient of variation (sample stdev / mean) in percent.",
     lambda values: R(100 * st.stdev(values) / st.fmean(values), 2), "the coefficient of variation"),
)
_STATS_EXTRA = (
    row("statistics", "statistics", "values_trimmed_mean", "The mean after dropping a percentage of the lowest and highest values.",
        "values:nums:The numbers.; trim_percent:pct?=10:Percent cut from each end.", _trimmed,
        ("What is the trimmed mean of {values}?", "Give me the 10%-trimmed mean of {values}."),
        "the trimmed mean of {values}", "the trimmed mean", "gives a trimmed mean", many=()),
    row("statistics", "statistics", "values_count_above", "How many of the numbers exceed a threshold.",
        "values:nums:The numbers.; threshold:int:The threshold.", lambda values, threshold: sum(v > threshold for v in values),
        ("How many of {values} are above {threshold}?", "Count the values over {threshold} in {values}."),
        "how many of {values} exceed {threshold}", "the count above a threshold", "counts values above a threshold",
        vary="threshold", many=("How many of {values} are above each of {list}?",)),
    row("statistics", "statistics", "value_z_score", "The z-score of one value given a mean and a standard deviation.",
        "value:num:The value.; mean:num:The mean.; stdev:pos:The standard deviation.",
        lambda value, mean, stdev: R((value - mean) / stdev),
        ("What is the z-score of {value} when the mean is {mean} and the standard deviation {stdev}?",),
        "the z-score of {value} (mean {mean}, sd {stdev})", "the z-score", "gives a z-score",
        many=("Give the z-scores of {list} for mean {mean} and standard deviation {stdev}.",),
        partial={"stdev": "What's the z-score of {value} if the mean is {mean}?"}),
)

_NUMBER = (
    ("integer_digit_sum", "The sum of the decimal digits of an integer.", "n:big:The integer.", lambda n: sum(map(int, str(abs(n)))),
     "the digit sum of {n}", "the digit sum"),
    ("integer_divisor_count", "How many positive divisors an integer has.", "n:big:A positive integer.",
     lambda n: sum(1 if d * d == n else 2 for d in range(1, math.isqrt(n) + 1) if n % d == 0),
     "the number of divisors of {n}", "the divisor count"),
    ("integer_to_roman_numeral", "Write an integer from 1 to 3999 as a Roman numeral.", "n:roman:An integer from 1 to 3999.",
     lambda n: _roman(n), "{n} in Roman numerals", "the Roman numeral"),
    ("collatz_steps_to_one", "Steps the Collatz map takes to reach 1 from a positive integer.", "n:big:A positive integer.",
     lambda n: _collatz(n), "the Collatz steps of {n}", "the Collatz step count"),
    ("nth_triangular_number", "The n-th triangular number n(n+1)/2.", "n:count:n.", lambda n: n * (n + 1) // 2,
     "the {n}th triangular number", "the triangular number"),
    ("nth_fibonacci_term", "The n-th Fibonacci number (F0 = 0, F1 = 1), n up to 90.", "n:small:n.", lambda n: _fib(n),
     "Fibonacci number {n}", "the Fibonacci number"),
    ("integer_prime_factors", "The prime factorisation of an integer >= 2, as a list with repeats.", "n:big:An integer >= 2.",
     lambda n: _factors(n), "the prime factors of {n}", "the prime factors"),
    ("integer_is_perfect_square", "Whether an integer is a perfect square.", "n:big:The integer.",
     lambda n: n >= 0 and math.isqrt(n) ** 2 == n, "whether {n} is a perfect square", "the perfect-square test"),
    ("integer_binary_digits", "The binary representation of a non-negative integer.", "n:big:The integer.",
     lambda n: bin(n)[2:], "{n} in binary", "the binary form"),
    ("integer_hexadecimal_digits", "The hexadecimal representation of a non-negative integer.", "n:big:The integer.",
     lambda n: format(n, "x"), "{n} in hexadecimal", "the hexadecimal form"),
    ("integer_octal_digits", "The octal representation of a non-negative integer.", "n:big:The integer.",
     lambda n: format(n, "o"), "{n} in octal", "the octal form"),
    ("integer_reverse_digits", "The integer with its decimal digits reversed.", "n:big:A non-negative integer.",
     lambda n: int(str(n)[::-1]), "{n} with its digits reversed", "the reversed digits"),
)


def _roman(n: int) -> str:
    if not 1 <= n <= 3999:
        raise ValueError("n must be from 1 to 3999")
    out = ""
    for value, sym in ((1000, "M"), (900, "CM"), (500, "D"), (400, "CD"), (100, "C"), (90, "XC"), (50, "L"),
                       (40, "XL"), (10, "X"), (9, "IX"), (5, "V"), (4, "IV"), (1, "I")):
        k, n = divmod(n, value)
        out += sym * k
    return out


def _collatz(n: int) -> int:
    if n < 1:
        raise ValueError("n must be positive")
    steps = 0
    while n != 1:
        n = n // 2 if n % 2 == 0 else 3 * n + 1
        steps += 1
    return steps


def _fib(n: int) -> int:
    if not 0 <= n <= 90:
        raise ValueError("n must be from 0 to 90")
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a


def _factors(n: int) -> list[int]:
    if n < 2:
        raise ValueError("n must be >= 2")
    out, d = [], 2
    while d * d <= n:
        while n % d == 0:
            out.append(d)
            n //= d
        d += 1
    return out + ([n] if n > 1 else [])


def _partial(label: str, params: str) -> str:
    """A request for ``label`` that gives every required parameter but the first."""
    rest = [p.split(":") for p in params.split(";")[1:] if "?" not in p.split(":")[1]]
    given = ", ".join(f"{text.strip().rstrip('.').lower()} = {{{name.strip()}}}" for name, _, text in rest)
    return f"Work out {label} for me" + (f": {given}." if given else ".")


def _formula_specs(family: str, domain: str, table) -> list[ToolSpec]:
    out = []
    for name, desc, params, fn, item in table:
        label = desc.rstrip(".").split(" from ")[0].split(" of ")[0].lower()
        first = params.split(":")[0]
        out.append(row(family, domain, name, desc, params, fn,
                       (f"Please compute {item}.", f"Could you work out {item}?", f"I'd like to know {item}."),
                       item, label, desc[0].lower() + desc[1:].rstrip("."), axis="wrong_quantity",
                       many=(f"Work out {item.replace('{' + first + '}', '{list}')}, for each of those values.",),
                       partial={first: _partial(label, params)}))
    return out


def _stats_specs() -> list[ToolSpec]:
    return [row("statistics", "statistics", name, desc, "values:nums:The numbers.", fn,
                (f"What is {label} of {{values}}?", f"Compute {label} of these numbers: {{values}}.",
                 f"Here are my readings: {{values}}. Give me {label}."),
                f"{label} of {{values}}", label, desc[0].lower() + desc[1:].rstrip("."), axis="wrong_quantity",
                partial={"values": f"What is {label} of my numbers?"})
            for name, desc, fn, label in _STATS]


def _number_specs() -> list[ToolSpec]:
    return [row("number_theory", "math", name, desc, params, fn,
                (f"What is {item}?", f"Tell me {item}.", f"Find {item}."), item, label, desc[0].lower() + desc[1:].rstrip("."),
                axis="wrong_operation", many=(f"What is {item.replace('{n}', '{list}')} (each of them)?",),
                partial={"n": f"Find {label} of my number."},
                check=(lambda f: f["n"] >= 2) if "prime" in name else None)
            for name, desc, params, fn, item, label in _NUMBER]


SPECS: tuple[ToolSpec, ...] = tuple(
    _shape_specs("plane_shapes", _PLANE) + _shape_specs("solids", _SOLIDS)
    + _formula_specs("finance_formulas", "finance", _FINANCE) + _formula_specs("physics_health", "science", _SCIENCE)
    + _stats_specs() + list(_STATS_EXTRA) + _number_specs())
