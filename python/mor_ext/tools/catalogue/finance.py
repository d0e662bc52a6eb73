"""Interest, loans, prices and returns."""

from __future__ import annotations

import math

from ..tool import Tool
from .common import rounded, money, number, integer, one_of, define

__all__ = ["DOMAIN_TOOLS"]

def _compound_balance(principal: float, annual_rate_percent: float, years: float, periods_per_year: int = 12) -> float:
    r = annual_rate_percent / 100 / periods_per_year
    return money(principal * (1 + r) ** (periods_per_year * years))


def _loan_installment(principal: float, annual_rate_percent: float, years: int) -> float:
    n, r = years * 12, annual_rate_percent / 100 / 12
    return money(principal / n if r == 0 else principal * r / (1 - (1 + r) ** -n))


def _simple_interest(principal: float, annual_rate_percent: float, years: float) -> float:
    return money(principal * annual_rate_percent / 100 * years)


def _split_bill(bill: float, tip_percent: float, people: int) -> float:
    return money(bill * (1 + tip_percent / 100) / people)


def _discounted_price(price: float, discount_percent: float) -> float:
    return money(price * (1 - discount_percent / 100))


def _price_with_tax(price: float, tax_percent: float) -> float:
    return money(price * (1 + tax_percent / 100))


def _break_even(fixed_costs: float, price_per_unit: float, variable_cost_per_unit: float) -> int:
    margin = price_per_unit - variable_cost_per_unit
    if margin <= 0:
        raise ValueError("price_per_unit must exceed variable_cost_per_unit")
    return math.ceil(fixed_costs / margin - 1e-9)


def _roi(gain: float, cost: float) -> float:
    return rounded((gain - cost) / cost * 100, 2)


def _cagr(start_value: float, end_value: float, years: float) -> float:
    return rounded(((end_value / start_value) ** (1 / years) - 1) * 100, 2)


DOMAIN_TOOLS: tuple[Tool, ...] = (
    define("finance", "compound_interest_balance", "Balance after compounding a principal at an annual rate for some years.",
           {"principal": number("The starting amount.", minimum=0),
            "annual_rate_percent": number("Annual interest rate in percent.", minimum=0),
            "years": number("Number of years.", minimum=0),
            "periods_per_year": one_of([1, 2, 4, 12, 365], "Compounding periods per year; default 12.")},
           _compound_balance, {"principal": 1000, "annual_rate_percent": 5, "years": 10, "periods_per_year": 1},
           optional=("periods_per_year",)),
    define("finance", "loan_monthly_installment", "Monthly payment of a fixed-rate amortising loan.",
           {"principal": number("The amount borrowed.", minimum=0),
            "annual_rate_percent": number("Annual interest rate in percent.", minimum=0),
            "years": integer("Loan term in years.", minimum=1, maximum=50)},
           _loan_installment, {"principal": 12000, "annual_rate_percent": 0, "years": 1}),
    define("finance", "simple_interest_amount", "Simple (non-compounded) interest earned on a principal.",
           {"principal": number("The amount.", minimum=0),
            "annual_rate_percent": number("Annual interest rate in percent.", minimum=0),
            "years": number("Number of years.", minimum=0)},
           _simple_interest, {"principal": 2000, "annual_rate_percent": 3, "years": 4}),
    define("finance", "bill_split_with_tip", "Each person's share of a bill after adding a tip.",
           {"bill": number("The bill before tip.", minimum=0), "tip_percent": number("Tip in percent.", minimum=0),
            "people": integer("Number of people sharing.", minimum=1)},
           _split_bill, {"bill": 90, "tip_percent": 20, "people": 4}),
    define("finance", "discounted_price_after_percent", "Price after a percentage discount.",
           {"price": number("The original price.", minimum=0),
            "discount_percent": number("Discount in percent.", minimum=0, maximum=100)},
           _discounted_price, {"price": 80, "discount_percent": 25}),
    define("finance", "price_with_sales_tax", "Price including a percentage sales tax.",
           {"price": number("The price before tax.", minimum=0), "tax_percent": number("Tax rate in percent.", minimum=0)},
           _price_with_tax, {"price": 50, "tax_percent": 8}),
    define("finance", "break_even_unit_count", "Units to sell to cover fixed costs, rounded up.",
           {"fixed_costs": number("Fixed costs.", minimum=0), "price_per_unit": number("Selling price per unit."),
            "variable_cost_per_unit": number("Variable cost per unit.")},
           _break_even, {"fixed_costs": 1000, "price_per_unit": 15, "variable_cost_per_unit": 5}),
    define("finance", "return_on_investment_pct", "Return on investment in percent: (gain - cost) / cost.",
           {"gain": number("Final value received."), "cost": number("Amount invested.", exclusiveMinimum=0)},
           _roi, {"gain": 1500, "cost": 1200}),
    define("finance", "compound_annual_growth_rate", "Compound annual growth rate in percent between two values.",
           {"start_value": number("Starting value.", exclusiveMinimum=0),
            "end_value": number("Ending value.", minimum=0),
            "years": number("Number of years.", exclusiveMinimum=0)},
           _cagr, {"start_value": 100, "end_value": 121, "years": 2}),
)
