"""What tool selection adds to each decoded token, with SmolLM2-135M-Instruct's tokenizer (49k tokens).

Three measurements (numbers printed, nothing asserted), all on the CPU and without the model:

1. ``token_strings``: the text of every vocabulary token, computed once per tokenizer (the name
   constraint's index).
2. ``NameConstraint.allowed``: the allowed next tokens, at every token of an executor turn that
   writes one call, for 4, 32 and 256 candidate names (BFCL's questions offer 1-30 or so).
3. ``Episode.role_id_for``: the role of each token of an executor turn under the AgentFlux scheme
   (the turn decoded and scanned again at each token), for turns of about 20 and 120 tokens.

Compare with a decode step of the model (``benchmarks/bench_generate.py``: tens of ms per token on
the CPU), which is what these run beside.

    .venv/bin/python benchmarks/bench_selection.py [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from mor_ext.agent import AgentConfig, Episode
from mor_ext.agent.selection import NameConstraint, token_strings
from mor_ext.data.tokenize import RoleTokenizer
from mor_ext.schemes import RoleScheme
from mor_ext.spec import MoRSpec


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

    start = time.perf_counter()
    token_strings(tokenizer)
    print(f"token_strings: {len(tokenizer)} tokens indexed in {time.perf_counter() - start:.2f} s (once per tokenizer)")

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


if __name__ == "__main__":
    main()
