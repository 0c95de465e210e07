"""Reading the ledger for export: records in sequence order with their payloads, and the context of an action.

Built on the ledger's reading API (its store's leaves and the digest-checked payload decoding of
``_reconstruct``). Payloads are checked against the salted digest in their hashed envelope: an
erased payload reads as ``payload_status="erased"`` (and exports as erased), an altered one as
``"mismatch"`` (and is never exported).
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from datetime import UTC, datetime
from typing import Any

from .._ledger import EvidenceRecord, Ledger, open_ledger
from .._ledger._reconstruct import read_records

__all__ = [
    "ActionIndex",
    "open_for_export",
    "parse_time",
    "read_range",
    "record_uid",
    "span_id_for",
    "time_ms",
    "trace_id_for",
]


def open_for_export(url: str, origin: str | None = None) -> Ledger:
    """Open an existing ledger for reading (no checkpoints signed, nothing created)."""
    return open_ledger(url, origin=origin, create=False, checkpoint_interval=None)


def read_range(ledger: Ledger, start: int, limit: int) -> list[EvidenceRecord]:
    """Up to ``limit`` committed records from ``start`` on, in sequence order, with checked payloads."""
    if limit <= 0:
        return []
    rows = list(ledger.store.iter_leaves(ledger.ledger_id, start, start + limit))
    if not rows:
        return []
    return read_records(ledger.store, ledger.ledger_id, rows)


def record_uid(origin: str, seq: int, suffix: str = "") -> str:
    """The stable id of an exported event: the ledger's origin and the record's sequence number.

    Re-delivery after a retry or a restart sends the same uid, so receivers de-duplicate on it.
    """
    return f"{origin}:{seq}{suffix}"


def trace_id_for(session_id: str | None, fallback: str | None = None) -> str:
    """A W3C/OTel trace id (32 hex) for a session: one agent session is one trace."""
    key = session_id or fallback or "-"
    return hashlib.sha256(b"fiveplane.trace\x00" + key.encode()).hexdigest()[:32]


def span_id_for(action_id: str | None, salt: str = "") -> str:
    """A W3C/OTel span id (16 hex) for an action (optionally salted: a second span of the same action)."""
    key = (action_id or "-") + ("\x00" + salt if salt else "")
    digest = hashlib.sha256(b"fiveplane.span\x00" + key.encode()).hexdigest()[:16]
    return digest if digest != "0" * 16 else "0" * 15 + "1"


def parse_time(value: Any) -> datetime | None:
    """An ISO 8601 timestamp from the ledger (``…Z`` or ``+00:00``) as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        dt = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def time_ms(value: Any) -> int:
    dt = parse_time(value)
    return int(dt.timestamp() * 1000) if dt else 0


class ActionIndex:
    """The intent and decision records of recent actions, so a format can fold them into one event.

    Records are observed in sequence order as they are read; an action whose records were read in
    an earlier run (a restart resumed past them) is fetched from the ledger by its action id.
    Bounded: the oldest actions are forgotten first.
    """

    def __init__(self, ledger: Ledger | None, max_actions: int = 20_000) -> None:
        self.ledger = ledger
        self.max_actions = max_actions
        self._by_action: OrderedDict[str, list[EvidenceRecord]] = OrderedDict()
        self._fetched: set[str] = set()
        self.fetches = 0

    def observe(self, rec: EvidenceRecord) -> None:
        if rec.action_id is None or rec.kind not in ("intent", "decision", "outcome", "enforcement"):
            return
        recs = self._by_action.get(rec.action_id)
        if recs is None:
            recs = self._by_action[rec.action_id] = []
            if len(self._by_action) > self.max_actions:
                self._by_action.popitem(last=False)
        if not recs or recs[-1].seq < rec.seq:
            recs.append(rec)

    def _records(self, action_id: str, before_seq: int, kind: str, fetch: bool = True) -> list[EvidenceRecord]:
        recs = self._by_action.get(action_id, [])
        if (
            fetch
            and self.ledger is not None
            and action_id not in self._fetched
            and not any(r.kind == kind and r.seq < before_seq for r in recs)
        ):
            self.fetches += 1
            if len(self._fetched) > self.max_actions:
                self._fetched.clear()
            self._fetched.add(action_id)
            fetched = self.ledger.records(action_id)
            merged = {r.seq: r for r in [*fetched, *recs]}
            recs = [merged[s] for s in sorted(merged)]
            self._by_action[action_id] = recs
            if len(self._by_action) > self.max_actions:
                self._by_action.popitem(last=False)
        return recs

    def latest(self, action_id: str | None, kind: str, before_seq: int, *, fetch: bool = True) -> EvidenceRecord | None:
        """The last ``kind`` record of ``action_id`` with a sequence number below ``before_seq``
        (looked up in the ledger when it was not seen in this run, unless ``fetch`` is false)."""
        if not action_id:
            return None
        found = None
        for r in self._records(action_id, before_seq, kind, fetch):
            if r.kind == kind and r.seq < before_seq:
                found = r
        return found

    def intent(self, action_id: str | None, before_seq: int) -> EvidenceRecord | None:
        return self.latest(action_id, "intent", before_seq)

    def decision(self, action_id: str | None, before_seq: int) -> EvidenceRecord | None:
        return self.latest(action_id, "decision", before_seq)
