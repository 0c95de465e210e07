"""httpx transports that enforce egress policy on every request, every redirect hop and every DNS answer.

Wrap the transport a tool or connector already uses (``httpx.HTTPTransport()`` by default)::

    client = httpx.Client(transport=GovernedTransport(policy, tool="web.fetch"), follow_redirects=True)

For each request the transport

1. checks the URL the way the network plane checks arguments (canonical host, SSRF, egress rules
   for the tool / connector / agent);
2. when a governed tool call is running in this context and its tool takes URLs, checks that the
   request goes to an origin the call's *arguments* showed (or a redirect target this transport
   saw and allowed): a tool cannot reach what its arguments did not show;
3. resolves the host name with the injectable resolver (DNS never in the event loop: the async
   transport uses ``loop.getaddrinfo``), judges *every* address, and pins the connection to the
   first one by rewriting the request URL to the IP while keeping the ``Host`` header and the TLS
   server name (``sni_hostname``), so a second DNS answer cannot move it (DNS rebinding);
4. hands the request to the inner transport. Redirects are followed by the *client*, so every
   hop comes back through step 1.

A blocked request raises :class:`EgressBlocked` (an ``httpx.TransportError``); nothing is sent.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import socket
import threading
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

import httpx

from .._decisions import short_digest
from ._egress import EgressPolicy, Scope, UrlCheck
from ._messages import check_message
from ._url import DEFAULT_PORTS, ParsedURL, UrlError, canonical_host

__all__ = [
    "AsyncGovernedTransport",
    "AsyncResolver",
    "EgressBlocked",
    "EgressGrant",
    "GovernedTransport",
    "Resolver",
    "async_system_resolver",
    "current_grant",
    "system_resolver",
]

Resolver = Callable[[str], Sequence[str]]
"""``host -> IP addresses`` (strings). Raise, or return nothing, to fail the request closed."""
AsyncResolver = Callable[[str], Awaitable[Sequence[str]]]

Origin = tuple[str | None, str, int | None]
"""(scheme, canonical host, port); None scheme / port: any (from bare host arguments)."""

_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECT_ORIGINS = 32


def system_resolver(host: str) -> list[str]:
    """The operating system's resolver (``socket.getaddrinfo``), addresses in its order, deduplicated."""
    infos = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


async def async_system_resolver(host: str) -> list[str]:
    """:func:`system_resolver` without blocking the event loop (``loop.getaddrinfo``)."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, None, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _where(request: httpx.Request) -> str:
    """The request's origin and a digest of its URL: an exception message never quotes a path or a query."""
    url = request.url
    port = f":{url.port}" if url.port else ""
    return f"{url.scheme}://{url.host}{port} (url {short_digest(str(url))})"


def _refused(check: UrlCheck, request: httpx.Request, scope: Scope) -> str:
    return f"egress blocked: {check_message(check, str(request.url), scope)}"


class EgressBlocked(httpx.TransportError):
    """The governed transport refused a request; nothing was sent."""

    def __init__(self, message: str, *, request: httpx.Request, code: str, rule_id: str) -> None:
        super().__init__(message, request=request)
        self.code = code
        self.rule_id = rule_id


@dataclass
class EgressGrant:
    """What one allowed tool call may reach: the origins its arguments showed.

    Set by the network plane when a tool call is allowed, for the code that runs the tool (a
    context variable, so concurrent calls in other tasks or threads do not share it).
    """

    action_id: str
    scope: Scope
    origins: frozenset[Origin]
    bound: bool
    """The tool takes URLs from its arguments: requests must stay within ``origins``."""
    _redirects: set[Origin] = field(default_factory=set)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def permits(self, url: ParsedURL) -> bool:
        scheme, host, port = url.origin
        for o_scheme, o_host, o_port in (*self.origins, *self._redirects):
            if o_host == host and (o_scheme is None or o_scheme == scheme) and (o_port is None or o_port == port):
                return True
        return False

    def allow_redirect(self, url: ParsedURL) -> None:
        with self._lock:
            if len(self._redirects) < _MAX_REDIRECT_ORIGINS:
                self._redirects.add(url.origin)


_GRANT: contextvars.ContextVar[EgressGrant | None] = contextvars.ContextVar("fiveplane_egress_grant", default=None)


