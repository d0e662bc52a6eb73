"""Tokenisation of trajectories: role ids and labels token by token, truncation, packing, prompts.

Tiny byte-level BPE tokenizers are trained here in milliseconds (no downloads), one per chat format:
ChatML and Llama-3 with chat templates of their family, and plain without one. One integration test
checks the real SmolLM2 tokenizer (loaded alone from the GGUF file, ~6 s).
"""

from __future__ import annotations

import dataclasses
import logging

import pytest
import torch

from conftest import VOCAB, make_tiny_model
from mor_ext import MoRSpec
from mor_ext.data.tokenize import (
    CHATML,
    LLAMA3,
    EncodedExample,
    ExampleTooLong,
    RoleTokenizer,
    chat_format,
    collate,
    encode_trajectories,
    encode_trajectory,
    keep_supervised_logits,
    pack,
    prompt_for_role,
    render_messages,
)
from mor_ext.data.trajectory import ROLE_TURNS, Trajectory, Turn, parse_trajectory, render_content

SPEC = MoRSpec.moragent(rank=4)  # roles: reasoner 0, executor 1, summarizer 2

ADD_TOOL = {"name": "add", "description": "Add two numbers.",
            "parameters": {"type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
                           "required": ["a", "b"]}}
TRAJECTORIES = {
    "calc": parse_trajectory({
        "id": "calc", "system": "You are a careful agent.", "tools": [ADD_TOOL],
        "turns": [
            {"role": "user", "content": "What is 2 + 3?"},
            {"role": "reasoner", "content": "I should add the numbers.", "next": "executor"},
            {"role": "executor", "calls": [{"name": "add", "arguments": {"a": 2, "b": 3}}]},
            {"role": "observation", "content": "{\"result\": 5}"},
            {"role": "reasoner", "content": "I have the sum.", "next": "summarizer"},
            {"role": "summarizer", "content": "2 + 3 = 5."}]}),
    "bare": parse_trajectory({  # no system prompt, no tools: no system turn; non-ASCII text
        "id": "bare",
        "turns": [
            {"role": "user", "content": "Où est la tour Eiffel ? 日本語も"},
            {"role": "reasoner", "content": "No tool is needed.", "next": "summarizer"},
            {"role": "summarizer", "content": "À Paris, en France."}]}),
    "two_calls": parse_trajectory({
        "id": "two_calls", "tools": [ADD_TOOL],
        "turns": [
            {"role": "user", "content": "Add 1 and 2, and 3 and 4."},
            {"role": "reasoner", "content": "Two additions.", "next": "executor"},
            {"role": "executor", "calls": [{"name": "add", "arguments": {"a": 1, "b": 2}},
                                           {"name": "add", "arguments": {"a": 3, "b": 4}}]},
            {"role": "observation", "content": "[3, 7]"},
            {"role": "reasoner", "content": "Check the first one again.", "next": "executor"},
            {"role": "executor", "calls": [{"name": "add", "arguments": {"a": 1, "b": 2}}]},
            {"role": "observation", "content": "3"},
            {"role": "reasoner", "content": "Both done.", "next": "summarizer"},
            {"role": "summarizer", "content": "3 and 7."}]}),
}

