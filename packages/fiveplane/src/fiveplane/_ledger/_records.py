"""Evidence records: what each mediation point leaves in the ledger, and the leaf envelope format.

A record is two parts:

* the **envelope** — hashed into the Merkle leaf and never erasable: a version byte ``0x01`` followed
  by the RFC 8785 canonical JSON of ``{"schema", "origin", "id", "kind", "time", "action_id",
  "parent_id", "session_id", "meta", "payload"}``. ``meta`` holds only identifiers and verdicts (no
  arguments, content, intent text or user identities) so erasing a payload removes personal data.
  ``payload`` is ``{"digest": "sha256:<hex of SHA-256(salt || body)>", "size": n}``.
* the **payload** — the full evidence (the action as stored, the decision with every plane's
  findings, the outcome...), as JSON bytes in a separate table with its random 16-byte salt. Erasing
  it (a data-protection request) deletes body and salt; the envelope, hence every proof, stays.

Kinds: ``intent`` (the action as stored after redaction: principal chain, declared intent, tool,
arguments), ``decision`` (verdict, rule ids, findings per plane, obligations, policy hash,
explanation), ``enforcement`` (obligations to apply, redactions, token id and scope), ``outcome``
(success with a result digest, error, blocked, approval pending/granted/denied, deferred, unknown),
``erasure`` (which payloads were erased) and namespaced custom kinds (``identity.grant``...) written
through :meth:`Ledger.record_event`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from .._actions import Action, MediationPoint, canonical_json, plain_json
from .._decisions import Decision, ObligationKind
from .._entropy import random_bytes
from .._evidence import Outcome, digest_value
from ._merkle import hash_leaf

__all__ = [
    "ENVELOPE_VERSION",
    "SCHEMA",
    "PendingRecord",
    "RecordKind",
    "action_records",
    "decode_envelope",
    "make_record",
    "outcome_record",
    "payload_digest",
    "validate_custom_kind",
]

ENVELOPE_VERSION = 1
SCHEMA = "fiveplane.evidence/1"


class RecordKind(StrEnum):
    INTENT = "intent"
    DECISION = "decision"
    ENFORCEMENT = "enforcement"
    OUTCOME = "outcome"
    ERASURE = "erasure"


_CUSTOM_KIND = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")


def validate_custom_kind(kind: str) -> str:
    """Custom kinds are namespaced (``plane.event``) and never one of the core kinds."""
    if kind in RecordKind.__members__.values() or not _CUSTOM_KIND.fullmatch(kind) or len(kind) > 64:
        raise ValueError(f"event kind {kind!r} must be namespaced like 'identity.grant_changed' (lowercase, dotted, ≤ 64 chars)")
    return kind


@dataclass(slots=True)
class PendingRecord:
    """A record ready to be sequenced: its envelope and leaf hash are final."""

    kind: str
    action_id: str | None
    parent_id: str | None
    session_id: str | None
    envelope: bytes
    leaf_hash: bytes
    salt: bytes | None
    body: bytes | None


def payload_digest(salt: bytes, body: bytes) -> str:
    return "sha256:" + hashlib.sha256(salt + body).hexdigest()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")[:-6] + "Z"


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"), default=repr).encode("utf-8")


def make_record(
    origin: str,
    kind: str,
    meta: dict[str, Any],
    payload: Any = None,
    *,
    action_id: str | None = None,
    parent_id: str | None = None,
    session_id: str | None = None,
    time: str | None = None,
) -> PendingRecord:
    """Build the envelope (canonical JSON, RFC 8785) and leaf hash of one record."""
    kind = str(kind)  # a RecordKind member is written as its value: a plain str takes the fast encoder
    rand = random_bytes(32)  # record id (16 bytes) and payload salt (16 bytes), from the process's CSPRNG pool
    env: dict[str, Any] = {
        "schema": SCHEMA,
        "origin": origin,
        "id": rand[:16].hex(),
        "kind": kind,
        "time": time or _now(),
        "meta": meta,
    }
    if action_id is not None:
        env["action_id"] = action_id
    if parent_id is not None:
        env["parent_id"] = parent_id
    if session_id is not None:
        env["session_id"] = session_id
    salt = body = None
    if payload is not None:
        body = _dumps(payload)
        salt = rand[16:]
        env["payload"] = {"digest": payload_digest(salt, body), "size": len(body)}
    try:
        # everything but meta and the caller's ids is built here from str / int values
        plain = plain_json(meta) and all(
            type(v) is str for v in (origin, kind, action_id or "", parent_id or "", session_id or "", time or "")
        )
        envelope = bytes([ENVELOPE_VERSION]) + canonical_json(env, plain=plain)
    except Exception as exc:
        raise ValueError(f"record metadata is not canonical JSON: {exc}") from exc
    return PendingRecord(kind, action_id, parent_id, session_id, envelope, hash_leaf(envelope), salt, body)


def decode_envelope(envelope: bytes) -> dict[str, Any]:
    """Parse a stored envelope (version byte + canonical JSON)."""
    if not envelope or envelope[0] != ENVELOPE_VERSION:
        raise ValueError(f"unknown envelope version {envelope[:1].hex() or 'none'}")
    value = json.loads(envelope[1:])
    if not isinstance(value, dict) or value.get("schema") != SCHEMA:
        raise ValueError("envelope is not a fiveplane evidence record")
    return value


# ---- mapping the engine's objects to records ----------------------------------------------------


def _action_meta(action: Action) -> dict[str, Any]:
    agent = action.agent
    meta: dict[str, Any] = {"point": action.point.value}
    if action.tool:
        meta["tool"] = action.tool
    if action.connector:
        meta["connector"] = action.connector
    if action.action_class is not None:
        meta["class"] = action.action_class.value
    if agent is not None:
        meta["agent"] = agent.id
    return meta


def _action_payload(action: Action, *, store_results: bool) -> dict[str, Any]:
    data = action.model_dump(mode="json", fallback=repr)
    if action.point is MediationPoint.TOOL_RESULT and not store_results and data.get("content") is not None:
        data["content_digest"] = digest_value(data["content"])
        data["content"] = None
    return data


def _planes(decision: Decision) -> dict[str, str]:
    order = ["info", "warning", "high", "critical", "error"]
    worst: dict[str, str] = {}
    for f in decision.findings:
        cur = worst.get(f.plane)
        if cur is None or order.index(f.severity.value) > order.index(cur):
            worst[f.plane] = f.severity.value
    return worst


_ENFORCED = {ObligationKind.REDACT, ObligationKind.MINIMIZE, ObligationKind.ATTENUATE}


def _token(decision: Decision) -> dict[str, Any] | None:
    """The capability token minted for the action (identity plane), from its obligations.

    The identity plane puts ``{"capability": {"token_id", "tool", "operation", "resource",
    "expires_at", "revocation_ids", ...}}`` in an ``attenuate`` obligation (never the bearer string);
    flat ``{"token_id": ..., "scope": ...}`` params are accepted too.
    """
    for o in decision.obligations:
        params = o.params
        cap = params.get("capability")
        if isinstance(cap, dict) and isinstance(cap.get("token_id"), str):
            return {"id": cap["token_id"], "plane": o.plane, "scope": {k: v for k, v in cap.items() if k != "token_id"}}
        token_id = params.get("token_id")
        if isinstance(token_id, str):
            tok: dict[str, Any] = {"id": token_id, "plane": o.plane}
            for key in ("scope", "expires_at", "operation", "resource"):
                if key in params:
                    tok[key] = params[key]
            return tok
    return None


def action_records(
    origin: str, action: Action, decision: Decision, *, store_results: bool = False, writer: str | None = None
) -> list[PendingRecord]:
    """The intent, decision and (if anything is enforced) enforcement records of one judged action."""
    base = _action_meta(action)
    time = _now()
    common = {"action_id": action.action_id, "parent_id": action.parent_action_id, "session_id": action.session_id, "time": time}
    records = [
        make_record(
            origin,
            RecordKind.INTENT,
            {**base, "purpose": action.purpose} if action.purpose else base,
            {"action": _action_payload(action, store_results=store_results)},
            **common,
        ),
    ]
    dec = decision.model_dump(mode="json", fallback=repr, exclude={"modified_arguments", "modified_content"})
    dec["arguments_modified"] = decision.modified_arguments is not None
    dec["content_modified"] = decision.modified_content is not None
    dmeta: dict[str, Any] = {
        **base,
        "verdict": decision.verdict.value,
        "policy_verdict": decision.policy_verdict.value,
        "mode": decision.mode.value,
        "rule_ids": list(decision.rule_ids),
        "planes": _planes(decision),
        "policy_hash": decision.policy_hash,
        "errors": len(decision.errors),
    }
    if writer is not None:
        dmeta["writer"] = writer
    records.append(make_record(origin, RecordKind.DECISION, dmeta, {"decision": dec}, **common))
    token = _token(decision)
    enforced = [o for o in decision.obligations if o.kind in _ENFORCED]
    if token is not None or enforced or decision.modified_arguments is not None or decision.modified_content is not None:
        emeta: dict[str, Any] = {**base, "obligations": sorted({o.kind.value for o in decision.obligations})}
        if token is not None:
            emeta["token_id"] = token["id"]
        payload = {
            "token": token,
            "obligations": [o.model_dump(mode="json", fallback=repr) for o in decision.obligations],
            "redactions": [o.model_dump(mode="json", fallback=repr) for o in enforced if o.kind is not ObligationKind.ATTENUATE],
            "arguments_modified": decision.modified_arguments is not None,
            "content_modified": decision.modified_content is not None,
        }
        records.append(make_record(origin, RecordKind.ENFORCEMENT, emeta, payload, **common))
    return records


def outcome_record(origin: str, action: Action, outcome: Outcome) -> PendingRecord:
    meta = {**_action_meta(action), "status": outcome.status.value}
    if outcome.duration_ms is not None:
        meta["duration_ms"] = round(outcome.duration_ms, 3)
    return make_record(
        origin,
        RecordKind.OUTCOME,
        meta,
        {"outcome": outcome.model_dump(mode="json", fallback=repr)},
        action_id=outcome.action_id,
        parent_id=action.parent_action_id,
        session_id=action.session_id,
    )
