"""Fine-tuning with the Hugging Face ``Trainer``: Mixture-of-Roles LoRA, plain-LoRA baseline, ablations.

:func:`train` takes a :class:`TrainConfig` and does the whole job::

    trajectories (JSONL, bad records reported and skipped; or data.synthetic.generate)
      -> RoleTokenizer (max_length, optional packing) -> train / eval split
      -> base model (models.load_model) -> mor_ext.patch(model, MoRConfig)  |  peft LoRA (baseline)
      -> MoRTrainer: loss = CE + aux + orth, each logged, plus the router load per role
      -> checkpoints (Trainer's, each with a MoR adapter under ``adapter/``), resumable
      -> out_dir: save_adapter(...) (or PEFT's save_pretrained for --method lora) + training_log.json

Methods (``TrainConfig.method``):

* ``mor`` (default): :func:`mor_ext.patch` with ``MoRSpec.moragent(rank)``. Ablations: ``no_aux`` /
  ``no_orth`` set the load-balance / orthogonality coefficients to 0; ``one_role`` swaps the spec for
  :func:`one_role_spec` (one role, a shared LoRA and ``E_total + R - 1`` routed ones, i.e. as many
  LoRAs as MoRAgent's three roles together, top-k 3) and gives every role token, of whichever role,
  role 0 (context tokens keep the context role: role 0 too, or -1 when ``context_role`` is None).
* ``lora``: plain LoRA from ``peft`` on the same target modules, rank chosen so that its trainable
  parameter count is as close as possible to MoR's (both counts go into the log); ``role_ids`` are
  dropped from the batch.

Losses and distributed training. The Trainer counts the supervised tokens of the whole optimizer step
(all accumulation micro-batches, all processes) and the model's cross-entropy is a sum divided by that
count, so CE is the same under DDP and in one process on the same global batch. The aux and
orthogonality terms are means per micro-batch, averaged over accumulation steps; under DDP the
gradient averages the per-process values. The orthogonality loss depends only on the weights, so it
matches exactly; the load-balance loss of a shard is not the load-balance loss of the global batch
(it is nonlinear in the token counts), so with ``aux_loss_coef > 0`` DDP and one process differ
slightly, as in every data-parallel MoE. Logged ce/aux/orth are averaged over processes;
the router load is rank 0's.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Literal, Sequence

import torch

from .adapters import AdapterError, load_adapter, save_adapter
from .config import MoRConfig
from .data.tokenize import EncodedExample, PackedExample, RoleTokenizer, collate, pack
from .files import atomic_write_text
from .spec import MoRSpec, RoleSpec

__all__ = ["TrainConfig", "TrainResult", "MoRTrainer", "train", "one_role_spec", "lora_rank_for_budget",
           "build_datasets", "ExampleDataset", "RoleDataCollator", "CHECKPOINT_ADAPTER_DIR", "TRAINING_LOG_NAME"]

logger = logging.getLogger("mor_ext")

CHECKPOINT_ADAPTER_DIR = "adapter"  # each checkpoint-N/ gets its MoR adapter here
TRAINING_LOG_NAME = "training_log.json"
Method = Literal["mor", "lora"]


# ------------------------------------------------------------------------------------------- config
@dataclasses.dataclass
class TrainConfig:
    """Everything :func:`train` needs; the CLI's ``mor-ext train`` flags map one to one onto these fields.

    Exactly one of ``data`` (a JSONL file of trajectories) and ``generate`` (that many synthetic
    trajectories) must be set. ``max_steps > 0`` overrides ``epochs``. ``save_steps=None`` saves only at
    the end. ``resume`` is a checkpoint directory, or True for the latest one in ``out_dir``.
    """

    out_dir: str
    model: str | None = None  # models.load_model: None/'smollm2' or a local directory / .gguf file
    data: str | None = None
    generate: int | None = None
    method: Method = "mor"
    rank: int = 16
    lora_alpha: float | None = None  # None: alpha = rank (scaling 1)
    lora_dropout: float = 0.0
    target_modules: list[str] | None = None  # None: the model family's default
    context_role: str | None = "reasoner"
    no_aux: bool = False
    no_orth: bool = False
    one_role: bool = False
    max_length: int = 1024
    packing: bool = False
    eval_fraction: float = 0.0
    max_steps: int = -1
    max_minutes: float | None = None  # stop after this much training wall time (after the step in progress)
    epochs: float = 1.0
    lr: float = 2e-4
    batch_size: int = 1  # per device
    grad_accum: int = 1
    seed: int = 0
    # The fused AdamW kernel (CPU and CUDA): over a MoR adapter's 70M parameters (SmolLM2) it took 29-35
    # ms a step on the 2-core dev CPU against 120-126 ms for the default multi-tensor one.
    optim: str = "adamw_torch_fused"
    lr_scheduler: str = "linear"
    warmup_steps: int = 0
    weight_decay: float = 0.0
    bf16: bool = False
    logging_steps: int = 10
    save_steps: int | None = None
    save_total_limit: int | None = None
    resume: str | bool | None = None
    shuffle: bool = True
    ddp_find_unused_parameters: bool = False
    progress_bar: bool = True

    def __post_init__(self) -> None:
        if (self.data is None) == (self.generate is None):
            raise ValueError("TrainConfig needs exactly one of data (a JSONL file) and generate (a count); "
                             f"got data={self.data!r}, generate={self.generate!r}")
        if self.generate is not None and (not isinstance(self.generate, int) or self.generate < 1):
            raise ValueError(f"generate must be a positive number of trajectories, got {self.generate!r}")
        if self.method not in ("mor", "lora"):
            raise ValueError(f"method must be 'mor' or 'lora', got {self.method!r}")
        if self.method == "lora" and (self.no_aux or self.no_orth or self.one_role):
            raise ValueError("no_aux, no_orth and one_role are MoR ablations; they do not apply to method='lora'")
        if not 0.0 <= self.eval_fraction < 1.0:
            raise ValueError(f"eval_fraction must be in [0, 1), got {self.eval_fraction}")
        for name in ("rank", "max_length", "batch_size", "grad_accum", "logging_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.save_steps is not None and self.save_steps < 1:
            raise ValueError(f"save_steps must be >= 1 (or None to save only at the end), got {self.save_steps}")
        if self.max_steps <= 0 and self.epochs <= 0:
            raise ValueError("set max_steps > 0 or epochs > 0")
        if self.max_minutes is not None and not self.max_minutes > 0:
            raise ValueError(f"max_minutes must be > 0 (or None for no time limit), got {self.max_minutes}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        for name in ("weight_decay", "warmup_steps", "lora_dropout"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.save_total_limit is not None and self.save_total_limit < 1:
            raise ValueError(f"save_total_limit must be >= 1 (or None to keep every checkpoint), "
                             f"got {self.save_total_limit}")


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


# ------------------------------------------------------------------------------------------- specs and budgets
def one_role_spec(rank: int, like: MoRSpec | None = None) -> MoRSpec:
    """The ``one_role`` ablation: one role ``agent`` with a shared LoRA and as many routed LoRAs as
    ``like`` (default ``MoRSpec.moragent(rank)``) has LoRAs in all minus one, top-k 3, so the LoRA
    budget is the same and only the role split is removed."""
    like = MoRSpec.moragent(rank) if like is None else like
    experts = like.num_loras - 1
    return MoRSpec(roles=(RoleSpec("agent", num_experts=experts, top_k=min(3, experts), shared=True),),
                   rank=rank, shared_gate=like.shared_gate)


def lora_rank_for_budget(budget: int, in_out_sizes: Sequence[tuple[int, int]]) -> int:
    """The LoRA rank whose ``r * sum(d_in + d_out)`` trainable parameters is closest to ``budget`` (>= 1)."""
    per_rank = sum(d_in + d_out for d_in, d_out in in_out_sizes)
    if per_rank <= 0:
        raise ValueError("no target modules to size a LoRA for")
    return max(1, round(budget / per_rank))


# ------------------------------------------------------------------------------------------- data
class ExampleDataset(torch.utils.data.Dataset):
    """A list of encoded (or packed) examples; the collator turns them into tensors."""

    def __init__(self, examples: Sequence[EncodedExample | PackedExample]) -> None:
        self.examples = list(examples)

    def __len__(self) -> int:
        return len(self.examples)

    def __getitem__(self, index: int) -> EncodedExample | PackedExample:
        return self.examples[index]


@dataclasses.dataclass
class RoleDataCollator:
    """:func:`~mor_ext.data.tokenize.collate` with the tokenizer's pad id: ``input_ids``, ``role_ids``,
    ``labels`` and ``attention_mask`` (or ``position_ids`` for packed rows); ``with_role_ids=False``
    drops ``role_ids`` (for models that are not MoR-patched)."""

    pad_id: int
    with_role_ids: bool = True

    def __call__(self, examples: Sequence[EncodedExample | PackedExample]) -> dict[str, torch.Tensor]:
        batch = collate(examples, self.pad_id)
        if not self.with_role_ids:
            del batch["role_ids"]
        return batch


def _load_trajectories(config: TrainConfig) -> tuple[list, int]:
    """The training trajectories and how many records were skipped. A data file's bad records and
    trajectories with placeholder turns are skipped (with a warning); the rest must not overlap
    BFCL, which is evaluation data: :class:`~mor_ext.data.decontamination.ContaminationError`
    otherwise (synthetic data is checked where it is generated)."""
    if config.data is not None:
        from .data.decontamination import assert_clean
        from .data.jsonl import read_trajectories

        trajectories, errors = read_trajectories(config.data, on_error="skip")
        if errors:
            logger.warning("%s: skipped %d bad record(s) of %d", config.data, len(errors), len(errors) + len(trajectories))
        unfinished = sum(t.has_placeholders for t in trajectories)
        if unfinished:
            logger.warning("%s: skipped %d trajectory(ies) with placeholder turns (meta needs_completion / "
                           "needs_observation): complete them first (mor_ext.data.completion)", config.data, unfinished)
            trajectories = [t for t in trajectories if not t.has_placeholders]
        if not trajectories:
            raise ValueError(f"{config.data}: no trainable trajectories ({len(errors)} bad records, "
                             f"{unfinished} with placeholder turns)")
        logger.info("%s", assert_clean(trajectories).summary())
        return trajectories, len(errors) + unfinished
    from .data.synthetic import generate

    return generate(config.generate, seed=config.seed), 0


def build_datasets(config: TrainConfig, tokenizer, spec: MoRSpec | None = None,
                   loaded: tuple[list, int] | None = None,
                   ) -> tuple[ExampleDataset, ExampleDataset | None, int]:
    """``(train, eval or None, skipped)``: trajectories encoded with :class:`RoleTokenizer` under the
    MoRAgent roles (remapped to role 0 for ``one_role``), split before packing so that no trajectory
    is in both, and packed per split when ``config.packing``. ``loaded``: the ``(trajectories,
    skipped)`` of the config's data, if already read."""
    trajectories, skipped = loaded if loaded is not None else _load_trajectories(config)
    encoder = RoleTokenizer(tokenizer, MoRSpec.moragent(config.rank), config.context_role)
    result = encoder.encode_many(trajectories, config.max_length)
    examples = result.examples
    skipped += len(result.skipped)
    if not examples:
        raise ValueError(f"no trajectory fits max_length={config.max_length} ({len(result.skipped)} too long)")
    if config.one_role:
        for ex in examples:
            ex.role_ids = [0 if r >= 0 else r for r in ex.role_ids]
    order = list(range(len(examples)))
    random.Random(config.seed).shuffle(order)
    n_eval = int(round(config.eval_fraction * len(examples)))
    if config.eval_fraction > 0 and n_eval == 0:
        n_eval = 1
    if n_eval >= len(examples):
        raise ValueError(f"eval_fraction={config.eval_fraction} leaves no training example of {len(examples)}")
    eval_part = [examples[i] for i in sorted(order[:n_eval])]
    train_part = [examples[i] for i in sorted(order[n_eval:])]
    if config.packing:
        train_part = pack(train_part, config.max_length)
        eval_part = pack(eval_part, config.max_length) if eval_part else eval_part
    return ExampleDataset(train_part), (ExampleDataset(eval_part) if eval_part else None), skipped


