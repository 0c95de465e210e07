"""The governed httpx transports: every request, redirect hop and DNS answer is checked.

Inner transports are ``httpx.MockTransport`` (or a loopback server the test starts); DNS is a fake
resolver, so no test touches the network or real DNS.
"""

from __future__ import annotations

import asyncio
import http.server
import socket
import threading
import time
from collections.abc import Iterator
from typing import ClassVar

import httpx
import pytest

from fiveplane._net._egress import EgressPolicy, Scope
from fiveplane._net._transport import (
    AsyncGovernedTransport,
    EgressBlocked,
    EgressGrant,
    GovernedTransport,
    async_system_resolver,
    set_grant,
)
from fiveplane._planes._network import NetworkConfig

CONFIG = NetworkConfig.model_validate(
    {
        "egress": [
            {
                "id": "web.sites",
                "tools": ["web.fetch"],
                "allow": ["https://acme.example", "https://*.acme.example", "http://acme.example"],
            },
            {"id": "web.partner", "tools": ["web.fetch"], "allow": ["https://partner.example:8443/api/*"]},
            {"id": "web.lab", "tools": ["web.fetch"], "allow": ["http://svc.test:*"], "networks": ["127.0.0.0/8"]},
        ]
    }
)
POLICY: EgressPolicy = CONFIG.egress_policy

DNS = {
    "acme.example": ["93.184.216.34"],
    "www.acme.example": ["93.184.216.35", "2606:2800:220:1::1"],
    "partner.example": ["203.0.114.7"],
    "rebind.acme.example": ["93.184.216.36", "127.0.0.1"],
    "meta.acme.example": ["169.254.169.254"],
    "private.acme.example": ["10.1.2.3"],
    "empty.acme.example": [],
    "svc.test": ["127.0.0.1"],
}


def resolver(host: str) -> list[str]:
    if host == "broken.acme.example":
        raise OSError("resolver exploded")
    return DNS[host]


class Recorder:
    """A MockTransport handler that records what reached the inner transport."""

    def __init__(self, routes: dict[str, httpx.Response] | None = None) -> None:
        self.requests: list[httpx.Request] = []
        self.routes = routes or {}

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        host = request.headers["host"]
        return self.routes.get(f"{host}{request.url.path}", httpx.Response(200, text=f"hello from {host}"))


def client(recorder: Recorder, **kw: object) -> httpx.Client:
    transport = GovernedTransport(POLICY, httpx.MockTransport(recorder), tool="web.fetch", resolver=resolver, **kw)  # type: ignore[arg-type]
    return httpx.Client(transport=transport, follow_redirects=True)


def test_allowed_request_is_pinned_to_the_checked_address() -> None:
    rec = Recorder()
    with client(rec) as c:
        r = c.get("https://www.acme.example/page?q=1")
    assert r.status_code == 200 and r.text == "hello from www.acme.example"
    sent = rec.requests[0]
    assert sent.url.host == "93.184.216.35"  # pinned: the inner transport never resolves again
    assert sent.url.path == "/page" and sent.url.query == b"q=1"
    assert sent.headers["host"] == "www.acme.example"  # the server still sees the name
    assert sent.extensions["sni_hostname"] == "www.acme.example"  # and TLS verifies the name


def test_ipv6_answers_are_pinned_with_brackets() -> None:
    rec = Recorder()
    DNS["v6.acme.example"] = ["2606:2800:220:1::1"]
    with client(rec) as c:
        c.get("https://v6.acme.example/")
    assert rec.requests[0].url.host == "2606:2800:220:1::1"
    assert "[2606:2800:220:1::1]" in str(rec.requests[0].url)