def current_grant() -> EgressGrant | None:
    """The egress grant of the governed tool call running in this context, if any."""
    return _GRANT.get()


def set_grant(grant: EgressGrant | None) -> None:
    _GRANT.set(grant)


def _parsed_from_httpx(url: httpx.URL, allow_userinfo: bool) -> ParsedURL:
    raw_host = url.raw_host.decode("ascii")
    host = canonical_host(f"[{raw_host}]" if ":" in raw_host else raw_host)
    scheme = url.scheme
    raw_path = url.raw_path.decode("ascii")
    path, has_query, query = raw_path.partition("?")
    userinfo = url.userinfo.decode("ascii")
    if userinfo and not allow_userinfo:
        raise UrlError("userinfo", f"the URL carries user info before '@'; the host it reaches is {host}")
    return ParsedURL(
        raw=str(url),
        scheme=scheme,
        host=host,
        port=url.port if url.port is not None else DEFAULT_PORTS.get(scheme),
        explicit_port=url.port is not None,
        path=path or "/",
        query=query if has_query else None,
        userinfo=userinfo,
    )


class _Gate:
    """The checks both transports share (no I/O here)."""

    def __init__(self, policy: EgressPolicy, scope: Scope, *, bind: bool, pin: bool) -> None:
        self.policy = policy
        self.scope = scope
        self.bind = bind
        self.pin = pin

    def _scope(self, grant: EgressGrant | None) -> Scope:
        agent = self.scope.agent
        if agent is None and grant is not None:
            agent = grant.scope.agent
        if agent is None:
            from .._engine import current_run

            run = current_run()
            link = next((p for p in reversed(run.principal) if p.kind.value == "agent"), None) if run else None
            agent = link.id if link else None
        base = grant.scope if grant is not None else Scope()
        return Scope(tool=self.scope.tool or base.tool, connector=self.scope.connector or base.connector, agent=agent)

    def check(self, request: httpx.Request) -> tuple[UrlCheck, EgressGrant | None]:
        grant = _GRANT.get()
        scope = self._scope(grant)
        try:
            parsed = _parsed_from_httpx(request.url, self.policy.allow_userinfo)
        except UrlError as exc:
            check = self.policy._url_error(str(request.url), exc)
            raise EgressBlocked(
                _refused(check, request, scope), request=request, code=check.code, rule_id=check.rule_id
            ) from None
        check = self.policy.check_url(parsed, scope)
        if not check.allowed:
            raise EgressBlocked(_refused(check, request, scope), request=request, code=check.code, rule_id=check.rule_id)
        if self.bind and grant is not None and grant.bound and not grant.permits(parsed):
            raise EgressBlocked(
                f"egress blocked: {_where(request)} was not shown in the arguments of the governed call {grant.scope.tool} ({grant.action_id})",
                request=request,
                code="not_in_arguments",
                rule_id="network.bound",
            )
        return check, grant

    def needs_dns(self, check: UrlCheck) -> bool:
        return check.url is not None and check.url.host.ip is None

    def pinned(self, request: httpx.Request, check: UrlCheck, addresses: Sequence[str]) -> httpx.Request:
        assert check.url is not None
        reason = self.policy.check_addresses(check.url.host, addresses, check.networks)
        if reason is not None:
            raise EgressBlocked(
                f"egress blocked: {_where(request)}: {reason} (SSRF protection)",
                request=request,
                code="ssrf_dns",
                rule_id="network.ssrf",
            )
        if not self.pin:
            return request
        ip = addresses[0].split("%", 1)[0]
        extensions = dict(request.extensions)
        if request.url.scheme in ("https", "wss"):
            extensions.setdefault("sni_hostname", check.url.host.name)
        return httpx.Request(
            request.method, request.url.copy_with(host=ip), headers=request.headers, stream=request.stream, extensions=extensions
        )

    def after(self, request: httpx.Request, response: httpx.Response, grant: EgressGrant | None) -> None:
        """Remember an allowed redirect target, so the next hop of a bound call may go there."""
        if grant is None or not grant.bound or response.status_code not in _REDIRECTS:
            return
        location = response.headers.get("location")
        if not location:
            return
        try:
            target = request.url.join(location)
            parsed = _parsed_from_httpx(target, self.policy.allow_userinfo)
        except (httpx.InvalidURL, UrlError, UnicodeError, ValueError):
            return
        if self.policy.check_url(parsed, self._scope(grant)).allowed:
            grant.allow_redirect(parsed)

    @staticmethod
    def resolve_failed(request: httpx.Request, check: UrlCheck, exc: BaseException) -> EgressBlocked:
        host = check.url.host if check.url else "?"
        return EgressBlocked(
            f"egress blocked: resolving {host} failed ({type(exc).__name__}: {exc}); failing closed",
            request=request,
            code="resolver_error",
            rule_id="network.dns",
        )