CHATML_TEMPLATE = (  # SmolLM2's, without its default system prompt
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>'"
    " + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
LLAMA3_TEMPLATE = (  # Llama-3's message loop
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
    " + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
FORMATS = ("chatml", "llama3", "plain")


def _build_tokenizer(kind: str):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    base = Tokenizer(models.BPE())
    base.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    base.decoder = decoders.ByteLevel()
    corpus = ["\n\n".join(m["content"] for m in render_messages(t)) for t in TRAJECTORIES.values()]
    corpus += [" ".join(("system", "user", "observation") + ROLE_TURNS + ("Next:", "tools", "###"))]
    base.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=400, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    specials = {
        "chatml": (["<|im_start|>", "<|im_end|>"], dict(eos_token="<|im_end|>", pad_token="<|im_end|>",
                                                        chat_template=CHATML_TEMPLATE)),
        "llama3": (["<|begin_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"],
                   dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|eot_id|>",
                        chat_template=LLAMA3_TEMPLATE)),
        "plain": (["</s>", "<pad>"], dict(eos_token="</s>", pad_token="<pad>")),
    }[kind]
    base.add_special_tokens(specials[0])
    return PreTrainedTokenizerFast(tokenizer_object=base, **specials[1])


@pytest.fixture(scope="module")
def tokenizers():
    return {kind: _build_tokenizer(kind) for kind in FORMATS}


def _check_lines_up(tok, rt: RoleTokenizer, trajectory: Trajectory, ex: EncodedExample, context_id: int) -> None:
    """Every token's role id and label agrees with the text it decodes to."""
    fmt, decode = rt.format, lambda a, b: tok.decode(ex.input_ids[a:b])
    assert len(ex.input_ids) == len(ex.role_ids) == len(ex.labels)
    first = ex.spans[0].start if ex.spans else len(ex)
    assert decode(0, first) == fmt.begin
    assert ex.role_ids[:first] == [context_id] * first and ex.labels[:first] == [-100] * first
    messages = render_messages(trajectory)
    offset = len(messages) - len(trajectory.turns)
    for k, span in enumerate(ex.spans):
        assert span.start == (ex.spans[k - 1].end if k else first)
        assert span.header == messages[span.turn + offset]["role"]
        assert decode(span.start, span.content) == fmt.header.format(role=span.header)
        assert decode(span.content, span.output_end) == messages[span.turn + offset]["content"] + fmt.end_of_turn
        assert decode(span.output_end, span.end) == fmt.separator
        role_turn = span.header in ROLE_TURNS
        expected_role = SPEC.role_index(span.header) if role_turn else context_id
        assert ex.role_ids[span.start:span.end] == [expected_role] * (span.end - span.start)
        output = ex.input_ids[span.content:span.output_end]
        assert ex.labels[span.content:span.output_end] == (output if role_turn else [-100] * len(output))
        assert ex.labels[span.start:span.content] == [-100] * (span.content - span.start)
        assert ex.labels[span.output_end:span.end] == [-100] * (span.end - span.output_end)
        if role_turn:
            assert output[-1] == rt.end_of_turn_id
    assert ex.spans[-1].end == len(ex)


# ------------------------------------------------------------------------------------------- formats
def test_format_detection(tokenizers, caplog):
    assert chat_format(tokenizers["chatml"]) is CHATML
    assert chat_format(tokenizers["llama3"]) is LLAMA3
    plain = chat_format(tokenizers["plain"])
    assert (plain.name, plain.end_of_turn, plain.header) == ("plain", "</s>", "### {role}\n")
    assert chat_format(tokenizers["chatml"], "plain").name == "plain"

    no_template = _build_tokenizer("chatml")
    no_template.chat_template = None
    assert chat_format(no_template) is CHATML  # from the special tokens alone
    other = _build_tokenizer("plain")
    other.chat_template = "{% for m in messages %}[INST] {{ m['content'] }} [/INST]{% endfor %}"
    with caplog.at_level(logging.WARNING, logger="mor_ext"):
        assert chat_format(other).name == "plain"
    assert "neither ChatML nor Llama-3" in caplog.text

    with pytest.raises(ValueError, match="needs the special tokens"):
        chat_format(tokenizers["plain"], "chatml")
    with pytest.raises(ValueError, match="unknown chat format 'mistral'"):
        chat_format(tokenizers["plain"], "mistral")


def test_tools_are_folded_into_the_system_turn():
    messages = render_messages(TRAJECTORIES["calc"])
    assert [m["role"] for m in messages] == ["system", "user", "reasoner", "executor", "observation",
                                            "reasoner", "summarizer"]
    assert messages[0]["content"] == (
        "You are a careful agent.\n\nAvailable tools (one JSON object per line):\n"
        '{"name": "add", "description": "Add two numbers.", "parameters": {"type": "object", "properties": '
        '{"a": {"type": "number"}, "b": {"type": "number"}}, "required": ["a", "b"]}}')
    assert messages[2]["content"] == "I should add the numbers.\nNext: executor"
    assert messages[3]["content"] == '{"name": "add", "arguments": {"a": 2, "b": 3}}'
    assert render_messages(TRAJECTORIES["bare"])[0]["role"] == "user"  # no system prompt, no tools: no turn


# ------------------------------------------------------------------------------------------- encoding
@pytest.mark.parametrize("name", sorted(TRAJECTORIES))
@pytest.mark.parametrize("kind", FORMATS)
def test_role_ids_and_labels_line_up_token_by_token(tokenizers, kind, name):
    tok, trajectory = tokenizers[kind], TRAJECTORIES[name]
    rt = RoleTokenizer(tok, SPEC, "reasoner")
    ex = rt.encode(trajectory)
    assert ex.id == name and ex.dropped_turns == 0
    _check_lines_up(tok, rt, trajectory, ex, context_id=0)
    assert len(ex.spans) == len(render_messages(trajectory))
    # Only role outputs are supervised: exactly the content + end marker of each role turn.
    supervised = {i for i, label in enumerate(ex.labels) if label != -100}
    outputs = {i for s in ex.spans if s.header in ROLE_TURNS for i in range(s.content, s.output_end)}
    assert supervised == outputs

    # Piecewise tokens equal the tokens of the whole text, which is the family's own template's text.
    text = tok.decode(ex.input_ids)
    assert tok.encode(text, add_special_tokens=False) == ex.input_ids
    if kind != "plain":
        assert text == tok.apply_chat_template(render_messages(trajectory), tokenize=False)
    else:
        assert text == "".join(f"### {m['role']}\n{m['content']}</s>\n\n" for m in render_messages(trajectory))


@pytest.mark.parametrize("context_role, expected", [(None, -1), ("executor", 1), ("summarizer", 2)])
def test_context_role(tokenizers, context_role, expected):
    tok = tokenizers["llama3"]
    ex = encode_trajectory(tok, TRAJECTORIES["calc"], SPEC, context_role)
    _check_lines_up(tok, RoleTokenizer(tok, SPEC), TRAJECTORIES["calc"], ex, context_id=expected)
    assert ex.role_ids[0] == expected  # <|begin_of_text|> is context too
    with pytest.raises(ValueError, match="unknown role 'planner'"):
        RoleTokenizer(tok, SPEC, "planner")
    decoupled = MoRSpec.decoupled(("tool_selector", "argument_generator"), rank=4)
    with pytest.raises(ValueError, match=r"turns\[1\]: unknown role 'reasoner'"):
        encode_trajectory(tok, TRAJECTORIES["calc"], decoupled, None)


def test_raw_turns_render_verbatim(tokenizers):
    """Generated text appended as raw turns encodes exactly like the structured turns it parses to."""
    structured = TRAJECTORIES["calc"]
    raw_turns = tuple(
        Turn(t.role, render_content(t)) if t.role in ("reasoner", "executor") else t for t in structured.turns)
    raw = dataclasses.replace(structured, turns=raw_turns)
    assert raw_turns[1].next is None and raw_turns[2].calls == ()
    for tok in tokenizers.values():
        assert encode_trajectory(tok, raw, SPEC).input_ids == encode_trajectory(tok, structured, SPEC).input_ids


# ------------------------------------------------------------------------------------------- truncation
def test_truncation_drops_whole_trailing_turns(tokenizers):
    tok, trajectory = tokenizers["chatml"], TRAJECTORIES["two_calls"]
    rt = RoleTokenizer(tok, SPEC)
    full = rt.encode(trajectory)
    assert rt.encode(trajectory, max_length=len(full)).dropped_turns == 0
    role_spans = [s for s in full.spans if s.header in ROLE_TURNS]
    for max_length in range(role_spans[0].end, len(full)):
        ex = rt.encode(trajectory, max_length)
        assert len(ex) <= max_length and ex.dropped_turns > 0
        # The longest prefix of whole turns that fits and ends with a role turn.
        kept = max((s for s in role_spans if s.end <= max_length), key=lambda s: s.end)
        assert ex.spans == full.spans[:full.spans.index(kept) + 1]
        assert ex.spans[-1].header in ROLE_TURNS
        assert (ex.input_ids, ex.role_ids, ex.labels) == (
            full.input_ids[:kept.end], full.role_ids[:kept.end], full.labels[:kept.end])
        assert ex.dropped_turns == len(full.spans) - len(ex.spans)
    # Dropping the trailing observation alone is not enough: it would end on context, so the executor stays last.
    before_last_obs = full.spans[-3]
    assert before_last_obs.header == "observation"
    assert rt.encode(trajectory, before_last_obs.end).spans[-1] == full.spans[-4]


def test_examples_whose_first_role_turn_does_not_fit_are_skipped_and_reported(tokenizers, caplog):
    tok = tokenizers["plain"]
    rt = RoleTokenizer(tok, SPEC)
    first_role_end = {name: next(s.end for s in rt.encode(t).spans if s.header in ROLE_TURNS)
                      for name, t in TRAJECTORIES.items()}
    max_length = first_role_end["bare"]
    assert first_role_end["calc"] > max_length and first_role_end["two_calls"] > max_length
    with pytest.raises(ExampleTooLong, match=rf"'calc': its first role turn \(reasoner\) ends at token "
                                             rf"{first_role_end['calc']}, past max_length={max_length}"):
        rt.encode(TRAJECTORIES["calc"], max_length)
    with caplog.at_level(logging.WARNING, logger="mor_ext"):
        result = encode_trajectories(tok, TRAJECTORIES.values(), SPEC, max_length=max_length)
    assert [e.id for e in result.examples] == ["bare"] and result.examples[0].dropped_turns == 1
    assert [(s.index, s.id) for s in result.skipped] == [(0, "calc"), (2, "two_calls")]
    assert all("past max_length" in s.reason for s in result.skipped)
    assert "skipped 2 of 3" in caplog.text
    with pytest.raises(ExampleTooLong, match="no role turn"):
        rt.encode(dataclasses.replace(TRAJECTORIES["bare"], turns=TRAJECTORIES["bare"].turns[:1]), 3)


# ------------------------------------------------------------------------------------------- prompts
@pytest.mark.parametrize("kind", FORMATS)
def test_prompt_is_the_training_prefix(tokenizers, kind):
    tok = tokenizers[kind]
    for trajectory in TRAJECTORIES.values():
        for context_role in (None, "reasoner"):
            ex = encode_trajectory(tok, trajectory, SPEC, context_role)
            for span in ex.spans:
                if span.header not in ROLE_TURNS:
                    continue
                so_far = dataclasses.replace(trajectory, turns=trajectory.turns[:span.turn])
                ids, roles = prompt_for_role(tok, so_far, span.header, SPEC, context_role)
                assert ids == ex.input_ids[:span.content] and roles == ex.role_ids[:span.content]
    with pytest.raises(ValueError, match="prompt role must be one of"):
        prompt_for_role(tok, TRAJECTORIES["calc"], "user", SPEC)


@pytest.mark.parametrize("kind", FORMATS)
def test_pieces_build_the_encoding_turn_by_turn(tokenizers, kind):
    """The public pieces the agent runtime appends (headers, context turns, end markers) are exactly
    the spans of the training encoding, so an incremental episode never re-encodes its prefix."""
    tok = tokenizers[kind]
    rt = RoleTokenizer(tok, SPEC)
    for trajectory in TRAJECTORIES.values():
        ex = rt.encode(trajectory)
        messages = render_messages(trajectory)
        offset = len(messages) - len(trajectory.turns)
        for span in ex.spans:
            content = messages[span.turn + offset]["content"]
            assert ex.input_ids[span.start:span.content] == rt.header_ids(span.header)
            assert ex.input_ids[span.output_end:span.end] == rt.separator_ids
            assert ex.input_ids[span.output_end - len(rt.end_of_turn_ids):span.output_end] == rt.end_of_turn_ids
            if span.header not in ROLE_TURNS:
                assert ex.input_ids[span.start:span.end] == rt.context_turn_ids(span.header, content)


# ------------------------------------------------------------------------------------------- batches
def _fake(n: int, offset: int = 0) -> EncodedExample:
    ids = [3 + (offset + i) % (VOCAB - 3) for i in range(n)]
    return EncodedExample(ids, [0] * 2 + [1] * (n - 2), [-100] * 2 + ids[2:], (), id=f"ex{offset}")


def test_collate_pads_right(tokenizers):
    tok = tokenizers["chatml"]
    a, b = (encode_trajectory(tok, TRAJECTORIES[n], SPEC) for n in ("calc", "bare"))
    batch = collate([a, b], tok.pad_token_id)
    assert set(batch) == {"input_ids", "role_ids", "labels", "attention_mask"}
    width = len(a)
    assert all(v.shape == (2, width) and v.dtype == torch.long for v in batch.values())
    assert batch["input_ids"][1].tolist() == b.input_ids + [tok.pad_token_id] * (width - len(b))
    assert batch["role_ids"][1, len(b):].eq(-1).all() and batch["labels"][1, len(b):].eq(-100).all()
    assert batch["attention_mask"].sum(1).tolist() == [len(a), len(b)]
    with pytest.raises(ValueError, match="pad_id is None"):
        collate([a], None)


def test_pack_first_fit_with_boundaries():
    examples = [_fake(n, offset=10 * i) for i, n in enumerate((6, 5, 3, 4, 2))]
    packed = pack(examples, max_length=10)
    assert [p.members for p in packed] == [(0, 2), (1, 3), (4,)]  # 6+3, 5+4, 2
    for row in packed:
        assert len(row) <= 10 and row.boundaries[0] == 0 and row.boundaries[-1] == len(row)
        for k, i in enumerate(row.members):
            a, b = row.boundaries[k], row.boundaries[k + 1]
            assert row.input_ids[a:b] == examples[i].input_ids and row.labels[a:b] == examples[i].labels
            assert row.role_ids[a:b] == examples[i].role_ids and row.position_ids[a:b] == list(range(b - a))
    batch = collate(packed, pad_id=0)
    assert set(batch) == {"input_ids", "role_ids", "labels", "position_ids"}  # no attention_mask: see collate
    assert batch["position_ids"][2].tolist() == [0, 1] + list(range(7))  # the padding is its own block
    assert batch["labels"][2, 2:].eq(-100).all() and batch["role_ids"][2, 2:].eq(-1).all()
    with pytest.raises(ValueError, match="more than max_length=5"):
        pack(examples, max_length=5)
    with pytest.raises(TypeError, match="mix of packed"):
        collate([packed[0], examples[0]], 0)


def test_packed_forward_equals_separate_forwards():
    """transformers' block-diagonal causal mask from position resets: no attention across examples."""
    model = make_tiny_model("llama")
    examples = [_fake(n, offset=7 * i) for i, n in enumerate((9, 5, 7))]
    packed = pack(examples, max_length=16)
    assert [p.members for p in packed] == [(0, 1), (2,)]
    batch = collate(packed, pad_id=0)  # the second row is 7 tokens + 7 of padding
    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], position_ids=batch["position_ids"], use_cache=False).logits
        for row, p in enumerate(packed):
            for k, i in enumerate(p.members):
                alone = model(input_ids=torch.tensor([examples[i].input_ids])).logits
                a, b = p.boundaries[k], p.boundaries[k + 1]
                torch.testing.assert_close(logits[row:row + 1, a:b], alone, rtol=1e-5, atol=1e-5)


