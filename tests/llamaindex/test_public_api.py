"""The adapter's public surface: a sorted, complete ``__all__`` importable in a fresh interpreter,
LlamaIndex's namespace-package layout, one version."""

from __future__ import annotations

import inspect
import subprocess
import sys
import tomllib
from pathlib import Path

import llama_index.tools.fiveplane as adapter

from tests.conftest import ROOT

DIST = ROOT / "integrations" / "llama-index-fiveplane"


def test_all_is_sorted_documented_and_importable() -> None:
    assert list(adapter.__all__) == sorted(adapter.__all__)
    for name in adapter.__all__:
        obj = getattr(adapter, name)
        assert obj is not None
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert (getattr(obj, "__doc__", None) or "").strip(), f"{name} has no docstring"


def test_public_names_import_in_a_fresh_interpreter() -> None:
    code = "import llama_index.tools.fiveplane as m\nfor n in m.__all__: getattr(m, n)\nprint(len(m.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(adapter.__all__)


def test_llama_index_namespace_layout_and_version() -> None:
    assert not (DIST / "llama_index" / "__init__.py").exists()  # PEP 420 namespace, as LlamaIndex ships
    assert not (DIST / "llama_index" / "tools" / "__init__.py").exists()
    assert (DIST / "llama_index" / "tools" / "fiveplane" / "py.typed").exists()
    meta = tomllib.loads((DIST / "pyproject.toml").read_text())
    assert meta["project"]["name"] == "llama-index-tools-fiveplane"
    assert meta["tool"]["llamahub"]["import_path"] == "llama_index.tools.fiveplane"
    assert any(d.startswith("llama-index-core>=0.14.25,<0.15") for d in meta["project"]["dependencies"])
    assert Path(adapter.__file__).resolve().is_relative_to(DIST)
    assert adapter.__version__ == "0.1.0"
