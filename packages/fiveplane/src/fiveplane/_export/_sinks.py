"""Sinks: where exported events go. One small interface, several transports.

A sink's :meth:`Sink.send` delivers a batch **in order** and either returns (everything delivered,
except the events it lists as rejected for good — those become dead letters) or raises:

* :class:`TransientSinkError` — the receiver is down, slow or overloaded (connection refused, 5xx,
  429, timeouts): the exporter backs off and retries from the first event not confirmed
  (``delivered`` says how many of the batch were confirmed first);
* :class:`FatalSinkError` — retrying cannot help (bad token, TLS failure, a receiver that does not
  speak the protocol): the exporter stops and reports it.

Delivery is at least once: an event may arrive twice after a failure (the receiver de-duplicates on
the event's ``uid``), never zero times, and never out of order. Secrets (HEC token, webhook HMAC key)
are read from the environment by the configuration, never from a policy or sinks file.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
import select
import socket
import ssl
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from ._cef import syslog_frame
from ._format import EventFilter, ExportEvent, Formatter

__all__ = [
    "Delivery",
    "FatalSinkError",
    "HecSink",
    "JsonlSink",
    "Sink",
    "SinkError",
    "SyslogSink",
    "TransientSinkError",
    "WebhookSink",
]


class SinkError(Exception):
    """A sink could not deliver."""


class TransientSinkError(SinkError):
    """Retry later: the first ``delivered`` events of the batch were confirmed, the rest were not."""

    def __init__(self, message: str, delivered: int = 0) -> None:
        super().__init__(message)
        self.delivered = delivered


class FatalSinkError(SinkError):
    """Retrying will not help (authentication, configuration, protocol): stop and tell the operator."""


@dataclass
class Delivery:
    """The result of a batch that was accepted: indexes of the events rejected for good, with reasons."""

    rejected: dict[int, str] = field(default_factory=dict)


def _body(ev: ExportEvent) -> str:
    return ev.text if ev.text is not None else json.dumps(ev.data, ensure_ascii=False, sort_keys=False, default=str)


class Sink(ABC):
    """A destination for exported events.

    Attributes:
        name: the sink's name (its cursor is stored under it).
        type: ``jsonl``, ``hec``, ``syslog``, ``otel``, ``webhook``…
        formatter: turns ledger records into this sink's events.
        filter: which records it exports (the others advance the cursor without being sent).
        max_batch: events per :meth:`send` call.
    """

    type: str = "sink"

    def __init__(self, name: str, formatter: Formatter, *, filter: EventFilter | None = None, max_batch: int = 500) -> None:
        self.name = name
        self.formatter = formatter
        self.filter = filter or EventFilter()
        self.max_batch = max_batch

    @abstractmethod
    def send(self, events: Sequence[ExportEvent]) -> Delivery:
        """Deliver ``events`` in order (see the module docstring for the contract)."""

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections and files."""

    def describe(self) -> str:
        return f"{self.type} sink {self.name}"


# ---- JSON Lines -------------------------------------------------------------------------------


class JsonlSink(Sink):
    """Append one JSON object (or text line) per event to a file, fsynced per batch."""

    type = "jsonl"

    def __init__(
        self, name: str, path: str | Path, formatter: Formatter, *, filter: EventFilter | None = None, fsync: bool = True
    ) -> None:
        super().__init__(name, formatter, filter=filter, max_batch=2000)
        self.path = Path(path)
        self.fsync = fsync
        self._fh: Any = None

    def _open(self) -> Any:
        if self._fh is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open across batches
        return self._fh

    def send(self, events: Sequence[ExportEvent]) -> Delivery:
        try:
            fh = self._open()
            fh.write(b"".join(_body(ev).replace("\n", "\\n").encode("utf-8") + b"\n" for ev in events))
            fh.flush()
            if self.fsync:
                os.fsync(fh.fileno())
        except OSError as exc:
            self.close()
            raise TransientSinkError(f"{self.path}: {exc.strerror or exc}") from exc
        return Delivery()

    def close(self) -> None:
        if self._fh is not None:
            with contextlib.suppress(OSError):
                self._fh.close()
            self._fh = None

    def describe(self) -> str:
        return f"jsonl sink {self.name} → {self.path}"


# ---- Splunk HTTP Event Collector -----------------------------------------------------------------

# HEC response codes that reject the data itself (dead letters), per Splunk's HEC docs.
_HEC_BAD_DATA = {5, 6, 7, 8, 12, 13, 15, 16, 17, 18, 19, 20, 21}


