"""A SIEM that goes down in the middle of an export and comes back: every event arrives exactly once
after de-duplication on its uid, in order. Loopback receivers only (tests/export/receivers.py)."""

from __future__ import annotations

import json
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from fiveplane._export import CefFormat, Exporter, ExportFailed, HecSink, NativeFormat, OcsfFormat, RetryPolicy, SyslogSink
from fiveplane._export._read import open_for_export

from .conftest import fill
from .receivers import HecReceiver, SyslogStreamReceiver, SyslogUdpReceiver, cef_uid, self_signed_cert

RETRY = RetryPolicy(initial=0.02, maximum=0.1, give_up_after=20.0)
N = 300


def _bring_back(went_down: threading.Event, up: Callable[[], None], after: float = 0.4) -> threading.Thread:
    def run() -> None:
        assert went_down.wait(20), "the receiver never went down"
        time.sleep(after)  # the exporter meets refused connections meanwhile
        up()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def _exactly_once_in_order(received: list[str], expected: list[str]) -> None:
    deduped = list(dict.fromkeys(received))
    assert deduped == expected
    # de-duplication only ever drops repeats of events already seen, and nothing arrives out of order:
    # the first sighting of each uid is in sequence order (checked above) and no uid beyond one not yet seen
    seen: set[str] = set()
    for uid in received:
        if uid not in seen:
            assert expected[len(seen)] == uid
            seen.add(uid)


def test_hec_receiver_goes_down_mid_stream_and_comes_back(synthetic: Any) -> None:
    url, ledger = synthetic
    fill(ledger, N)
    rx = HecReceiver()
    rx.down_after = 110
    try:
        back = _bring_back(rx.went_down, rx.up)
        sink = HecSink("splunk", rx.url, rx.token, NativeFormat(), timeout=2.0)
        with Exporter(url, sink, batch_size=40, retry=RETRY) as ex:
            report = ex.run_once()
        back.join(5)
    finally:
        rx.close()
    assert report.ok and report.retries >= 1
    _exactly_once_in_order(rx.uids(), [f"{ledger.origin}:{i}" for i in range(N)])
    first = rx.events[0]
    assert first["sourcetype"] == "fiveplane:native" and first["event"]["meta"] == {"i": 0}
    assert first["fields"]["fiveplane_seq"] == "0" and isinstance(first["time"], float)


def test_hec_outage_across_a_restart_of_the_exporter(synthetic: Any) -> None:
    """The SIEM is down long enough that the exporter gives up; a later run resumes from the cursor."""
    url, ledger = synthetic
    fill(ledger, 120)
    rx = HecReceiver()
    rx.down_after = 50
    try:
        sink = HecSink("splunk", rx.url, rx.token, OcsfFormat())
        with Exporter(url, sink, batch_size=25, retry=RetryPolicy(initial=0.01, maximum=0.02, give_up_after=0.3)) as ex:
            with pytest.raises(ExportFailed):
                ex.run_once()
            assert ex.cursor().last_seq == 49
        rx.up()
        with Exporter(url, HecSink("splunk", rx.url, rx.token, OcsfFormat()), batch_size=25, retry=RETRY) as ex:
            report = ex.run_once()
    finally:
        rx.close()
    assert report.start_seq == 49 and report.ok
    _exactly_once_in_order(rx.uids(), [f"{ledger.origin}:{i}" for i in range(120)])
    assert all(e["sourcetype"] == "ocsf" and e["event"]["class_uid"] == 0 for e in rx.events)


def test_hec_server_errors_are_retried_and_bad_events_dead_lettered(synthetic: Any) -> None:
    url, ledger = synthetic
    fill(ledger, 30)
    rx = HecReceiver()
    rx.fail_next(3, 503)
    rx.reject = {f"{ledger.origin}:7", f"{ledger.origin}:21"}
    try:
        with Exporter(url, HecSink("splunk", rx.url, rx.token, NativeFormat()), retry=RETRY) as ex:
            report = ex.run_once()
            dead = [d.event_uid for d in ex.store.dead_letters("splunk")]
    finally:
        rx.close()
    assert report.retries == 3 and report.dead_letters == 2
    assert sorted(dead) == sorted(rx.reject)
    assert rx.uids() == [f"{ledger.origin}:{i}" for i in range(30) if i not in (7, 21)]


