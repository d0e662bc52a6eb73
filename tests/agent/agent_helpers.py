"""Shared by the agent tests: a tiny ChatML tokenizer and patched tiny Llama (no downloads), tools
whose failures are known, and a token chooser that forces scripted role turns."""

from __future__ import annotations

import json
import time
from collections.abc import Sequence

import torch

import mor_ext
from mor_ext.agent import AgentConfig, Agent, Episode
from mor_ext.data.trajectory import ROLE_TURNS
from mor_ext.tools import ToolRegistry, tool

CHATML_TEMPLATE = ("{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] "
                   "+ '<|im_end|>' + '\n'}}{% endfor %}")
SYSTEM = "You are a tool-using agent."


@tool
def add(a: int, b: int) -> int:
    """Add two integers.

    Args:
        a: The first number.
        b: The second number.
    """
    return a + b


@tool
def explode(reason: str) -> str:
    """Always fails.

    Args:
        reason: Why.
    """
    raise RuntimeError(f"exploded: {reason}")


@tool
def sleepy(seconds: float) -> float:
    """Sleeps.

    Args:
        seconds: How long.
    """
    time.sleep(seconds)
    return seconds


TOOLS = ToolRegistry([add, explode, sleepy])


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    base = Tokenizer(models.BPE())
    base.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    base.decoder = decoders.ByteLevel()
    corpus = [" ".join(("system", "user", "observation") + ROLE_TURNS),
              "Next: executor\nNext: summarizer\n", '{"name": "add", "arguments": {"a": 2, "b": 3}}',
              '{"result": 5} {"error": "unknown tool"} What is 2 + 3? I should add the numbers.', SYSTEM,
              "Available tools (one JSON object per line):\n" + "\n".join(json.dumps(t.to_dict()) for t in TOOLS.values())]
    base.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=600, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False))
    base.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    return PreTrainedTokenizerFast(tokenizer_object=base, eos_token="<|im_end|>", pad_token="<|im_end|>",
                                   chat_template=CHATML_TEMPLATE)


def build_model(vocab: int, dtype: torch.dtype = torch.float32, seed: int = 0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=vocab, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=None,
                                         eos_token_id=vocab - 1, pad_token_id=vocab - 1)).eval()
    mor_ext.patch(model, mor_ext.MoRConfig(spec=mor_ext.MoRSpec.moragent(rank=4)))
    # patch() starts every B at zero (the adapters add nothing); give them values so roles matter.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05, generator=torch.Generator().manual_seed(hash(name) % 2**31))
    return model.to(dtype)


class Script:
    """Forces role turn ``k`` of every episode to be ``texts[k]`` (followed by the end-of-turn token);
    optionally lets the model write ``free(turn)`` greedy tokens before each scripted turn. Records the
    logits it was shown, in order."""

    def __init__(self, tokenizer, texts: Sequence[str] | dict[int, Sequence[str]], free=None) -> None:
        self.tokenizer, self.texts, self.free = tokenizer, texts, free
        self.end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")
        self.logits: list[torch.Tensor] = []

    def __call__(self, logits: torch.Tensor, episode: Episode) -> int:
        self.logits.append(logits.detach().clone())
        texts = self.texts[int(episode.id or 0)] if isinstance(self.texts, dict) else self.texts
        turn = episode.role_turns
        free = self.free(episode, turn) if self.free else 0
        done = len(episode.turn_ids)
        if done < free:
            token = int(torch.argmax(logits))
            return token if token != self.end_id else 0  # keep the scripted part of the turn
        ids = self.tokenizer.encode(texts[min(turn, len(texts) - 1)], add_special_tokens=False) + [self.end_id]
        return ids[min(done - free, len(ids) - 1)]


class ScriptById:
    """Forces each episode's role turns by its id: ``texts[episode.id]`` = [reasoner text, executor
    text, ...], each followed by the end-of-turn token (evaluations script their questions this way)."""

    def __init__(self, tokenizer, texts: dict[str, Sequence[str]]) -> None:
        self.tokenizer, self.texts = tokenizer, texts
        self.end_id = tokenizer.convert_tokens_to_ids("<|im_end|>")

    def __call__(self, logits: torch.Tensor, episode: Episode) -> int:
        text = self.texts[episode.id][episode.role_turns]
        ids = self.tokenizer.encode(text, add_special_tokens=False) + [self.end_id]
        return ids[min(len(episode.turn_ids), len(ids) - 1)]


def make_agent(tokenizer, model, script=None, **config) -> Agent:
    return Agent(model, tokenizer, TOOLS, system=SYSTEM, config=AgentConfig(**config), choose=script)
