"""The repository's shape, held by tests: imports follow the layering that the README's "Layout"
section and each package's ``__init__`` docstring state, every ``docs/spec.md §N`` citation names a
section that exists, and nothing in the repository points at a path outside it."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "mor_ext"

# A unit (a top-level module or package of mor_ext) may import only units of a lower rank. Data flows
# one way: model -> patching -> layers -> functional -> ops -> kernels; tools know nothing of
# mor_ext; data knows tools, the spec and file writing, never the model side.
RANKS = {
    "_C": 0, "spec": 0, "schemes": 0, "files": 0, "tools": 0,
    "checks": 1, "config": 1, "data": 1, "sharding": 1,
    "ops": 2,
    "functional": 3,
    "layers": 4,
    "patching": 5,
    "adapters": 6, "generation": 6, "models": 6,
    "train": 7, "agent": 7,
    "eval": 8,
    "demo": 9,
    "cli": 10,
}


def _unit(dotted: str) -> str:
    """``mor_ext.ops.reference`` -> ``ops``; names imported from the package itself -> ``mor_ext``."""
    parts = dotted.split(".")
    return parts[1] if len(parts) > 1 else "mor_ext"


def _imported_units(path: Path, package_dir: Path) -> set[str]:
    """Units of mor_ext that ``path`` (a file under ``package_dir``) imports, anywhere in the file."""
    rel = path.relative_to(package_dir.parent).with_suffix("").parts  # ("mor_ext", "ops", "dispatch")
    package = list(rel[:-1])  # the package a relative import starts from
    units = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                if node.module:
                    units.add(_unit(".".join(base + [node.module])))
                else:  # `from . import x` / `from .. import x`: x is a module of base, or a name of it
                    units.update(_unit(".".join(base + [alias.name])) for alias in node.names)
            elif node.module and node.module.split(".")[0] == "mor_ext":
                units.add(_unit(node.module))
        elif isinstance(node, ast.Import):
            units.update(_unit(a.name) for a in node.names if a.name.split(".")[0] == "mor_ext")
    return units


def test_every_unit_has_a_rank():
    units = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert units - RANKS.keys() == set(), "give each new module or package a rank in RANKS"


def _layering_violations(package_dir: Path) -> list[str]:
    wrong = []
    for path in sorted(package_dir.rglob("*.py")):
        rel = path.relative_to(package_dir)
        if rel.parts == ("__init__.py",):
            continue  # the public surface re-exports from everywhere
        unit = rel.parts[0].removesuffix(".py")
        for target in _imported_units(path, package_dir) - {unit}:
            if target not in RANKS:  # a public name of the package itself (__version__, backend_info)
                continue
            if RANKS[target] >= RANKS[unit]:
                wrong.append(f"{rel} (rank {RANKS[unit]}) imports {target} (rank {RANKS[target]})")
    return wrong


def test_imports_follow_the_layering():
    wrong = _layering_violations(PACKAGE)
    assert not wrong, "imports against the layering:\n" + "\n".join(wrong)


def test_the_layering_check_catches_an_upward_import(tmp_path):
    """The check above can fail: ops importing patching, or tools importing anything of mor_ext."""
    fake = tmp_path / "mor_ext"
    (fake / "ops").mkdir(parents=True)
    (fake / "tools").mkdir()
    (fake / "ops" / "bad.py").write_text("from ..patching import patch\nfrom .. import __version__\n")
    (fake / "tools" / "bad.py").write_text("def f():\n    import mor_ext.spec\n")
    assert _layering_violations(fake) == ["ops/bad.py (rank 2) imports patching (rank 5)",
                                          "tools/bad.py (rank 0) imports spec (rank 0)"]


def _tracked_text_files() -> list[Path]:
    try:
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, check=True, capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    files = []
    for name in out.decode().split("\0"):
        path = ROOT / name
        if name and path.is_file() and path.suffix not in {".png", ".safetensors", ".gguf", ".whl"}:
            files.append(path)
    return files


# The session workspace and the shared folder beside the repository (this file names them, so it is
# the one file not searched).
OUTSIDE = re.compile(r"/work/|\.\./shared|mor-spec\.md")


def test_nothing_points_outside_the_repository():
    hits = []
    for path in _tracked_text_files():
        if path == Path(__file__).resolve():
            continue
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for lineno, line in enumerate(text.splitlines(), 1):
            if OUTSIDE.search(line):
                hits.append(f"{path.relative_to(ROOT)}:{lineno}: {line.strip()[:100]}")
    assert not hits, "paths outside the repository:\n" + "\n".join(hits)


def test_spec_citations_name_existing_sections():
    spec = (ROOT / "docs" / "spec.md").read_text(encoding="utf-8")
    sections = {int(n) for n in re.findall(r"^## §(\d+) ", spec, flags=re.M)}
    assert sections == {1, 2, 3, 4, 5, 6, 7}
    cited, wrong = 0, []
    for path in _tracked_text_files():
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            continue
        for match in re.finditer(r"docs/spec\.md §(\d+)(?:[-–]§?(\d+))?", text):
            cited += 1
            for n in filter(None, match.groups()):
                if int(n) not in sections:
                    wrong.append(f"{path.relative_to(ROOT)}: {match.group(0)}")
    assert cited > 0 and not wrong, wrong