class HecSink(Sink):
    """Splunk HTTP Event Collector: ``POST <endpoint>/services/collector/event`` with ``Authorization:
    Splunk <token>``, several events back to back per request, bounded in size.

    A 400 that rejects the data (HEC codes 5-8, 12-21) is narrowed down by splitting the request
    until the offending events are found; those become dead letters, the rest are delivered.
    401 / 403 (bad token) stop the export; 429, 5xx and connection errors are retried.
    """

    type = "hec"

    def __init__(
        self,
        name: str,
        endpoint: str,
        token: str,
        formatter: Formatter,
        *,
        index: str | None = None,
        source: str = "fiveplane",
        sourcetype: str | None = None,
        host: str | None = None,
        verify: bool | str = True,
        timeout: float = 10.0,
        max_bytes: int = 800_000,
        filter: EventFilter | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(name, formatter, filter=filter, max_batch=1000)
        if not token:
            raise FatalSinkError(f"hec sink {name}: no token (set it in the environment, e.g. FIVEPLANE_HEC_TOKEN)")
        url = endpoint.rstrip("/")
        self.url = url if url.endswith("/services/collector/event") else url + "/services/collector/event"
        self.index = index
        self.source = source
        self.sourcetype = sourcetype or (
            "ocsf" if getattr(formatter, "name", "") == "ocsf" else f"fiveplane:{getattr(formatter, 'name', 'event')}"
        )
        self.host = host or socket.gethostname()
        self.max_bytes = max_bytes
        self._client = httpx.Client(
            headers={"Authorization": f"Splunk {token}", "Content-Type": "application/json"},
            verify=verify,
            timeout=timeout,
            transport=transport,
        )

    def envelope(self, ev: ExportEvent) -> bytes:
        from ._read import time_ms

        env: dict[str, Any] = {
            "time": round(time_ms(ev.time) / 1000.0, 3),
            "host": self.host,
            "source": self.source,
            "sourcetype": self.sourcetype,
            "event": ev.text if ev.text is not None else ev.data,
            "fields": {"fiveplane_uid": ev.uid, "fiveplane_seq": str(ev.seq), "fiveplane_kind": ev.kind},
        }
        if ev.categories:
            env["fields"]["nist_ai_rmf"] = list(ev.categories)
            env["fields"]["nist_ai_rmf_function"] = sorted({c.partition(" ")[0] for c in ev.categories})
        if self.index:
            env["index"] = self.index
        return json.dumps(env, ensure_ascii=False, default=str).encode("utf-8")

    def _post(self, bodies: list[bytes]) -> tuple[int, int | None, str]:
        try:
            resp = self._client.post(self.url, content=b"\n".join(bodies))
        except httpx.HTTPError as exc:
            raise TransientSinkError(f"HEC {self.url}: {type(exc).__name__}: {exc}") from exc
        code: int | None = None
        text = resp.text[:500]
        with contextlib.suppress(ValueError, AttributeError):
            code = resp.json().get("code")
        return resp.status_code, code, text

    def _deliver(self, bodies: list[bytes], offset: int, rejected: dict[int, str]) -> None:
        status, code, text = self._post(bodies)
        if status == 200:
            return
        if status in (401, 403):
            raise FatalSinkError(f"HEC {self.url}: HTTP {status} (token rejected): {text}")
        if (status == 400 and code in _HEC_BAD_DATA) or status == 413:
            if len(bodies) == 1:
                rejected[offset] = f"HTTP {status} (HEC code {code}): {text}"
                return
            mid = len(bodies) // 2
            self._deliver(bodies[:mid], offset, rejected)
            self._deliver(bodies[mid:], offset + mid, rejected)
            return
        if status == 400 or status == 404:
            raise FatalSinkError(f"HEC {self.url}: HTTP {status}: {text}")
        raise TransientSinkError(f"HEC {self.url}: HTTP {status}: {text}")

    def send(self, events: Sequence[ExportEvent]) -> Delivery:
        rejected: dict[int, str] = {}
        bodies = [self.envelope(ev) for ev in events]
        start = 0
        while start < len(bodies):
            end, size = start, 0
            while end < len(bodies) and (end == start or size + len(bodies[end]) + 1 <= self.max_bytes):
                size += len(bodies[end]) + 1
                end += 1
            try:
                self._deliver(bodies[start:end], start, rejected)
            except TransientSinkError as exc:
                exc.delivered = start
                raise
            start = end
        return Delivery(rejected)

    def close(self) -> None:
        self._client.close()

    def describe(self) -> str:
        return f"hec sink {self.name} → {self.url}"


# ---- syslog (RFC 5424) over UDP / TCP / TLS --------------------------------------------------------


class SyslogSink(Sink):
    """RFC 5424 syslog messages (CEF by default) over UDP, TCP or TLS (octet-counting framing).

    TCP and TLS confirm each batch with a half-close (``confirm="close"``, the default): one
    connection per batch; after the batch the sink closes its sending side (TLS: ``close_notify``)
    and waits for the receiver to close in turn, which a syslog receiver does only after reading
    everything before the end of the stream. A reset or a timeout instead fails the batch, which is
    sent again on a new connection — at least once, in order, across receiver restarts. Receivers
    that keep the connection open after the client's half-close need ``confirm="none"`` (a
    persistent connection; data in flight when the receiver dies can be lost, as with any plain
    syslog). UDP has no confirmation at all: datagrams can be lost and are never retried.
    """

    type = "syslog"

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        formatter: Formatter,
        *,
        protocol: str = "tcp",
        confirm: str = "close",
        tls_context: ssl.SSLContext | None = None,
        server_hostname: str | None = None,
        timeout: float = 10.0,
        max_datagram: int = 8192,
        filter: EventFilter | None = None,
    ) -> None:
        super().__init__(name, formatter, filter=filter, max_batch=500)
        if protocol not in ("udp", "tcp", "tls"):
            raise FatalSinkError(f"syslog sink {name}: protocol must be udp, tcp or tls, not {protocol!r}")
        if confirm not in ("close", "none"):
            raise FatalSinkError(f"syslog sink {name}: confirm must be close or none, not {confirm!r}")
        self.host = host
        self.port = port
        self.protocol = protocol
        self.confirm = confirm
        self.timeout = timeout
        self.max_datagram = max_datagram
        self.server_hostname = server_hostname or host
        self.tls_context = tls_context or (ssl.create_default_context() if protocol == "tls" else None)
        self._sock: socket.socket | None = None

    def _connect(self) -> socket.socket:
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.timeout)
        except OSError as exc:
            raise TransientSinkError(f"syslog {self.protocol}://{self.host}:{self.port}: {exc.strerror or exc}") from exc
        if self.protocol == "tls":
            assert self.tls_context is not None
            try:
                return self.tls_context.wrap_socket(sock, server_hostname=self.server_hostname)
            except ssl.SSLCertVerificationError as exc:
                sock.close()
                raise FatalSinkError(f"syslog tls://{self.host}:{self.port}: certificate rejected: {exc.verify_message}") from exc
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                raise TransientSinkError(f"syslog tls://{self.host}:{self.port}: TLS handshake failed: {exc}") from exc
        return sock

    @staticmethod
    def _peer_closed(sock: socket.socket) -> bool:
        try:
            readable, _, _ = select.select([sock], [], [], 0)
            if not readable:
                return False
            if isinstance(sock, ssl.SSLSocket):
                return True  # a syslog receiver never sends data: anything readable is a close
            return sock.recv(1, socket.MSG_PEEK) == b""
        except (OSError, ValueError):
            return True

    def _confirm(self, sock: socket.socket) -> None:
        """Half-close and wait for the receiver to close after reading everything (see the class doc)."""
        deadline = time.monotonic() + self.timeout
        if isinstance(sock, ssl.SSLSocket):
            try:
                sock.unwrap()  # sends close_notify; returns once the receiver closes the TLS session
            except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
                pass  # the receiver closed the TCP connection after our close_notify: read to the end
            except OSError as exc:
                raise TransientSinkError(f"syslog tls://{self.host}:{self.port}: not confirmed: {exc}") from exc
            return
        try:
            sock.shutdown(socket.SHUT_WR)
        except OSError as exc:  # reset by the receiver before we finished
            raise TransientSinkError(f"syslog tcp://{self.host}:{self.port}: not confirmed: {exc.strerror or exc}") from exc
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TransientSinkError(
                    f"syslog tcp://{self.host}:{self.port}: the receiver did not close within {self.timeout:.0f}s after our half-close "
                    "(if it keeps connections open, set confirm: none)"
                )
            sock.settimeout(remaining)
            try:
                if sock.recv(4096) == b"":
                    return
            except TimeoutError:
                continue
            except OSError as exc:
                raise TransientSinkError(f"syslog tcp://{self.host}:{self.port}: not confirmed: {exc.strerror or exc}") from exc

    def send(self, events: Sequence[ExportEvent]) -> Delivery:
        if self.protocol == "udp":
            return self._send_udp(events)
        frames = b"".join(syslog_frame(_body(ev)) for ev in events)
        if self.confirm == "close":
            sock = self._connect()
            try:
                try:
                    sock.sendall(frames)
                except OSError as exc:
                    raise TransientSinkError(f"syslog {self.protocol}://{self.host}:{self.port}: {exc.strerror or exc}") from exc
                self._confirm(sock)
            finally:
                with contextlib.suppress(OSError):
                    sock.close()
            return Delivery()
        if self._sock is not None and self._peer_closed(self._sock):
            self.close()
        if self._sock is None:
            self._sock = self._connect()
        try:
            self._sock.sendall(frames)
        except OSError as exc:
            self.close()
            raise TransientSinkError(f"syslog {self.protocol}://{self.host}:{self.port}: {exc.strerror or exc}") from exc
        return Delivery()

    def _send_udp(self, events: Sequence[ExportEvent]) -> Delivery:
        rejected: dict[int, str] = {}
        try:
            infos = socket.getaddrinfo(self.host, self.port, type=socket.SOCK_DGRAM)
        except OSError as exc:
            raise TransientSinkError(f"syslog udp://{self.host}:{self.port}: {exc}") from exc
        family, _, _, _, addr = infos[0]
        with socket.socket(family, socket.SOCK_DGRAM) as sock:
            for i, ev in enumerate(events):
                data = _body(ev).encode("utf-8")
                if len(data) > self.max_datagram:
                    rejected[i] = f"message of {len(data)} bytes exceeds the UDP limit of {self.max_datagram} (use tcp or tls)"
                    continue
                try:
                    sock.sendto(data, addr)
                except OSError as exc:
                    raise TransientSinkError(f"syslog udp://{self.host}:{self.port}: {exc.strerror or exc}", delivered=i) from exc
        return Delivery(rejected)

    def close(self) -> None:
        if self._sock is not None:
            with contextlib.suppress(OSError):
                self._sock.close()
            self._sock = None

    def describe(self) -> str:
        return f"syslog sink {self.name} → {self.protocol}://{self.host}:{self.port}"


