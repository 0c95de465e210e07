"""ArcSight CEF lines, and their RFC 5424 syslog envelope.

``CEF:0|fiveplane|fiveplane|<version>|<signature id>|<name>|<severity>|<extension>``: the signature
id is the first rule id (or the record kind), the name a short summary, the severity 0-10 from the
verdict and the worst finding. Extension keys: ``rt`` (epoch ms), ``act`` (verdict), ``outcome``,
``cat`` (record kind), ``externalId`` (event uid), ``deviceExternalId`` (ledger origin),
``suser`` / ``spriv`` (the human user and roles), ``sproc`` (the agent), ``destinationServiceName``
(the connector), ``msg`` (the explanation), ``reason``, ``cs1`` rule ids, ``cs2`` tool, ``cs3``
policy hash, ``cs4`` session id, ``cs5`` NIST AI RMF categories, ``cs6`` action id, ``cn1``
sequence number, ``cn2`` decision latency (µs). Arguments are never put in CEF lines (one line per
event, often size-limited): a SIEM that needs them takes the OCSF or native JSON export.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from .._ledger import EvidenceRecord
from ._format import ExportEvent, FormatContext
from ._read import parse_time, record_uid, time_ms
from ._step import step_for

__all__ = ["CefFormat", "cef_escape_extension", "cef_escape_header", "syslog_frame", "syslog_line"]

_VERDICT_SEV = {"allow": 2, "modify": 4, "narrow": 4, "defer": 5, "require_approval": 6, "block": 8}
_FINDING_SEV = {"info": 1, "warning": 4, "high": 8, "critical": 10, "error": 7}
# RFC 5424 severities: 3 error, 4 warning, 5 notice, 6 informational
_SYSLOG_SEV = {"block": 4, "require_approval": 5, "defer": 5}


def cef_escape_header(value: Any) -> str:
    """Header fields escape ``\\`` and ``|`` (and cannot hold line breaks)."""
    s = str(value).replace("\\", "\\\\").replace("|", "\\|")
    return s.replace("\r", " ").replace("\n", " ")


def cef_escape_extension(value: Any) -> str:
    """Extension values escape ``\\``, ``=`` and line breaks."""
    s = str(value).replace("\\", "\\\\").replace("=", "\\=")
    return s.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def _ext(pairs: Iterable[tuple[str, Any]]) -> str:
    return " ".join(f"{k}={cef_escape_extension(v)}" for k, v in pairs if v is not None and v != "" and v != [])


class CefFormat:
    """One CEF line per exported record (intent and enforcement records are folded into their
    decision, as in the OCSF format). ``syslog`` wraps the line in an RFC 5424 header."""

    name = "cef"

    def __init__(self, *, syslog: bool = False, app_name: str = "fiveplane", facility: int = 13) -> None:
        if not 0 <= facility <= 23:
            raise ValueError("syslog facility must be 0-23")
        self.syslog = syslog
        self.app_name = app_name
        self.facility = facility

    def format(self, rec: EvidenceRecord, ctx: FormatContext) -> list[ExportEvent]:
        if rec.kind in ("intent", "enforcement"):
            return []
        uid = record_uid(ctx.origin, rec.seq)
        step = step_for(rec, ctx.index)
        tags = ctx.tags(rec)
        meta = rec.meta
        verdict = step.verdict if rec.kind == "decision" else None
        status = meta.get("status") if rec.kind == "outcome" else None
        rules = step.rule_ids if rec.kind == "decision" else []
        what = step.tool or step.point or ""
        if rec.kind == "decision":
            name = f"{what} {verdict}".strip()
            sev = max(
                [_VERDICT_SEV.get(str(step.policy_verdict or verdict), 5)]
                + [_FINDING_SEV.get(str(f.get("severity")), 1) for f in step.findings]
            )
        elif rec.kind == "outcome":
            name = f"{what} outcome {status}".strip()
            sev = 6 if status in ("error", "unknown") else 2
        elif rec.kind.startswith("approval."):
            name = f"{rec.kind} {meta.get('tool') or what}".strip()
            sev = 5 if rec.kind in ("approval.denied", "approval.expired") else 3
        else:
            name = rec.kind
            sev = 3
        signature = rules[0] if rules else rec.kind
        user = step.user
        approver = meta.get("decided_by") if rec.kind.startswith("approval.") else None
        ext = _ext(
            [
                ("rt", time_ms(rec.time)),
                ("act", verdict or (rec.kind.partition(".")[2] if rec.kind.startswith("approval.") else None)),
                ("outcome", status),
                ("cat", rec.kind),
                ("externalId", uid),
                ("deviceExternalId", ctx.origin),
                ("suser", str(user.get("id")) if user else meta.get("requester")),
                ("spriv", ",".join(str(r) for r in user.get("roles") or []) if user else None),
                ("duser", approver),
                ("sproc", step.agent),
                ("destinationServiceName", step.connector),
                ("msg", step.explanation if rec.kind == "decision" else None),
                (
                    "reason",
                    f"policy {step.policy_verdict} in {step.mode} mode" if verdict and step.policy_verdict != verdict else None,
                ),
                ("cs1Label", "ruleIds" if rules else None),
                ("cs1", ",".join(rules) if rules else None),
                ("cs2Label", "tool" if step.tool else None),
                ("cs2", step.tool),
                ("cs3Label", "policyHash" if step.policy_hash and rec.kind == "decision" else None),
                ("cs3", step.policy_hash if rec.kind == "decision" else None),
                ("cs4Label", "sessionId" if rec.session_id else None),
                ("cs4", rec.session_id),
                ("cs5Label", "nistAiRmf"),
                ("cs5", ",".join(tags.categories)),
                ("cs6Label", "actionId" if rec.action_id else None),
                ("cs6", rec.action_id),
                ("cn1Label", "seq"),
                ("cn1", rec.seq),
                ("cn2Label", "latencyMicros" if step.latency_ms is not None and rec.kind == "decision" else None),
                ("cn2", int((step.latency_ms or 0) * 1000) if step.latency_ms is not None and rec.kind == "decision" else None),
                ("fname", "erased" if rec.payload_status == "erased" else None),
            ]
        )
        line = "|".join(
            [
                "CEF:0",
                "fiveplane",
                "fiveplane",
                cef_escape_header(ctx.product_version),
                cef_escape_header(signature),
                cef_escape_header(name),
                str(min(10, max(0, sev))),
                ext,
            ]
        )
        if self.syslog:
            severity = _SYSLOG_SEV.get(str(verdict), 3 if status in ("error", "unknown") else 6)
            line = syslog_line(
                line,
                facility=self.facility,
                severity=severity,
                timestamp=parse_time(rec.time),
                hostname=str(meta.get("writer", "")).partition(":")[0] or ctx.host,
                app_name=self.app_name,
                msgid=rec.kind,
            )
        return [ExportEvent(uid, rec.seq, rec.kind, rec.time, {}, line)]


def _header_token(value: str, limit: int) -> str:
    """RFC 5424 header fields: printable US-ASCII without spaces, bounded, ``-`` when empty."""
    s = "".join(ch for ch in value if 33 <= ord(ch) <= 126)[:limit]
    return s or "-"


def syslog_line(
    msg: str,
    *,
    facility: int = 13,
    severity: int = 6,
    timestamp: datetime | None = None,
    hostname: str = "-",
    app_name: str = "fiveplane",
    procid: str = "-",
    msgid: str = "-",
) -> str:
    """An RFC 5424 message: ``<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID - MSG`` (no structured data)."""
    ts = timestamp.isoformat(timespec="microseconds").replace("+00:00", "Z") if timestamp else "-"
    head = " ".join(
        [
            f"<{facility * 8 + severity}>1",
            ts,
            _header_token(hostname, 255),
            _header_token(app_name, 48),
            _header_token(procid, 128),
            _header_token(msgid, 32),
            "-",
        ]
    )
    return f"{head} {msg}"


def syslog_frame(message: str) -> bytes:
    """Octet-counting framing for syslog over TCP / TLS (RFC 6587 §3.4.1, RFC 5425 §4.3)."""
    data = message.encode("utf-8")
    return str(len(data)).encode() + b" " + data
