"""The exporter: the ledger as an outbox, one durable cursor per sink.

Loop: read the records after the sink's cursor (in sequence order, with their payloads), format
them, hand the batch to the sink, and — only once the sink confirmed it — move the cursor past it
in the database, together with any dead letters. A transient failure (receiver down, 5xx, reset)
backs off exponentially with jitter and retries from the first unconfirmed event; a restart resumes
from the stored cursor. Hence at least once, in order, nothing skipped: after an outage a receiver
may see an event twice (same ``uid``) but never misses one and never sees them out of order.

Run it once (``fiveplane export run --sink NAME``), follow the ledger (``--follow``), or in the
background of an application (:meth:`Exporter.start_background`).
"""

from __future__ import annotations

import logging
import os
import random
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from .._ledger import Ledger
from ._format import ExportEvent, FormatContext
from ._nist import NistMapping, load_nist_mapping
from ._read import ActionIndex, open_for_export, read_range
from ._sinks import FatalSinkError, Sink, TransientSinkError
from ._store import CursorState, ExportStore, LeaseHeld, event_json

__all__ = ["BackgroundExport", "ExportFailed", "ExportReport", "Exporter", "RetryPolicy"]

log = logging.getLogger("fiveplane.export")


class ExportFailed(RuntimeError):
    """The export stopped before reaching the end of the ledger (see :attr:`report`)."""

    def __init__(self, message: str, report: ExportReport) -> None:
        super().__init__(message)
        self.report = report


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential back-off with full jitter between attempts of one batch.

    Attributes:
        initial: first delay (seconds).
        maximum: delay cap (seconds).
        multiplier: growth per failed attempt.
        give_up_after: stop retrying a batch after this many seconds (``None``: never — for
            ``--follow`` and background mode, where the sink may be down for hours).
    """

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    give_up_after: float | None = 120.0

    def delay(self, attempt: int) -> float:
        cap = min(self.maximum, self.initial * self.multiplier ** max(0, attempt - 1))
        return random.uniform(cap / 2, cap)


@dataclass
class ExportReport:
    """What one run did."""

    sink: str
    origin: str
    start_seq: int
    last_seq: int
    ledger_size: int
    records: int = 0
    events: int = 0
    skipped: int = 0
    dead_letters: int = 0
    retries: int = 0
    seconds: float = 0.0
    error: str | None = None
    dead: list[dict[str, Any]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.error is None and self.dead_letters == 0

    @property
    def lag(self) -> int:
        return max(0, self.ledger_size - 1 - self.last_seq)

    def as_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "ok": self.ok, "lag": self.lag}


def _owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}"


class Exporter:
    """Exports one ledger to one sink, at least once and in order, from a durable cursor.

    Args:
        ledger: an open :class:`~fiveplane.Ledger` or a database URL (opened read-only for export).
        sink: where the events go.
        state_url: where cursors and dead letters live (default: the ledger's database).
        batch_size: records read per batch (the sink may take fewer per call: ``sink.max_batch``).
        retry: back-off and give-up policy for transient failures.
        nist: the NIST AI RMF mapping (default: the shipped ``nist_ai_rmf.yaml``).
        lease_seconds: how long this exporter's claim on the sink lasts without renewal.
        sleep: the wait between retries (tests pass a fake).
    """

    def __init__(
        self,
        ledger: Ledger | str,
        sink: Sink,
        *,
        state_url: str | None = None,
        origin: str | None = None,
        batch_size: int = 500,
        retry: RetryPolicy | None = None,
        nist: NistMapping | None = None,
        lease_seconds: float = 60.0,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self._owns_ledger = isinstance(ledger, str)
        self.ledger = open_for_export(ledger, origin) if isinstance(ledger, str) else ledger
        self.sink = sink
        self.store = ExportStore(state_url or self._ledger_url())
        self.batch_size = max(1, batch_size)
        self.retry = retry or RetryPolicy()
        self.ctx = FormatContext(self.ledger.origin, ActionIndex(self.ledger), nist or load_nist_mapping())
        self.lease_seconds = lease_seconds
        self._sleep = sleep or time.sleep
        self._owner = _owner()
        self._stop = threading.Event()

    def _ledger_url(self) -> str:
        return self.ledger.store.url.render_as_string(hide_password=False)

    @property
    def origin(self) -> str:
        return self.ledger.origin

    def cursor(self) -> CursorState:
        return self.store.cursor(self.sink.name, self.origin, self.sink.type)

    def close(self) -> None:
        """Release the sink, the state engine and (if this exporter opened it) the ledger."""
        self.sink.close()
        self.store.dispose()
        if self._owns_ledger:
            self.ledger.close()

    def __enter__(self) -> Exporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- one batch --------------------------------------------------------------------------------

    def _format(self, start: int) -> tuple[list[Any], list[tuple[int, ExportEvent]], int]:
        records = read_range(self.ledger, start, self.batch_size)
        events: list[tuple[int, ExportEvent]] = []
        skipped = 0
        for rec in records:
            self.ctx.index.observe(rec)
            if rec.payload_status == "mismatch":
                log.warning(
                    "export %s: record %d has a payload that does not match its digest; exported without it",
                    self.sink.name,
                    rec.seq,
                )
            if not self.sink.filter.accepts(rec):
                skipped += 1
                continue
            tags = self.ctx.tags(rec)
            for ev in self.sink.formatter.format(rec, self.ctx):
                events.append((rec.seq, replace(ev, categories=tags.categories) if not ev.categories else ev))
        return records, events, skipped

    def _deliver(self, cursor: int, last_seq: int, events: list[tuple[int, ExportEvent]], report: ExportReport) -> int:
        """Send ``events`` (all from records up to ``last_seq``), retrying; returns the new cursor."""
        pending = list(events)
        attempt = 0
        first_failure: float | None = None
        while True:
            dead: list[tuple[int, str, str, str]] = []
            sent = 0
            try:
                while pending:
                    chunk = pending[: self.sink.max_batch]
                    result = self.sink.send([ev for _, ev in chunk])
                    for i, reason in sorted(result.rejected.items()):
                        seq, ev = chunk[i]
                        dead.append((seq, ev.uid, reason, event_json(ev.data, ev.text)))
                    sent += len(chunk)
                    pending = pending[len(chunk) :]
                    if pending:  # confirm progress inside a long batch (cursor at the last complete record)
                        done_seq = pending[0][0] - 1
                        if done_seq > cursor:
                            cursor = self._advance(cursor, done_seq, sent, dead, report)
                            sent, dead = 0, []
                return self._advance(cursor, last_seq, sent, dead, report)
            except TransientSinkError as exc:
                delivered = exc.delivered
                # events before `delivered` in the failing chunk went through: keep them, resend the rest
                pending = pending[delivered:]
                sent += delivered
                if pending:
                    done_seq = pending[0][0] - 1
                    if done_seq > cursor:
                        cursor = self._advance(cursor, done_seq, sent, [d for d in dead if d[0] <= done_seq], report)
                attempt += 1
                report.retries += 1
                now = time.monotonic()
                first_failure = first_failure or now
                self.store.failed(self.sink.name, self.origin, str(exc))
                give_up = self.retry.give_up_after
                if self._stop.is_set() or (give_up is not None and now - first_failure >= give_up):
                    raise ExportFailed(f"{self.sink.describe()}: {exc} (gave up after {attempt} attempts)", report) from exc
                delay = self.retry.delay(attempt)
                log.warning("export %s: %s; retrying in %.1fs (attempt %d)", self.sink.name, exc, delay, attempt)
                if self._stop.wait(0) or self._interruptible_sleep(delay):
                    raise ExportFailed(f"{self.sink.describe()}: stopped while retrying ({exc})", report) from exc
            except FatalSinkError as exc:
                self.store.failed(self.sink.name, self.origin, str(exc))
                raise ExportFailed(f"{self.sink.describe()}: {exc}", report) from exc

    def _interruptible_sleep(self, delay: float) -> bool:
        """Sleep (or wait for stop); True when stopped."""
        if self._sleep is time.sleep:
            return self._stop.wait(delay)
        self._sleep(delay)
        return self._stop.is_set()

    def _advance(self, cursor: int, to: int, delivered: int, dead: list[tuple[int, str, str, str]], report: ExportReport) -> int:
        if not self.store.advance(self.sink.name, self.origin, expected=cursor, to=to, delivered=delivered, dead=dead):
            current = self.cursor().last_seq
            raise ExportFailed(
                f"{self.sink.describe()}: the cursor moved to {current} under us (another exporter?); stopping", report
            )
        try:
            self.store.acquire(self.sink.name, self.origin, self._owner, self.lease_seconds)
        except LeaseHeld as exc:
            raise ExportFailed(str(exc), report) from exc
        report.events += delivered
        report.dead_letters += len(dead)
        report.dead.extend({"seq": s, "uid": u, "reason": r} for s, u, r, _ in dead)
        report.last_seq = to
        return to

    # ---- runs -------------------------------------------------------------------------------------

    def run_once(self, *, progress: Callable[[int, int], None] | None = None, max_records: int | None = None) -> ExportReport:
        """Export everything committed so far (or ``max_records``), then return.

        Raises :class:`ExportFailed` (with the report) when the sink stays unavailable beyond the
        retry policy, rejects the credentials, or another exporter holds the sink.
        """
        t0 = time.perf_counter()
        state = self.cursor()
        size = self.ledger.size()
        report = ExportReport(self.sink.name, self.origin, state.last_seq, state.last_seq, size)
        try:
            self.store.acquire(self.sink.name, self.origin, self._owner, self.lease_seconds)
        except LeaseHeld as exc:
            report.error = str(exc)
            raise ExportFailed(str(exc), report) from exc
        try:
            cursor = state.last_seq
            end = size if max_records is None else min(size, cursor + 1 + max_records)
            while cursor + 1 < end and not self._stop.is_set():
                records, events, skipped = self._format(cursor + 1)
                records = [r for r in records if r.seq < end]
                if not records:
                    break
                last = records[-1].seq
                events = [(s, e) for s, e in events if s <= last]
                cursor = self._deliver(cursor, last, events, report)
                report.records += len(records)
                report.skipped += skipped
                if progress is not None:
                    progress(cursor + 1, size)
        except ExportFailed as exc:
            report.error = str(exc)
            raise
        finally:
            report.seconds = round(time.perf_counter() - t0, 3)
            try:
                self.store.release(self.sink.name, self.origin, self._owner)
            except Exception as exc:  # noqa: BLE001 - never mask the export's own outcome
                log.error("export %s: could not release the lease: %s", self.sink.name, exc)
        return report

    def follow(self, *, poll_interval: float = 1.0, on_batch: Callable[[ExportReport], None] | None = None) -> None:
        """Export continuously until :meth:`stop` is called; failures are retried forever."""
        while not self._stop.is_set():
            try:
                report = self.run_once()
                if on_batch is not None and report.records:
                    on_batch(report)
            except ExportFailed as exc:
                if "another exporter" in str(exc) or "is being exported by" in str(exc):
                    log.warning("export %s: %s", self.sink.name, exc)
                elif self._stop.is_set():
                    return
                else:
                    log.error("export %s: %s", self.sink.name, exc)
            self._stop.wait(poll_interval)

    def stop(self) -> None:
        self._stop.set()

    def start_background(self, *, poll_interval: float = 1.0, retry: RetryPolicy | None = None) -> BackgroundExport:
        """Run :meth:`follow` in a daemon thread (retrying forever by default); returns its handle.

        >>> export = Exporter(ledger, JsonlSink("audit", "audit.jsonl", OcsfFormat())).start_background()
        >>> ...                       # the Governor records; the thread ships the evidence
        >>> export.stop()             # at shutdown: finishes the batch in flight, keeps the cursor
        """
        self.retry = retry or replace(self.retry, give_up_after=None)
        self._stop.clear()
        thread = threading.Thread(
            target=self.follow, kwargs={"poll_interval": poll_interval}, name=f"fiveplane-export-{self.sink.name}", daemon=True
        )
        thread.start()
        return BackgroundExport(self, thread)


@dataclass
class BackgroundExport:
    """A running background export (see :meth:`Exporter.start_background`)."""

    exporter: Exporter
    thread: threading.Thread

    def stop(self, timeout: float = 30.0) -> None:
        """Stop after the batch in flight (the cursor keeps what was confirmed)."""
        self.exporter.stop()
        self.thread.join(timeout)

    @property
    def running(self) -> bool:
        return self.thread.is_alive()

    def status(self) -> CursorState:
        return self.exporter.cursor()