def _supervised_model(method: str):
    """A tiny LM with MoR or a peft LoRA whose B matrices are random (zero-initialised B would leave
    the A gradients zero and the test blind to them)."""
    import mor_ext
    from mor_ext import MoRConfig

    model = make_tiny_model("llama")
    if method == "mor":
        model = mor_ext.patch(model, MoRConfig(spec=SPEC))
    else:
        peft = pytest.importorskip("peft")
        model = peft.get_peft_model(model, peft.LoraConfig(r=4, target_modules=["q_proj", "v_proj", "down_proj"]))
    torch.manual_seed(3)
    for name, p in model.named_parameters():
        if p.requires_grad:
            p.data.normal_(0.0, 0.2)
    return model.train()


@pytest.mark.parametrize("packed", [False, True], ids=["padded", "packed"])
@pytest.mark.parametrize("method", ["mor", "lora"])
def test_supervised_logits_give_the_full_loss_and_gradients(method, packed):
    model = _supervised_model(method)
    examples = [_fake(n, offset=5 * i) for i, n in enumerate((11, 6, 9, 4))]
    examples[2].labels[4:7] = [-100] * 3  # an unsupervised turn between supervised ones
    examples[3].labels[:] = [-100] * 4  # a row without any label
    batch = collate(pack(examples, max_length=16) if packed else examples, pad_id=0)
    if method == "lora":
        del batch["role_ids"]
    kept = keep_supervised_logits(batch)
    targets = int((batch["labels"][:, 1:] != -100).sum())
    assert kept["logits_to_keep"].sum() == targets + 1 and kept["labels"].shape == (targets + 1,)
    assert int((kept["labels"][1:] != -100).sum()) == targets  # what Trainer counts for num_items_in_batch

    def loss_and_grads(inputs, **kwargs):
        model.zero_grad()
        out = model(**inputs, use_cache=False, **kwargs)
        out.loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return out, grads

    for kwargs in ({}, {"num_items_in_batch": torch.tensor(targets + 3)}):
        full, full_grads = loss_and_grads(batch, **kwargs)
        part, part_grads = loss_and_grads(kept, **kwargs)
        assert part.logits.shape[:-1] == (targets + 1,) and full.logits.shape[:-1] == batch["input_ids"].shape
        torch.testing.assert_close(part.loss, full.loss, rtol=1e-5, atol=1e-6)
        if method == "mor":  # the aux and orth terms ride along unchanged
            torch.testing.assert_close(part["ce_loss"], full["ce_loss"], rtol=1e-5, atol=1e-6)
        assert any(g.abs().sum() > 0 for g in full_grads.values())
        for name, g in full_grads.items():
            torch.testing.assert_close(part_grads[name], g, rtol=1e-4, atol=1e-6, msg=name)


