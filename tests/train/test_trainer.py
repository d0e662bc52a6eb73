"""mor_ext.train.trainer: MoR, the plain-LoRA baseline, ablations, checkpoints, DDP, ``mor-ext train``.

Everything runs on a tiny Llama (2 layers, hidden 64) saved to a temporary directory with a byte-level
BPE tokenizer trained here on the synthetic trajectories (ChatML template), so `train` goes through
`models.load_model` exactly as the CLI does, without downloads.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import mor_ext
from mor_ext.data.synthetic import generate
from mor_ext.data.jsonl import write_trajectories
from mor_ext.train import CHECKPOINT_ADAPTER_DIR, TRAINING_LOG_NAME, TrainConfig, mor_config_for, train
from tiny_model_dir import build_tiny_model_dir

# Training data goes through the BFCL decontamination check, which needs the BFCL data.
pytestmark = pytest.mark.bfcl

RANK = 2
MAX_LENGTH = 1024


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A tiny model directory (``model/``) and a data file (``data.jsonl``, 8 synthetic trajectories)."""
    root = tmp_path_factory.mktemp("training")
    trajectories = generate(12, seed=0)
    write_trajectories(root / "data.jsonl", trajectories[:8])
    build_tiny_model_dir(root / "model", trajectories)
    return root


def _config(workdir: Path, out: str, **overrides) -> TrainConfig:
    values = dict(out_dir=str(workdir / out), model=str(workdir / "model"), data=str(workdir / "data.jsonl"),
                  rank=RANK, max_length=MAX_LENGTH, max_steps=6, lr=1e-2, batch_size=1, logging_steps=1,
                  progress_bar=False, seed=0)
    values.update(overrides)
    return TrainConfig(**values)


def _losses(history, key="loss"):
    return [h[key] for h in history if key in h and "eval_loss" not in h and "train_runtime" not in h]


def test_mor_training_loss_falls_and_logs_every_term(workdir):
    result = train(_config(workdir, "mor", max_steps=8, lr=2e-2, lr_scheduler="constant"))
    ce = _losses(result.log_history, "ce")
    assert len(ce) == 8
    assert sum(ce[-2:]) / 2 < ce[0] - 0.05, ce
    first = next(h for h in result.log_history if "ce" in h)
    assert {"loss", "ce", "aux", "orth"} <= set(first)
    loads = {k: v for k, v in first.items() if k.startswith("router_load/")}
    roles = {k.split("/")[1] for h in result.log_history for k in h if k.startswith("router_load/")}
    assert roles == {"reasoner", "executor", "summarizer"}
    assert "router_load/reasoner/0" in loads  # every example has a reasoner turn
    # each role's routed fractions sum to its top_k (3 for reasoner)
    assert sum(v for k, v in loads.items() if k.startswith("router_load/reasoner/")) == pytest.approx(3.0)
    log = json.loads((result.out_dir / TRAINING_LOG_NAME).read_text())
    assert log["parameter_counts"]["trainable"] == result.parameter_counts["mor_trainable"]
    from mor_ext.models import load_model

    model, _ = load_model(workdir / "model")
    mor_ext.load_adapter(model, result.adapter_dir)
    assert mor_ext.is_patched(model)


@pytest.mark.parametrize("method", ["mor", "lora"])
def test_eval_ce_is_logged_apart_from_aux_and_orth(workdir, method):
    """Methods are compared on eval CE: MoR's eval_loss adds its weighted aux and orth terms, so the
    comparison metric is logged by itself (one eval batch here, so the two must agree exactly)."""
    result = train(_config(workdir, f"evalce-{method}", method=method, max_steps=2, eval_fraction=0.25, batch_size=2))
    metrics = {k: v for h in result.log_history for k, v in h.items() if k.startswith("eval_")}
    assert math.isfinite(metrics["eval_ce"]) and metrics["eval_ce"] > 0
    if method == "lora":
        assert metrics["eval_ce"] == pytest.approx(metrics["eval_loss"], rel=1e-5)
        assert "eval_aux" not in metrics
    else:
        coef = mor_config_for(_config(workdir, "x"))
        extra = coef.aux_loss_coef * metrics["eval_aux"] + coef.orth_loss_coef * metrics["eval_orth"]
        assert extra > 0
        assert metrics["eval_loss"] == pytest.approx(metrics["eval_ce"] + extra, rel=1e-5)


