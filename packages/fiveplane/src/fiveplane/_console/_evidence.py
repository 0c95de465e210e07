"""What the console reads from the evidence ledger: stories, provenance, session timelines, verify, receipts."""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from .._ledger._errors import LedgerError
from .._ledger._reconstruct import ActionStory, EvidenceRecord, TimelineFilter
from .._ledger._sink import Ledger
from .._ledger._verify import VerifyReport

__all__ = ["Evidence", "Provenance", "SessionStep", "VerifyStatus"]

_SOURCE = re.compile(r"\(action ([0-9A-Za-z_-]{4,64})\)")


@dataclass
class Provenance:
    """One tainted value of a decision: what it is, which rule caught it, which step brought it in."""

    message: str
    rule_id: str | None
    verdict: str | None
    source_action_id: str | None
    """The full id of the untrusted step (resolved from the finding's prefix within the session)."""
    source_tool: str | None


@dataclass
class SessionStep:
    """One action of a session, as the ledger tells it."""

    action_id: str
    time: str
    point: str | None
    tool: str | None
    verdict: str | None
    rule_ids: list[str]
    kinds: list[str]
    findings: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    outcome: str | None = None
    parent_id: str | None = None


@dataclass
class VerifyStatus:
    report: VerifyReport | None
    checked_at: float | None
    error: str | None = None

    @property
    def ok(self) -> bool | None:
        return None if self.report is None else self.report.ok


class Evidence:
    """Reads one ledger for the console (every call blocks: run it off the event loop)."""

    def __init__(self, ledger: Ledger, *, max_session_actions: int = 300) -> None:
        self.ledger = ledger
        self.max_session_actions = max_session_actions
        self._verify_lock = threading.Lock()
        self._verified: VerifyStatus = VerifyStatus(None, None)

    # ---- one action ------------------------------------------------------------------------

    def story(self, action_id: str) -> ActionStory | None:
        return self.ledger.reconstruct(action_id)

    @staticmethod
    def decision_seq(story: ActionStory) -> int | None:
        """The seq of the latest decision record of the action (the one a receipt proves)."""
        seqs = [r.seq for r in story.records if r.kind == "decision"]
        return seqs[-1] if seqs else None

    def provenance(self, story: ActionStory) -> list[Provenance]:
        """The ``untrusted_flow`` findings of the action's decision, each with the step that brought the value."""
        out: list[Provenance] = []
        flows = [f for fs in story.planes.values() for f in fs if f.get("code") == "untrusted_flow"]
        if not flows:
            return out
        steps: list[EvidenceRecord] = []
        if story.session_id:
            steps = self.ledger.timeline(TimelineFilter(session=story.session_id, kind="intent"), limit=None)
        for f in flows:
            message = str(f.get("message", ""))
            m = _SOURCE.search(message)
            source: EvidenceRecord | None = None
            if m:
                source = next((r for r in steps if r.action_id and r.action_id.startswith(m.group(1))), None)
            out.append(
                Provenance(
                    message=message,
                    rule_id=f.get("rule_id"),
                    verdict=f.get("verdict"),
                    source_action_id=source.action_id if source else None,
                    source_tool=source.meta.get("tool") if source else None,
                )
            )
        return out

    def receipt(self, action_id: str, seq: int | None = None) -> tuple[int, str]:
        """``(seq, receipt text)`` for the action's decision (or record ``seq`` of that action)."""
        story = self.story(action_id)
        if story is None:
            raise LedgerError(f"the ledger holds no action {action_id}")
        seqs = {r.seq for r in story.records}
        target = self.decision_seq(story) if seq is None else seq
        if target is None or target not in seqs:
            raise LedgerError(f"action {action_id} has no record {seq if seq is not None else '(decision)'}")
        return target, self.ledger.receipt(target).encode()

    # ---- a session -------------------------------------------------------------------------

    def session(self, session_id: str) -> tuple[list[SessionStep], bool]:
        """The session's actions in order, with findings per plane; ``True`` when cut at ``max_session_actions``."""
        records = self.ledger.timeline(TimelineFilter(session=session_id), limit=None)
        order: list[str] = []
        by_action: dict[str, list[EvidenceRecord]] = {}
        for r in records:
            if r.action_id is None:
                continue
            if r.action_id not in by_action:
                order.append(r.action_id)
                by_action[r.action_id] = []
            by_action[r.action_id].append(r)
        cut = len(order) > self.max_session_actions
        steps: list[SessionStep] = []
        for aid in order[: self.max_session_actions]:
            recs = by_action[aid]
            decisions = [r for r in recs if r.kind == "decision"]
            last = decisions[-1] if decisions else None
            meta = last.meta if last else recs[0].meta
            outcome = next((r.meta.get("status") for r in reversed(recs) if r.kind == "outcome"), None)
            step = SessionStep(
                action_id=aid,
                time=recs[0].time,
                point=meta.get("point"),
                tool=meta.get("tool"),
                verdict=meta.get("verdict"),
                rule_ids=list(meta.get("rule_ids", [])),
                kinds=[r.kind for r in recs],
                outcome=outcome,
                parent_id=recs[0].parent_id,
            )
            if last is not None:
                story = self.story(aid)
                if story is not None:
                    step.findings = {p: fs for p, fs in story.planes.items() if fs}
            steps.append(step)
        return steps, cut

    # ---- the whole ledger ------------------------------------------------------------------

    def verify_status(self, *, refresh: bool = False, max_age: float = 30.0) -> VerifyStatus:
        """The latest full verification (an fsck of the whole ledger); recomputed when asked or when older than ``max_age``."""
        with self._verify_lock:
            cur = self._verified
            stale = cur.checked_at is None or time.time() - cur.checked_at > max_age
            if refresh or stale:
                try:
                    self._verified = VerifyStatus(self.ledger.verify(), time.time())
                except Exception as exc:  # noqa: BLE001 - shown as a failed verification, never as OK
                    self._verified = VerifyStatus(None, time.time(), f"{type(exc).__name__}: {exc}")
            return self._verified

    def cached_verify(self) -> VerifyStatus:
        return self._verified

    def recent_sessions(self, limit: int = 30) -> list[tuple[str, str]]:
        """``(session id, last time)`` of the sessions with the most recent entries."""
        seen: dict[str, str] = {}
        for r in reversed(self.ledger.timeline(TimelineFilter(), limit=2000)):
            if r.session_id and r.session_id not in seen:
                seen[r.session_id] = r.time
                if len(seen) >= limit:
                    break
        return list(seen.items())
