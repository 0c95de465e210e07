"""Each identity module has a sorted, complete ``__all__``."""

from __future__ import annotations

import importlib

import pytest

MODULES = [
    "fiveplane._identity",
    "fiveplane._identity._authority",
    "fiveplane._identity._db",
    "fiveplane._identity._grants",
    "fiveplane._identity._keys",
    "fiveplane._identity._model",
    "fiveplane._identity._oidc",
    "fiveplane._identity._revocation",
    "fiveplane._identity._tokens",
    "fiveplane._identity._vault",
    "fiveplane._identity._verify",
    "fiveplane._planes._identity",
    "fiveplane._cli._grants",
]


@pytest.mark.parametrize("name", MODULES)
def test_all_is_sorted_and_resolves(name: str) -> None:
    module = importlib.import_module(name)
    names = list(module.__all__)
    # isort-style (as ruff's RUF022 sorts): CONSTANTS, then Classes, then functions
    assert names == sorted(names, key=lambda n: (0 if n.isupper() else 1 if n[0].isupper() else 2, n)), name
    for n in names:
        assert getattr(module, n) is not None


def test_package_reexports_every_submodule_name() -> None:
    pkg = importlib.import_module("fiveplane._identity")
    private = {"ALL_KINDS", "capabilities", "chain_key", "describe_link", "grants", "is_subagent", "meta", "metadata", "utc"}
    for name in MODULES[1:-2]:
        for n in importlib.import_module(name).__all__:
            assert n in pkg.__all__ or n in private, f"{name}.{n} is not re-exported"
