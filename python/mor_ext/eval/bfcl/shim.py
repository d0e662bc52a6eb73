"""BFCL's own checker, decoders and data loaders, imported without BFCL's heavy dependencies.

``bfcl-eval`` is installed with ``--no-deps`` (its dependencies pin numpy and pull in a dozen API
clients). The modules used here need only light packages, with two exceptions handled here:

* ``bfcl_eval.eval_checker.ast_eval.ast_checker`` imports ``bfcl_eval.constants.model_config``, which
  imports every API client BFCL supports, only to read
  ``MODEL_CONFIG_MAPPING[model_name].underscore_to_dot`` (whether a model's function names had their
  dots replaced by underscores). A stand-in module with that mapping goes into ``sys.modules`` before
  the checker is imported: every model name maps to ``underscore_to_dot=False``, so dotted names
  (``math.factorial``) are compared as written. ``tests/eval/test_bfcl_shim.py`` asserts that the
  checker still imports exactly what this stand-in expects and still only reads that attribute.
* ``bfcl_eval.constants.eval_config`` creates ``result/``, ``score/`` and ``.file_locks/`` under
  ``BFCL_PROJECT_ROOT`` when imported (by default beside the installed package, in site-packages).
  Unless the variable is set, it is pointed at ``$XDG_CACHE_HOME/mor_ext/bfcl`` (``~/.cache/...``).

The prompt-mode decoders (``bfcl_eval.model_handler.utils``) need ``tenacity``, ``filelock`` and, for
Java and JavaScript, ``tree-sitter`` with its grammars, at the versions ``bfcl-eval`` pins; ``setup_env.sh``
installs them (``pip install mor_ext[eval]``).
"""

from __future__ import annotations

import functools
import os
import sys
import types
from dataclasses import dataclass
from pathlib import Path

__all__ = ["MODEL_NAME", "SHIMMED_MODULE", "CHECKER_BFCL_IMPORTS", "ShimModelConfig", "install_model_config_shim",
           "bfcl"]

MODEL_NAME = "mor-ext"  # the model name the checker is given (it only looks up underscore_to_dot)
SHIMMED_MODULE = "bfcl_eval.constants.model_config"
# What ast_checker.py imports from bfcl_eval (module -> names); the shim is written for exactly this.
CHECKER_BFCL_IMPORTS = {
    "bfcl_eval.constants.enums": {"Language"},
    "bfcl_eval.constants.model_config": {"MODEL_CONFIG_MAPPING"},
    "bfcl_eval.constants.type_mappings": {"JAVA_TYPE_CONVERSION", "JS_TYPE_CONVERSION"},
    "bfcl_eval.eval_checker.ast_eval.type_convertor.java_type_converter": {"java_type_converter"},
    "bfcl_eval.eval_checker.ast_eval.type_convertor.js_type_converter": {"js_type_converter"},
}
_INSTALL_HINT = ("pip install --no-deps bfcl-eval==2026.3.23 and pip install 'mor_ext[eval]' "
                 "(setup_env.sh does both)")


@dataclass(frozen=True)
class ShimModelConfig:
    """The one field of BFCL's ``ModelConfig`` that the AST checker reads."""

    underscore_to_dot: bool = False


class _AnyModel(dict):
    """``MODEL_CONFIG_MAPPING``: every model name maps to ``ShimModelConfig()``."""

    def __missing__(self, name: str) -> ShimModelConfig:
        return ShimModelConfig()


def install_model_config_shim() -> types.ModuleType:
    """Put the stand-in ``bfcl_eval.constants.model_config`` into ``sys.modules`` (unless the real
    module is already loaded, in which case :data:`MODEL_NAME` is added to its mapping)."""
    module = sys.modules.get(SHIMMED_MODULE)
    if module is not None:
        mapping = module.MODEL_CONFIG_MAPPING
        if MODEL_NAME.replace("_", "/") not in mapping and not isinstance(mapping, _AnyModel):
            mapping[MODEL_NAME.replace("_", "/")] = ShimModelConfig()
        return module
    module = types.ModuleType(SHIMMED_MODULE, "mor_ext's stand-in for BFCL's model table (see mor_ext.eval.bfcl.shim)")
    module.MODEL_CONFIG_MAPPING = _AnyModel()
    module.ModelConfig = ShimModelConfig
    sys.modules[SHIMMED_MODULE] = module
    return module


def _cache_root() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "mor_ext" / "bfcl"


@functools.cache
def bfcl() -> types.SimpleNamespace:
    """BFCL's functions and constants used by :mod:`mor_ext.eval.bfcl`, imported once.

    Raises ImportError (with the install command) where ``bfcl-eval`` or the light packages its
    decoders need are missing.
    """
    os.environ.setdefault("BFCL_PROJECT_ROOT", str(_cache_root()))
    install_model_config_shim()
    try:
        from bfcl_eval.constants import category_mapping
        from bfcl_eval.constants.enums import Language, ModelStyle, ReturnFormat
        from bfcl_eval.constants.type_mappings import GORILLA_TO_OPENAPI
        from bfcl_eval.eval_checker.ast_eval.ast_checker import ast_checker
        from bfcl_eval.model_handler import utils as handler_utils
        from bfcl_eval import utils
    except ImportError as exc:
        raise ImportError(f"BFCL evaluation needs bfcl-eval and its decoders' packages ({exc}): {_INSTALL_HINT}") from exc
    return types.SimpleNamespace(
        ast_checker=ast_checker,
        decode_ast=handler_utils.default_decode_ast_prompting,
        system_prompt=handler_utils.system_prompt_pre_processing_chat_model,
        convert_to_tool=handler_utils.convert_to_tool,
        load_questions=utils.load_dataset_entry,
        load_answers=utils.load_ground_truth_entry,
        is_empty_output=utils.is_empty_output,
        is_function_calling_format_output=utils.is_function_calling_format_output,
        is_java=utils.is_java, is_js=utils.is_js, is_relevance_or_irrelevance=utils.is_relevance_or_irrelevance,
        Language=Language, ReturnFormat=ReturnFormat, ModelStyle=ModelStyle, GORILLA_TO_OPENAPI=GORILLA_TO_OPENAPI,
        categories=category_mapping,
    )