@pytest.mark.parametrize(
    ("url", "code"),
    [
        ("https://evil.example/", "not_allowed"),
        ("https://acme.example:8443/", "not_allowed"),
        ("https://partner.example:8443/admin", "not_allowed"),
        ("http://169.254.169.254/latest/meta-data/", "ssrf"),
        ("http://2130706433/", "nonstandard_ip"),
        ("http://[::ffff:127.0.0.1]/", "ssrf"),
        ("https://user:pw@acme.example/", "userinfo"),
        ("https://rebind.acme.example/", "ssrf_dns"),  # one of the answers is loopback
        ("https://meta.acme.example/", "ssrf_dns"),
        ("https://private.acme.example/", "ssrf_dns"),
        ("https://empty.acme.example/", "ssrf_dns"),
        ("https://broken.acme.example/", "resolver_error"),
    ],
)
def test_blocked_requests_never_reach_the_inner_transport(url: str, code: str) -> None:
    rec = Recorder()
    with client(rec) as c, pytest.raises(EgressBlocked) as info:
        c.get(url)
    assert info.value.code == code, str(info.value)
    assert isinstance(info.value, httpx.TransportError)
    assert rec.requests == []


def test_private_network_allowed_by_its_rule_only() -> None:
    rec = Recorder()
    with client(rec) as c:
        assert c.get("http://svc.test:8080/").status_code == 200  # 127.0.0.1, allowed for web.lab
    assert rec.requests[0].url.host == "127.0.0.1"


def test_every_redirect_hop_is_checked() -> None:
    rec = Recorder(
        {
            "acme.example/go-meta": httpx.Response(302, headers={"location": "http://169.254.169.254/latest/meta-data/"}),
            "acme.example/go-www": httpx.Response(301, headers={"location": "https://www.acme.example/landing"}),
            "acme.example/go-evil": httpx.Response(307, headers={"location": "https://evil.example/"}),
            "acme.example/go-rebind": httpx.Response(308, headers={"location": "/x", "x": "y"}),
        }
    )
    with client(rec) as c:
        r = c.get("https://acme.example/go-www")
        assert r.status_code == 200 and str(r.url) == "https://www.acme.example/landing"
        assert [q.headers["host"] for q in rec.requests] == ["acme.example", "www.acme.example"]
        with pytest.raises(EgressBlocked, match="cloud metadata"):
            c.get("https://acme.example/go-meta")
        with pytest.raises(EgressBlocked, match="allow-list"):
            c.get("https://acme.example/go-evil")
    # a relative redirect is resolved against the *name*, not the pinned address
    with client(rec) as c:
        c.get("https://acme.example/go-rebind")
    assert rec.requests[-1].headers["host"] == "acme.example" and rec.requests[-1].url.path == "/x"


def test_a_bound_call_reaches_only_what_its_arguments_showed() -> None:
    rec = Recorder({"acme.example/moved": httpx.Response(302, headers={"location": "https://www.acme.example/new"})})
    grant = EgressGrant(
        action_id="a1", scope=Scope(tool="web.fetch"), origins=frozenset({("https", "acme.example", 443)}), bound=True
    )
    set_grant(grant)
    try:
        with client(rec) as c:
            assert c.get("https://acme.example/").status_code == 200
            with pytest.raises(EgressBlocked) as info:
                c.get("https://www.acme.example/")  # allowed by the rules, but not in the arguments
            assert info.value.code == "not_in_arguments"
            # a redirect this transport saw (and the rules allow) becomes reachable
            assert c.get("https://acme.example/moved").status_code == 200
            assert c.get("https://www.acme.example/again").status_code == 200
        with client(rec, bind=False) as c:
            set_grant(EgressGrant(action_id="a2", scope=Scope(tool="web.fetch"), origins=frozenset(), bound=True))
            assert c.get("https://www.acme.example/").status_code == 200
    finally:
        set_grant(None)


def test_grant_scope_fills_in_the_tool() -> None:
    rec = Recorder()
    transport = GovernedTransport(POLICY, httpx.MockTransport(rec), resolver=resolver)  # no tool given
    with httpx.Client(transport=transport) as c:
        with pytest.raises(EgressBlocked, match="unscoped"):
            c.get("https://acme.example/")
        set_grant(
            EgressGrant(
                action_id="a", scope=Scope(tool="web.fetch"), origins=frozenset({("https", "acme.example", 443)}), bound=True
            )
        )
        try:
            assert c.get("https://acme.example/").status_code == 200
        finally:
            set_grant(None)


def test_pinning_can_be_switched_off() -> None:
    rec = Recorder()
    with client(rec, pin=False) as c:
        c.get("https://acme.example/")
    assert rec.requests[0].url.host == "acme.example"


