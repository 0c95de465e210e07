"""OCSF 1.8.0 events: API Activity (class 6003) for governed steps, Base Event (class 0) for the rest.

Mapping of one ledger record:

* ``decision`` → API Activity with the **security_control** profile: ``action_id`` / ``disposition_id``
  from the verdict (allow → Allowed/Allowed, block → Denied/Blocked, require_approval and defer →
  Denied/Delayed, modify → Modified/Corrected, narrow → Modified/Custom Action; a shadow or warn
  divergence → Observed/Detected), ``policy`` (hash, version, rule ids, mode), ``authorizations``
  per rule, ``is_alert`` for an enforced block; ``actor`` = the principal chain (the human user with
  roles as groups, the agent as the app, the session); ``api`` = the tool (``operation``), its
  connector (``service``), the action id and the arguments as stored after redaction (``request``);
  the **ai_operation** profile's ``message_context`` (the role of the step: user input, assistant
  output, tool, retriever, agent); the **trace** profile (trace id per session, span per action).
  The action's ``intent`` record is folded in (who, what, why); its ``enforcement`` record (token
  id and scope, redactions) repeats the decision's obligations and is folded in too.
* ``outcome`` → API Activity with ``status_id`` (Success / Failure) and ``api.response`` (error, result
  digest — never the result), ``duration``.
* ``approval.*`` → API Activity: requested → Delayed, approved / consumed → Allowed / Approved,
  denied / expired → Denied / Rejected; the approver is the actor.
* anything else (``erasure``, ``identity.*``, ``langchain.*``…) → Base Event with the record in ``unmapped``.

Every event carries ``metadata.uid`` (``<origin>:<seq>``), ``metadata.sequence``,
``metadata.correlation_uid`` (the session), the NIST AI RMF tags in ``metadata.labels`` and
``unmapped.fiveplane`` (the record's kind, envelope metadata, findings per plane, obligations and
payload status). Validated against the official schema (PyPI ``ocsf-json-schema``) in the tests.
"""

from __future__ import annotations

import re
from typing import Any

from .._ledger import EvidenceRecord
from ._format import ExportEvent, FormatContext
from ._read import record_uid, span_id_for, time_ms, trace_id_for
from ._step import Step, step_for

__all__ = ["OCSF_VERSION", "OcsfFormat", "ocsf_profiles"]

OCSF_VERSION = "1.8.0"

API_ACTIVITY = 6003
BASE_EVENT = 0

# activity_id of API Activity: 1 Create, 2 Read, 3 Update, 4 Delete, 99 Other, 0 Unknown
_ACTIVITY = {"read": (2, "Read"), "modify": (3, "Update"), "invoke": (99, "Invoke")}
_ACTION = {0: "Unknown", 1: "Allowed", 2: "Denied", 3: "Observed", 4: "Modified", 99: "Other"}
_DISPOSITION = {
    1: "Allowed",
    2: "Blocked",
    7: "Custom Action",
    8: "Approved",
    11: "Corrected",
    14: "Delayed",
    15: "Detected",
    25: "Rejected",
    99: "Other",
}
# verdict → (action_id, disposition_id)
_VERDICT = {
    "allow": (1, 1),
    "modify": (4, 11),
    "narrow": (4, 7),
    "defer": (2, 14),
    "require_approval": (2, 14),
    "block": (2, 2),
}
_SEVERITY = {0: "Unknown", 1: "Informational", 2: "Low", 3: "Medium", 4: "High", 5: "Critical", 6: "Fatal", 99: "Other"}
_FINDING_SEVERITY = {"info": 1, "warning": 2, "high": 4, "critical": 5, "error": 4}
_VERDICT_SEVERITY = {"allow": 1, "modify": 2, "narrow": 2, "defer": 3, "require_approval": 3, "block": 4}
# message_context.ai_role_id: 1 User, 2 Assistant, 3 Tool, 4 Agent, 5 Orchestrator, 6 Retriever
_ROLE = {
    "input": (1, "User"),
    "model_output": (2, "Assistant"),
    "final_output": (2, "Assistant"),
    "tool_call": (3, "Tool"),
    "tool_result": (3, "Tool"),
    "retrieval": (6, "Retriever"),
    "delegation": (4, "Agent"),
}
_APPROVAL = {
    "requested": (99, 14, "Approval requested"),
    "approved": (1, 8, None),
    "consumed": (1, 8, "Approval used"),
    "denied": (2, 25, None),
    "expired": (2, 25, "Approval expired"),
}
_STATUS = {"success": 1, "error": 2, "blocked": 2, "approval_denied": 2}


