"""The training data of a run: trajectories read (bad records and placeholder turns skipped, BFCL
overlap refused), encoded with :class:`~mor_ext.data.tokenize.RoleTokenizer`, split, packed, and
collated into batches."""

from __future__ import annotations

import dataclasses
import logging
import random
from typing import Sequence

import torch

from ..config import MoRConfig
from ..spec import MoRSpec
from ..data.tokenize import (IGNORE_INDEX, EncodedExample, PackedExample, RoleTokenizer, collate, keep_supervised_logits,
                             pack, restrict_labels)
from .config import TrainConfig, expand_roles, mor_config_for

__all__ = ["ExampleDataset", "RoleDataCollator", "load_trajectories", "build_datasets"]

logger = logging.getLogger("mor_ext")


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
    drops ``role_ids`` (for models that are not MoR-patched); ``supervised_logits=True`` adds
    ``logits_to_keep`` so that the model computes logits only where a label follows
    (:func:`~mor_ext.data.tokenize.keep_supervised_logits`)."""

    pad_id: int
    with_role_ids: bool = True
    supervised_logits: bool = False

    def __call__(self, examples: Sequence[EncodedExample | PackedExample]) -> dict[str, torch.Tensor]:
        batch = collate(examples, self.pad_id)
        if not self.with_role_ids:
            del batch["role_ids"]
        if self.supervised_logits:
            batch = keep_supervised_logits(batch)
        return batch


def load_trajectories(config: TrainConfig) -> tuple[list, int]:
    """The training trajectories and how many records were skipped. A data file's bad records and
    trajectories with placeholder turns are skipped (with a warning); the rest must not overlap
    BFCL, which is evaluation data: :class:`~mor_ext.data.decontamination.ContaminationError`
    otherwise (synthetic data is checked where it is generated)."""
    if config.data is not None:
        from ..data.decontamination import assert_clean
        from ..data.jsonl import read_trajectories

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
    from ..data.synthetic import generate

    return generate(config.generate, seed=config.seed), 0


def build_datasets(config: TrainConfig, tokenizer, mor_config: MoRConfig | None = None,
                   loaded: tuple[list, int] | None = None,
                   ) -> tuple[ExampleDataset, ExampleDataset | None, int]:
    """``(train, eval or None, skipped)``: trajectories encoded with :class:`RoleTokenizer` under the
    run's roles and role scheme (``mor_config``, default :func:`mor_config_for`; MoRAgent's roles are
    remapped to role 0 for ``one_role``), labels kept only where ``config.loss_roles`` predict them
    (examples left without a label are dropped and counted as skipped), split before packing so
    that no trajectory is in both, and packed per split when ``config.packing``. ``loaded``: the
    ``(trajectories, skipped)`` of the config's data, if already read."""
    trajectories, skipped = loaded if loaded is not None else load_trajectories(config)
    mor_config = mor_config if mor_config is not None else mor_config_for(config)
    if config.one_role:
        encoder = RoleTokenizer(tokenizer, MoRSpec.moragent(config.rank), config.context_role)
    else:
        encoder = RoleTokenizer(tokenizer, mor_config.spec, mor_config.context_role, scheme=mor_config.scheme)
    result = encoder.encode_many(trajectories, config.max_length)
    examples = result.examples
    skipped += len(result.skipped)
    if not examples:
        raise ValueError(f"no trajectory fits max_length={config.max_length} ({len(result.skipped)} too long)")
    if config.one_role:
        for ex in examples:
            ex.role_ids = [0 if r >= 0 else r for r in ex.role_ids]
    if config.loss_roles:
        keep = {mor_config.spec.role_index(r) for r in expand_roles(config.loss_roles, mor_config.spec.role_names)}
        examples = [restrict_labels(ex, keep) for ex in examples]
        unlabelled = sum(all(t == IGNORE_INDEX for t in ex.labels) for ex in examples)
        if unlabelled:
            logger.warning("%d trajectories have no token of the loss roles %s: dropped", unlabelled, config.loss_roles)
            examples = [ex for ex in examples if any(t != IGNORE_INDEX for t in ex.labels)]
            skipped += unlabelled
        if not examples:
            raise ValueError(f"no trajectory has a token of the loss roles {config.loss_roles}")
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
