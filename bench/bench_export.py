"""Export benchmarks (``python -m bench export``).

* ``export_ocsf_throughput`` — events/s from the ledger to OCSF 1.8 events, through the whole outbox
  loop (read records with payloads and digest checks, fold intents into decisions, NIST tags, format,
  deliver, commit the cursor): to a JSON Lines file (fsync per batch) and to a loopback Splunk HEC
  receiver (HTTP/1.1 keep-alive, ~800 KB requests). The ledger holds 20,000 entries replayed from the
  reference scenario (intent, decision, enforcement, outcome, approval records with real payloads).
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from fiveplane._export import Exporter, HecSink, JsonlSink, OcsfFormat, build_sample_ledger
from fiveplane._export._read import open_for_export, read_range
from fiveplane._ledger import generate_signing_key, load_signing_key, open_ledger
from fiveplane._ledger._records import make_record

ENTRIES = 20_000
_TMP: list[Path] = []


@atexit.register
def _cleanup() -> None:
    for d in _TMP:
        shutil.rmtree(d, ignore_errors=True)


def _tmp() -> Path:
    d = Path(tempfile.mkdtemp(prefix="fiveplane-bench-export-"))
    _TMP.append(d)
    return d


_LEDGER: dict[str, str] = {}


def _bench_ledger() -> str:
    """A ledger of ENTRIES records replayed from the sample scenario (new action and session ids per copy)."""
    if "url" in _LEDGER:
        return _LEDGER["url"]
    d = _tmp()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        sample = build_sample_ledger(d / "sample", trial=False)
    src = open_for_export(sample.url)
    try:
        template = [r for r in read_range(src, 0, 10_000) if r.payload_status == "ok"]
    finally:
        src.close()
    key = d / "bench.key"
    generate_signing_key(key, "bench.fiveplane.local/export")
    url = f"sqlite:///{d / 'bench.db'}"
    ledger = open_ledger(url, key=load_signing_key(key), checkpoint_interval=None)
    try:
        n = 0
        while n < ENTRIES:
            ids: dict[str, str] = {}
            session = f"bench-{uuid.uuid4().hex[:12]}"
            batch = []
            for r in template:
                if n >= ENTRIES:
                    break
                action = ids.setdefault(r.action_id, uuid.uuid4().hex) if r.action_id else None
                parent = ids.setdefault(r.parent_id, uuid.uuid4().hex) if r.parent_id else None
                batch.append(
                    make_record(ledger.origin, r.kind, r.meta, r.payload, action_id=action, parent_id=parent, session_id=session)
                )
                n += 1
            ledger.append_records(batch, durable=True)
    finally:
        ledger.close()
    _LEDGER["url"] = url
    return url


class _Hec(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    events = 0

    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Hec.events += body.count(b'"fiveplane_uid"')
        data = json.dumps({"text": "Success", "code": 0}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def _copy(url: str) -> str:
    import sqlite3

    src = url.removeprefix("sqlite:///")
    dst = _tmp() / "copy.db"
    with sqlite3.connect(src) as a, sqlite3.connect(dst) as b:
        a.backup(b)
    return f"sqlite:///{dst}"


def _run(url: str, sink: Any) -> dict[str, Any]:
    with Exporter(url, sink, batch_size=1000) as ex:
        t0 = time.perf_counter()
        report = ex.run_once()
        dt = time.perf_counter() - t0
    assert report.ok and report.records == ENTRIES, report
    return {
        "records_per_s": round(report.records / dt),
        "events_per_s": round(report.events / dt),
        "events": report.events,
        "s": round(dt, 2),
    }


def export_ocsf_throughput() -> dict[str, Any]:
    url = _bench_ledger()
    out: dict[str, Any] = {"entries": ENTRIES}
    jsonl = _run(_copy(url), JsonlSink("bench-jsonl", _tmp() / "ocsf.jsonl", OcsfFormat()))
    out.update({f"jsonl_{k}": v for k, v in jsonl.items() if k != "events"})
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Hec)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        _Hec.events = 0
        sink = HecSink("bench-hec", f"http://127.0.0.1:{server.server_address[1]}", "bench-token", OcsfFormat())
        hec = _run(_copy(url), sink)
        assert _Hec.events == hec["events"], (_Hec.events, hec)
    finally:
        server.shutdown()
        server.server_close()
    out.update({f"hec_{k}": v for k, v in hec.items() if k != "events"})
    out["ocsf_events"] = hec["events"]
    return out


BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {"export_ocsf_throughput": export_ocsf_throughput}
