"""The evidence interface the mediator records through (the ledger implements it)."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ._actions import Action, canonical_json
from ._clock import utcnow
from ._decisions import Decision

__all__ = ["EvidenceSink", "Outcome", "OutcomeStatus", "digest_value", "jsonable"]


class OutcomeStatus(StrEnum):
    SUCCESS = "success"
    ERROR = "error"
    BLOCKED = "blocked"
    APPROVAL_PENDING = "approval_pending"
    APPROVAL_GRANTED = "approval_granted"
    APPROVAL_DENIED = "approval_denied"
    DEFERRED = "deferred"
    UNKNOWN = "unknown"
    """The process died mid-call (found by recovery, never written by a live caller)."""


class Outcome(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    action_id: str
    status: OutcomeStatus
    result_digest: str | None = None
    """SHA-256 of the canonical result, never the result itself."""
    error: str | None = None
    duration_ms: float | None = None
    detail: dict[str, Any] = Field(default_factory=dict)
    recorded_at: datetime = Field(default_factory=utcnow)


def jsonable(value: Any, *, convert: Callable[[Any], Any] | None = None, strict: bool = False, _depth: int = 0) -> Any:
    """A JSON value for anything an agent step may carry (what an Action's content may hold).

    Non-finite floats become ``None`` (RFC 8785 has no NaN) — or, with ``strict=True`` (the
    arguments a tool will run with: what is decided must be what runs), raise ``ValueError``;
    pydantic models their JSON dump, sets and tuples lists, unknown objects their ``repr``; nesting
    deeper than 20 is cut to a ``repr``. ``convert(value)`` may handle framework types first
    (return ``NotImplemented`` to decline).
    """
    if _depth > 20:
        return repr(value)
    if value is None or isinstance(value, (str, bool, int)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        if strict:
            raise ValueError(f"{value!r} is not a finite number (JSON has no NaN or Infinity)")
        return None
    if convert is not None:
        converted = convert(value)
        if converted is not NotImplemented:
            return jsonable(converted, convert=convert, strict=strict, _depth=_depth + 1)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v, convert=convert, strict=strict, _depth=_depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [jsonable(v, convert=convert, strict=strict, _depth=_depth + 1) for v in value]
    dump = getattr(value, "model_dump", None)
    if callable(dump):
        try:
            return jsonable(dump(mode="json"), convert=convert, strict=strict, _depth=_depth + 1)
        except Exception:  # noqa: BLE001 - a model that cannot dump itself is described, not dropped
            return repr(value)
    return repr(value)


def digest_value(value: Any) -> str:
    """SHA-256 of a value's canonical JSON (falls back to ``repr`` for non-JSON values)."""
    try:
        data = canonical_json(value)
    except Exception:  # noqa: BLE001 - any non-JSON value is digested by its repr
        data = repr(value).encode("utf-8", "replace")
    return "sha256:" + hashlib.sha256(data).hexdigest()


class EvidenceSink(Protocol):
    """Receives every decision and outcome. Raising from ``record_decision`` fails the action closed."""

    def record_decision(self, action: Action, decision: Decision, *, durable: bool) -> None: ...

    def record_outcome(self, action: Action, outcome: Outcome, *, durable: bool) -> None: ...

    async def arecord_decision(self, action: Action, decision: Decision, *, durable: bool) -> None: ...

    async def arecord_outcome(self, action: Action, outcome: Outcome, *, durable: bool) -> None: ...
