"""OpenTelemetry spans (checked with the SDK's in-memory exporter) and the SOAR webhook (httpx MockTransport)."""

from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode

from fiveplane._export import Exporter, NativeFormat, OcsfFormat, OtelFormat, OtelSink, RetryPolicy, WebhookSink, to_dataframe
from fiveplane._export._otel import SEMCONV_SCHEMA_URL

from .conftest import fill


def _spans(url: str, **fmt: Any) -> list[Any]:
    mem = InMemorySpanExporter()
    with Exporter(url, OtelSink("traces", mem, formatter=OtelFormat(**fmt))) as ex:
        ex.run_once()
    return list(mem.get_finished_spans())


def test_tool_calls_are_execute_tool_spans_with_governance_attributes(sample_url: str) -> None:
    spans = _spans(sample_url, capture_content=False)
    tools = [s for s in spans if s.attributes.get("gen_ai.operation.name") == "execute_tool"]
    # 6 tool calls per session: 2 CRM reads, contract change (paused, then approved), 2 e-mails
    assert len(tools) == 12
    names = {s.name for s in tools}
    assert names == {
        "execute_tool crm.search_accounts",
        "execute_tool crm.get_account_notes",
        "execute_tool contracts.update_status",
        "execute_tool email.send",
    }
    block = next(s for s in tools if s.attributes["fiveplane.decision.verdict"] == "block")
    a = block.attributes
    assert a["gen_ai.tool.name"] == "email.send" and a["gen_ai.tool.type"] == "function"
    assert a["gen_ai.agent.name"] == "sales-assistant" and a["gen_ai.conversation.id"] == "demo-session"
    assert "email.external-blocked" in a["fiveplane.policy.rule_ids"] and a["fiveplane.outcome.status"] == "blocked"
    assert a["fiveplane.policy.hash"].startswith("sha256:") and "MANAGE 2.4" in a["fiveplane.nist_ai_rmf.categories"]
    assert block.status.status_code is StatusCode.UNSET  # a policy block is not an error
    assert "gen_ai.tool.call.arguments" not in a  # opt-in only
    paused = next(s for s in tools if s.attributes["fiveplane.decision.verdict"] == "require_approval")
    assert paused.attributes["fiveplane.approval.id"].startswith("apr-")
    ran = next(s for s in tools if s.attributes["gen_ai.tool.name"] == "crm.search_accounts")
    assert ran.attributes["fiveplane.outcome.status"] == "success" and ran.attributes[
        "fiveplane.outcome.result_digest"
    ].startswith("sha256:")
    assert ran.attributes["fiveplane.capability.id"]
    assert ran.end_time >= ran.start_time > 0 and ran.kind.name == "INTERNAL"
    assert ran.instrumentation_scope.schema_url == SEMCONV_SCHEMA_URL
    assert ran.resource.attributes["service.name"] == "fiveplane"


def test_trace_ids_tie_a_session_and_match_the_dataframe(sample_url: str) -> None:
    spans = _spans(sample_url, capture_content=False)
    df = to_dataframe(sample_url)
    by_session: dict[str, set[int]] = {}
    for s in spans:
        conv = s.attributes.get("gen_ai.conversation.id")
        if conv:
            by_session.setdefault(conv, set()).add(s.context.trace_id)
    assert {k: len(v) for k, v in by_session.items()} == {"demo-session": 1, "tuning-trial": 1}
    tool_span = next(s for s in spans if s.name == "execute_tool email.send")
    row = df.loc[tool_span.attributes["gen_ai.tool.call.id"]]
    assert row["trace_id"] == format(tool_span.context.trace_id, "032x")
    assert row["span_id"] == format(tool_span.context.span_id, "016x")
    result = next(s for s in spans if s.name == "evaluate_policy tool_result")
    assert result.parent is not None  # tool results hang under their tool call
    assert any(s.context.span_id == result.parent.span_id for s in spans)


