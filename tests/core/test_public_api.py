"""The public surface: a sorted, complete ``__all__`` that imports in a fresh interpreter, and a core
that imports without the heavy optional dependencies."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import fiveplane


def test_all_is_sorted_and_importable() -> None:
    assert list(fiveplane.__all__) == sorted(fiveplane.__all__)
    for name in fiveplane.__all__:
        assert getattr(fiveplane, name) is not None


def test_public_names_import_in_a_fresh_interpreter() -> None:
    code = "import fiveplane\nfor n in fiveplane.__all__: getattr(fiveplane, n)\nprint(len(fiveplane.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(fiveplane.__all__)


def test_core_imports_without_optional_frameworks() -> None:
    code = textwrap.dedent(
        """
        import sys, importlib.abc
        BLOCKED = ("langchain", "langchain_core", "langgraph", "llama_index", "presidio_analyzer",
                   "presidio_anonymizer", "spacy", "pandas")
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in BLOCKED:
                    raise ImportError(f"blocked for this test: {name}")
                return None
        sys.meta_path.insert(0, Block())
        import fiveplane, fiveplane._cli
        g = fiveplane.Governor(sys.argv[2])   # a pack without the data plane works
        assert not [m for m in sys.modules if m.split(".")[0] in BLOCKED]
        try:                                  # a pack that configures it fails with a fix-it message
            fiveplane.Governor(sys.argv[1])
        except ImportError as exc:
            assert "pip install 'fiveplane[pii]'" in str(exc), exc
        else:
            raise AssertionError("the data plane was built without Presidio")
        print("ok")
        """
    )
    from tests.conftest import SALES_PACK

    ops = SALES_PACK.parent / "ops-assistant.yaml"
    out = subprocess.run([sys.executable, "-c", code, str(SALES_PACK), str(ops)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "ok"
