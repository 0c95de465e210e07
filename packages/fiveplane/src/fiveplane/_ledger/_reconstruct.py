"""Reading evidence back: the timeline (``audit show``) and the story of one action (``audit reconstruct``).

Everything here is rebuilt from the ledger alone (evidence sufficiency, DESIGN.md §6.4): who acted
(principal chain), what (point, tool, class, arguments as stored after redaction), why (declared
intent and purpose), the decision with each plane's findings, the rule ids and policy hash, the
enforcement (obligations, redactions, token id and scope) and the outcome. Payloads are checked
against the salted digest in their (hashed) envelope before they are trusted; an erased payload
leaves the envelope's identifiers and verdicts.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, Field

from ._records import RecordKind, decode_envelope, payload_digest
from ._store import Store

__all__ = ["ActionStory", "EvidenceRecord", "TimelineFilter", "read_records", "reconstruct", "timeline"]


class EvidenceRecord(BaseModel):
    """One ledger entry, decoded."""

    seq: int
    kind: str
    time: str
    action_id: str | None = None
    parent_id: str | None = None
    session_id: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)
    payload: Any = None
    payload_status: str = "none"
    """``ok`` | ``erased`` | ``mismatch`` (payload altered: not used) | ``none`` (the record has no payload)."""


class ActionStory(BaseModel):
    """Who, what, why, decision per plane, enforcement and outcome of one action, from the ledger."""

    action_id: str
    session_id: str | None = None
    who: list[dict[str, Any]] = Field(default_factory=list)
    what: dict[str, Any] = Field(default_factory=dict)
    why: dict[str, Any] = Field(default_factory=dict)
    decision: dict[str, Any] | None = None
    planes: dict[str, list[dict[str, Any]]] = Field(default_factory=dict)
    obligations: list[dict[str, Any]] = Field(default_factory=list)
    enforcement: dict[str, Any] | None = None
    token: dict[str, Any] | None = None
    outcomes: list[dict[str, Any]] = Field(default_factory=list)
    results: list[ActionStory] = Field(default_factory=list)
    """Result actions (tool_result point) answering this tool call, each with its own decision."""
    records: list[EvidenceRecord] = Field(default_factory=list)
    erased: bool = False
    tampered: list[int] = Field(default_factory=list)
    """Seqs whose payload does not match its envelope (their payload is ignored)."""


def _decode(row: Any, payloads: dict[int, tuple[bytes, bytes]]) -> EvidenceRecord:
    seq = int(row.seq)
    env = decode_envelope(bytes(row.envelope))
    rec = EvidenceRecord(
        seq=seq,
        kind=env.get("kind", "?"),
        time=env.get("time", ""),
        action_id=env.get("action_id"),
        parent_id=env.get("parent_id"),
        session_id=env.get("session_id"),
        meta=env.get("meta", {}),
    )
    pd = env.get("payload")
    if pd is None:
        return rec
    stored = payloads.get(seq)
    if stored is None:
        rec.payload_status = "erased"
    elif payload_digest(*stored) != pd.get("digest"):
        rec.payload_status = "mismatch"
    else:
        rec.payload_status = "ok"
        rec.payload = json.loads(stored[1])
    return rec


def read_records(store: Store, ledger_id: int, rows: list[Any]) -> list[EvidenceRecord]:
    with store.read_conn() as conn, conn.begin():
        payloads = store.payloads_for(ledger_id, [int(r.seq) for r in rows], conn)
    return [_decode(r, payloads) for r in rows]


def _story(action_id: str, records: list[EvidenceRecord]) -> ActionStory:
    story = ActionStory(action_id=action_id, records=records)
    for rec in records:
        story.session_id = story.session_id or rec.session_id
        if rec.payload_status == "erased":
            story.erased = True
        if rec.payload_status == "mismatch":
            story.tampered.append(rec.seq)
        data = rec.payload if isinstance(rec.payload, dict) else {}
        meta = rec.meta
        if rec.kind == RecordKind.INTENT:
            action = data.get("action") or {}
            story.who = list(action.get("principal") or []) or (
                [{"kind": "agent", "id": meta["agent"]}] if "agent" in meta else []
            )
            story.what = {
                "point": action.get("point", meta.get("point")),
                "tool": action.get("tool", meta.get("tool")),
                "connector": action.get("connector", meta.get("connector")),
                "class": action.get("action_class", meta.get("class")),
                "arguments": action.get("arguments"),
                "content": action.get("content"),
                "content_digest": action.get("content_digest"),
                "labels": action.get("labels"),
                "parent_action_id": action.get("parent_action_id", rec.parent_id),
                "timestamp": action.get("timestamp", rec.time),
            }
            story.why = {"intent": action.get("intent"), "purpose": action.get("purpose", meta.get("purpose"))}
        elif rec.kind == RecordKind.DECISION:
            dec = data.get("decision") or {}
            story.decision = {
                "verdict": dec.get("verdict", meta.get("verdict")),
                "policy_verdict": dec.get("policy_verdict", meta.get("policy_verdict")),
                "mode": dec.get("mode", meta.get("mode")),
                "rule_ids": dec.get("rule_ids", meta.get("rule_ids", [])),
                "explanation": dec.get("explanation"),
                "policy_hash": dec.get("policy_hash", meta.get("policy_hash")),
                "policy_version": dec.get("policy_version"),
                "errors": dec.get("errors", []),
                "evaluated_at": dec.get("evaluated_at", rec.time),
                "arguments_modified": dec.get("arguments_modified"),
                "content_modified": dec.get("content_modified"),
            }
            planes: dict[str, list[dict[str, Any]]] = {p: [] for p in meta.get("planes", {})}
            for f in dec.get("findings", []):
                planes.setdefault(f.get("plane", "?"), []).append(f)
            story.planes = planes
            story.obligations = list(dec.get("obligations", []))
        elif rec.kind == RecordKind.ENFORCEMENT:
            story.enforcement = data or {"obligations": meta.get("obligations", [])}
            token = data.get("token") or ({"id": meta["token_id"]} if "token_id" in meta else None)
            story.token = token
        elif rec.kind == RecordKind.OUTCOME:
            out = dict(data.get("outcome") or {"status": meta.get("status"), "duration_ms": meta.get("duration_ms")})
            out["seq"] = rec.seq
            story.outcomes.append(out)
    return story


def reconstruct(store: Store, ledger_id: int, action_id: str) -> ActionStory | None:
    """The story of one action (and of the result actions that answer it), or ``None``."""
    rows = store.rows_for_actions(ledger_id, [action_id])
    if not rows:
        return None
    story = _story(action_id, read_records(store, ledger_id, rows))
    children = store.rows_for_actions(ledger_id, [action_id], children=True)
    by_action: dict[str, list[Any]] = {}
    for r in children:
        if r.action_id and r.action_id != action_id and r.kind != RecordKind.OUTCOME:
            by_action.setdefault(r.action_id, []).append(r)
    for child_id in by_action:
        child_rows = store.rows_for_actions(ledger_id, [child_id])
        story.results.append(_story(child_id, read_records(store, ledger_id, child_rows)))
    return story


class TimelineFilter(BaseModel):
    session: str | None = None
    agent: str | None = None
    tool: str | None = None
    verdict: str | None = None
    kind: str | None = None
    action: str | None = None

    def match(self, env: dict[str, Any]) -> bool:
        meta = env.get("meta", {})
        if self.session is not None and env.get("session_id") != self.session:
            return False
        if self.agent is not None and meta.get("agent") != self.agent:
            return False
        if self.tool is not None and meta.get("tool") != self.tool:
            return False
        if self.kind is not None and env.get("kind") != self.kind:
            return False
        if self.action is not None and not str(env.get("action_id", "")).startswith(self.action):
            return False
        return self.verdict is None or meta.get("verdict") == self.verdict


def timeline(
    store: Store, ledger_id: int, flt: TimelineFilter, *, limit: int | None = 50, newest_first: bool = False
) -> Iterator[EvidenceRecord]:
    """Matching entries without their payloads (the last ``limit`` ones, oldest first unless ``newest_first``)."""
    picked: list[EvidenceRecord] = []
    for r in store.iter_leaves(ledger_id, descending=True):
        env = decode_envelope(bytes(r.envelope))
        if not flt.match(env):
            continue
        picked.append(
            EvidenceRecord(
                seq=int(r.seq),
                kind=env.get("kind", "?"),
                time=env.get("time", ""),
                action_id=env.get("action_id"),
                parent_id=env.get("parent_id"),
                session_id=env.get("session_id"),
                meta=env.get("meta", {}),
                payload_status="ok" if env.get("payload") else "none",
            )
        )
        if limit is not None and len(picked) >= limit:
            break
    yield from (picked if newest_first else reversed(picked))
