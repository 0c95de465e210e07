"""The adapter's public surface: sorted __all__, lazy imports, the CLI entry point, core independence."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import langchain_fiveplane


def test_all_is_sorted_and_importable() -> None:
    assert list(langchain_fiveplane.__all__) == sorted(langchain_fiveplane.__all__)
    for name in langchain_fiveplane.__all__:
        assert getattr(langchain_fiveplane, name) is not None


def test_public_names_in_a_fresh_interpreter_and_imports_are_lazy() -> None:
    code = textwrap.dedent(
        """
        import sys
        import langchain_fiveplane, langchain_fiveplane._cli
        assert "langchain" not in sys.modules and "langgraph" not in sys.modules, "imported eagerly"
        for n in langchain_fiveplane.__all__:
            getattr(langchain_fiveplane, n)
        print(len(langchain_fiveplane.__all__))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert int(out.stdout) == len(langchain_fiveplane.__all__)


def test_the_cli_glue_imports_without_langchain() -> None:
    """The core CLI imports run_demo_cli / run_coverage_cli lazily; that import itself must stay light."""
    code = textwrap.dedent(
        """
        import sys, importlib.abc
        class Block(importlib.abc.MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("langchain", "langchain_core", "langgraph"):
                    raise ImportError(f"blocked: {name}")
        sys.meta_path.insert(0, Block())
        from langchain_fiveplane import run_coverage_cli, run_demo_cli
        from langchain_fiveplane._cli import app
        print(sorted(c.name for c in app.registered_commands))
        """
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "['coverage', 'demo']"