# ---- SOAR webhook -------------------------------------------------------------------------------------


class WebhookSink(Sink):
    """One ``POST`` per event to a SOAR / incident webhook (by default only blocks and approvals).

    Headers: ``Idempotency-Key`` (the event uid: the receiver drops repeats), ``X-Fiveplane-Timestamp``
    and, with a secret, ``X-Fiveplane-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">``.
    2xx delivers; 401 / 403 stop the export; other 4xx (except 408, 425, 429) reject the event (dead
    letter); 5xx, 408, 425, 429 and connection errors are retried.
    """

    type = "webhook"

    DEFAULT_FILTER = EventFilter(kinds=("decision", "approval.*"), verdicts=("block", "require_approval", "defer"))

    def __init__(
        self,
        name: str,
        url: str,
        formatter: Formatter,
        *,
        secret: str | None = None,
        headers: dict[str, str] | None = None,
        verify: bool | str = True,
        timeout: float = 10.0,
        filter: EventFilter | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        super().__init__(name, formatter, filter=filter or self.DEFAULT_FILTER, max_batch=100)
        self.url = url
        self.secret = secret.encode() if secret else None
        self._client = httpx.Client(
            headers={"Content-Type": "application/json", **(headers or {})}, verify=verify, timeout=timeout, transport=transport
        )

    def sign(self, timestamp: str, body: bytes) -> str | None:
        if self.secret is None:
            return None
        return "sha256=" + hmac.new(self.secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()

    def send(self, events: Sequence[ExportEvent]) -> Delivery:
        rejected: dict[int, str] = {}
        for i, ev in enumerate(events):
            body = (
                json.dumps(ev.data, ensure_ascii=False, default=str) if ev.text is None else json.dumps({"message": ev.text})
            ).encode()
            ts = str(int(time.time()))
            headers = {"Idempotency-Key": ev.uid, "X-Fiveplane-Timestamp": ts, "X-Fiveplane-Event": ev.kind}
            sig = self.sign(ts, body)
            if sig:
                headers["X-Fiveplane-Signature"] = sig
            try:
                resp = self._client.post(self.url, content=body, headers=headers)
            except httpx.HTTPError as exc:
                raise TransientSinkError(f"webhook {self.url}: {type(exc).__name__}: {exc}", delivered=i) from exc
            if 200 <= resp.status_code < 300:
                continue
            if resp.status_code in (401, 403):
                raise FatalSinkError(f"webhook {self.url}: HTTP {resp.status_code}: {resp.text[:300]}")
            if 400 <= resp.status_code < 500 and resp.status_code not in (408, 425, 429):
                rejected[i] = f"HTTP {resp.status_code}: {resp.text[:300]}"
                continue
            raise TransientSinkError(f"webhook {self.url}: HTTP {resp.status_code}", delivered=i)
        return Delivery(rejected)

    def close(self) -> None:
        self._client.close()

    def describe(self) -> str:
        return f"webhook sink {self.name} → {self.url}"
