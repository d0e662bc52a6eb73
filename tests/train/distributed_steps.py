"""Training steps of a tiny patched Llama, run in one process or in each process of a gloo group.

``test_distributed.py`` spawns :func:`worker` in 2 processes (``torch.multiprocessing.spawn``) and
compares what they did with :func:`reference_steps` in the test's own process. Not a test module.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
import torch.distributed as dist

import mor_ext

WORLD = 2
STEPS = 2
LR = 0.5
ROWS, SEQ, VOCAB = 4, 12, 128
# Strong coefficients, so that a wrong aux or orth gradient shows above the fp32 tolerance.
AUX_COEF, ORTH_COEF = 0.1, 0.5


def build_model(seed: int = 0) -> torch.nn.Module:
    """A 2-layer Llama (hidden 64) patched with MoRAgent's roles at rank 4, ``lora_B`` nonzero (so the
    orthogonal loss and every gradient are), in training mode."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, pad_token_id=0,
                                         bos_token_id=1, eos_token_id=2))
    config = mor_ext.MoRConfig(spec=mor_ext.MoRSpec.moragent(rank=4), aux_loss_coef=AUX_COEF, orth_loss_coef=ORTH_COEF)
    mor_ext.patch(model, config)
    with torch.no_grad():
        for _, layer in mor_ext.mor_layers(model):
            layer.lora_B.normal_(0.0, 0.05)
    return model.train()


def batch(step: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The global batch of ``step``: ``ROWS`` rows, row ``r`` for process ``r // (ROWS // WORLD)``.
    Context tokens (-1), reasoner and executor; the summarizer is absent, so its LoRAs and routed experts
    get no gradient from the data (only its experts' orthogonal term)."""
    g = torch.Generator().manual_seed(100 + step)
    ids = torch.randint(3, VOCAB, (ROWS, SEQ), generator=g)
    roles = torch.full((ROWS, SEQ), -1, dtype=torch.long)
    roles[0, 2:8], roles[0, 8:] = 0, 1
    roles[1, 4:] = 0
    roles[2, 3:] = 1
    roles[3, 1:6], roles[3, 6:] = 1, 0
    return ids, roles


def shard(step: int, rank: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids, roles = batch(step)
    per = ROWS // WORLD
    return ids[rank * per:(rank + 1) * per], roles[rank * per:(rank + 1) * per]


def _losses(out) -> list[float]:
    return [float(out[k].detach()) for k in ("loss", "ce_loss", "aux_loss", "orth_loss")]


def reference_steps(model: torch.nn.Module) -> list[list[list[float]]]:
    """Data parallelism done by hand in one process: each step sums ``loss / WORLD`` over the shards
    (what averaging the gradients of ``WORLD`` processes computes), then one SGD step. Returns the
    losses ``[step][shard] -> [loss, ce, aux, orth]``."""
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    history = []
    for step in range(STEPS):
        per_shard = []
        for rank in range(WORLD):
            ids, roles = shard(step, rank)
            out = model(input_ids=ids, role_ids=roles, labels=ids)
            (out["loss"] / WORLD).backward()
            per_shard.append(_losses(out))
        optimizer.step()
        optimizer.zero_grad()
        history.append(per_shard)
    return history


def _distributed_steps(model: torch.nn.Module, rank: int, autocast: bool = False) -> list[list[list[float]]]:
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=LR)
    history = []
    for step in range(STEPS):
        ids, roles = shard(step, rank)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            out = model(input_ids=ids, role_ids=roles, labels=ids)
        out["loss"].backward()
        optimizer.step()
        optimizer.zero_grad()
        gathered: list = [None] * WORLD
        dist.all_gather_object(gathered, _losses(out))
        history.append(gathered)
    return history


def _fsdp(rank: int, out_dir: Path, **shard_kwargs) -> dict:
    from mor_ext.train.distributed import shard_model

    model = shard_model(build_model(), **shard_kwargs)
    sharded = all(mor_ext.sharding.is_sharded(layer.lora_A) for _, layer in mor_ext.mor_layers(model))
    history = _distributed_steps(model, rank)
    return {"losses": history, "adapter": mor_ext.adapters.adapter_state_dict(model), "sharded": sharded}


def scenario_fsdp(rank: int, out_dir: Path) -> dict:
    return _fsdp(rank, out_dir)


def scenario_fsdp_checkpointed(rank: int, out_dir: Path) -> dict:
    return _fsdp(rank, out_dir, activation_checkpointing=True)


def scenario_fsdp_bf16(rank: int, out_dir: Path) -> dict:
    return _fsdp(rank, out_dir, param_dtype=torch.bfloat16, reduce_dtype=torch.float32)


def scenario_ddp(rank: int, out_dir: Path) -> dict:
    from torch.nn.parallel import DistributedDataParallel

    model = build_model()
    ddp = DistributedDataParallel(model, find_unused_parameters=False)
    history = _distributed_steps(ddp, rank)
    return {"losses": history, "adapter": mor_ext.adapters.adapter_state_dict(model)}


def scenario_save_load(rank: int, out_dir: Path) -> dict:
    """Train sharded, save (gathered, written by rank 0), load the file into a fresh sharded model."""
    from mor_ext.train.distributed import shard_model

    model = shard_model(build_model())
    _distributed_steps(model, rank)
    mor_ext.save_adapter(model, out_dir / "adapter", metadata={"step": STEPS})
    fresh = shard_model(build_model(seed=1))
    mor_ext.load_adapter(fresh, out_dir / "adapter")
    local = {name: p.to_local().clone() for name, p in mor_ext.adapters.io.adapter_params(fresh).items()}
    trained = {name: p.to_local().clone() for name, p in mor_ext.adapters.io.adapter_params(model).items()}
    same = all(torch.equal(local[k], trained[k]) for k in local)
    all_same: list = [None] * WORLD
    dist.all_gather_object(all_same, same)
    return {"loaded_shards_equal": all_same, "adapter": mor_ext.adapters.adapter_state_dict(fresh)}


SCENARIOS = {name.removeprefix("scenario_"): fn for name, fn in globals().items() if name.startswith("scenario_")}


def worker(rank: int, init_file: str, out_dir: str, names: list[str]) -> None:
    """One process of the group: runs the scenarios ``names`` in order; process 0 saves each result
    to ``out_dir/<name>.pt`` (an exception is saved as ``<name>.error`` by the process that raised it)."""
    torch.set_num_threads(1)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=WORLD)
    out = Path(out_dir)
    try:
        for name in names:
            result = SCENARIOS[name](rank, out)
            if rank == 0:
                torch.save(result, out / f"{name}.pt")
            dist.barrier()
    finally:
        dist.destroy_process_group()
