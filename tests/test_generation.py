"""generate_role_turn: the prompt runs under its per-token roles, the new turn under the speaking role."""

import torch
from transformers import LlamaConfig, LlamaForCausalLM

import mor_ext
from mor_ext.generation import generate_role_turn


def _one_layer_patched_llama() -> LlamaForCausalLM:
    """A patched one-layer Llama with a 32-token vocabulary (fresh LoRAs: the base model's outputs)."""
    model = LlamaForCausalLM(LlamaConfig(vocab_size=32, hidden_size=16, intermediate_size=16, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1))
    return mor_ext.patch(model)


def test_generated_turn_equals_the_training_computation():
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=96, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2))
    mor_ext.patch(model)
    with torch.no_grad():
        for _, layer in mor_ext.mor_layers(model):
            layer.lora_B.normal_(0, 0.3)
    model.eval()
    model.generation_config.eos_token_id = None  # no early stop: compare four greedy steps
    model.generation_config.pad_token_id = 0
    prompt = [5, 17, 33, 9, 60, 61, 2, 44]
    roles = [0, 0, 0, -1, 2, 2, 1, 1]  # context as reasoner, a role -1 token, a summarizer turn, an executor header
    new = generate_role_turn(model, prompt, roles, "executor", max_new_tokens=4, do_sample=False)
    assert new.shape == (4,)

    # Teacher-forced forward over prompt + generated tokens with the roles training would use.
    seq = torch.tensor([prompt + new.tolist()])
    seq_roles = torch.tensor([roles + [1] * 4])
    with torch.no_grad():
        logits = model(input_ids=seq, role_ids=seq_roles).logits
    predicted = logits[0, len(prompt) - 1 : -1].argmax(-1)
    assert torch.equal(predicted, new)

    # The prompt's roles matter: all-executor prompts give different logits at the first new token.
    with torch.no_grad():
        all_executor = model(input_ids=seq, role_ids=torch.ones_like(seq)).logits
    assert not torch.allclose(all_executor[0, len(prompt) - 1], logits[0, len(prompt) - 1], atol=1e-5)


def test_generate_role_turn_checks_lengths():
    model = _one_layer_patched_llama()
    try:
        generate_role_turn(model, [1, 2, 3], [0, 0], "reasoner", max_new_tokens=1)
    except ValueError as exc:
        assert "one role id per prompt token" in str(exc)
    else:
        raise AssertionError("expected a ValueError")


def test_generate_role_turn_checks_its_inputs():
    import pytest

    model = _one_layer_patched_llama()
    with pytest.raises(ValueError, match="input_ids must be one sequence"):
        generate_role_turn(model, torch.ones(2, 3, dtype=torch.long), [0, 0, 0], "reasoner", max_new_tokens=1)
    with pytest.raises(ValueError, match="role_ids must be one sequence"):
        generate_role_turn(model, [1, 2, 3], [0.0, 0.0, 0.0], "reasoner", max_new_tokens=1)
    with pytest.raises(ValueError, match=r"input_ids\[1\] = 99 is not a token id of this model \(0 .. 31\)"):
        generate_role_turn(model, [1, 99, 3], [0, 0, 0], "reasoner", max_new_tokens=1)
    out = generate_role_turn(model, torch.tensor([1, 2, 3]), torch.tensor([0, 0, 0]), "reasoner", max_new_tokens=2,
                             do_sample=False)
    assert out.dim() == 1 and 1 <= out.numel() <= 2


def test_generate_role_turn_builds_no_autograd_graph():
    """The prefill ran with grad enabled, so it built a graph through every LoRA (memory for nothing):
    every MoR layer must run with grad disabled and return tensors without a grad_fn."""
    torch.manual_seed(0)
    model = _one_layer_patched_llama()
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    seen = []

    def record(module, inputs, output):
        seen.append((torch.is_grad_enabled(), output.requires_grad, output.grad_fn is not None))

    for _, layer in mor_ext.mor_layers(model):
        layer.register_forward_hook(record)
    generate_role_turn(model, [1, 2, 3, 4], [0, 0, 1, 1], "executor", max_new_tokens=2, do_sample=False)
    assert seen and all(call == (False, False, False) for call in seen), seen
    assert torch.is_grad_enabled()  # restored for the caller