def test_bf16_mixed_precision_trains(workdir):
    """--bf16 on CPU: autocast bf16 through the patched layers; the loss stays finite and falls."""
    result = train(_config(workdir, "bf16", max_steps=6, lr=2e-2, lr_scheduler="constant", bf16=True))
    ce = _losses(result.log_history, "ce")
    assert len(ce) == 6 and all(math.isfinite(c) for c in ce)
    assert min(ce[-2:]) < ce[0], ce


def test_time_budget_stops_after_the_step_in_progress(workdir):
    result = train(_config(workdir, "budget", max_steps=50, max_minutes=1e-6))
    assert result.global_step == 1
    assert (result.adapter_dir / "mor_config.json").is_file()


def test_checkpoints_hold_a_loadable_adapter_and_resume_continues(workdir):
    from mor_ext.models import load_model

    full = train(_config(workdir, "ckpt", max_steps=4, save_steps=2, optim="sgd", lr_scheduler="constant"))
    checkpoint = full.out_dir / "checkpoint-2"
    assert (checkpoint / CHECKPOINT_ADAPTER_DIR / "mor_config.json").is_file()
    # the adapter and optimiser state, not the frozen base weights
    assert not list(checkpoint.glob("model*.safetensors")) and not list(checkpoint.glob("pytorch_model*"))
    model, _ = load_model(workdir / "model")
    mor_ext.load_adapter(model, checkpoint / CHECKPOINT_ADAPTER_DIR)

    # resume from step 2 of a fresh run directory: the result equals the uninterrupted run
    resumed_dir = workdir / "resumed"
    resumed_dir.mkdir()
    import shutil

    shutil.copytree(checkpoint, resumed_dir / "checkpoint-2")
    resumed = train(_config(workdir, "resumed", max_steps=4, save_steps=2, optim="sgd", lr_scheduler="constant",
                            resume=True))
    assert resumed.global_step == 4
    assert len(_losses(resumed.log_history, "ce")) >= 2
    a = mor_ext.adapters.adapter_state_dict(mor_ext.load_adapter(load_model(workdir / "model")[0], full.adapter_dir))
    b = mor_ext.adapters.adapter_state_dict(mor_ext.load_adapter(load_model(workdir / "model")[0], resumed.adapter_dir))
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-6)


def test_resume_with_another_rank_says_which_flags_to_keep(workdir):
    from mor_ext.adapters import AdapterError

    train(_config(workdir, "ckpt-rank", max_steps=2, save_steps=2, optim="sgd", lr_scheduler="constant"))
    with pytest.raises(AdapterError, match="(?s)cannot resume from .*checkpoint-2.*--rank"):
        train(_config(workdir, "ckpt-rank", rank=RANK + 1, max_steps=4, save_steps=2, optim="sgd", resume=True))


def test_lora_baseline_matches_the_parameter_budget(workdir):
    pytest.importorskip("peft", reason="--method lora needs peft (pip install peft)")
    result = train(_config(workdir, "lora", method="lora", max_steps=3))
    counts = result.parameter_counts
    assert counts["lora_rank"] >= 1 and counts["lora_trainable"] == counts["trainable"]
    per_rank = counts["lora_trainable"] / counts["lora_rank"]
    # the closest rank: within half a rank's worth of parameters of MoR's budget
    assert abs(counts["lora_trainable"] - counts["mor_trainable"]) <= per_rank / 2 + 1
    assert len(_losses(result.log_history, "ce")) == 3
    assert (result.adapter_dir / "adapter_config.json").is_file()




