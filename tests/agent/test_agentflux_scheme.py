"""Role schemes (docs/spec.md §7): the role boundary after the function name in every call format,
per-role loss masks, and an AgentFlux episode that runs each token under the role training gives it."""

from __future__ import annotations

import json

import pytest
import torch

import mor_ext
from agent_helpers import SYSTEM, TOOLS, Script, build_model, build_tokenizer
from mor_ext.agent import ANSWERED, Agent, AgentConfig
from mor_ext.data.tokenize import RoleTokenizer, restrict_labels
from mor_ext.data.trajectory import ToolCall, Trajectory, Turn
from mor_ext.schemes import RoleScheme, call_segments

AGENTFLUX = RoleScheme.agentflux()
SPEC = mor_ext.MoRSpec.decoupled(AGENTFLUX.roles, rank=4)

# Every form parse_executor_output accepts, with the names it must find.
FORMATS = [
    ('{"name": "add", "arguments": {"a": 2, "b": 3}}', ["add"]),
    ('[{"name": "add", "arguments": {"a": 1}}, {"name": "explode", "arguments": {"reason": "x"}}]', ["add", "explode"]),
    ('```json\n{"name": "add", "arguments": {"a": 2}}\n```', ["add"]),
    ('Calling it now: {"name": "add", "arguments": {}} done', ["add"]),
    ('{"calls": [{"name": "add", "parameters": {"a": 2}}]}', ["add"]),
    ('{"tool_calls": [{"function": {"name": "add", "arguments": "{\\"a\\": 2}"}}]}', ["add"]),
    ('{"name":"add","args":{"name": "not a tool", "b": [1, {"name": "x"}]}}', ["add"]),
]


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer()


@pytest.mark.parametrize("text,names", FORMATS)
def test_the_boundary_falls_exactly_after_each_function_name(text, names):
    runs = call_segments(text)
    found = [text[a:b] for a, b, kind in runs if kind == "name"]
    assert found == names
    for (a, b, kind), nxt in zip(runs, runs[1:]):
        if kind == "name":  # the name's last character is followed by the arguments, starting at its quote
            assert nxt[2] == "arguments" and text[b] == '"'
            assert text[a - 1] == "\"" and text[:a - 1].rstrip().endswith(":")
    assert "".join(text[a:b] for a, b, _ in runs) == text


@pytest.mark.parametrize("text,names", FORMATS)
def test_token_roles_split_at_the_name_in_every_format(tokenizer, text, names):
    encoder = RoleTokenizer(tokenizer, SPEC, "selector", scheme=AGENTFLUX)
    ids = encoder.encode_text(text)
    roles, end_role = encoder.executor_role_ids(ids)
    selector, arguments = SPEC.role_index("selector"), SPEC.role_index("arguments")
    starts = [len(encoder.decode(ids[:k])) for k in range(len(ids))]
    for a, b, kind in call_segments(text):
        # every token that starts inside a name is a selector token; one that starts at the closing
        # quote belongs to the arguments
        for k, s in enumerate(starts):
            if a <= s < b:
                assert roles[k] == (arguments if kind == "arguments" else selector), (text, k, kind)
    assert end_role == selector  # after the last call's object the text is syntax again


def _trajectory(calls) -> Trajectory:
    return Trajectory(tuple(TOOLS.values()), (
        Turn("user", "What is 2 + 3?"), Turn("reasoner", "I should add.", next="executor"),
        Turn("executor", calls=tuple(calls)), Turn("observation", '{"result": 5}'),
        Turn("reasoner", "Done.", next="summarizer"), Turn("summarizer", "5.")), SYSTEM)


def test_the_selector_loss_mask_covers_only_the_name(tokenizer):
    encoder = RoleTokenizer(tokenizer, SPEC, "selector", scheme=AGENTFLUX)
    traj = _trajectory([ToolCall("add", {"a": 2, "b": 3}), ToolCall("explode", {"reason": "add"})])
    example = encoder.encode(traj)
    executor = next(s for s in example.spans if s.header == "executor")
    selector_ids = {SPEC.role_index("selector")}
    masked = restrict_labels(encoder.encode(traj), selector_ids)
    # inside the executor turn the selector predicts the call syntax, every name and the token that
    # ends each name (starting at its closing quote); no other token of the arguments
    content = example.input_ids[executor.content:executor.output_end - 1]
    text = encoder.decode(content)
    starts = [len(encoder.decode(content[:k])) for k in range(len(content))]
    kept = [masked.labels[executor.content + k] != -100 for k in range(len(content))]
    runs = call_segments(text)
    name_ends = {b for a, b, kind in runs if kind == "name"}
    for k, start in enumerate(starts):
        kind = next(kind for a, b, kind in runs if a <= start < b)
        if kind == "name":
            assert kept[k], f"name token {k} is not in the selector's mask"
        elif kind == "arguments":
            assert kept[k] == (start in name_ends), (k, text[start:])
    assert "add" in encoder.decode([t for t, keep in zip(content, kept) if keep])
    arguments = restrict_labels(encoder.encode(traj), {SPEC.role_index("arguments")})
    assert '"b": 3' in encoder.decode([t for t in arguments.labels if t != -100])
    # the reasoner's turns (their "Next: summarizer" is AgentFlux's summarize pseudo-tool) are the
    # selector's; the summarizer's answer is nobody else's
    text = encoder.decode([t for t in masked.labels if t != -100])
    assert "Next: summarizer" in text and "5." not in text.replace("Next", "")
    # together the masks cover every supervised token exactly once
    summarizer = restrict_labels(encoder.encode(traj), {SPEC.role_index("summarizer")})
    union = [max(a, b, c) for a, b, c in zip(masked.labels, arguments.labels, summarizer.labels)]
    assert sum(t != -100 for t in union) == sum(t != -100 for t in example.labels)
    assert all(sum(t != -100 for t in triple) <= 1 for triple in zip(masked.labels, arguments.labels, summarizer.labels))