def test_hec_bad_token_is_fatal(synthetic: Any) -> None:
    url, ledger = synthetic
    fill(ledger, 3)
    rx = HecReceiver()
    try:
        with Exporter(url, HecSink("splunk", rx.url, "wrong", NativeFormat()), retry=RETRY) as ex:
            with pytest.raises(ExportFailed, match="401"):
                ex.run_once()
    finally:
        rx.close()
    assert rx.requests == 1


def test_hec_request_shape_with_mock_transport(sample_url: str) -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"text": "Success", "code": 0})

    sink = HecSink(
        "s", "https://splunk.example:8088", "tok", OcsfFormat(), index="agents", transport=httpx.MockTransport(handler)
    )
    with Exporter(sample_url, sink) as ex:
        ex.run_once()
    req = seen[0]
    assert req.url.path == "/services/collector/event" and req.headers["Authorization"] == "Splunk tok"
    first = json.loads(req.content.split(b"\n")[0])
    assert first["index"] == "agents" and first["sourcetype"] == "ocsf"
    assert "MEASURE 2.8" in first["fields"]["nist_ai_rmf"] and "MEASURE" in first["fields"]["nist_ai_rmf_function"]


@pytest.mark.parametrize("tls", [False, True], ids=["tcp", "tls"])
def test_syslog_stream_receiver_goes_down_mid_stream_and_comes_back(synthetic: Any, tmp_path: Path, tls: bool) -> None:
    url, ledger = synthetic
    fill(ledger, N)
    cert = self_signed_cert(tmp_path) if tls else None
    rx = SyslogStreamReceiver(tls=cert)
    rx.down_after = 130
    ctx = None
    if cert is not None:
        ctx = ssl.create_default_context(cafile=str(cert[0]))
    try:
        back = _bring_back(rx.went_down, rx.up)
        sink = SyslogSink(
            "siem", "127.0.0.1", rx.port, CefFormat(syslog=True), protocol="tls" if tls else "tcp", tls_context=ctx, timeout=3.0
        )
        with Exporter(url, sink, batch_size=50, retry=RETRY) as ex:
            report = ex.run_once()
        back.join(5)
    finally:
        rx.close()
    assert report.ok and report.retries >= 1
    uids = [cef_uid(m) for m in rx.messages]
    _exactly_once_in_order(uids, [f"{ledger.origin}:{i}" for i in range(N)])
    first = rx.messages[0]
    assert first.startswith("<110>1 ") and " fiveplane - test.event - CEF:0|fiveplane|fiveplane|" in first


def test_syslog_tls_rejects_an_untrusted_certificate(synthetic: Any, tmp_path: Path) -> None:
    url, ledger = synthetic
    fill(ledger, 2)
    rx = SyslogStreamReceiver(tls=self_signed_cert(tmp_path))
    try:
        sink = SyslogSink("siem", "127.0.0.1", rx.port, CefFormat(syslog=True), protocol="tls")
        with Exporter(url, sink, retry=RETRY) as ex:
            with pytest.raises(ExportFailed, match="certificate"):
                ex.run_once()
    finally:
        rx.close()
    assert rx.messages == []


def test_syslog_udp_delivers_rfc5424_cef(sample_url: str) -> None:
    rx = SyslogUdpReceiver()
    try:
        with Exporter(sample_url, SyslogSink("siem", "127.0.0.1", rx.port, CefFormat(syslog=True), protocol="udp")) as ex:
            report = ex.run_once()
        rx.wait_for(report.events)
    finally:
        rx.close()
    assert len(rx.messages) == report.events == 42
    block = next(m for m in rx.messages if "act=block" in m)
    assert block.startswith("<108>1 ")  # facility 13 (log audit), severity 4 (warning)
    assert "|email.send block|" in block or "|email.send block|" in block.replace("\\|", "|")
    assert "cs1Label=ruleIds cs1=flow.email-recipient,email.external-blocked" in block
    reader = open_for_export(sample_url)
    try:
        assert {cef_uid(m) for m in rx.messages} <= {f"{reader.origin}:{i}" for i in range(reader.size())}
    finally:
        reader.close()
