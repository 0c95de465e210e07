"""Export from a PostgreSQL ledger: cursors and dead letters live in the same database."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from fiveplane._export import Exporter, ExportStore, JsonlSink, NativeFormat, build_nist_report
from fiveplane._ledger import open_ledger
from tests.ledger.conftest import pg_url_or_skip

pytestmark = pytest.mark.postgres


def test_export_and_report_on_postgres(tmp_path: Path) -> None:
    url = pg_url_or_skip()
    origin = f"test.fiveplane.local/export-{uuid.uuid4().hex[:10]}"
    ledger = open_ledger(url, origin=origin, checkpoint_interval=None)
    try:
        for i in range(30):
            ledger.record_event("test.event", {"i": i}, {"n": i}, session_id="pg", durable=False)
        ledger.flush()
        out = tmp_path / "pg.jsonl"
        with Exporter(ledger, JsonlSink("pg-file", out, NativeFormat()), batch_size=7) as ex:
            first = ex.run_once(max_records=10)
            second = ex.run_once()
            assert ex.cursor().last_seq == 29
        assert (first.records, second.records) == (10, 20)
        assert [json.loads(line)["meta"]["i"] for line in out.read_text().splitlines()] == list(range(30))
        store = ExportStore(url)
        try:
            assert any(c.sink == "pg-file" and c.origin == origin and c.last_seq == 29 for c in store.cursors())
        finally:
            store.dispose()
        report = build_nist_report(ledger)
        assert report.summary["entries"] == 30 and report.summary["verified"]
    finally:
        ledger.close()