def test_per_group_argument_roles(tokenizer):
    scheme = RoleScheme.agentflux({"add": "math"})
    spec = mor_ext.MoRSpec.decoupled(scheme.roles, rank=4)
    assert scheme.roles == ("selector", "arguments", "summarizer", "arguments:math")
    encoder = RoleTokenizer(tokenizer, spec, "selector", scheme=scheme)
    ex = encoder.encode(_trajectory([ToolCall("add", {"a": 2}), ToolCall("explode", {"reason": "r"})]))
    math = restrict_labels(encoder.encode(_trajectory([ToolCall("add", {"a": 2}), ToolCall("explode", {"reason": "r"})])),
                           {spec.role_index("arguments:math")})
    math_text = encoder.decode([t for t in math.labels if t != -100])
    assert '"a": 2' in math_text and "reason" not in math_text
    assert spec.role_index("arguments") in ex.role_ids


def test_moragent_scheme_equals_no_scheme(tokenizer):
    traj = _trajectory([ToolCall("add", {"a": 2, "b": 3})])
    plain = RoleTokenizer(tokenizer, mor_ext.MoRSpec.moragent(4)).encode(traj)
    schemed = RoleTokenizer(tokenizer, mor_ext.MoRSpec.moragent(4), scheme=RoleScheme.moragent()).encode(traj)
    assert plain.role_ids == schemed.role_ids and plain.labels == schemed.labels


def test_scheme_errors():
    with pytest.raises(ValueError, match="lacks"):
        mor_ext.MoRConfig(spec=mor_ext.MoRSpec.moragent(4), scheme=AGENTFLUX, context_role=None)
    with pytest.raises(ValueError, match="exactly the kinds"):
        RoleScheme("mine", {"reasoner": "a"})
    with pytest.raises(ValueError, match="presets"):
        RoleScheme.preset("nope")
    config = mor_ext.MoRConfig(spec=SPEC, scheme=AGENTFLUX, context_role="selector")
    again = mor_ext.MoRConfig.from_dict(json.loads(json.dumps(config.to_dict())))
    assert again.scheme == AGENTFLUX and again == config
    old = config.to_dict()
    del old["scheme"]  # an adapter saved before schemes existed
    assert mor_ext.MoRConfig.from_dict(old).scheme is None


@pytest.fixture(scope="module")
def model(tokenizer):
    """A tiny AgentFlux model (shared with the decoding and hierarchy tests, which import it)."""
    return agentflux_model(len(tokenizer))


def agentflux_model(vocab: int, scheme: RoleScheme = AGENTFLUX) -> torch.nn.Module:
    model = build_model(vocab, torch.float64)
    mor_ext.unpatch(model)
    mor_ext.patch(model, mor_ext.MoRConfig(spec=mor_ext.MoRSpec.decoupled(scheme.roles, rank=4), scheme=scheme,
                                           context_role="selector"))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(len(name)))
    return model


def test_agentflux_episode_runs_each_token_under_its_training_role(tokenizer):
    model = agentflux_model(len(tokenizer))
    script = Script(tokenizer, ["I should add.\nNext: executor", '{"name": "add", "arguments": {"a": 2, "b": 3}}',
                                "Done.\nNext: summarizer", "5."])
    agent = Agent(model, tokenizer, TOOLS, system=SYSTEM, config=AgentConfig(), choose=script)
    result = agent.run("What is 2 + 3?")
    assert result.status == ANSWERED
    encoded = agent.encoder.encode(result.trajectory)
    n = len(result.input_ids)
    assert encoded.input_ids[:n] == result.input_ids and encoded.role_ids[:n] == result.role_ids
    assert {SPEC.role_index("selector"), SPEC.role_index("arguments")} <= set(result.role_ids)
    # teacher forcing the recorded tokens and roles gives the logits the agent decoded from
    with torch.no_grad():
        full = model(input_ids=torch.tensor([result.input_ids[:-1]]), role_ids=torch.tensor([result.role_ids[:-1]])).logits[0]
    positions = [i - 1 for i, g in enumerate(result.generated) if g]
    torch.testing.assert_close(full[positions], torch.stack(script.logits), rtol=1e-9, atol=1e-9)


def test_the_readme_example_runs():
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = next(b for b in re.findall(r"```python\n(.*?)```", readme, flags=re.S) if "RoleScheme.agentflux" in b)
    namespace: dict = {}
    exec(compile(block, "README.md:role-schemes", "exec"), namespace)
    assert namespace["config"].scheme.roles == ("selector", "arguments", "summarizer", "arguments:math")
