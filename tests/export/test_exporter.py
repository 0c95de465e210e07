"""The outbox loop: durable cursor, resume after restart, retries, dead letters, leases, background mode."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from fiveplane._export import (
    Delivery,
    EventFilter,
    Exporter,
    ExportEvent,
    ExportFailed,
    ExportStore,
    FatalSinkError,
    JsonlSink,
    NativeFormat,
    OcsfFormat,
    RetryPolicy,
    Sink,
    TransientSinkError,
)
from fiveplane._export._read import open_for_export

from .conftest import fill

FAST = RetryPolicy(initial=0.001, maximum=0.005, give_up_after=5.0)


class FlakySink(Sink):
    """Fails on chosen calls (transiently, after confirming some events), rejects chosen uids."""

    type = "flaky"

    def __init__(
        self, *, fail_calls: Sequence[int] = (), partial: int = 0, reject: set[str] | None = None, fatal: bool = False
    ) -> None:
        super().__init__("flaky", NativeFormat(), max_batch=7)
        self.got: list[str] = []
        self.calls = 0
        self.fail_calls = set(fail_calls)
        self.partial = partial
        self.reject = reject or set()
        self.fatal = fatal

    def send(self, events: Sequence[ExportEvent]) -> Delivery:
        self.calls += 1
        if self.fatal:
            raise FatalSinkError("token rejected")
        if self.calls in self.fail_calls:
            n = min(self.partial, len(events))
            self.got += [e.uid for e in events[:n]]
            raise TransientSinkError("receiver busy", delivered=n)
        rejected = {i: "bad event" for i, e in enumerate(events) if e.uid in self.reject}
        self.got += [e.uid for i, e in enumerate(events) if i not in rejected]
        return Delivery(rejected)


def _lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_jsonl_export_is_the_ledger_one_to_one_and_resumes_after_a_restart(synthetic: Any, tmp_path: Path) -> None:
    url, ledger = synthetic
    fill(ledger, 50)
    out = tmp_path / "out.jsonl"
    with Exporter(url, JsonlSink("file", out, NativeFormat()), batch_size=8) as ex:
        first = ex.run_once(max_records=20)
    assert (first.records, first.last_seq) == (20, 19)
    fill(ledger, 30, start=50)
    with Exporter(url, JsonlSink("file", out, NativeFormat()), batch_size=8) as ex:  # a new process: the cursor is in the DB
        second = ex.run_once()
        assert ex.cursor().last_seq == 79
    assert (second.start_seq, second.records) == (19, 60)
    lines = _lines(out)
    assert [e["seq"] for e in lines] == list(range(80))
    assert [e["meta"]["i"] for e in lines] == list(range(80))
    assert lines[0]["uid"] == "test.fiveplane.local/export:0" and lines[0]["payload"] == {"note": "event 0"}
    assert lines[0]["nist_ai_rmf"]["categories"] == ["MEASURE 2.8"]


def test_transient_failures_retry_in_order_without_loss(synthetic: Any) -> None:
    url, ledger = synthetic
    fill(ledger, 40)
    sink = FlakySink(fail_calls=[2, 3, 6], partial=3)
    with Exporter(url, sink, batch_size=10, retry=FAST) as ex:
        report = ex.run_once()
    uids = [f"test.fiveplane.local/export:{i}" for i in range(40)]
    deduped = list(dict.fromkeys(sink.got))
    assert deduped == uids  # exactly once after de-duplication, in order
    assert report.retries == 3 and report.ok
    # re-sent events only come from the failed call's unconfirmed tail: at most one batch of duplicates each time
    assert len(sink.got) - len(uids) <= 3 * 10


def test_gives_up_after_the_budget_and_keeps_the_cursor(synthetic: Any) -> None:
    url, ledger = synthetic
    fill(ledger, 10)
    sink = FlakySink(fail_calls=range(2, 1000), partial=0)
    with Exporter(url, sink, batch_size=20, retry=RetryPolicy(initial=0.001, maximum=0.002, give_up_after=0.05)) as ex:
        with pytest.raises(ExportFailed) as info:
            ex.run_once()
        state = ex.cursor()
    assert info.value.report.last_seq == 6  # the first call (7 events) was confirmed
    assert state.last_seq == 6 and state.failures > 0 and "receiver busy" in (state.last_error or "")


def test_fatal_errors_stop_at_once(synthetic: Any) -> None:
    url, ledger = synthetic
    fill(ledger, 5)
    with Exporter(url, FlakySink(fatal=True), retry=FAST) as ex:
        with pytest.raises(ExportFailed, match="token rejected"):
            ex.run_once()
        assert ex.cursor().last_seq == -1


def test_rejected_events_become_dead_letters_and_the_rest_is_delivered(synthetic: Any) -> None:
    url, ledger = synthetic
    fill(ledger, 12)
    bad = {"test.fiveplane.local/export:3", "test.fiveplane.local/export:10"}
    sink = FlakySink(reject=bad)
    with Exporter(url, sink, retry=FAST) as ex:
        report = ex.run_once()
        dead = ex.store.dead_letters("flaky")
        state = ex.cursor()
    assert not report.ok and report.dead_letters == 2
    assert [d.event_uid for d in dead] == sorted(bad, key=lambda u: int(u.rsplit(":", 1)[1]))
    assert json.loads(dead[0].event)["meta"] == {"i": 3}
    assert state.last_seq == 11 and state.dead_letters == 2
    assert len(sink.got) == 10


def test_filter_skips_records_but_advances_the_cursor(sample_url: str, tmp_path: Path) -> None:
    out = tmp_path / "blocks.jsonl"
    sink = JsonlSink("blocks", out, OcsfFormat(), filter=EventFilter.of(kinds=["decision"], verdicts=["block"]))
    with Exporter(sample_url, sink) as ex:
        report = ex.run_once()
        assert ex.cursor().last_seq == report.ledger_size - 1
    assert report.events == 2 and report.skipped == report.records - 2
    assert {e["disposition_id"] for e in _lines(out)} == {2}


def test_two_exporters_never_deliver_one_sink_at_once(synthetic: Any, tmp_path: Path) -> None:
    url, ledger = synthetic
    fill(ledger, 3)
    reader = open_for_export(url)
    try:
        store = ExportStore(url)
        store.cursor("file", reader.origin, "jsonl")
        store.acquire("file", reader.origin, "someone-else", 60)
        with Exporter(url, JsonlSink("file", tmp_path / "x.jsonl", NativeFormat())) as ex:
            with pytest.raises(ExportFailed, match="someone-else"):
                ex.run_once()
        store.release("file", reader.origin, "someone-else")
        with Exporter(url, JsonlSink("file", tmp_path / "x.jsonl", NativeFormat())) as ex:
            assert ex.run_once().records == 3
        store.dispose()
    finally:
        reader.close()


def test_background_export_follows_the_ledger(synthetic: Any, tmp_path: Path) -> None:
    _, ledger = synthetic
    out = tmp_path / "bg.jsonl"
    exporter = Exporter(ledger, JsonlSink("bg", out, NativeFormat()))
    handle = exporter.start_background(poll_interval=0.02)
    try:
        assert handle.running
        fill(ledger, 25)
        deadline = time.monotonic() + 10
        while handle.status().last_seq < 24 and time.monotonic() < deadline:
            time.sleep(0.02)
        fill(ledger, 5, start=25)
        while handle.status().last_seq < 29 and time.monotonic() < deadline:
            time.sleep(0.02)
    finally:
        handle.stop()
        exporter.close()
    assert not handle.running
    assert [e["meta"]["i"] for e in _lines(out)] == list(range(30))


def test_stop_interrupts_a_retry_wait(synthetic: Any) -> None:
    url, ledger = synthetic
    fill(ledger, 3)
    sink = FlakySink(fail_calls=range(1, 10_000))
    exporter = Exporter(url, sink, retry=RetryPolicy(initial=5, maximum=5, give_up_after=None))

    def run() -> None:
        with pytest.raises(ExportFailed):
            exporter.run_once()

    t = threading.Thread(target=run)
    t.start()
    time.sleep(0.2)
    t0 = time.monotonic()
    exporter.stop()
    t.join(5)
    exporter.close()
    assert not t.is_alive() and time.monotonic() - t0 < 2
