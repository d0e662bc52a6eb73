"""Memory per process and step time of a MoR training step: 1 process vs 2 (gloo), DDP vs FSDP2.

A Llama built from a config (random weights, no download), patched with MoRAgent (rank 16, all 7
projections), AdamW on the adapter, 1 x ``seq`` tokens per process with roles in spans. For each
setup it prints, per process (the max over processes):

* ``state MiB``: bytes this process holds for parameters (base and adapter), gradients and optimiser
  state, counting only its own shards under FSDP2: the number FSDP2 should halve with 2 processes.
* ``peak RSS MiB``: the highest resident set size sampled (every 5 ms) during the measured steps,
  after the model was built and wrapped (building happens whole on every process here).
* ``step s``: median wall time of a step (forward, backward, optimiser step) after one warm-up.

``python benchmarks/bench_distributed.py [--preset medium|small] [--steps 3] [--seq 128]``
(presets: ``small`` is 4 layers of width 256 for a quick check; ``medium`` 313M parameters).
Each process uses one thread, so 2 processes use 2 cores.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time

import torch
import torch.distributed as dist

import mor_ext

PRESETS = {
    # 313M parameters with the adapter (about 2.3x SmolLM2-135M; 0.27B without it).
    "medium": dict(hidden_size=1024, intermediate_size=2816, num_hidden_layers=16, num_attention_heads=16,
                   num_key_value_heads=4, vocab_size=32000),
    "small": dict(hidden_size=256, intermediate_size=704, num_hidden_layers=4, num_attention_heads=8,
                  num_key_value_heads=4, vocab_size=8000),
}


def _rss_mib() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


class _PeakRSS:
    """Samples the resident set size in a thread while active."""

    def __enter__(self):
        self.peak, self._stop = _rss_mib(), threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        return self

    def _run(self):
        while not self._stop.wait(0.005):
            self.peak = max(self.peak, _rss_mib())

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _local_bytes(t: torch.Tensor | None) -> int:
    if t is None:
        return 0
    if mor_ext.sharding.is_sharded(t):
        t = t.to_local()
    return t.numel() * t.element_size()


def _build(preset: str) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(**PRESETS[preset], tie_word_embeddings=False))
    mor_ext.patch(model, mor_ext.MoRConfig(spec=mor_ext.MoRSpec.moragent(16)))
    return model.train()


def _batch(seq: int, vocab: int, rank: int) -> dict:
    g = torch.Generator().manual_seed(rank)
    ids = torch.randint(3, vocab, (1, seq), generator=g)
    roles = (torch.arange(seq) // 16 % 4 - 1).unsqueeze(0)  # spans of 16 tokens: -1, 0, 1, 2, -1, ...
    return {"input_ids": ids, "role_ids": roles, "labels": ids}


def run(rank: int, world: int, mode: str, preset: str, steps: int, seq: int, init_file: str | None) -> list:
    """One process's share of a setup; returns [state MiB, peak RSS MiB, step s, parameters], the max over processes."""
    torch.set_num_threads(1)
    if world > 1:
        dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    model = _build(preset)
    params = sum(p.numel() for p in model.parameters())
    if mode == "fsdp":
        from mor_ext.train.distributed import shard_model

        model = shard_model(model)
        wrapped = model
    elif mode == "ddp":
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    else:
        wrapped = model
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=1e-4)
    batch = _batch(seq, PRESETS[preset]["vocab_size"], rank)
    times = []
    with _PeakRSS() as rss:
        for _ in range(steps + 1):
            start = time.perf_counter()
            wrapped(**batch)["loss"].backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=False)  # keep the gradients allocated, as they are at the peak
            times.append(time.perf_counter() - start)
    state = sum(_local_bytes(p) + _local_bytes(p.grad) for p in model.parameters())
    state += sum(_local_bytes(v) for s in optimizer.state.values() for v in s.values() if isinstance(v, torch.Tensor))
    row = [state / 2**20, rss.peak, statistics.median(times[1:]), params]
    if world > 1:
        rows: list = [None] * world
        dist.all_gather_object(rows, row)
        dist.destroy_process_group()
        row = [max(r[i] for r in rows) for i in range(3)] + [params]
    return row


def _spawned(rank, world, mode, preset, steps, seq, init_file, result_file):
    row = run(rank, world, mode, preset, steps, seq, init_file)
    if rank == 0:
        torch.save(row, result_file)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="medium")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--seq", type=int, default=128)
    args = parser.parse_args()
    import torch.multiprocessing as mp

    print(f"preset {args.preset}, 1 x {args.seq} tokens per process, fp32, AdamW, "
          f"{os.cpu_count()} CPUs, one thread per process")
    print("| setup | processes | state MiB / process | peak RSS MiB / process | step s |")
    print("|---|---:|---:|---:|---:|")
    params = None
    for mode, world in (("single", 1), ("ddp", 2), ("fsdp", 2)):
        if world == 1:
            state, rss, step, params = run(0, 1, mode, args.preset, args.steps, args.seq, None)
        else:
            with tempfile.TemporaryDirectory() as tmp:
                result = os.path.join(tmp, "row.pt")
                mp.spawn(_spawned, args=(world, mode, args.preset, args.steps, args.seq,
                                         os.path.join(tmp, "rendezvous"), result), nprocs=world, join=True)
                state, rss, step, params = torch.load(result)
        print(f"| {mode} | {world} | {state:.0f} | {rss:.0f} | {step:.2f} |", flush=True)
    print(f"parameters: {params / 1e6:.0f}M (base and adapter)")


if __name__ == "__main__":
    main()
