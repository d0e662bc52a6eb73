"""torch.compile of a patched Hugging Face model (issue 18): whole training steps and decoder layers
compile with ``fullgraph=True`` (so nothing in the forward or backward reads a value back to the
host: ``.item()``, ``.tolist()`` or a data-dependent branch would break the graph), shapes and role
patterns do not recompile, and the compiled step gives eager's losses and gradients.

The backend is ``aot_eager`` (AOTAutograd without code generation): it traces forward and backward
through the ops' fake kernels and autograd exactly as inductor does, in a fraction of the time.
"""

from __future__ import annotations

import pytest
import torch

import mor_ext
from conftest import make_tiny_model

pytestmark = pytest.mark.skipif(not mor_ext.ops.compiled_available(), reason="needs the compiled ops")


class CountingBackend:
    """A torch.compile backend that counts the graphs it is handed (one per compile)."""

    def __init__(self) -> None:
        self.graphs = 0

    def __call__(self, gm, example_inputs):
        self.graphs += 1
        return torch._dynamo.lookup_backend("aot_eager")(gm, example_inputs)


def patched_model(spec: mor_ext.MoRSpec) -> torch.nn.Module:
    model = make_tiny_model("llama", seed=3)
    mor_ext.patch(model, mor_ext.MoRConfig(spec=spec))
    with torch.no_grad():  # B = 0 at init would make every LoRA gradient but B's vanish
        for _, layer in mor_ext.mor_layers(model):
            layer.lora_B.normal_(0, 0.05)
    return model.train()


