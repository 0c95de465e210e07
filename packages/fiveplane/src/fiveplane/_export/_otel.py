"""OpenTelemetry spans following the GenAI semantic conventions, through ``opentelemetry-sdk`` exporters.

One agent session is one trace (trace id derived from the session id; the notebook frames use the
same ids). Spans:

* a governed tool call → ``execute_tool {gen_ai.tool.name}`` (kind INTERNAL) with
  ``gen_ai.operation.name = "execute_tool"``, ``gen_ai.tool.name``, ``gen_ai.tool.call.id`` (the action
  id), ``gen_ai.tool.type``, ``gen_ai.agent.name``, ``gen_ai.conversation.id`` (the session), and the
  governance attributes under ``fiveplane.*`` (verdict, rule ids, policy hash and mode, planes with
  findings, explanation, approval id, capability token id, outcome, NIST AI RMF categories). It
  starts when the action was proposed and ends with its outcome (or with the decision when the tool
  did not run: block, approval, defer). A policy block is not an error; a failing tool is
  (``error.type``, status ERROR).
* any other judged step (input, model output, tool result, retrieval, delegation, answer) →
  ``evaluate_policy {point}``, child of its tool call's span for tool results.
* approvals → ``fiveplane.approval {status}`` spans under the action's span.

Raw arguments are opt-in (``capture_content=True`` or ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``):
they are the arguments as stored in the ledger, after redaction. Tool results are never captured
(the ledger keeps only their digest, exported as ``fiveplane.outcome.result_digest``).
The OpenTelemetry SDK is imported only by :class:`OtelSink` (``pip install 'fiveplane[otel]'``).
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

from .._ledger import EvidenceRecord
from ._format import EventFilter, ExportEvent, FormatContext
from ._read import parse_time, record_uid, span_id_for, trace_id_for
from ._sinks import Delivery, FatalSinkError, Sink, TransientSinkError
from ._step import Step, step_for

__all__ = ["SEMCONV_SCHEMA_URL", "OtelFormat", "OtelSink", "capture_content_from_env"]

SEMCONV_SCHEMA_URL = "https://opentelemetry.io/schemas/1.37.0"
"""The semantic-conventions version our attribute names follow (GenAI conventions are at Development status)."""

_PROCEEDS = ("allow", "modify", "narrow")


def capture_content_from_env() -> bool:
    """The GenAI instrumentations' opt-in switch: ``OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT``."""
    value = os.environ.get("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "").strip().lower()
    return value in ("true", "1", "yes", "span_only", "span_and_event")


def _ns(ts: str | None) -> int:
    dt = parse_time(ts)
    return int(dt.timestamp() * 1_000_000_000) if dt else 0


def _attrs(values: dict[str, Any]) -> dict[str, Any]:
    """OTel attribute values: str / bool / int / float or homogeneous lists of them; drop the rest."""
    out: dict[str, Any] = {}
    for k, v in values.items():
        if v is None or v == [] or v == "":
            continue
        if isinstance(v, list | tuple):
            out[k] = [str(x) for x in v]
        elif isinstance(v, str | bool | int | float):
            out[k] = v
        else:
            out[k] = json.dumps(v, ensure_ascii=False, sort_keys=True, default=str)
    return out


class OtelFormat:
    """Span descriptions (JSON) for :class:`OtelSink`; see the module docstring for the mapping."""

    name = "otel"

    def __init__(self, *, capture_content: bool | None = None) -> None:
        self.capture_content = capture_content_from_env() if capture_content is None else capture_content

    def _governance(self, step: Step, ctx: FormatContext, rec: EvidenceRecord) -> dict[str, Any]:
        cap = step.capability or {}
        return {
            "gen_ai.agent.name": step.agent,
            "gen_ai.conversation.id": rec.session_id,
            "fiveplane.action.id": rec.action_id,
            "fiveplane.action.point": step.point,
            "fiveplane.action.class": step.action_class,
            "fiveplane.connector": step.connector,
            "fiveplane.principal": step.principal_text,
            "fiveplane.user.id": str(step.user.get("id")) if step.user else None,
            "fiveplane.decision.verdict": step.verdict,
            "fiveplane.decision.policy_verdict": step.policy_verdict,
            "fiveplane.decision.explanation": step.explanation,
            "fiveplane.decision.latency_ms": step.latency_ms,
            "fiveplane.policy.rule_ids": step.rule_ids,
            "fiveplane.policy.mode": step.mode,
            "fiveplane.policy.hash": step.policy_hash,
            "fiveplane.policy.version": step.policy_version,
            "fiveplane.planes": sorted(step.planes),
            "fiveplane.findings.count": len(step.findings) if step.decision else None,
            "fiveplane.approval.id": step.approval_id,
            "fiveplane.capability.id": cap.get("token_id"),
            "fiveplane.capability.operation": cap.get("operation"),
            "fiveplane.labels": step.labels,
            "fiveplane.ledger.origin": ctx.origin,
            "fiveplane.ledger.seq": rec.seq,
            "fiveplane.event.uid": record_uid(ctx.origin, rec.seq),
            "fiveplane.nist_ai_rmf.categories": list(ctx.tags(rec).categories),
            "fiveplane.payload_status": "erased" if step.erased else None,
        }

    def _span(
        self,
        rec: EvidenceRecord,
        name: str,
        span_id: str,
        parent: str | None,
        start: str,
        end: str,
        attributes: dict[str, Any],
        status: tuple[str, str | None] = ("UNSET", None),
    ) -> ExportEvent:
        s_ns, e_ns = _ns(start), _ns(end)
        data = {
            "name": name,
            "trace_id": trace_id_for(rec.session_id, rec.action_id),
            "span_id": span_id,
            "parent_span_id": parent,
            "kind": "INTERNAL",
            "start_time_unix_nano": min(s_ns, e_ns) if s_ns else e_ns,
            "end_time_unix_nano": e_ns,
            "attributes": _attrs(attributes),
            "status": {"code": status[0], "description": status[1]},
        }
        return ExportEvent(f"{rec.seq}", rec.seq, rec.kind, rec.time, data)

    def format(self, rec: EvidenceRecord, ctx: FormatContext) -> list[ExportEvent]:
        if rec.kind == "decision":
            step = step_for(rec, ctx.index)
            if step.point == "tool_call":
                if (step.verdict or "block") in _PROCEEDS:
                    return []  # the span ends with the tool's outcome
                return [self._tool_span(rec, step, ctx, end=rec.time, outcome=None)]
            attrs = self._governance(step, ctx, rec)
            if self.capture_content and step.action.get("content") is not None:
                attrs["fiveplane.content"] = step.action.get("content")
            parent = span_id_for(rec.parent_id) if rec.parent_id else None
            return [
                self._uid(
                    ctx,
                    self._span(
                        rec,
                        f"evaluate_policy {step.point}",
                        span_id_for(rec.action_id),
                        parent,
                        step.started_at,
                        step.evaluated_at,
                        attrs,
                    ),
                )
            ]
        if rec.kind == "outcome":
            step = step_for(rec, ctx.index)
            if step.decision_record is None and step.intent is None:
                return []
            if (step.verdict or "allow") not in _PROCEEDS:
                return []  # already emitted with its decision
            return [self._tool_span(rec, step, ctx, end=rec.time, outcome=rec)]
        if rec.kind.startswith("approval."):
            step = step_for(rec, ctx.index)
            status = rec.kind.partition(".")[2]
            attrs = {
                "gen_ai.conversation.id": rec.session_id,
                "gen_ai.tool.name": rec.meta.get("tool"),
                "fiveplane.approval.id": rec.meta.get("approval_id"),
                "fiveplane.approval.status": status,
                "fiveplane.approval.role": rec.meta.get("role"),
                "fiveplane.approval.decided_by": rec.meta.get("decided_by"),
                "fiveplane.ledger.origin": ctx.origin,
                "fiveplane.ledger.seq": rec.seq,
                "fiveplane.event.uid": record_uid(ctx.origin, rec.seq),
                "fiveplane.nist_ai_rmf.categories": list(ctx.tags(rec).categories),
            }
            span = self._span(
                rec,
                f"fiveplane.approval {status}",
                span_id_for(rec.action_id, str(rec.seq)),
                span_id_for(rec.action_id),
                rec.time,
                rec.time,
                attrs,
            )
            return [self._uid(ctx, span)]
        return []

    @staticmethod
    def _uid(ctx: FormatContext, ev: ExportEvent) -> ExportEvent:
        return ExportEvent(record_uid(ctx.origin, ev.seq), ev.seq, ev.kind, ev.time, ev.data)

    def _tool_span(
        self, rec: EvidenceRecord, step: Step, ctx: FormatContext, *, end: str, outcome: EvidenceRecord | None
    ) -> ExportEvent:
        decision_rec = step.decision_record or rec
        attrs = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": step.tool,
            "gen_ai.tool.call.id": rec.action_id,
            "gen_ai.tool.type": "function",
            **self._governance(step, ctx, decision_rec),
        }
        status: tuple[str, str | None] = ("UNSET", None)
        if outcome is not None:
            out = (
                outcome.payload.get("outcome", {}) if outcome.payload_status == "ok" and isinstance(outcome.payload, dict) else {}
            )
            st = str(out.get("status") or outcome.meta.get("status"))
            attrs["fiveplane.outcome.status"] = st
            attrs["fiveplane.outcome.result_digest"] = out.get("result_digest")
            attrs["fiveplane.outcome.seq"] = outcome.seq
            attrs["fiveplane.outcome.duration_ms"] = out.get("duration_ms", outcome.meta.get("duration_ms"))
            err = out.get("error")
            if st in ("error", "unknown"):
                etype = (err.get("type") if isinstance(err, dict) else None) or (
                    "fiveplane.outcome_unknown" if st == "unknown" else "tool_error"
                )
                attrs["error.type"] = etype
                status = ("ERROR", (err.get("message") if isinstance(err, dict) else str(err or st)) or st)
        else:
            attrs["fiveplane.outcome.status"] = {
                "block": "blocked",
                "require_approval": "approval_pending",
                "defer": "deferred",
            }.get(str(step.verdict), str(step.verdict))
        if self.capture_content and step.action.get("arguments") is not None:
            attrs["gen_ai.tool.call.arguments"] = json.dumps(
                step.action["arguments"], ensure_ascii=False, sort_keys=True, default=str
            )
        span = self._span(rec, f"execute_tool {step.tool}", span_id_for(rec.action_id), None, step.started_at, end, attrs, status)
        return self._uid(ctx, span)