def ocsf_profiles(class_uid: int) -> list[str]:
    """The OCSF profiles our events of ``class_uid`` use (and list in ``metadata.profiles``)."""
    return ["ai_operation", "security_control", "trace"] if class_uid == API_ACTIVITY else []


_OPAQUE = frozenset({"data", "unmapped", "meta", "principal", "findings", "obligations", "capability", "errors"})


def _clean(value: Any) -> Any:
    """Drop ``None`` and empty containers from typed attributes (OCSF validators reject ``null`` there);
    JSON values carried as they are (``data``, ``unmapped``…) are left untouched inside."""
    if type(value) is dict:
        out: dict[str, Any] = {}
        for k, v in value.items():
            if v is None:
                continue
            if k not in _OPAQUE and (type(v) is dict or type(v) is list):
                v = _clean(v)
                if not v:
                    continue
            elif (type(v) is dict or type(v) is list) and not v:
                continue
            out[k] = v
        return out
    if type(value) is list:
        return [_clean(v) if type(v) is dict or type(v) is list else v for v in value if v is not None]
    return value


_EMAIL_T = re.compile(r"^[a-zA-Z0-9!#$%&'*+\-/=?^_`{|}~.]+@[a-zA-Z0-9-]+\.[a-zA-Z0-9-.]+$")


def _email(value: Any) -> str | None:
    """An ``email_t`` value, or nothing: a claim the data plane redacted (``<EMAIL_ADDRESS>``) is left out."""
    return value if isinstance(value, str) and _EMAIL_T.match(value) else None