# ------------------------------------------------------------------------------------------- trainer
def _trainer_class():
    from transformers import Trainer

    class _MoRTrainer(Trainer):
        """``Trainer`` whose loss is ``CE + aux_coef * aux + orth_coef * orth`` from the model's output
        fields, each term (and the router load per role) averaged over the logging interval and logged."""

        def __init__(self, *args: Any, shuffle: bool = True, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.shuffle = shuffle
            # compute_loss below normalises over accumulation steps itself.
            self.loss_is_scaled_for_ga = True
            self._sums: dict[str, float] = {}
            self._count = 0

        def _save(self, output_dir: str | None = None, state_dict=None) -> None:
            # A MoR checkpoint holds the adapter, not the frozen base weights (SmolLM2: ~0.3 GB of
            # adapter and optimiser state instead of 1.6 GB): the base model is reloaded from its source.
            model = self.accelerator.unwrap_model(self.model)
            if getattr(model, "mor_config", None) is None:
                return super()._save(output_dir, state_dict)
            from transformers.trainer import TRAINING_ARGS_NAME

            output_dir = Path(output_dir or self.args.output_dir)
            output_dir.mkdir(parents=True, exist_ok=True)
            save_adapter(model, output_dir / CHECKPOINT_ADAPTER_DIR, metadata={"global_step": self.state.global_step})
            torch.save(self.args, output_dir / TRAINING_ARGS_NAME)

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

        def _get_train_sampler(self, train_dataset=None):
            if not self.shuffle:
                dataset = self.train_dataset if train_dataset is None else train_dataset
                return torch.utils.data.SequentialSampler(dataset)
            return super()._get_train_sampler(train_dataset)

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


def MoRTrainer(*args: Any, **kwargs: Any):
    """Build the ``transformers.Trainer`` subclass :func:`train` uses (imported lazily: transformers
    is heavy). ``shuffle=False`` trains in dataset order."""
    return _trainer_class()(*args, **kwargs)


# ------------------------------------------------------------------------------------------- models
def _mor_config(config: TrainConfig) -> MoRConfig:
    spec = one_role_spec(config.rank) if config.one_role else MoRSpec.moragent(config.rank)
    context_role = config.context_role
    if config.one_role and context_role is not None:
        context_role = "agent"
    defaults = MoRConfig()
    return MoRConfig(
        spec=spec, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
        target_modules=config.target_modules, context_role=context_role,
        aux_loss_coef=0.0 if config.no_aux else defaults.aux_loss_coef,
        orth_loss_coef=0.0 if config.no_orth else defaults.orth_loss_coef,
    )


def _prepare_model(config: TrainConfig, model) -> tuple[Any, dict[str, int]]:
    """Patch (mor) or wrap with peft (lora); returns the model and the parameter counts to log."""
    from .patching import mor_layers, patch, trainable_parameters, unpatch

    mor_config = _mor_config(config)
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
    lora = LoraConfig(r=rank, lora_alpha=scaling * rank, lora_dropout=config.lora_dropout,
                      target_modules=targets, bias="none", task_type="CAUSAL_LM")
    model = get_peft_model(model, lora)
    lora_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    counts.update(trainable=lora_trainable, lora_trainable=lora_trainable, lora_rank=rank)
    logger.warning("parameter budget: MoR %d trainable, LoRA rank %d %d trainable (%.2f%% of MoR)",
                   mor_trainable, rank, lora_trainable, 100.0 * lora_trainable / mor_trainable)
    return model, counts


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
    )
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

    from .models import load_model

    started = time.perf_counter()
    set_seed(config.seed)
    loaded = _load_trajectories(config)  # before the model: bad or contaminated data fails fast
    model, tokenizer = load_model(config.model)
    model.config.use_cache = False  # training; packed rows also need it (see data.tokenize)
    train_set, eval_set, skipped = build_datasets(config, tokenizer, loaded=loaded)
    set_seed(config.seed)  # the adapter's initialisation does not depend on how much data was read
    model, counts = _prepare_model(config, model)
    model.train()

    args = _training_arguments(config, eval_set is not None)
    trainer = MoRTrainer(
        model=model, args=args, train_dataset=train_set, eval_dataset=eval_set,
        data_collator=RoleDataCollator(tokenizer.pad_token_id, with_role_ids=config.method == "mor"),
        shuffle=config.shuffle,
        callbacks=[_time_budget_callback(config.max_minutes)] if config.max_minutes is not None else None,
    )
    resume = config.resume if config.resume not in (None, False, "") else None
    output = trainer.train(resume_from_checkpoint=resume)
    if eval_set is not None:
        trainer.evaluate()

    out_dir = Path(config.out_dir)
    adapter_dir = out_dir
    if trainer.is_world_process_zero():
        out_dir.mkdir(parents=True, exist_ok=True)
        meta = {"method": config.method, "global_step": trainer.state.global_step}
        if config.method == "mor":
            save_adapter(model, adapter_dir, metadata=meta)
        else:
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