def test_lora_later_stage_starts_from_the_saved_lora(workdir):
    """``init_adapter`` with method lora (a later stage of a comparison): the run starts from the saved
    LoRA's weights (a fresh one has B = 0), and a LoRA of another rank is refused, naming both."""
    pytest.importorskip("peft", reason="--method lora needs peft (pip install peft)")
    from safetensors.torch import load_file

    first = train(_config(workdir, "lora-stage1", method="lora", max_steps=2))
    before = load_file(first.adapter_dir / "adapter_model.safetensors")
    assert any("lora_B" in k and v.abs().sum() > 0 for k, v in before.items())
    second = train(_config(workdir, "lora-stage2", method="lora", max_steps=1, optim="sgd", lr=1e-12,
                           init_adapter=str(first.adapter_dir)))
    after = load_file(second.adapter_dir / "adapter_model.safetensors")
    assert sorted(after) == sorted(before)
    for name, value in before.items():
        torch.testing.assert_close(after[name], value, rtol=0, atol=1e-9)
    with pytest.raises(ValueError, match="rank-.* LoRA on .*budget gives rank"):
        train(_config(workdir, "lora-stage2b", method="lora", rank=RANK + 1, max_steps=1,
                      init_adapter=str(first.adapter_dir)))


def test_one_role_ablation_trains(workdir):
    result = train(_config(workdir, "one", one_role=True, max_steps=2))
    loads = {k.split("/")[1] for h in result.log_history for k in h if k.startswith("router_load/")}
    assert loads == {"agent"}


def _output(run: subprocess.CompletedProcess) -> str:
    """A failed launch's last words: stdout shows how far training got, stderr why it stopped."""
    return f"stdout:\n{run.stdout[-3000:]}\nstderr:\n{run.stderr[-12000:]}"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_processes_equal_one_process_on_the_same_global_batch(workdir):
    from mor_ext.models import load_model

    common = ["--model", str(workdir / "model"), "--data", str(workdir / "data.jsonl"), "--rank", str(RANK),
              "--max-length", str(MAX_LENGTH), "--max-steps", "3", "--optim", "sgd", "--lr", "0.05",
              "--lr-scheduler", "constant", "--no-shuffle", "--no-aux", "--logging-steps", "1", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    ddp = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "-m", "mor_ext.cli", "train", *common,
         "--batch-size", "1", "--out", str(workdir / "ddp")],
        env=env, capture_output=True, text=True, timeout=240)
    assert ddp.returncode == 0, _output(ddp)
    single = subprocess.run(
        [sys.executable, "-m", "mor_ext.cli", "train", *common, "--batch-size", "2", "--out", str(workdir / "single")],
        env=env, capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, _output(single)

    a = mor_ext.adapters.adapter_state_dict(mor_ext.load_adapter(load_model(workdir / "model")[0], workdir / "ddp"))
    b = mor_ext.adapters.adapter_state_dict(mor_ext.load_adapter(load_model(workdir / "model")[0], workdir / "single"))
    init = mor_ext.adapters.adapter_state_dict(mor_ext.patch(load_model(workdir / "model")[0],
                                                             mor_config_for(_config(workdir, "x", no_aux=True))))
    moved = sum(float((b[k] - init[k]).abs().max()) for k in b)
    assert moved > 1e-3  # training changed the adapter
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-6, msg=key)
    ddp_log = json.loads((workdir / "ddp" / TRAINING_LOG_NAME).read_text())
    single_log = json.loads((workdir / "single" / TRAINING_LOG_NAME).read_text())
    assert _losses(ddp_log["log_history"]) == pytest.approx(_losses(single_log["log_history"]), rel=1e-4)
    assert _losses(ddp_log["log_history"], "ce") == pytest.approx(_losses(single_log["log_history"], "ce"), rel=1e-4)


