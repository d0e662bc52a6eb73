"""The stand-in for ``bfcl_eval.constants.model_config`` still fits the installed bfcl-eval: the checker
imports exactly what the shim expects, reads nothing of the model table but ``underscore_to_dot``,
and BFCL's heavy modules stay unimported."""

from __future__ import annotations

import ast
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

from mor_ext.eval.bfcl import shim

pytestmark = pytest.mark.bfcl


def _checker_source() -> str:
    spec = importlib.util.find_spec("bfcl_eval")
    path = Path(list(spec.submodule_search_locations)[0]) / "eval_checker" / "ast_eval" / "ast_checker.py"
    return path.read_text(encoding="utf-8")


def test_the_checker_imports_what_the_shim_expects():
    tree = ast.parse(_checker_source())
    imports: dict[str, set[str]] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("bfcl_eval"):
            imports.setdefault(node.module, set()).update(a.name for a in node.names)
        elif isinstance(node, ast.Import):
            assert not any(a.name.startswith("bfcl_eval") for a in node.names)
    assert imports == shim.CHECKER_BFCL_IMPORTS


def test_the_checker_reads_only_underscore_to_dot_of_the_model_table():
    tree = ast.parse(_checker_source())
    uses = [n for n in ast.walk(tree) if isinstance(n, ast.Name) and n.id == "MODEL_CONFIG_MAPPING"]
    lookups = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Subscript)
               and isinstance(n.value.value, ast.Name) and n.value.value.id == "MODEL_CONFIG_MAPPING"]
    assert uses and len(lookups) == len(uses)  # every use is MODEL_CONFIG_MAPPING[...].attr
    assert {n.attr for n in lookups} == {"underscore_to_dot"}


def test_the_shim_keeps_dotted_names_and_bfcl_light():
    """In a fresh interpreter: our functions import, the model table is the stand-in, BFCL's API
    clients and runner are never imported, and a dotted name is compared as written."""
    code = """
import sys
from mor_ext.eval.bfcl.shim import bfcl, SHIMMED_MODULE, ShimModelConfig, MODEL_NAME
b = bfcl()
assert isinstance(sys.modules[SHIMMED_MODULE].MODEL_CONFIG_MAPPING[MODEL_NAME], ShimModelConfig)
heavy = [m for m in sys.modules if m.split('.')[0] in ('openai', 'anthropic', 'pandas', 'mistralai', 'cohere')
         or m.startswith(('bfcl_eval.model_handler.api_inference', 'bfcl_eval.eval_checker.eval_runner'))]
assert not heavy, heavy
fn = [{"name": "math.factorial", "description": "n!", "parameters": {"type": "dict",
       "properties": {"number": {"type": "integer", "description": "n"}}, "required": ["number"]}}]
ok = b.ast_checker(fn, [{"math.factorial": {"number": 5}}], [{"math.factorial": {"number": [5]}}],
                   b.Language.PYTHON, "simple_python", MODEL_NAME)
bad = b.ast_checker(fn, [{"math_factorial": {"number": 5}}], [{"math.factorial": {"number": [5]}}],
                    b.Language.PYTHON, "simple_python", MODEL_NAME)
assert ok["valid"] and not bad["valid"] and bad["error_type"] == "simple_function_checker:wrong_func_name", (ok, bad)
print("ok")
"""
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-2000:]


def test_an_already_loaded_model_table_gets_our_name(monkeypatch):
    import types

    real = types.ModuleType(shim.SHIMMED_MODULE)
    real.MODEL_CONFIG_MAPPING = {"gpt-4": shim.ShimModelConfig(underscore_to_dot=True)}
    monkeypatch.setitem(sys.modules, shim.SHIMMED_MODULE, real)
    assert shim.install_model_config_shim() is real
    assert real.MODEL_CONFIG_MAPPING[shim.MODEL_NAME].underscore_to_dot is False
    assert real.MODEL_CONFIG_MAPPING["gpt-4"].underscore_to_dot is True
