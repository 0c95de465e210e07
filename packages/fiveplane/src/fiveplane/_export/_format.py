"""The formats' common ground: the exported event, the context a format reads, the native format, filters.

A format turns one ledger record into zero or more :class:`ExportEvent` values, each with a stable
``uid`` (``<origin>:<seq>``, plus a suffix when one record yields several events) so receivers can
de-duplicate what at-least-once delivery sends twice. Formats are pure functions of the ledger:
exporting the same record again produces the same event.
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from typing import Any, Protocol, runtime_checkable

from .._ledger import EvidenceRecord
from .._version import __version__
from ._nist import NistMapping, NistTags, load_nist_mapping
from ._read import ActionIndex, record_uid, span_id_for, trace_id_for

__all__ = [
    "EVENT_SCHEMA",
    "EventFilter",
    "ExportEvent",
    "FormatContext",
    "Formatter",
    "NativeFormat",
]

EVENT_SCHEMA = "fiveplane.export/1"


@dataclass(frozen=True, slots=True)
class ExportEvent:
    """One event for a sink: a JSON object (``data``) or a line of text (``text``), with its ids."""

    uid: str
    seq: int
    kind: str
    time: str
    data: dict[str, Any] = field(default_factory=dict)
    text: str | None = None
    categories: tuple[str, ...] = ()
    """The NIST AI RMF subcategories its record serves (set by the exporter)."""


@dataclass
class FormatContext:
    """What a format may read besides the record: the ledger's origin, recent actions, NIST tags."""

    origin: str
    index: ActionIndex
    nist: NistMapping = field(default_factory=load_nist_mapping)
    host: str = field(default_factory=socket.gethostname)
    product_version: str = __version__

    def tags(self, rec: EvidenceRecord) -> NistTags:
        return self.nist.tags(rec.kind, rec.meta)


@runtime_checkable
class Formatter(Protocol):
    """Turns one ledger record into the events a sink sends (none, one or several)."""

    name: str

    def format(self, rec: EvidenceRecord, ctx: FormatContext) -> list[ExportEvent]: ...


@dataclass(frozen=True)
class EventFilter:
    """Which records a sink exports. Empty lists mean "all"; skipped records still advance the cursor."""

    kinds: tuple[str, ...] = ()
    """Record kinds (globs): ``decision``, ``outcome``, ``approval.*``…"""
    verdicts: tuple[str, ...] = ()
    """Decision verdicts (records without a verdict pass unless ``kinds`` excludes them)."""
    points: tuple[str, ...] = ()
    """Mediation points: ``tool_call``, ``tool_result``…"""

    def accepts(self, rec: EvidenceRecord) -> bool:
        if self.kinds and not any(fnmatchcase(rec.kind, k) for k in self.kinds):
            return False
        meta = rec.meta
        if self.verdicts and "verdict" in meta and meta["verdict"] not in self.verdicts:
            return False
        return not (self.points and "point" in meta and meta["point"] not in self.points)

    @classmethod
    def of(cls, kinds: Iterable[str] = (), verdicts: Iterable[str] = (), points: Iterable[str] = ()) -> EventFilter:
        return cls(tuple(kinds), tuple(verdicts), tuple(points))


class NativeFormat:
    """fiveplane's own JSON event: the ledger record one to one (envelope fields, payload as stored,
    its status) plus ids for trace tools and the NIST AI RMF tags. Nothing is dropped or added from
    outside the ledger; an erased payload is ``null`` with ``payload_status: "erased"``.
    """

    name = "native"

    def format(self, rec: EvidenceRecord, ctx: FormatContext) -> list[ExportEvent]:
        tags = ctx.tags(rec)
        data: dict[str, Any] = {
            "schema": EVENT_SCHEMA,
            "uid": record_uid(ctx.origin, rec.seq),
            "origin": ctx.origin,
            "seq": rec.seq,
            "kind": rec.kind,
            "time": rec.time,
            "action_id": rec.action_id,
            "parent_id": rec.parent_id,
            "session_id": rec.session_id,
            "trace_id": trace_id_for(rec.session_id, rec.action_id),
            "span_id": span_id_for(rec.action_id) if rec.action_id else None,
            "meta": rec.meta,
            "payload": rec.payload if rec.payload_status == "ok" else None,
            "payload_status": rec.payload_status,
            "nist_ai_rmf": tags.as_dict(),
        }
        return [ExportEvent(data["uid"], rec.seq, rec.kind, rec.time, data)]