def test_raw_arguments_are_opt_in(sample_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    spans = _spans(sample_url, capture_content=True)
    change = next(s for s in spans if s.name == "execute_tool contracts.update_status")
    assert json.loads(change.attributes["gen_ai.tool.call.arguments"]) == {"contract_id": "C-7", "status": "signed"}
    monkeypatch.setenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT", "true")
    assert OtelFormat().capture_content is True
    monkeypatch.delenv("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT")
    assert OtelFormat().capture_content is False


def test_a_failing_exporter_is_retried(synthetic: Any, sample_url: str) -> None:
    class Flaky(InMemorySpanExporter):
        calls = 0

        def export(self, spans: Any) -> SpanExportResult:
            Flaky.calls += 1
            return SpanExportResult.FAILURE if Flaky.calls <= 2 else super().export(spans)

    mem = Flaky()
    with Exporter(sample_url, OtelSink("t", mem), retry=RetryPolicy(initial=0.001, maximum=0.002)) as ex:
        report = ex.run_once()
    assert report.retries == 2 and len(mem.get_finished_spans()) == report.events > 0


def _webhook(
    sample_url: str, status: int = 200, secret: str | None = "s3cret", fmt: Any = None
) -> tuple[list[httpx.Request], Any]:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status)

    sink = WebhookSink(
        "soar", "https://soar.example/hooks/fp", fmt or NativeFormat(), secret=secret, transport=httpx.MockTransport(handler)
    )
    with Exporter(sample_url, sink, retry=RetryPolicy(initial=0.001, maximum=0.002, give_up_after=0.05)) as ex:
        try:
            report = ex.run_once()
        except Exception as exc:
            report = exc
    return seen, report


def test_webhook_gets_blocks_and_approvals_signed(sample_url: str) -> None:
    seen, _ = _webhook(sample_url)
    kinds = [r.headers["X-Fiveplane-Event"] for r in seen]
    assert kinds.count("decision") == 4  # 2 blocks, 2 paused for approval
    assert kinds.count("approval.requested") == 2 and kinds.count("approval.approved") == 2
    for r in seen:
        body = r.content
        expected = (
            "sha256=" + hmac.new(b"s3cret", r.headers["X-Fiveplane-Timestamp"].encode() + b"." + body, hashlib.sha256).hexdigest()
        )
        assert r.headers["X-Fiveplane-Signature"] == expected
        assert r.headers["Idempotency-Key"] == json.loads(body)["uid"]
    verdicts = {json.loads(r.content)["meta"].get("verdict") for r in seen if r.headers["X-Fiveplane-Event"] == "decision"}
    assert verdicts == {"block", "require_approval"}


def test_webhook_client_errors_dead_letter_and_ocsf_works(sample_url: str) -> None:
    seen, report = _webhook(sample_url, status=422, secret=None, fmt=OcsfFormat())
    assert report.dead_letters == len(seen) == 10  # 4 decisions, 6 approval events
    assert "X-Fiveplane-Signature" not in seen[0].headers
    assert json.loads(seen[0].content)["class_uid"] == 6003


def test_webhook_auth_failure_is_fatal(synthetic: Any, sample_url: str) -> None:
    seen, report = _webhook(sample_url, status=401)
    assert len(seen) == 1 and "401" in str(report)


def test_native_events_hold_nothing_the_ledger_does_not(synthetic: Any) -> None:
    url, ledger = synthetic
    fill(ledger, 2)
    mem = InMemorySpanExporter()
    with Exporter(url, OtelSink("t", mem)) as ex:
        report = ex.run_once()
    assert report.events == 0 and report.records == 2  # custom kinds have no span


def test_otlp_http_to_a_loopback_collector(sample_url: str) -> None:
    pytest.importorskip("opentelemetry.exporter.otlp.proto.http")
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    from fiveplane._export import SinkConfig, build_sink

    names: list[str] = []
    headers: list[str | None] = []

    class Collector(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            req = ExportTraceServiceRequest()
            req.ParseFromString(self.rfile.read(int(self.headers["Content-Length"])))
            headers.append(self.headers.get("x-api-key"))
            names.extend(s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

    server = ThreadingHTTPServer(("127.0.0.1", 0), Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        cfg = SinkConfig(name="otlp", type="otel", endpoint=f"http://127.0.0.1:{server.server_address[1]}/v1/traces")
        sink = build_sink(cfg, {"FIVEPLANE_OTLP_HEADERS": "x-api-key=k1"})
        with Exporter(sample_url, sink) as ex:
            report = ex.run_once()
    finally:
        server.shutdown()
        server.server_close()
    assert report.ok and len(names) == report.events and "execute_tool email.send" in names
    assert set(headers) == {"k1"}
