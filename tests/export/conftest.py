"""Fixtures for the export suite: the sample ledger (built once), fresh copies of it, small synthetic ledgers."""

from __future__ import annotations

import sqlite3
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from fiveplane._export import SampleLedger, build_sample_ledger
from fiveplane._ledger import Ledger, generate_signing_key, load_signing_key, open_ledger


@pytest.fixture(scope="session")
def sample(tmp_path_factory: pytest.TempPathFactory) -> SampleLedger:
    """The reference scenario plus the shadow-mode trial, recorded once per test session."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # spaCy model / pseudonym key notices of the data plane
        return build_sample_ledger(tmp_path_factory.mktemp("sample"))


@pytest.fixture
def sample_url(sample: SampleLedger, tmp_path: Path) -> str:
    """A private copy of the sample ledger (exports write their cursors into the ledger's database)."""
    db = tmp_path / "demo.db"
    copy_sqlite(sample.directory / "demo.db", db)
    return f"sqlite:///{db}"


def copy_sqlite(src: Path, dst: Path) -> None:
    """A consistent copy of a live SQLite database (its WAL included)."""
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)


@pytest.fixture
def synthetic(tmp_path: Path) -> Iterator[tuple[str, Ledger]]:
    """An empty signed ledger to fill with ``record_event`` (fast, any number of entries)."""
    key = tmp_path / "t.key"
    generate_signing_key(key, "test.fiveplane.local/export")
    url = f"sqlite:///{tmp_path / 'synthetic.db'}"
    ledger = open_ledger(url, key=load_signing_key(key), checkpoint_interval=None)
    yield url, ledger
    ledger.close()


def fill(ledger: Ledger, n: int, start: int = 0) -> None:
    """Append ``n`` small events (``test.event``, one session, a payload each)."""
    for i in range(start, start + n):
        ledger.record_event("test.event", {"i": i}, {"note": f"event {i}"}, session_id="s-1", durable=False)
    ledger.flush()
