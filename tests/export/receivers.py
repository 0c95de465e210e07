"""Loopback receivers the export tests start: a Splunk HEC endpoint and syslog over TCP, TLS and UDP.

Each can go down (its port closes: connections are refused) and come back on the same port, so a
test can take the SIEM away in the middle of an export and check what arrived.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import socket
import ssl
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


class HecReceiver:
    """``POST /services/collector/event`` with ``Authorization: Splunk <token>``; stores every event.

    ``down()`` closes the port; ``up()`` listens again on the same port. ``fail_next(n, status)``
    answers the next ``n`` requests with an error; ``reject`` holds uids whose events get a
    400 "invalid data format" (HEC code 6).
    """

    def __init__(self, token: str = "test-token") -> None:
        self.token = token
        self.events: list[dict[str, Any]] = []
        self.requests = 0
        self.reject: set[str] = set()
        self._fail: list[int] = []
        self._lock = threading.Lock()
        self.port = 0
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.down_after: int | None = None
        """Go down (from inside the request handler) once this many events were stored."""
        self.went_down = threading.Event()
        self.up()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def fail_next(self, n: int, status: int = 503) -> None:
        with self._lock:
            self._fail.extend([status] * n)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        rx = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _reply(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.close_connection = True  # one request per connection: down() really closes the door
                self.send_header("Connection", "close")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                body = self.rfile.read(length)
                with rx._lock:
                    rx.requests += 1
                    if self.path != "/services/collector/event":
                        self._reply(404, {"text": "not found", "code": 404})
                        return
                    if self.headers.get("Authorization") != f"Splunk {rx.token}":
                        self._reply(401, {"text": "Invalid token", "code": 4})
                        return
                    if rx._fail:
                        self._reply(rx._fail.pop(0), {"text": "Server is busy", "code": 9})
                        return
                    decoder = json.JSONDecoder()
                    text = body.decode()
                    pos, batch = 0, []
                    while pos < len(text):
                        while pos < len(text) and text[pos] in " \r\n\t":
                            pos += 1
                        if pos >= len(text):
                            break
                        obj, pos = decoder.raw_decode(text, pos)
                        batch.append(obj)
                    if any(e.get("fields", {}).get("fiveplane_uid") in rx.reject for e in batch):
                        self._reply(400, {"text": "Invalid data format", "code": 6, "invalid-event-number": 0})
                        return
                    rx.events.extend(batch)
                    stop = rx.down_after is not None and len(rx.events) >= rx.down_after
                    if stop:
                        rx.down_after = None
                self._reply(200, {"text": "Success", "code": 0})
                if stop:
                    threading.Thread(target=rx.down, daemon=True).start()

        return Handler

    def up(self) -> None:
        for _ in range(50):
            try:
                server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
                break
            except OSError:
                time.sleep(0.05)
        else:
            raise RuntimeError(f"cannot listen on 127.0.0.1:{self.port} again")
        server.daemon_threads = True
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()

    def down(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
            self.went_down.set()

    def close(self) -> None:
        self.down()

    def uids(self) -> list[str]:
        return [e["fields"]["fiveplane_uid"] for e in self.events]


class SyslogStreamReceiver:
    """Syslog over TCP (or TLS, with ``tls=(certfile, keyfile)``) with octet-counting framing.

    Reads each connection to its end, then closes it (what a syslog receiver does when the client
    half-closes). ``down()`` closes the listening port and drops open connections at once; frames a
    connection had not delivered completely are lost, as with a receiver that dies.
    """

    def __init__(self, tls: tuple[Path, Path] | None = None) -> None:
        self.messages: list[str] = []
        self.connections = 0
        self._lock = threading.Lock()
        self.port = 0
        self._ctx: ssl.SSLContext | None = None
        if tls is not None:
            self._ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            self._ctx.load_cert_chain(str(tls[0]), str(tls[1]))
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self.down_after: int | None = None
        self.went_down = threading.Event()
        self.up()

    def up(self) -> None:
        for _ in range(50):
            try:
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind(("127.0.0.1", self.port))
                break
            except OSError:
                s.close()
                time.sleep(0.05)
        else:
            raise RuntimeError(f"cannot listen on 127.0.0.1:{self.port} again")
        s.listen(16)
        self.port = s.getsockname()[1]
        self._listener = s
        threading.Thread(target=self._accept, args=(s,), daemon=True).start()

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        conn: socket.socket = raw
        try:
            if self._ctx is not None:
                conn = self._ctx.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        with self._lock:
            self.connections += 1
            self._conns.add(conn)
        buf = b""
        try:
            while True:
                try:
                    chunk = conn.recv(65536)
                except (OSError, ssl.SSLError):
                    return  # dropped by down(): whatever was not framed completely is lost
                if not chunk:
                    break
                buf += chunk
                while True:
                    sp = buf.find(b" ")
                    if sp <= 0:
                        break
                    n = int(buf[:sp])
                    if len(buf) < sp + 1 + n:
                        break
                    msg = buf[sp + 1 : sp + 1 + n].decode()
                    buf = buf[sp + 1 + n :]
                    stop = False
                    with self._lock:
                        if self._listener is None:
                            return  # down: drop the rest
                        self.messages.append(msg)
                        if self.down_after is not None and len(self.messages) >= self.down_after:
                            self.down_after = None
                            stop = True
                    if stop:
                        self.down()
                        return
            if isinstance(conn, ssl.SSLSocket):
                with contextlib.suppress(OSError, ssl.SSLError):
                    conn = conn.unwrap()
        finally:
            with self._lock:
                self._conns.discard(conn)
                aborted = self._listener is None
            if aborted:  # went down with this connection's data in flight: reset, as a dying receiver does
                _abort(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def down(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
            conns = list(self._conns)
        if listener is not None:
            listener.close()
        for c in conns:
            _abort(c)
            with contextlib.suppress(OSError):
                c.close()
        self.went_down.set()

    def close(self) -> None:
        self.down()


def _abort(conn: socket.socket) -> None:
    """Make the next close a reset (SO_LINGER 0), not an orderly shutdown."""
    with contextlib.suppress(OSError):
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


class SyslogUdpReceiver:
    def __init__(self) -> None:
        self.messages: list[str] = []
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data, _ = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append(data.decode())

    def wait_for(self, n: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.messages) < n and time.monotonic() < deadline:
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._sock.close()


def self_signed_cert(directory: Path) -> tuple[Path, Path]:
    """A throw-away certificate for 127.0.0.1 / localhost (cryptography)."""
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_file, key_file = directory / "cert.pem", directory / "key.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_file, key_file


def cef_uid(message: str) -> str:
    """The event uid (``externalId``) of a CEF syslog message."""
    ext = message.split("|", 7)[7]
    for part in ext.split(" "):
        if part.startswith("externalId="):
            return part.split("=", 1)[1].replace("\\=", "=").replace("\\\\", "\\")
    raise AssertionError(f"no externalId in {message!r}")