def test_cli_train_closes_the_process_group_it_ran_under(workdir, tmp_path):
    """``mor-ext train`` destroys the default process group before it returns, failed or not: left to
    interpreter shutdown, gloo's threads can abort the process (SIGABRT) after training has finished."""
    import torch.distributed as dist

    from mor_ext.cli import main

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        code = main(["train", "--model", str(workdir / "model"), "--data", str(tmp_path / "missing.jsonl"),
                     "--out", str(tmp_path / "out"), "--no-progress"])
        assert code == 2
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _torchrun(workdir: Path, nproc: int, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    return subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(nproc), "--master_addr", "127.0.0.1",
         "--master_port", str(_free_port()), "-m", "mor_ext.cli", "train", "--model", str(workdir / "model"),
         "--data", str(workdir / "data.jsonl"), "--rank", str(RANK), "--max-length", str(MAX_LENGTH),
         "--optim", "sgd", "--lr", "0.05", "--lr-scheduler", "constant", "--no-shuffle", "--no-aux",
         "--logging-steps", "1", "--no-progress", "--batch-size", "1", *args],
        env=env, capture_output=True, text=True, timeout=300)


@pytest.mark.distributed
def test_fsdp_two_processes_equal_ddp_and_resume_on_three(workdir):
    """``train --fsdp`` (FSDP2 through the Trainer, gloo, activation checkpointing) takes the steps DDP
    takes on the same global batch; its checkpoint holds a whole adapter, and the run resumes on 3
    processes. AdamW, as a resumed FSDP optimiser needs state to restore (torch's set_optimizer_state_dict
    refuses a stateless one such as plain SGD)."""
    from mor_ext.models import load_model

    adam = ("--optim", "adamw_torch", "--lr", "0.01", "--max-steps", "3")
    fsdp = _torchrun(workdir, 2, *adam, "--fsdp", "--activation-checkpointing", "--save-steps", "2",
                     "--out", str(workdir / "fsdp"))
    assert fsdp.returncode == 0, _output(fsdp)
    ddp = _torchrun(workdir, 2, *adam, "--out", str(workdir / "ddp_adam"))
    assert ddp.returncode == 0, _output(ddp)
    load = lambda d: mor_ext.adapters.adapter_state_dict(mor_ext.load_adapter(load_model(workdir / "model")[0], d))
    a, b = load(workdir / "fsdp"), load(workdir / "ddp_adam")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-4, atol=1e-5, msg=key)
    fsdp_log = json.loads((workdir / "fsdp" / TRAINING_LOG_NAME).read_text())
    ddp_log = json.loads((workdir / "ddp_adam" / TRAINING_LOG_NAME).read_text())
    assert _losses(fsdp_log["log_history"], "ce") == pytest.approx(_losses(ddp_log["log_history"], "ce"), rel=1e-4)

    checkpoint = workdir / "fsdp" / "checkpoint-2"
    saved = load(checkpoint / CHECKPOINT_ADAPTER_DIR)  # whole, loadable unsharded
    assert saved.keys() == a.keys()
    resumed = _torchrun(workdir, 3, *adam[:-1], "4", "--fsdp", "--resume", str(checkpoint),
                        "--out", str(workdir / "fsdp"))
    assert resumed.returncode == 0, _output(resumed)
    log = json.loads((workdir / "fsdp" / TRAINING_LOG_NAME).read_text())
    assert log["global_step"] == 4
    logged = {h["step"]: h["ce"] for h in log["log_history"] if "ce" in h}
    assert sorted(logged) == [1, 2, 3, 4]
    # Steps 1-2 come from the checkpoint's state (3 processes would have seen other batches), 3-4 are new.
    first = {h["step"]: h["ce"] for h in fsdp_log["log_history"] if "ce" in h}
    assert [logged[1], logged[2]] == [first[1], first[2]]


# A BFCL question (simple_python_0) and function name: evaluation data, never training data.
BFCL_QUESTION = "Find the area of a triangle with a base of 10 units and height of 5 units."


def _contaminated_copy(workdir: Path, tmp_path: Path, *, query: bool = True) -> Path:
    records = [json.loads(line) for line in (workdir / "data.jsonl").read_text().splitlines()]
    if query:
        user = next(t for t in records[1]["turns"] if t["role"] == "user")
        user["content"] = BFCL_QUESTION
    path = tmp_path / "contaminated.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return path