class GovernedTransport(httpx.BaseTransport):
    """A sync httpx transport that enforces the egress policy (see the module docstring).

    Args:
        policy: the compiled egress policy (``NetworkPlane.egress_policy(...)``).
        inner: the transport that sends allowed requests (default ``httpx.HTTPTransport()``).
        tool, connector, agent: the scope; missing parts come from the running governed call
            (its tool and connector) and the current run (its agent).
        resolver: ``host -> [ip, ...]``; default :func:`system_resolver`.
        bind: enforce "only origins the call's arguments showed" for tools that take URLs.
        pin: connect to the checked address (rewrite the URL host, keep Host and SNI).
    """

    def __init__(
        self,
        policy: EgressPolicy,
        inner: httpx.BaseTransport | None = None,
        *,
        tool: str | None = None,
        connector: str | None = None,
        agent: str | None = None,
        resolver: Resolver | None = None,
        bind: bool = True,
        pin: bool = True,
    ) -> None:
        self._gate = _Gate(policy, Scope(tool=tool, connector=connector, agent=agent), bind=bind, pin=pin)
        self._inner = inner if inner is not None else httpx.HTTPTransport()
        self._resolver = resolver or system_resolver

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        gate = self._gate
        check, grant = gate.check(request)
        outgoing = request
        if gate.needs_dns(check):
            assert check.url is not None
            try:
                addresses = list(self._resolver(check.url.host.name))
            except Exception as exc:
                raise gate.resolve_failed(request, check, exc) from exc
            outgoing = gate.pinned(request, check, addresses)
        response = self._inner.handle_request(outgoing)
        gate.after(request, response, grant)
        return response

    def close(self) -> None:
        self._inner.close()


class AsyncGovernedTransport(httpx.AsyncBaseTransport):
    """The async twin of :class:`GovernedTransport`; DNS never blocks the event loop.

    ``resolver`` may be a coroutine function (awaited) or a plain function (run in a worker
    thread); the default uses ``loop.getaddrinfo``.
    """

    def __init__(
        self,
        policy: EgressPolicy,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        tool: str | None = None,
        connector: str | None = None,
        agent: str | None = None,
        resolver: AsyncResolver | Resolver | None = None,
        bind: bool = True,
        pin: bool = True,
    ) -> None:
        self._gate = _Gate(policy, Scope(tool=tool, connector=connector, agent=agent), bind=bind, pin=pin)
        self._inner = inner if inner is not None else httpx.AsyncHTTPTransport()
        self._resolver: AsyncResolver | Resolver = resolver or async_system_resolver

    async def _resolve(self, host: str) -> list[str]:
        resolver = self._resolver
        if inspect.iscoroutinefunction(resolver) or inspect.iscoroutinefunction(getattr(resolver, "__call__", None)):  # noqa: B004
            return list(await cast(AsyncResolver, resolver)(host))
        result: Any = await asyncio.to_thread(resolver, host)
        if inspect.isawaitable(result):
            result = await result
        return list(result)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        gate = self._gate
        check, grant = gate.check(request)
        outgoing = request
        if gate.needs_dns(check):
            assert check.url is not None
            try:
                addresses = await self._resolve(check.url.host.name)
            except Exception as exc:
                raise gate.resolve_failed(request, check, exc) from exc
            outgoing = gate.pinned(request, check, addresses)
        response = await self._inner.handle_async_request(outgoing)
        gate.after(request, response, grant)
        return response

    async def aclose(self) -> None:
        await self._inner.aclose()