# ------------------------------------------------------------------------------------------- real tokenizer
@pytest.mark.integration
def test_smollm2_tokenizer():
    from transformers import AutoTokenizer

    import memorised_examples
    from mor_ext.models import ModelNotFoundError, resolve_model

    try:
        directory, gguf = resolve_model(None)
    except ModelNotFoundError as exc:
        pytest.skip(f"default model not installed: {exc}")
    tok = AutoTokenizer.from_pretrained(directory, gguf_file=gguf, local_files_only=True)
    rt = RoleTokenizer(tok, SPEC, "reasoner")
    assert rt.format is CHATML and tok.convert_ids_to_tokens(rt.end_of_turn_id) == "<|im_end|>"
    for trajectory in memorised_examples.EXAMPLES + list(TRAJECTORIES.values()):
        ex = rt.encode(trajectory)
        _check_lines_up(tok, rt, trajectory, ex, context_id=0)
        text = tok.decode(ex.input_ids)
        if trajectory.system or trajectory.tools:  # else SmolLM2's template adds its default system prompt
            assert text == tok.apply_chat_template(render_messages(trajectory), tokenize=False)
        assert tok.encode(text, add_special_tokens=False) == ex.input_ids
        for span in ex.spans:
            if span.header in ROLE_TURNS:
                so_far = dataclasses.replace(trajectory, turns=trajectory.turns[:span.turn])
                assert rt.prompt(so_far, span.header) == (ex.input_ids[:span.content], ex.role_ids[:span.content])
