"""The Trainer subclass and :func:`train`, which runs a whole fine-tuning job (see :mod:`mor_ext.train`)."""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import time
from pathlib import Path
from typing import Any, Sequence

import torch

from ..adapters import AdapterError, load_adapter, save_adapter
from ..files import atomic_write_text
from ..patching import adapter_is_sharded
from .config import TrainConfig, expand_roles, mor_config_for
from .data import RoleDataCollator, build_datasets, load_trajectories

__all__ = ["TrainResult", "MoRTrainer", "train", "lora_rank_for_budget", "CHECKPOINT_ADAPTER_DIR",
           "TRAINING_LOG_NAME"]

logger = logging.getLogger("mor_ext")

CHECKPOINT_ADAPTER_DIR = "adapter"  # each checkpoint-N/ gets its MoR adapter here
TRAINING_LOG_NAME = "training_log.json"


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` produced. ``log_history`` is the Trainer's, with the MoR metrics added."""

    out_dir: Path
    adapter_dir: Path
    global_step: int
    train_loss: float
    log_history: list[dict[str, Any]]
    parameter_counts: dict[str, int]
    num_train_examples: int
    num_eval_examples: int
    skipped_records: int  # bad JSONL records plus examples that did not fit max_length
    seconds: float


def lora_rank_for_budget(budget: int, in_out_sizes: Sequence[tuple[int, int]]) -> int:
    """The LoRA rank whose ``r * sum(d_in + d_out)`` trainable parameters is closest to ``budget`` (>= 1)."""
    per_rank = sum(d_in + d_out for d_in, d_out in in_out_sizes)
    if per_rank <= 0:
        raise ValueError("no target modules to size a LoRA for")
    return max(1, round(budget / per_rank))


# ------------------------------------------------------------------------------------------- trainer
def _trainer_class():
    from transformers import Trainer

    class _MoRTrainer(Trainer):
        """``Trainer`` whose loss is ``CE + aux_coef * aux + orth_coef * orth`` from the model's output
        fields, each term (and the router load per role) averaged over the logging interval and logged."""

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            # compute_loss below normalises over accumulation steps itself.
            self.loss_is_scaled_for_ga = True
            self._sums: dict[str, float] = {}
            self._count = 0
            self._eval_sums: dict[str, float] = {}

        def save_model(self, output_dir: str | None = None, _internal_call: bool = False) -> None:
            # A MoR checkpoint holds the adapter, not the frozen base weights (SmolLM2: ~0.3 GB of
            # adapter and optimiser state instead of 1.6 GB): the base model is reloaded from its source.
            # save_model is the public hook the Trainer's checkpointing calls (with _internal_call=True).
            model = self.accelerator.unwrap_model(self.model)
            if getattr(model, "mor_config", None) is None:
                return super().save_model(output_dir, _internal_call)
            output_dir = Path(output_dir or self.args.output_dir)
            # A sharded adapter is gathered by every process, then written by process 0.
            _save_mor_adapter(self, model, output_dir / CHECKPOINT_ADAPTER_DIR, {"global_step": self.state.global_step})
            if self.args.should_save:
                from transformers.trainer import TRAINING_ARGS_NAME

                torch.save(self.args, output_dir / TRAINING_ARGS_NAME)

        def create_accelerator_and_postprocess(self) -> None:
            super().create_accelerator_and_postprocess()
            if self.args.fsdp_plugin_args is not None:
                from .distributed import configure_fsdp

                configure_fsdp(self)

        # transformers has no public hook for loading the weights of a resumed checkpoint (callbacks run
        # after it); tests/train/test_trainer.py pins this private method's signature.
        def _load_from_checkpoint(self, resume_from_checkpoint, model=None):
            target = self.accelerator.unwrap_model(model if model is not None else self.model)
            adapter = Path(resume_from_checkpoint) / CHECKPOINT_ADAPTER_DIR
            if getattr(target, "mor_config", None) is not None and adapter.is_dir():
                try:
                    load_adapter(target, adapter)  # checks names, shapes and the spec; loads in place
                except AdapterError as exc:
                    raise AdapterError(f"cannot resume from {resume_from_checkpoint}: {exc}\nresume with the "
                                       "--rank, --lora-alpha, --target-modules and ablation flags the checkpoint "
                                       "was trained with (see its adapter's mor_config.json)") from exc
                return
            return super()._load_from_checkpoint(resume_from_checkpoint, model)

        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            normalised = self.model_accepts_loss_kwargs and num_items_in_batch is not None
            if normalised:
                inputs = {**inputs, "num_items_in_batch": num_items_in_batch}
            outputs = model(**inputs)
            ce = outputs["ce_loss"] if "ce_loss" in outputs else outputs["loss"]
            mor_config = getattr(self.accelerator.unwrap_model(model), "mor_config", None)
            extra = torch.zeros((), device=ce.device, dtype=ce.dtype)
            if mor_config is not None and "aux_loss" in outputs and mor_config.add_aux_losses:
                extra = mor_config.aux_loss_coef * outputs["aux_loss"] + mor_config.orth_loss_coef * outputs["orth_loss"]
            steps = self.current_gradient_accumulation_steps if model.training else 1
            if normalised:
                # CE is a sum over this micro-batch's supervised tokens divided by the count of the whole
                # step (all micro-batches, all processes). DDP averages gradients over processes: undo that
                # for CE, as Trainer.compute_loss does.
                processes = self.accelerator.num_processes if self.args.average_tokens_across_devices else 1
                ce = ce * processes
                ce_mean = float(ce.detach()) * steps  # this micro-batch's share -> a per-token mean, for the log
            else:
                ce_mean = float(ce.detach())
                ce = ce / steps
            if model.training:
                self._accumulate(ce_mean, outputs)
            else:
                self._accumulate_eval(ce_mean, outputs, inputs)
            loss = ce + extra / steps
            return (loss, outputs) if return_outputs else loss

        def _accumulate(self, ce: float, outputs) -> None:
            sums = self._sums
            sums["ce"] = sums.get("ce", 0.0) + ce
            for key in ("aux_loss", "orth_loss"):
                if key in outputs:
                    name = key.removesuffix("_loss")
                    sums[name] = sums.get(name, 0.0) + float(outputs[key].detach())
            for role, fractions in (outputs.get("router_load") or {}).items():
                for i, f in enumerate(fractions):
                    name = f"router_load/{role}/{i}"
                    sums[name] = sums.get(name, 0.0) + float(f)
            self._count += 1

        def _accumulate_eval(self, ce: float, outputs, inputs) -> None:
            # Weighted by supervised tokens, so eval_ce is the per-token CE of the whole split whatever the
            # batch composition: the number two methods are compared on (aux and orth are not part of it).
            labels = inputs.get("labels")
            tokens = float((labels[..., 1:] != -100).sum()) if labels is not None else 1.0
            sums = self._eval_sums
            sums["ce"] = sums.get("ce", 0.0) + ce * tokens
            sums["tokens"] = sums.get("tokens", 0.0) + tokens
            for key in ("aux_loss", "orth_loss"):
                if key in outputs:
                    sums[key] = sums.get(key, 0.0) + float(outputs[key].detach())
                    sums[key + "_batches"] = sums.get(key + "_batches", 0.0) + 1.0

        def evaluate(self, eval_dataset=None, ignore_keys=None, metric_key_prefix: str = "eval"):
            """The Trainer's evaluation plus ``{prefix}_ce`` (per supervised token, the comparison metric)
            and the mean ``{prefix}_aux`` / ``{prefix}_orth``, apart from ``{prefix}_loss`` (which adds them)."""
            self._eval_sums = {}
            metrics = super().evaluate(eval_dataset, ignore_keys, metric_key_prefix)
            sums, extra = self._eval_sums, {}
            if sums.get("tokens"):
                values = [sums["ce"], sums["tokens"]]
                if self.accelerator.num_processes > 1:  # token-weighted over every process's share
                    values = self.accelerator.reduce(torch.tensor(values, device=self.args.device), reduction="sum").tolist()
                extra[f"{metric_key_prefix}_ce"] = values[0] / values[1]
            for key in ("aux_loss", "orth_loss"):
                if sums.get(key + "_batches"):
                    extra[f"{metric_key_prefix}_{key.removesuffix('_loss')}"] = sums[key] / sums[key + "_batches"]
            if extra:
                metrics.update(extra)
                self.log(extra)
            return metrics

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            if "loss" in logs and self._count:  # a training log: add the interval's means
                means = {key: total / self._count for key, total in self._sums.items()}
                # ce/aux/orth are present on every process (router loads may not be): average those
                # over processes, so that ce is the global per-token CE like the Trainer's "loss".
                shared = [k for k in ("ce", "aux", "orth") if k in means]
                if self.accelerator.num_processes > 1 and shared:
                    values = torch.tensor([means[k] for k in shared], device=self.args.device)
                    values = self.accelerator.reduce(values, reduction="mean")
                    means.update(zip(shared, values.tolist()))
                logs.update(means)
                self._sums, self._count = {}, 0
            super().log(logs, start_time)

    return _MoRTrainer


def _save_mor_adapter(trainer, model, directory: Path, metadata: dict) -> None:
    """save_adapter from one writer (the processes would race on the staged files), or from every
    process when FSDP2 shards the adapter (they all gather it; process 0 writes)."""
    if adapter_is_sharded(model):
        save_adapter(model, directory, metadata=metadata)
    elif trainer.args.should_save:
        save_adapter(model, directory, metadata=metadata)


def _time_budget_callback(minutes: float):
    from transformers import TrainerCallback

    class _TimeBudget(TrainerCallback):
        """Stops training once ``minutes`` of training wall time have passed (after the step in
        progress); the final evaluation and the adapter save still run. A fair budget for comparing
        methods whose steps cost different amounts of time."""

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            if time.perf_counter() - self.started >= 60.0 * minutes:
                logger.info("mor_ext: time budget of %.1f minutes reached at step %d", minutes, state.global_step)
                control.should_training_stop = True
            return control

    return _TimeBudget()


def _role_scales(config: TrainConfig, model) -> dict[str, float]:
    """Learning-rate multiplier per role: ``role_lr``, and 0 for the roles ``train_roles`` leaves out."""
    if not (config.role_lr or config.train_roles):
        return {}
    names = model.mor_config.spec.role_names
    scales = {r: s for pattern, s in (config.role_lr or {}).items() for r in expand_roles([pattern], names)}
    if config.train_roles:
        trained = expand_roles(config.train_roles, names)
        scales.update({r: 0.0 for r in names if r not in trained})
    return scales


def _role_step_callback(model, scales: dict[str, float]):
    from transformers import TrainerCallback

    from .roles import RoleStepScaler

    scaler = RoleStepScaler(model, scales)

    class _RoleSteps(TrainerCallback):
        """Installs :class:`~.roles.RoleStepScaler` on the Trainer's optimiser once it exists."""

        def on_train_begin(self, args, state, control, optimizer=None, **kwargs):
            if optimizer is None:
                raise RuntimeError("per-role learning rates need the optimiser at on_train_begin")
            scaler.attach(optimizer)

        def on_train_end(self, args, state, control, **kwargs):
            scaler.remove()

    logger.info("mor_ext: per-role learning-rate multipliers %s (0 = frozen)", scales)
    return _RoleSteps()


def MoRTrainer(*args: Any, **kwargs: Any):
    """Build the ``transformers.Trainer`` subclass :func:`train` uses (imported lazily: transformers
    is heavy). The training order is ``TrainingArguments.train_sampling_strategy`` ("sequential" for
    dataset order)."""
    return _trainer_class()(*args, **kwargs)


def _prepare_model(config: TrainConfig, model) -> tuple[Any, dict[str, int]]:
    """Patch (mor; or load ``init_adapter`` and add the scheme's missing roles) or wrap with peft
    (lora); returns the model and the parameter counts to log."""
    from ..patching import mor_layers, patch, trainable_parameters, unpatch

    mor_config = mor_config_for(config)
    if config.init_adapter and config.method == "mor":
        from ..adapters import add_roles

        load_adapter(model, config.init_adapter)
        have = model.mor_config.spec.role_names
        add_roles(model, [r for r in mor_config.spec.roles if r.name not in have], mor_config.scheme)
    else:
        patch(model, mor_config)
    mor_trainable = trainable_parameters(model)["trainable"]
    counts = {"mor_trainable": mor_trainable}
    if config.method == "mor":
        counts["trainable"] = mor_trainable
        return model, counts

    sizes = [(layer.base_layer.in_features, layer.base_layer.out_features) for _, layer in mor_layers(model)]
    targets = list(model.mor_config.target_modules)
    scaling = model.mor_config.scaling
    unpatch(model)
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ImportError("method='lora' needs the peft library: pip install peft") from exc
    rank = lora_rank_for_budget(mor_trainable, sizes)
    if config.init_adapter:  # a later stage of a run: the saved LoRA, trainable, its own config
        model = _load_lora(model, config.init_adapter, rank, targets)
    else:
        lora = LoraConfig(r=rank, lora_alpha=scaling * rank, lora_dropout=config.lora_dropout,
                          target_modules=targets, bias="none", task_type="CAUSAL_LM")
        model = get_peft_model(model, lora)
    lora_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counts.update(trainable=lora_trainable, lora_trainable=lora_trainable, lora_rank=rank)
    logger.warning("parameter budget: MoR %d trainable, LoRA rank %d %d trainable (%.2f%% of MoR)",
                   mor_trainable, rank, lora_trainable, 100.0 * lora_trainable / mor_trainable)
    return model, counts


def _load_lora(model, adapter_dir: str, rank: int, targets: list[str]):
    """``adapter_dir``'s peft LoRA on ``model``, trainable; refused unless it is the LoRA this config
    would build (same rank and target projections), so that a later stage keeps the parameter budget."""
    from peft import PeftConfig, PeftModel

    if not (Path(adapter_dir) / "adapter_config.json").is_file():
        raise FileNotFoundError(f"--init-adapter {adapter_dir}: no adapter_config.json (not a saved peft LoRA)")
    saved = PeftConfig.from_pretrained(adapter_dir)
    saved_targets = sorted(saved.target_modules or [])
    if saved.r != rank or saved_targets != sorted(targets):
        raise ValueError(f"--init-adapter {adapter_dir}: a rank-{saved.r} LoRA on {saved_targets}, but this run's "
                         f"budget gives rank {rank} on {sorted(targets)}")
    return PeftModel.from_pretrained(model, adapter_dir, is_trainable=True)


def accepts_logits_to_keep(model: torch.nn.Module) -> bool:
    """Whether the (peft-wrapped or MoR-patched) causal LM's forward takes ``logits_to_keep``, so that
    training computes logits at the supervised positions only (``RoleDataCollator(supervised_logits=True)``)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return "logits_to_keep" in inspect.signature(base.forward).parameters


def _training_arguments(config: TrainConfig, has_eval: bool):
    from transformers import TrainingArguments

    save = config.save_steps is not None
    evaluate = has_eval and save  # evaluate at each checkpoint; the final evaluation runs anyway
    kwargs: dict[str, Any] = dict(
        output_dir=config.out_dir,
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        learning_rate=config.lr,
        num_train_epochs=config.epochs,
        max_steps=config.max_steps,
        lr_scheduler_type=config.lr_scheduler,
        warmup_steps=config.warmup_steps,
        weight_decay=config.weight_decay,
        optim=config.optim,
        seed=config.seed,
        data_seed=config.seed,
        bf16=config.bf16,
        logging_steps=config.logging_steps,
        logging_first_step=True,
        save_strategy="steps" if save else "no",
        save_steps=config.save_steps if save else 500,
        save_total_limit=config.save_total_limit,
        eval_strategy="steps" if evaluate else "no",
        eval_steps=config.save_steps if evaluate else None,
        prediction_loss_only=True,
        remove_unused_columns=False,  # keep role_ids (and position_ids) whatever the forward's signature says
        label_names=["labels"],
        report_to="none",
        disable_tqdm=not config.progress_bar,
        ddp_find_unused_parameters=config.ddp_find_unused_parameters,
        dataloader_num_workers=0,
        dataloader_pin_memory=torch.cuda.is_available(),
        train_sampling_strategy="random" if config.shuffle else "sequential",
    )
    if config.fsdp:
        from .distributed import fsdp_training_arguments

        kwargs.update(fsdp_training_arguments(config.activation_checkpointing))
    elif config.activation_checkpointing:
        kwargs.update(gradient_checkpointing=True, gradient_checkpointing_kwargs={"use_reentrant": False})
    if not torch.cuda.is_available() and config.bf16:
        kwargs.update(use_cpu=True)  # transformers allows CPU bf16 (autocast) only when told it is on CPU
    if not torch.cuda.is_available() and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        # torchrun on CPU: without use_cpu, accelerate sees two processes but no distributed type and trains
        # each process on its own shard without syncing gradients.
        kwargs.update(ddp_backend="gloo", use_cpu=True)
    return TrainingArguments(**kwargs)


# ------------------------------------------------------------------------------------------- train
def train(config: TrainConfig) -> TrainResult:
    """Fine-tune ``config.model`` on the trajectories of ``config``; see the module docstring."""
    from transformers import set_seed

    from ..models import load_model

    started = time.perf_counter()
    set_seed(config.seed)
    loaded = load_trajectories(config)  # before the model: bad or contaminated data fails fast
    model, tokenizer = load_model(config.model)
    model.config.use_cache = False  # training; packed rows also need it (see data.tokenize)
    train_set, eval_set, skipped = build_datasets(config, tokenizer, loaded=loaded)
    set_seed(config.seed)  # the adapter's initialisation does not depend on how much data was read
    model, counts = _prepare_model(config, model)
    model.train()
    callbacks = [_time_budget_callback(config.max_minutes)] if config.max_minutes is not None else []
    scales = _role_scales(config, model)
    if scales:
        callbacks.append(_role_step_callback(model, scales))

    args = _training_arguments(config, eval_set is not None)
    trainer = MoRTrainer(
        model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
        data_collator=RoleDataCollator(tokenizer.pad_token_id, with_role_ids=config.method == "mor",
                                       supervised_logits=accepts_logits_to_keep(model)),
        callbacks=callbacks or None,
    )
    resume = config.resume if config.resume not in (None, False, "") else None
    output = trainer.train(resume_from_checkpoint=resume)
    if eval_set is not None:
        trainer.evaluate()

    out_dir = Path(config.out_dir)
    adapter_dir = out_dir
    meta = {"method": config.method, "global_step": trainer.state.global_step}
    if config.method == "mor":
        _save_mor_adapter(trainer, model, adapter_dir, meta)
    if trainer.is_world_process_zero():
        out_dir.mkdir(parents=True, exist_ok=True)
        if config.method != "mor":
            model.save_pretrained(adapter_dir)
        log = {
            "config": dataclasses.asdict(config),
            "parameter_counts": counts,
            "num_train_examples": len(train_set),
            "num_eval_examples": len(eval_set) if eval_set is not None else 0,
            "skipped_records": skipped,
            "global_step": trainer.state.global_step,
            "train_loss": output.training_loss,
            "log_history": trainer.state.log_history,
        }
        atomic_write_text(out_dir / TRAINING_LOG_NAME, json.dumps(log, indent=2, default=str) + "\n")
    return TrainResult(
        out_dir=out_dir, adapter_dir=adapter_dir, global_step=trainer.state.global_step,
        train_loss=float(output.training_loss), log_history=list(trainer.state.log_history),
        parameter_counts=counts, num_train_examples=len(train_set),
        num_eval_examples=len(eval_set) if eval_set is not None else 0, skipped_records=skipped,
        seconds=time.perf_counter() - started,
    )
