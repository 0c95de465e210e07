"""The evidence interface the mediator records through (the ledger implements it)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field

from ._actions import Action, canonical_json
from ._decisions import Decision

__all__ = ["EvidenceSink", "Outcome", "OutcomeStatus", "digest_value"]


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
    recorded_at: datetime = Field(default_factory=lambda: datetime.now(UTC))


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
