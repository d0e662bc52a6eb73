"""The model an evaluation scores: the base, or the base with a MoR adapter or a PEFT LoRA."""

from __future__ import annotations

__all__ = ["METHODS", "load_for_method"]

METHODS = ("mor", "lora", "base")


def load_for_method(model_name: str | None, adapter: str | None, method: str | None):
    """``(model, tokenizer, method)``: ``mor`` loads a MoR adapter (:func:`mor_ext.load_adapter`), ``lora`` a
    PEFT LoRA directory (``mor-ext train --method lora``) merged into the weights, ``base`` none;
    ``method`` None means ``mor`` with an adapter, else ``base``."""
    from ..adapters import load_adapter
    from ..models import load_model

    method = method or ("mor" if adapter else "base")
    if method not in METHODS:
        raise ValueError(f"--method must be one of {METHODS}, got {method!r}")
    if method != "base" and not adapter:
        raise ValueError(f"--method {method} needs --adapter DIR")
    if method == "base" and adapter:
        raise ValueError("--method base takes no --adapter")
    model, tokenizer = load_model(model_name)
    if method == "mor":
        load_adapter(model, adapter)
    elif method == "lora":
        try:
            from peft import PeftModel
        except ImportError as exc:
            raise ImportError("--method lora needs the peft library: pip install peft") from exc
        model = PeftModel.from_pretrained(model, adapter).merge_and_unload()  # a plain model: same outputs
    model.eval()
    return model, tokenizer, method
