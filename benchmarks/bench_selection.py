"""What tool selection adds to each decoded token, with SmolLM2-135M-Instruct's tokenizer (49k tokens).

Three measurements (numbers printed, nothing asserted), all on the CPU and without the model:

1. ``token_strings``: the text of every vocabulary token, computed once per tokenizer (the name
   constraint's index), against decoding the tokens one by one as it did before (A/B in one process,
   CPU time of this thread with one torch thread, and wall time).
2. ``NameConstraint.allowed``: the allowed next tokens, at every token of an executor turn that
   writes one call, for 4, 32 and 256 candidate names (BFCL's questions offer 1-30 or so).
3. ``Episode.role_id_for``: the role of each token of an executor turn under the AgentFlux scheme
   (the turn decoded and scanned again at each token), for turns of about 20 and 120 tokens.
4. ``CallGrammar`` (``--constrain-args``): llguidance's view of the tokenizer (once per process),
   the grammar of 4 and 32 tools with BFCL-like schemas (once per tool set), and the allowed tokens
   at every token of a one-call turn; and with ``distinct`` (``--distinct-calls``), at every token of a
   three-call list whose calls share all but their last value (the filter's worst case: every token
   of a later call is a prefix of an earlier call, so it looks ahead at each).

Compare with a decode step of the model (``benchmarks/bench_generate.py``: tens of ms per token on
the CPU), which is what these run beside.

    .venv/bin/python benchmarks/bench_selection.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from mor_ext.agent import AgentConfig, Episode
from mor_ext.agent.arguments import CallGrammar
from mor_ext.agent.selection import NameConstraint, token_strings, token_texts
from mor_ext.data.tokenize import RoleTokenizer
from mor_ext.schemes import RoleScheme
from mor_ext.spec import MoRSpec
from mor_ext.tools import Tool


def _tokenizer():
    from transformers import AutoTokenizer

    from mor_ext.models import resolve_model

    directory, gguf = resolve_model(None)
    return AutoTokenizer.from_pretrained(directory, gguf_file=gguf, local_files_only=True)


def _names(n: int) -> list[str]:
    verbs = ("get", "set", "find", "convert", "calculate", "list", "book", "cancel")
    return [f"{verbs[i % len(verbs)]}_item_{i}" for i in range(n)]


def _best(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    tokenizer = _tokenizer()
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")

    torch.set_num_threads(1)

    def timed(fn) -> tuple[float, float]:
        wall, cpu = time.perf_counter(), time.thread_time()
        fn()
        return time.thread_time() - cpu, time.perf_counter() - wall

    before = timed(lambda: [tokenizer.decode([i], skip_special_tokens=True) for i in range(len(tokenizer))])
    after = timed(lambda: token_texts(tokenizer))
    index = timed(lambda: token_strings(tokenizer))
    print(f"vocabulary index of {len(tokenizer)} tokens (once per tokenizer), CPU s / wall s:\n"
          f"  token texts, decoded one by one (before): {before[0]:.3f} / {before[1]:.3f}\n"
          f"  token texts, one batched decode (now):    {after[0]:.3f} / {after[1]:.3f}\n"
          f"  token_strings (texts + sorted index):     {index[0]:.3f} / {index[1]:.3f}")

    print("\nNameConstraint.allowed, per token of a one-call executor turn:")
    for n in (4, 32, 256):
        names = _names(n)
        call = json.dumps({"name": names[n // 2], "arguments": {"id": 7, "city": "Paris"}})
        ids = tokenizer.encode(call, add_special_tokens=False)
        prefixes = [tokenizer.decode(ids[:k]) for k in range(len(ids))]
        constraint = NameConstraint(tokenizer, names, end)
        seconds = _best(lambda: [constraint.allowed(p) for p in prefixes], args.repeats)
        print(f"  {n:4d} names: {1e3 * seconds / len(prefixes):7.3f} ms/token over {len(prefixes)} tokens")

    print("\nEpisode.role_id_for under the AgentFlux scheme, per token of an executor turn:")
    scheme = RoleScheme.agentflux()
    encoder = RoleTokenizer(tokenizer, MoRSpec.decoupled(scheme.roles, rank=4), "selector", scheme=scheme)
    episode = Episode(encoder, {}, "q", AgentConfig())
    episode.role = "executor"
    for arguments in ({"a": 2}, {f"field_{i}": f"value number {i}" for i in range(12)}):
        ids = tokenizer.encode(json.dumps({"name": "get_item", "arguments": arguments}), add_special_tokens=False)
        seconds = _best(lambda: [episode.role_id_for(ids[:k]) for k in range(1, len(ids) + 1)], args.repeats)
        print(f"  {len(ids):4d}-token turn: {1e3 * seconds / len(ids):7.3f} ms/token")


    print("\nCallGrammar (--constrain-args), CPU s of this thread:")
    cpu = time.thread_time()
    CallGrammar(tokenizer, _tools(1), end)
    print(f"  llguidance's tokenizer and a 1-tool grammar (once per process): {time.thread_time() - cpu:.3f} s")
    for n in (4, 32):
        tools = _tools(n)
        cpu = time.thread_time()
        grammar = CallGrammar(tokenizer, tools, end)
        built = time.thread_time() - cpu
        call = json.dumps({"name": f"tool_{n // 2}", "arguments": {"city": "Paris", "nights": 3, "kind": "double",
                                                                     "guest": {"name": "Ana", "vip": True}}})
        ids = tokenizer.encode(call, add_special_tokens=False)
        assert all(grammar.allowed(ids[:k])[t] for k, t in enumerate(ids)) and grammar.accepts(ids)
        fresh = [CallGrammar(tokenizer, tools, end) for _ in range(args.repeats)]  # no parser states kept
        seconds = min(_cpu(lambda: [g.allowed(ids[:k]) for k in range(len(ids) + 1)]) for g in fresh)
        print(f"  {n:4d} tools: grammar {1e3 * built:7.2f} ms; allowed tokens {1e3 * seconds / (len(ids) + 1):7.3f} "
              f"ms/token over {len(ids) + 1} tokens")
    tools = _tools(4)
    calls = [{"name": "tool_2", "arguments": {"city": "Paris", "nights": 3, "kind": "double",
                                              "guest": {"name": "Ana Maria Lopez", "vip": v}}} for v in (True, False)]
    ids = tokenizer.encode(json.dumps(calls + [{"name": "tool_1", "arguments": {"city": "Rome"}}]), add_special_tokens=False)
    for distinct in (False, True):
        fresh = [CallGrammar(tokenizer, tools, end, distinct=distinct) for _ in range(args.repeats)]
        assert all(fresh[0].allowed(ids[:k])[t] for k, t in enumerate(ids))
        seconds = min(_cpu(lambda: [g.allowed(ids[:k]) for k in range(len(ids) + 1)]) for g in fresh[1:] or fresh)
        print(f"  4 tools, a 3-call list, distinct={distinct!s:5}: allowed tokens {1e3 * seconds / (len(ids) + 1):7.3f} "
              f"ms/token over {len(ids) + 1} tokens")


def _tools(n: int) -> dict[str, Tool]:
    schema = {"type": "object", "properties": {
        "city": {"type": "string"}, "nights": {"type": "integer"}, "kind": {"type": "string", "enum": ["single", "double"]},
        "tags": {"type": "array", "items": {"type": "string"}},
        "guest": {"type": "object", "properties": {"name": {"type": "string"}, "vip": {"type": "boolean"}},
                  "required": ["name"]}}, "required": ["city"]}
    return {f"tool_{i}": Tool(f"tool_{i}", "A tool.", schema) for i in range(n)}


def _cpu(fn) -> float:
    start = time.thread_time()
    fn()
    return time.thread_time() - start


if __name__ == "__main__":
    main()
