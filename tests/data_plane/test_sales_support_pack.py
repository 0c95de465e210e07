"""The proposed ``planes: data:`` section of the sales-support pack, through its YAML test cases."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from fiveplane._policy._testing import run_test_file

from .conftest import HERE, build_governor

pytestmark = pytest.mark.requires_model

TESTS = HERE / "packs" / "sales-support-data.tests.yaml"


def factory(policy: Any) -> Any:
    gov, _ = build_governor(policy.files[-1])
    return gov


def test_yaml_cases_of_the_data_section() -> None:
    results = run_test_file(TESTS, governor_factory=factory)
    failures = [f"{r.name}: step {s.index}: {'; '.join(s.failures)}" for r in results for s in r.steps if s.failures]
    assert not failures, "\n".join(failures)
    assert len(results) == 8


def test_the_overlay_only_adds_the_data_section() -> None:
    import yaml

    overlay = yaml.safe_load(Path(HERE / "packs" / "sales-support-data.yaml").read_text())
    assert set(overlay) == {"name", "version", "description", "extends", "planes"}
    assert set(overlay["planes"]) == {"data"}