class OtelSink(Sink):
    """Hands spans to any ``opentelemetry-sdk`` :class:`SpanExporter` (OTLP, console, in-memory…).

    Args:
        exporter: the SDK exporter; ``FAILURE`` from its ``export()`` is retried by the exporter loop.
        service_name: ``service.name`` of the resource.
    """

    type = "otel"

    def __init__(
        self,
        name: str,
        exporter: Any,
        *,
        formatter: OtelFormat | None = None,
        service_name: str = "fiveplane",
        filter: EventFilter | None = None,
        resource_attributes: dict[str, Any] | None = None,
    ) -> None:
        super().__init__(name, formatter or OtelFormat(), filter=filter, max_batch=512)
        try:
            from opentelemetry.sdk.resources import Resource
            from opentelemetry.sdk.util.instrumentation import InstrumentationScope
        except ImportError as exc:  # pragma: no cover - exercised without the extra
            raise ImportError("the OpenTelemetry sink needs the SDK: pip install 'fiveplane[otel]'") from exc
        from .._version import __version__

        self.exporter = exporter
        self.resource = Resource.create({"service.name": service_name, **(resource_attributes or {})})
        self.scope = InstrumentationScope("fiveplane", __version__, SEMCONV_SCHEMA_URL)

    def to_span(self, ev: ExportEvent) -> Any:
        """The SDK ``ReadableSpan`` of one span description."""
        from opentelemetry.sdk.trace import ReadableSpan
        from opentelemetry.trace import SpanContext, SpanKind, Status, StatusCode, TraceFlags

        d = ev.data
        ctx = SpanContext(
            int(d["trace_id"], 16), int(d["span_id"], 16), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
        )
        parent = (
            SpanContext(
                int(d["trace_id"], 16), int(d["parent_span_id"], 16), is_remote=False, trace_flags=TraceFlags(TraceFlags.SAMPLED)
            )
            if d.get("parent_span_id")
            else None
        )
        st = d.get("status") or {}
        code = {"ERROR": StatusCode.ERROR, "OK": StatusCode.OK}.get(str(st.get("code")), StatusCode.UNSET)
        return ReadableSpan(
            name=d["name"],
            context=ctx,
            parent=parent,
            resource=self.resource,
            attributes=d.get("attributes") or {},
            kind=SpanKind.INTERNAL,
            status=Status(code, st.get("description") if code is StatusCode.ERROR else None),
            start_time=int(d["start_time_unix_nano"]),
            end_time=int(d["end_time_unix_nano"]),
            instrumentation_scope=self.scope,
        )

    def send(self, events: Sequence[ExportEvent]) -> Delivery:
        from opentelemetry.sdk.trace.export import SpanExportResult

        spans = [self.to_span(ev) for ev in events]
        try:
            result = self.exporter.export(spans)
        except Exception as exc:
            raise TransientSinkError(f"otel exporter {type(self.exporter).__name__}: {type(exc).__name__}: {exc}") from exc
        if result is not SpanExportResult.SUCCESS:
            raise TransientSinkError(f"otel exporter {type(self.exporter).__name__}: export returned {result}")
        return Delivery()

    def close(self) -> None:
        try:
            self.exporter.shutdown()
        except Exception:  # noqa: BLE001 - shutting down is best effort
            pass

    def describe(self) -> str:
        return f"otel sink {self.name} ({type(self.exporter).__name__})"


def otlp_exporter(protocol: str, endpoint: str | None, headers: dict[str, str] | None = None, timeout: float = 10.0) -> Any:
    """An OTLP span exporter (``http`` or ``grpc``), imported lazily with a fix-it message."""
    if protocol == "http":
        try:
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter,
            )
        except ImportError as exc:
            raise FatalSinkError("OTLP over HTTP needs: pip install opentelemetry-exporter-otlp-proto-http") from exc
        return OTLPSpanExporter(endpoint=endpoint, headers=headers, timeout=timeout)
    if protocol == "grpc":
        try:
            from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import (  # type: ignore[import-not-found,unused-ignore]
                OTLPSpanExporter as GrpcExporter,
            )
        except ImportError as exc:
            raise FatalSinkError("OTLP over gRPC needs: pip install opentelemetry-exporter-otlp-proto-grpc") from exc
        return GrpcExporter(endpoint=endpoint, headers=headers, timeout=timeout)
    raise FatalSinkError(f"unknown OTLP protocol {protocol!r}: http or grpc")
