"""Shared fixtures. Tests are hermetic: no sockets except loopback servers the tests start."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
SALES_PACK = POLICIES / "examples" / "sales-support.yaml"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def sales_pack() -> Path:
    return SALES_PACK
