"""Six hand-written trajectories over four catalogue tools, memorised in a few steps: the tests'
cheap way to a SmolLM2 adapter that follows the role protocol (reasoner -> executor -> observation ->
reasoner -> summarizer) on these queries. Nothing here comes from BFCL (checked in tests/test_demo.py).
Their observations are real executions of the calls.
"""

from __future__ import annotations

import torch

from mor_ext.data.tokenize import RoleTokenizer, collate
from mor_ext.data.trajectory import ToolCall, Trajectory, Turn
from mor_ext.tools import execute
from mor_ext.tools.catalogue import CATALOGUE

TOOLS = CATALOGUE.subset(["convert_temperature_scale", "country_capital_city", "percentage_of_number",
                               "circle_area_from_radius"])

# The tools themselves are rendered into the system turn by mor_ext.data.tokenize.
SYSTEM_PROMPT = (
    "You are a tool-using agent. The reasoner decides the next step and ends with 'Next: executor' or "
    "'Next: summarizer'; the executor answers with one JSON tool call; the summarizer answers the user."
)


def _example(query: str, thought: str, call: ToolCall, answer: str) -> Trajectory:
    observation = execute(TOOLS, call.name, call.arguments, timeout=None, coerce=False)
    if not observation.ok:  # a broken built-in example is a bug here, not something to train on
        raise RuntimeError(f"example call {call} failed: {observation.message}")
    return Trajectory(
        tools=tuple(TOOLS.values()),
        system=SYSTEM_PROMPT,
        turns=(
            Turn("user", query),
            Turn("reasoner", thought, next="executor"),
            Turn("executor", calls=(call,)),
            Turn("observation", observation.observation_text()),
            Turn("reasoner", "The tool returned what the user needs.", next="summarizer"),
            Turn("summarizer", answer),
        ),
    )


def _temperature(value: float, from_scale: str, to_scale: str) -> ToolCall:
    return ToolCall("convert_temperature_scale", {"value": value, "from_scale": from_scale, "to_scale": to_scale})


def _capital(country: str) -> ToolCall:
    return ToolCall("country_capital_city", {"country": country})


EXAMPLES: list[Trajectory] = [
    _example("What is 100 degrees Fahrenheit in Celsius?", "I need to convert a temperature from Fahrenheit to Celsius.",
             _temperature(100, "fahrenheit", "celsius"), "100 °F is about 37.78 °C."),
    _example("Which city is the capital of Kenya?", "I should look up the capital of Kenya.",
             _capital("Kenya"), "The capital of Kenya is Nairobi."),
    _example("What is 15 percent of 240?", "This asks for a percentage of a number: 15 percent of 240.",
             ToolCall("percentage_of_number", {"percent": 15, "number": 240}), "15 percent of 240 is 36."),
    _example("What is the area of a circle with radius 3?", "I need the area of a circle of radius 3.",
             ToolCall("circle_area_from_radius", {"radius": 3}), "A circle of radius 3 has an area of about 28.27."),
    _example("Convert 300 kelvin to Celsius, please.", "I need to convert a temperature from kelvin to Celsius.",
             _temperature(300, "kelvin", "celsius"), "300 K is 26.85 °C."),
    _example("What's the capital city of Peru?", "I should look up the capital of Peru.",
             _capital("Peru"), "The capital of Peru is Lima."),
]

QUERY = "What is the capital of Norway?"


def train_on_examples(model, tokenizer, steps: int = 12, lr: float = 2e-3) -> None:
    """``steps`` AdamW steps over all of :data:`EXAMPLES`, one example per forward (gradients
    accumulated), so peak memory is one example's activations, not six."""
    config = model.mor_config
    encoder = RoleTokenizer(tokenizer, config.spec, config.context_role)
    batches = [collate([encoder.encode(ex)], tokenizer.pad_token_id) for ex in EXAMPLES]
    tokens = [int((b["labels"][:, 1:] != -100).sum()) for b in batches]
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    model.train()
    for _ in range(steps):
        optimizer.zero_grad(set_to_none=True)
        for batch, n in zip(batches, tokens):
            out = model(**batch)
            # per-token CE over all examples, as one batch of six would give; aux/orth once per step
            (out.ce_loss * n / sum(tokens) + (out.loss - out.ce_loss) / len(batches)).backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
    model.eval()
