"""The audit and telemetry layer: SIEM / OpenTelemetry / SOAR exports, the NIST AI RMF report, notebook views.

* **Exports** — the ledger is the outbox: an :class:`Exporter` reads records after a sink's durable
  cursor, formats them (:class:`OcsfFormat` — OCSF 1.8 API Activity; :class:`CefFormat` — CEF in
  RFC 5424 syslog; :class:`NativeFormat` — the record as JSON; :class:`OtelFormat` — GenAI spans)
  and delivers them to a :class:`Sink` (:class:`JsonlSink`, :class:`HecSink`, :class:`SyslogSink`,
  :class:`OtelSink`, :class:`WebhookSink`) at least once, in order, with retries and back-off;
  events a sink rejects become dead letters. ``fiveplane export run|status|dead-letters``.
* **NIST AI RMF** — every event is tagged with the functions and subcategories it serves
  (``nist_ai_rmf.yaml``, one data file); :func:`build_nist_report` / ``fiveplane report nist``.
* **Notebooks** — :func:`to_dataframe` (one row per step, OTel ids), :func:`findings_dataframe`,
  :func:`trace_tree` and plotting helpers (pandas / matplotlib: ``pip install 'fiveplane[notebooks]'``).
"""

from ._cef import CefFormat
from ._config import ExportConfig, ExportConfigError, SinkConfig, build_sink, load_export_config
from ._exporter import BackgroundExport, Exporter, ExportFailed, ExportReport, RetryPolicy
from ._format import EventFilter, ExportEvent, FormatContext, Formatter, NativeFormat
from ._frame import (
    findings_dataframe,
    plot_findings,
    plot_latency,
    plot_rule_hits,
    plot_timeline,
    plot_verdicts,
    print_trace_tree,
    records_dataframe,
    to_dataframe,
    trace_tree,
)
from ._nist import NistMapping, NistTags, load_nist_mapping
from ._ocsf import OCSF_VERSION, OcsfFormat
from ._otel import OtelFormat, OtelSink
from ._report import NistReport, build_nist_report
from ._sample import SampleLedger, build_sample_ledger
from ._sinks import Delivery, FatalSinkError, HecSink, JsonlSink, Sink, SinkError, SyslogSink, TransientSinkError, WebhookSink
from ._store import CursorState, DeadLetter, ExportStore

__all__ = [
    "OCSF_VERSION",
    "BackgroundExport",
    "CefFormat",
    "CursorState",
    "DeadLetter",
    "Delivery",
    "EventFilter",
    "ExportConfig",
    "ExportConfigError",
    "ExportEvent",
    "ExportFailed",
    "ExportReport",
    "ExportStore",
    "Exporter",
    "FatalSinkError",
    "FormatContext",
    "Formatter",
    "HecSink",
    "JsonlSink",
    "NativeFormat",
    "NistMapping",
    "NistReport",
    "NistTags",
    "OcsfFormat",
    "OtelFormat",
    "OtelSink",
    "RetryPolicy",
    "SampleLedger",
    "Sink",
    "SinkConfig",
    "SinkError",
    "SyslogSink",
    "TransientSinkError",
    "WebhookSink",
    "build_nist_report",
    "build_sample_ledger",
    "build_sink",
    "findings_dataframe",
    "load_export_config",
    "load_nist_mapping",
    "plot_findings",
    "plot_latency",
    "plot_rule_hits",
    "plot_timeline",
    "plot_verdicts",
    "print_trace_tree",
    "records_dataframe",
    "to_dataframe",
    "trace_tree",
]