def test_training_refuses_data_that_overlaps_bfcl(workdir, tmp_path):
    from mor_ext.data.decontamination import ContaminationError

    data = _contaminated_copy(workdir, tmp_path)
    with pytest.raises(ContaminationError, match="1 query overlaps") as err:
        train(_config(workdir, "contaminated", data=str(data), max_steps=1))
    assert "shares" in str(err.value)
    assert not (workdir / "contaminated" / "adapter").exists()


def test_training_skips_trajectories_with_placeholder_turns(workdir, tmp_path, caplog):
    records = [json.loads(line) for line in (workdir / "data.jsonl").read_text().splitlines()]
    records[0].setdefault("meta", {})["needs_completion"] = ["reasoner"]
    data = tmp_path / "partial.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in records))
    with caplog.at_level("WARNING"):
        result = train(_config(workdir, "partial", data=str(data), max_steps=1))
    assert result.skipped_records == 1
    assert "placeholder turns" in caplog.text


def test_cli_reports_user_errors_without_a_traceback(workdir, tmp_path, capsys):
    from mor_ext.cli import main

    assert main(["train", "--data", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o"),
                 "--model", str(workdir / "model")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("mor-ext: error: ") and "nope.jsonl" in err and "Traceback" not in err
    data = _contaminated_copy(workdir, tmp_path)
    assert main(["train", "--data", str(data), "--out", str(tmp_path / "o"), "--model", str(workdir / "model"),
                 "--max-steps", "1", "--no-progress"]) == 2
    assert "overlaps" in capsys.readouterr().err
    assert main(["data", "validate", str(data)]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["bad"] == 0 and report["bfcl"]["clean"] is False and report["bfcl"]["query_overlaps"] == 1


# ------------------------------------------------------------------------------------------- transformers contract
# MoRTrainer overrides one private Trainer method, because transformers offers no public hook for it:
# _load_from_checkpoint (the weights of a resumed checkpoint are loaded before any callback runs).
# Saving goes through the public save_model, the training order through the public
# TrainingArguments.train_sampling_strategy. These tests fail loudly when transformers changes them.
def test_trainer_private_hooks_keep_their_signatures():
    import inspect

    from transformers import Trainer, TrainingArguments

    load = inspect.signature(Trainer._load_from_checkpoint)
    assert list(load.parameters) == ["self", "resume_from_checkpoint", "model"], load
    assert load.parameters["model"].default is None
    save = inspect.signature(Trainer.save_model)
    assert list(save.parameters) == ["self", "output_dir", "_internal_call"], save
    source = inspect.getsource(Trainer._save_checkpoint)
    assert "self.save_model(output_dir, _internal_call=True)" in source  # checkpoints save through save_model
    assert "self._load_from_checkpoint(resume_from_checkpoint" in inspect.getsource(Trainer.train)
    fields = {f.name: f for f in dataclasses.fields(TrainingArguments)}
    assert {"random", "sequential"} <= set(fields["train_sampling_strategy"].metadata["choices"])


def test_the_trainer_keeps_supervised_logits_where_the_model_takes_logits_to_keep():
    """The collator's ``logits_to_keep`` is switched on by the model's forward signature, seen through
    MoR's patched forward and peft's wrapper alike; a model without it keeps its full logits."""
    from conftest import make_tiny_model
    from mor_ext.train.trainer import accepts_logits_to_keep

    assert accepts_logits_to_keep(make_tiny_model("llama"))
    patched = mor_ext.patch(make_tiny_model("llama"), mor_ext.MoRConfig(spec=mor_ext.MoRSpec.moragent(rank=2)))
    assert accepts_logits_to_keep(patched)
    peft = pytest.importorskip("peft")
    wrapped = peft.get_peft_model(make_tiny_model("llama"), peft.LoraConfig(r=2, target_modules=["q_proj"]))
    assert accepts_logits_to_keep(wrapped)

    class NoKeep(torch.nn.Module):
        def forward(self, input_ids, labels=None):
            return input_ids

    assert not accepts_logits_to_keep(NoKeep())
