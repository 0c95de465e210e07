"""Shared fixtures. Tests are hermetic: no sockets except loopback servers the tests start."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from biscuit_auth import KeyPair

# Hermetic environment for every test (set at import, before any module-level Governor is built):
# a throw-away database and an ephemeral root key for the identity plane's capability tokens.
_SCRATCH = Path(tempfile.mkdtemp(prefix="fiveplane-tests-"))
os.environ["FIVEPLANE_DATABASE_URL"] = f"sqlite:///{_SCRATCH / 'fiveplane.db'}"
os.environ["FIVEPLANE_ROOT_KEY"] = str(KeyPair().private_key)  # "ed25519-private/<hex>"

ROOT = Path(__file__).resolve().parent.parent
POLICIES = ROOT / "policies"
SALES_PACK = POLICIES / "examples" / "sales-support.yaml"
DATA = Path(__file__).resolve().parent / "data"


@pytest.fixture
def sales_pack() -> Path:
    return SALES_PACK