def role_pattern(batch: int, seq: int, kind: str, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":  # a role per token, some -1
        return torch.randint(-1, 3, (batch, seq), generator=g)
    span = 3 if kind == "short_spans" else max(1, seq // 2)
    return (torch.arange(seq) // span % 3).repeat(batch, 1)


def losses(model):
    def forward(input_ids, role_ids):
        out = model(input_ids=input_ids, role_ids=role_ids, labels=input_ids)
        return out.loss, out.ce_loss, out.aux_loss, out.orth_loss

    return forward


def run_step(forward, ids, roles) -> list[torch.Tensor]:
    values = forward(ids, roles)
    values[0].backward()  # the backward graph AOTAutograd compiled with the forward
    return [v.detach() for v in values]


def grads_of(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


# Sizes of 1 are left out: PyTorch specialises a dimension of size 1 (its "0/1 specialisation"), so
# batch 1 or a single token compiles once more, whatever the model.
CASES = [(2, 12, "spans"), (3, 7, "short_spans"), (2, 20, "random"), (4, 9, "short_spans"), (2, 16, "random")]


def test_compiled_training_step_matches_eager_without_recompiles(small_spec):
    """One compile (fullgraph, dynamic shapes) serves every batch size, length and role pattern,
    and each step's losses and gradients equal eager's."""
    torch._dynamo.reset()
    model = patched_model(small_spec)
    counter = CountingBackend()
    forward = losses(model)
    compiled = torch.compile(forward, backend=counter, fullgraph=True, dynamic=True)
    vocab = model.config.vocab_size
    for i, (batch, seq, kind) in enumerate(CASES):
        ids = torch.randint(0, vocab, (batch, seq), generator=torch.Generator().manual_seed(i))
        roles = role_pattern(batch, seq, kind, seed=i)
        with torch._dynamo.config.patch(error_on_recompile=i > 0):  # compiled first: no eager warm-up
            got = run_step(compiled, ids, roles)
        got_grads = grads_of(model)
        want = run_step(forward, ids, roles)
        want_grads = grads_of(model)
        graphs = counter.graphs if i == 0 else graphs
        for name, a, b in zip(("loss", "ce", "aux", "orth"), got, want):
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=f"{name} of case {i}")
        assert got_grads.keys() == want_grads.keys() and got_grads
        for name in want_grads:
            torch.testing.assert_close(got_grads[name], want_grads[name], rtol=1e-4, atol=1e-6, msg=name)
    # The first compile may hand the backend two graphs (dynamo restarts once to turn the model's float
    # attributes into graph inputs); later calls compile nothing.
    assert counter.graphs == graphs <= 2


def test_decoder_layer_compiles_fullgraph(small_spec):
    """A decoder layer alone (what a per-block compile sees), fed the model call's roles."""
    torch._dynamo.reset()
    model = patched_model(small_spec)
    layer = model.model.layers[0]
    ctx = model._mor_state.context
    rotary = model.model.rotary_emb
    counter = CountingBackend()
    compiled = torch.compile(layer, backend=counter, fullgraph=True, dynamic=True)
    for i, (batch, seq, kind) in enumerate(CASES[:3]):
        hidden = torch.randn(batch, seq, model.config.hidden_size, generator=torch.Generator().manual_seed(i))
        positions = torch.arange(seq).expand(batch, seq)
        emb = rotary(hidden, positions)
        outputs = []
        for fn in (layer, compiled):
            saved = ctx.begin_call(role_pattern(batch, seq, kind, seed=i), collect_stats=True)
            try:
                x = hidden.clone().requires_grad_()
                out = fn(x, position_embeddings=emb, attention_mask=None, position_ids=positions)
                y = out[0] if isinstance(out, tuple) else out
                (y.square().sum()).backward()
                outputs.append((y.detach(), x.grad, len(ctx.routings), grads_of(model)))
            finally:
                ctx.end_call(saved)
        (y_e, gx_e, n_e, g_e), (y_c, gx_c, n_c, g_c) = outputs
        torch.testing.assert_close(y_c, y_e)
        torch.testing.assert_close(gx_c, gx_e, rtol=1e-4, atol=1e-6)
        assert n_c == n_e == 7  # every projection recorded its routing for the losses
        for name in g_e:
            torch.testing.assert_close(g_c[name], g_e[name], rtol=1e-4, atol=1e-6, msg=name)
    assert counter.graphs <= 2  # see above: one compile, possibly restarted once


def test_compiled_generation_step_without_recompiles(small_spec):
    """Decode steps under the active role (no role_ids) and with per-token ids, growing cache."""
    torch._dynamo.reset()
    model = patched_model(small_spec).eval()
    counter = CountingBackend()

    def forward(ids, roles, cache):
        return model(input_ids=ids, role_ids=roles, past_key_values=cache, use_cache=True).logits

    compiled = torch.compile(forward, backend=counter, fullgraph=True, dynamic=True)
    from transformers import DynamicCache

    ids = torch.randint(0, model.config.vocab_size, (2, 6), generator=torch.Generator().manual_seed(0))
    caches = [DynamicCache(config=model.config), DynamicCache(config=model.config)]
    with torch.no_grad():
        for step in range(4):
            roles = torch.full_like(ids, step % 3)
            want = forward(ids, roles, caches[0])
            got = compiled(ids, roles, caches[1])
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-5)
            ids = want[:, -1:].argmax(-1)
    assert counter.graphs <= 4, counter.graphs  # the prefill and the one-token decode step (size 1 is specialised)


def test_router_load_is_read_lazily(small_spec):
    """The report stays a device tensor until read (no sync per forward), and rebuilds from a dict
    (as accelerate rebuilds outputs)."""
    model = patched_model(small_spec)
    ids = torch.randint(0, model.config.vocab_size, (2, 10), generator=torch.Generator().manual_seed(0))
    out = model(input_ids=ids, role_ids=role_pattern(2, 10, "short_spans", seed=0), labels=ids)
    load = out.router_load
    assert load._load is None and isinstance(load._counts, torch.Tensor)  # nothing read back yet
    assert set(load) == {"reasoner", "executor", "summarizer"}
    assert type(load)(dict(load.items())) == load
