"""The README's Python examples run as written."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_quick_start_runs(tmp_path, monkeypatch):
    quick_start = python_blocks()[0]
    assert "mor_ext.patch(model)" in quick_start
    monkeypatch.chdir(tmp_path)  # it saves an adapter to ./my-adapter
    namespace: dict = {}
    exec(compile(quick_start, str(README) + ":quick-start", "exec"), namespace)
    assert (tmp_path / "my-adapter" / "adapter_model.safetensors").is_file()
    assert not any(type(m).__name__ == "MoRLinear" for m in namespace["model"].modules())  # unpatched at the end