class OcsfFormat:
    """OCSF 1.8.0 JSON events (see the module docstring for the mapping).

    Args:
        include_content: put the arguments as stored in the ledger (after redaction) into
            ``api.request.data``. Default on: a SIEM export loses nothing the ledger holds.
    """

    name = "ocsf"

    def __init__(self, *, include_content: bool = True) -> None:
        self.include_content = include_content

    # ---- common parts -----------------------------------------------------------------------

    def _metadata(self, rec: EvidenceRecord, ctx: FormatContext, class_uid: int, uid: str) -> dict[str, Any]:
        tags = ctx.tags(rec)
        return {
            "version": OCSF_VERSION,
            "product": {
                "name": "fiveplane",
                "vendor_name": "fiveplane",
                "version": ctx.product_version,
                "feature": {"name": "runtime governance"},
            },
            "uid": uid,
            "sequence": rec.seq,
            "log_name": ctx.origin,
            "log_provider": "fiveplane evidence ledger",
            "event_code": rec.kind,
            "correlation_uid": rec.session_id,
            "profiles": ocsf_profiles(class_uid),
            "labels": [*(f"nist_ai_rmf:{c}" for c in tags.categories), *(f"nist_ai_rmf_function:{f}" for f in tags.functions)],
            "original_time": rec.time,
        }

    def _actor(self, step: Step, *, approver: str | None = None) -> dict[str, Any]:
        user = step.user
        actor: dict[str, Any] = {}
        if approver:
            actor["user"] = {"uid": approver, "type_id": 1, "type": "User"}
        elif user is not None:
            actor["user"] = {
                "uid": str(user.get("id")),
                "type_id": 1,
                "type": "User",
                "email_addr": _email((user.get("claims") or {}).get("email")),
                "groups": [{"name": str(r), "type": "role"} for r in user.get("roles") or []],
            }
        agents = step.agents or ([str(step.meta["agent"])] if step.meta.get("agent") else [])
        if agents:
            actor["app_name"] = agents[-1]
            actor["invoked_by"] = " > ".join(agents) if len(agents) > 1 else None
        if step.record.session_id:
            actor["session"] = {"uid": step.record.session_id}
        if not actor:
            actor["app_name"] = "fiveplane"
        return actor

    def _src(self, step: Step, ctx: FormatContext) -> dict[str, Any]:
        writer = str(step._m("writer") or "")
        host = writer.partition(":")[0] or ctx.host
        return {"name": step.agent or "agent", "svc_name": "fiveplane", "hostname": host}

    def _api(self, step: Step, *, operation: str | None = None) -> dict[str, Any]:
        request: dict[str, Any] = {"uid": step.record.action_id or record_uid("", step.record.seq)}
        data: dict[str, Any] = {}
        if step.point:
            data["point"] = step.point
        if step.action_class:
            data["action_class"] = step.action_class
        if self.include_content and step.action:
            if step.action.get("arguments"):
                data["arguments"] = step.action["arguments"]
            if step.action.get("content") is not None:
                data["content"] = step.action["content"]
            if step.action.get("content_digest"):
                data["content_digest"] = step.action["content_digest"]
        if data:
            request["data"] = data
        api: dict[str, Any] = {"operation": operation or step.tool or step.point or step.record.kind, "request": request}
        if step.connector:
            api["service"] = {"name": step.connector}
        return api

    def _trace(self, step: Step) -> dict[str, Any]:
        rec = step.record
        start, end = time_ms(step.started_at), time_ms(rec.time)
        return {
            "uid": trace_id_for(rec.session_id, rec.action_id),
            "span": {
                "uid": span_id_for(rec.action_id, str(rec.seq)),
                "parent_uid": span_id_for(rec.parent_id) if rec.parent_id else None,
                "operation": f"{rec.kind} {step.tool or step.point or ''}".strip(),
                "start_time": start or end,
                "end_time": max(end, start),
            },
        }

    def _message_context(self, step: Step) -> dict[str, Any] | None:
        role = _ROLE.get(step.point or "")
        if role is None:
            return None
        return {
            "name": step.point,
            "uid": step.record.session_id,
            "ai_role_id": role[0],
            "ai_role": role[1],
            "service": {"name": step.agent or "agent"},
        }

    def _unmapped(self, step: Step, ctx: FormatContext) -> dict[str, Any]:
        rec = step.record
        tags = ctx.tags(rec)
        fp: dict[str, Any] = {
            "kind": rec.kind,
            "origin": ctx.origin,
            "seq": rec.seq,
            "meta": rec.meta,
            "payload_status": rec.payload_status,
            "principal": step.principal or None,
            "nist_ai_rmf": tags.as_dict(),
        }
        if step.intent is not None and step.intent is not rec:
            fp["intent_seq"] = step.intent.seq
            fp["intent_payload_status"] = step.intent.payload_status
        if step.action:
            fp["intent"] = step.action.get("intent")
            fp["purpose"] = step.action.get("purpose")
            fp["labels"] = step.action.get("labels") or None
        return {"fiveplane": fp}

    def _event(
        self,
        rec: EvidenceRecord,
        ctx: FormatContext,
        class_uid: int,
        activity: tuple[int, str],
        severity_id: int,
        body: dict[str, Any],
        uid: str,
    ) -> ExportEvent:
        if class_uid == API_ACTIVITY:
            head = {
                "class_uid": API_ACTIVITY,
                "class_name": "API Activity",
                "category_uid": 6,
                "category_name": "Application Activity",
                "type_uid": API_ACTIVITY * 100 + activity[0],
                "type_name": f"API Activity: {activity[1]}",
            }
        else:
            head = {
                "class_uid": BASE_EVENT,
                "class_name": "Base Event",
                "category_uid": 0,
                "category_name": "Uncategorized",
                "type_uid": 99,
                "type_name": "Base Event: Other",
            }
        event = {
            **head,
            "activity_id": activity[0],
            "activity_name": activity[1],
            "severity_id": severity_id,
            "severity": _SEVERITY[severity_id],
            "time": time_ms(rec.time),
            "metadata": self._metadata(rec, ctx, class_uid, uid),
            **body,
        }
        return ExportEvent(uid, rec.seq, rec.kind, rec.time, _clean(event))

    # ---- per kind -----------------------------------------------------------------------------

    def format(self, rec: EvidenceRecord, ctx: FormatContext) -> list[ExportEvent]:
        uid = record_uid(ctx.origin, rec.seq)
        if rec.kind in ("intent", "enforcement"):
            return []  # folded into the decision of the same action
        if rec.kind == "decision":
            return [self._decision(rec, ctx, uid)]
        if rec.kind == "outcome":
            return [self._outcome(rec, ctx, uid)]
        if rec.kind.startswith("approval."):
            return [self._approval(rec, ctx, uid)]
        return [self._other(rec, ctx, uid)]

    def _activity(self, step: Step) -> tuple[int, str]:
        if step.point == "tool_call":
            return _ACTIVITY.get(step.action_class or "", (99, "Other"))
        return (99, (step.point or "other").replace("_", " ").title())

    def _decision(self, rec: EvidenceRecord, ctx: FormatContext, uid: str) -> ExportEvent:
        step = step_for(rec, ctx.index)
        verdict = step.verdict or "block"
        policy_verdict = step.policy_verdict or verdict
        action_id, disposition_id = _VERDICT.get(verdict, (99, 99))
        divergent = policy_verdict != verdict
        if divergent and step.mode in ("shadow", "warn"):
            action_id, disposition_id = 3, 15  # the control observed, did not intervene
        severity = max(
            [_VERDICT_SEVERITY.get(policy_verdict, 3)] + [_FINDING_SEVERITY.get(str(f.get("severity")), 1) for f in step.findings]
        )
        rules = step.rule_ids
        policy = {
            "uid": step.policy_hash,
            "name": (step.policy_version or "").partition("@")[0] or "fiveplane policy",
            "version": (step.policy_version or "").partition("@")[2] or None,
            "type": "fiveplane policy pack",
            "is_applied": step.mode == "enforce",
            "desc": step.explanation,
            "data": {"rule_ids": rules, "mode": step.mode, "verdict": verdict, "policy_verdict": policy_verdict},
        }
        findings: dict[str, list[dict[str, Any]]] = {}
        for f in step.findings:
            findings.setdefault(str(f.get("plane", "?")), []).append(f)
        body: dict[str, Any] = {
            "action_id": action_id,
            "action": _ACTION[action_id],
            "disposition_id": disposition_id,
            "disposition": _DISPOSITION.get(disposition_id),
            "is_alert": verdict == "block" and step.mode == "enforce",
            "message": step.explanation or f"{verdict} {step.tool or step.point or ''}".strip(),
            "status_detail": f"verdict {verdict}" + (f" (policy: {policy_verdict}, mode {step.mode})" if divergent else ""),
            "actor": {
                **self._actor(step),
                "authorizations": [{"decision": verdict, "policy": {"uid": r, "name": r}} for r in rules] or None,
            },
            "src_endpoint": self._src(step, ctx),
            "api": self._api(step),
            "policy": policy,
            "message_context": self._message_context(step),
            "trace": self._trace(step),
            "duration": round(step.latency_ms) if step.latency_ms is not None else None,
            "start_time": time_ms(step.started_at) or None,
            "end_time": time_ms(step.evaluated_at) or None,
            "unmapped": self._unmapped(step, ctx),
        }
        cap = step.capability
        if cap is not None:
            body["api"]["token"] = {
                "uid": cap.get("token_id"),
                "type_id": 99,
                "type": "fiveplane capability",
                "created_time": time_ms(cap.get("issued_at")) or None,
                "expiration_time": time_ms(cap.get("expires_at")) or None,
            }
            if cap.get("resource"):
                body["resources"] = [{"name": str(cap["resource"]), "type": "connector resource"}]
        fp = body["unmapped"]["fiveplane"]
        fp["findings"] = findings or None
        fp["obligations"] = step.obligations or None
        fp["errors"] = step.errors or None
        fp["capability"] = cap
        fp["approval_id"] = step.approval_id
        return self._event(rec, ctx, API_ACTIVITY, self._activity(step), severity, body, uid)

    def _outcome(self, rec: EvidenceRecord, ctx: FormatContext, uid: str) -> ExportEvent:
        step = step_for(rec, ctx.index)
        out = rec.payload.get("outcome", {}) if rec.payload_status == "ok" and isinstance(rec.payload, dict) else {}
        status = str(out.get("status") or rec.meta.get("status") or "unknown")
        status_id = _STATUS.get(status, 99 if status != "unknown" else 0)
        duration = out.get("duration_ms", rec.meta.get("duration_ms"))
        error = out.get("error")
        response: dict[str, Any] = {
            "error": (error.get("type") if isinstance(error, dict) else str(error)) if error else None,
            "error_message": (error.get("message") if isinstance(error, dict) else None) if error else None,
            "message": status,
            "data": {"result_digest": out.get("result_digest"), "detail": out.get("detail") or None} if out else None,
        }
        api = self._api(step)
        api["response"] = response
        body: dict[str, Any] = {
            "status_id": status_id,
            "status": {0: "Unknown", 1: "Success", 2: "Failure", 99: "Other"}[status_id],
            "status_detail": status,
            "message": f"{step.tool or step.point or 'action'}: {status}",
            "actor": self._actor(step),
            "src_endpoint": self._src(step, ctx),
            "api": api,
            "message_context": self._message_context(step),
            "trace": self._trace(step),
            "duration": round(float(duration)) if isinstance(duration, int | float) else None,
            "unmapped": self._unmapped(step, ctx),
        }
        severity = 3 if status in ("error", "unknown") else 1
        return self._event(rec, ctx, API_ACTIVITY, self._activity(step), severity, body, uid)

    def _approval(self, rec: EvidenceRecord, ctx: FormatContext, uid: str) -> ExportEvent:
        step = step_for(rec, ctx.index)
        what = rec.kind.partition(".")[2]
        action_id, disposition_id, disposition = _APPROVAL.get(what, (99, 99, what))
        meta = rec.meta
        approver = meta.get("decided_by") if what in ("approved", "denied", "consumed") else None
        reason = rec.payload.get("reason") if rec.payload_status == "ok" and isinstance(rec.payload, dict) else None
        body: dict[str, Any] = {
            "action_id": action_id,
            "action": _ACTION[action_id],
            "disposition_id": disposition_id,
            "disposition": disposition or _DISPOSITION.get(disposition_id),
            "is_alert": False,
            "message": f"approval {meta.get('approval_id')} {what} for {meta.get('tool') or step.tool}"
            + (f" by {approver}" if approver else "")
            + (f": {reason}" if reason else ""),
            "actor": self._actor(step, approver=str(approver) if approver else None),
            "src_endpoint": self._src(step, ctx),
            "api": self._api(step, operation=str(meta.get("tool") or step.tool or rec.kind)),
            "policy": {"uid": str(meta.get("approval_id")), "name": "approval", "type": "human approval", "data": meta},
            "trace": self._trace(step),
            "unmapped": self._unmapped(step, ctx),
        }
        if step.user is None and meta.get("requester") and not approver:
            body["actor"]["user"] = {"uid": str(meta["requester"]), "type_id": 1, "type": "User"}
        return self._event(rec, ctx, API_ACTIVITY, (99, "Approval"), 3 if what in ("denied", "expired") else 1, body, uid)

    def _other(self, rec: EvidenceRecord, ctx: FormatContext, uid: str) -> ExportEvent:
        tags = ctx.tags(rec)
        body = {
            "message": f"{rec.kind} record {rec.seq}",
            "unmapped": {
                "fiveplane": {
                    "kind": rec.kind,
                    "origin": ctx.origin,
                    "seq": rec.seq,
                    "action_id": rec.action_id,
                    "session_id": rec.session_id,
                    "meta": rec.meta,
                    "payload": rec.payload if rec.payload_status == "ok" else None,
                    "payload_status": rec.payload_status,
                    "nist_ai_rmf": tags.as_dict(),
                }
            },
        }
        return self._event(rec, ctx, BASE_EVENT, (99, "Other"), 1, body, uid)