def test_streaming_bodies_pass_through() -> None:
    rec = Recorder()

    def chunks() -> Iterator[bytes]:
        yield b"a" * 10
        yield b"b" * 10

    with client(rec) as c:
        c.post("https://acme.example/upload", content=chunks())
    assert rec.requests[0].read() == b"a" * 10 + b"b" * 10


# ---- async ------------------------------------------------------------------------------------


@pytest.fixture
def no_sync_dns_in_loop(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[str]]:
    """Fail if socket.getaddrinfo runs on a thread with a running event loop; fake its answers."""
    calls: list[str] = []

    def fake(host: str, *args: object, **kwargs: object) -> list[tuple[object, ...]]:
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise AssertionError("socket.getaddrinfo called on the event loop thread")
        calls.append(host)
        return [(socket.AF_INET6 if ":" in ip else socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, 0)) for ip in DNS[host]]

    monkeypatch.setattr(socket, "getaddrinfo", fake)
    yield calls


async def test_async_transport_checks_and_pins(no_sync_dns_in_loop: list[str]) -> None:
    rec = Recorder()
    transport = AsyncGovernedTransport(POLICY, httpx.MockTransport(rec), tool="web.fetch")  # default: loop.getaddrinfo
    async with httpx.AsyncClient(transport=transport, follow_redirects=True) as c:
        r = await c.get("https://acme.example/")
        assert r.status_code == 200
        with pytest.raises(EgressBlocked):
            await c.get("http://169.254.169.254/")
        with pytest.raises(EgressBlocked, match="loopback"):
            await c.get("https://rebind.acme.example/")
    assert rec.requests[0].url.host == "93.184.216.34"
    assert no_sync_dns_in_loop == ["acme.example", "rebind.acme.example"]


async def test_async_transport_with_injected_resolvers() -> None:
    from blockbuster import blockbuster_ctx

    async def aresolver(host: str) -> list[str]:
        await asyncio.sleep(0)
        return resolver(host)

    def slow_sync_resolver(host: str) -> list[str]:
        time.sleep(0.01)  # blocking: must run off the loop
        return resolver(host)

    for res in (aresolver, slow_sync_resolver):
        rec = Recorder()
        transport = AsyncGovernedTransport(POLICY, httpx.MockTransport(rec), tool="web.fetch", resolver=res)
        with blockbuster_ctx("fiveplane"):
            async with httpx.AsyncClient(transport=transport, follow_redirects=True) as c:
                assert (await c.get("https://www.acme.example/")).status_code == 200
                with pytest.raises(EgressBlocked, match="failing closed"):
                    await c.get("https://broken.acme.example/")
        assert rec.requests[0].url.host == "93.184.216.35"


async def test_async_system_resolver_uses_the_loop(no_sync_dns_in_loop: list[str]) -> None:
    assert await async_system_resolver("acme.example") == ["93.184.216.34"]


# ---- a real loopback server ---------------------------------------------------------------------


class _Handler(http.server.BaseHTTPRequestHandler):
    seen: ClassVar[list[str]] = []

    def do_GET(self) -> None:
        _Handler.seen.append(self.headers["Host"])
        body = b"loopback ok"
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def loopback_server() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        server.server_close()


def test_loopback_server_through_the_real_http_transport(loopback_server: int) -> None:
    port = loopback_server
    transport = GovernedTransport(POLICY, tool="web.fetch", resolver=resolver)  # inner: httpx.HTTPTransport()
    with httpx.Client(transport=transport) as c:
        r = c.get(f"http://svc.test:{port}/status")  # svc.test -> 127.0.0.1, allowed by web.lab's networks
        assert r.text == "loopback ok"
        assert _Handler.seen[-1] == f"svc.test:{port}"
        with pytest.raises(EgressBlocked):
            c.get(f"http://127.0.0.1:{port}/status")  # the bare address is no rule's host
    other = GovernedTransport(POLICY, tool="other.tool", resolver=resolver)
    with httpx.Client(transport=other) as c, pytest.raises(EgressBlocked):
        c.get(f"http://svc.test:{port}/status")
