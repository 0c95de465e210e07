"""One governed step as the formats see it: a record plus the intent (and decision) of its action.

Everything here comes from the ledger as stored: arguments after the data plane's redaction, tool
results as digests only. An erased or altered payload contributes nothing but its envelope.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .._ledger import EvidenceRecord
from ._read import ActionIndex

__all__ = ["Step", "step_for"]


def _str(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _payload(rec: EvidenceRecord | None, key: str) -> dict[str, Any]:
    if rec is None or rec.payload_status != "ok" or not isinstance(rec.payload, dict):
        return {}
    value = rec.payload.get(key)
    return value if isinstance(value, dict) else {}


@dataclass
class Step:
    """The facts of one record, with its action's intent (who, what, why) folded in."""

    record: EvidenceRecord
    intent: EvidenceRecord | None = None
    decision_record: EvidenceRecord | None = None
    action: dict[str, Any] = field(default_factory=dict)
    decision: dict[str, Any] = field(default_factory=dict)

    @property
    def meta(self) -> dict[str, Any]:
        return self.record.meta

    def _m(self, key: str) -> Any:
        """A field from this record's envelope, else from its decision's or intent's envelope."""
        for rec in (self.record, self.decision_record, self.intent):
            if rec is not None and key in rec.meta:
                return rec.meta[key]
        return None

    @property
    def point(self) -> str | None:
        return _str(self.action.get("point") or self._m("point"))

    @property
    def tool(self) -> str | None:
        return _str(self.action.get("tool") or self._m("tool"))

    @property
    def connector(self) -> str | None:
        return _str(self.action.get("connector") or self._m("connector"))

    @property
    def action_class(self) -> str | None:
        return _str(self.action.get("action_class") or self._m("class"))

    @property
    def agent(self) -> str | None:
        agents = self.agents
        return agents[-1] if agents else _str(self._m("agent"))

    @property
    def principal(self) -> list[dict[str, Any]]:
        chain = self.action.get("principal")
        if isinstance(chain, list) and chain:
            return [p for p in chain if isinstance(p, dict)]
        agent = self._m("agent")
        return [{"kind": "agent", "id": agent}] if agent else []

    @property
    def user(self) -> dict[str, Any] | None:
        return next((p for p in self.principal if p.get("kind") == "user"), None)

    @property
    def agents(self) -> list[str]:
        return [str(p.get("id")) for p in self.principal if p.get("kind") == "agent"]

    @property
    def principal_text(self) -> str:
        return " > ".join(f"{p.get('kind')}:{p.get('id')}" for p in self.principal)

    @property
    def verdict(self) -> str | None:
        return _str(self.decision.get("verdict") or self._m("verdict"))

    @property
    def policy_verdict(self) -> str | None:
        return _str(self.decision.get("policy_verdict") or self._m("policy_verdict"))

    @property
    def mode(self) -> str | None:
        return _str(self.decision.get("mode") or self._m("mode"))

    @property
    def rule_ids(self) -> list[str]:
        ids = self.decision.get("rule_ids")
        if ids is None:
            ids = self._m("rule_ids")
        return [str(i) for i in ids or []]

    @property
    def planes(self) -> dict[str, str]:
        planes = self._m("planes")
        return dict(planes) if isinstance(planes, dict) else {}

    @property
    def explanation(self) -> str | None:
        value = self.decision.get("explanation")
        return str(value) if value else None

    @property
    def findings(self) -> list[dict[str, Any]]:
        return [f for f in self.decision.get("findings") or [] if isinstance(f, dict)]

    @property
    def obligations(self) -> list[dict[str, Any]]:
        return [o for o in self.decision.get("obligations") or [] if isinstance(o, dict)]

    @property
    def errors(self) -> list[Any]:
        return list(self.decision.get("errors") or [])

    @property
    def policy_hash(self) -> str | None:
        return _str(self.decision.get("policy_hash") or self._m("policy_hash"))

    @property
    def policy_version(self) -> str | None:
        value = self.decision.get("policy_version")
        return str(value) if value else None

    @property
    def latency_ms(self) -> float | None:
        us = self.decision.get("duration_us")
        return round(float(us) / 1000.0, 3) if isinstance(us, int | float) else None

    @property
    def started_at(self) -> str:
        """When the step began: the action's timestamp, else the record's time."""
        ts = self.action.get("timestamp")
        return str(ts) if ts else (self.intent.time if self.intent is not None else self.record.time)

    @property
    def evaluated_at(self) -> str:
        ts = self.decision.get("evaluated_at")
        return str(ts) if ts else (self.decision_record.time if self.decision_record is not None else self.record.time)

    @property
    def capability(self) -> dict[str, Any] | None:
        """The capability token minted for the action (id, scope, expiry) — never the bearer token."""
        for o in self.obligations:
            params = o.get("params") or {}
            cap = params.get("capability")
            if isinstance(cap, dict):
                return cap
        return None

    @property
    def approval_id(self) -> str | None:
        if "approval_id" in self.meta:
            return str(self.meta["approval_id"])
        for o in self.obligations:
            params = o.get("params") or {}
            if o.get("kind") == "approval" and params.get("approval_id"):
                return str(params["approval_id"])
        return None

    @property
    def labels(self) -> list[str]:
        out: list[str] = []
        for o in self.obligations:
            if o.get("kind") == "label":
                out.extend(str(x) for x in (o.get("params") or {}).get("labels") or [])
        return sorted(set(out))

    @property
    def redacted_entities(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for o in self.obligations:
            if o.get("kind") in ("redact", "minimize"):
                for k, v in ((o.get("params") or {}).get("entities") or {}).items():
                    out[str(k)] = out.get(str(k), 0) + (int(v) if isinstance(v, int) else 1)
        return out

    @property
    def payload_status(self) -> str:
        return self.record.payload_status

    @property
    def erased(self) -> bool:
        return any(r is not None and r.payload_status == "erased" for r in (self.record, self.intent, self.decision_record))


def step_for(rec: EvidenceRecord, index: ActionIndex) -> Step:
    """The step of ``rec``: its action's intent (and, for outcomes and approvals, its decision)."""
    if rec.kind == "intent":
        return Step(rec, intent=rec, action=_payload(rec, "action"))
    # approvals are requested before the action's intent is recorded: only what was already seen
    fetch = not rec.kind.startswith("approval.")
    intent = index.latest(rec.action_id, "intent", rec.seq, fetch=fetch)
    if rec.kind == "decision":
        return Step(
            rec, intent=intent, decision_record=rec, action=_payload(intent, "action"), decision=_payload(rec, "decision")
        )
    decision = index.latest(rec.action_id, "decision", rec.seq + 1, fetch=fetch) if rec.action_id else None
    return Step(
        rec, intent=intent, decision_record=decision, action=_payload(intent, "action"), decision=_payload(decision, "decision")
    )
