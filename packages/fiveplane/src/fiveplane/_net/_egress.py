"""Egress rules and SSRF checks, compiled once and shared by the network plane and the transports.

An :class:`EgressPolicy` answers one question fast and without I/O: may *this* URL be reached by
*this* tool / connector / agent (:class:`Scope`)? It applies, in order:

1. parsing and canonicalization (:mod:`._url`): anything ambiguous is blocked;
2. blocked schemes (``gopher``, ``dict``, ``file``, ...);
3. SSRF protection: IP literals that are loopback, private, link-local, unique-local, multicast,
   unspecified, reserved or cloud metadata; host names such as ``localhost``, ``*.internal`` and
   the metadata services' names. Networks an operator means to reach can be allowed
   (``allow_networks``, or ``networks`` on an egress rule); metadata endpoints never;
4. egress rules: the URL must match an ``allow`` pattern of a rule whose scope covers the action,
   and no ``deny`` pattern (deny overrides).

:meth:`EgressPolicy.check_addresses` is the second half the transports run after DNS: every
address a name resolves to is judged the same way (DNS rebinding).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import fnmatchcase
from functools import lru_cache

from .._policy._load import Glob
from ._addr import METADATA_HOSTNAMES, IPAddress, IPNetwork, classify_ip, parse_ip
from ._url import DEFAULT_PORTS, Host, ParsedURL, UrlError, canonical_host, parse_url

__all__ = [
    "DEFAULT_BLOCKED_HOSTS",
    "DEFAULT_BLOCKED_SCHEMES",
    "EgressPattern",
    "EgressPolicy",
    "EgressRule",
    "Scope",
    "UrlCheck",
]

DEFAULT_BLOCKED_HOSTS: tuple[str, ...] = (
    "localhost",
    "*.localhost",
    "localhost.localdomain",
    "ip6-localhost",
    "ip6-loopback",
    "*.local",
    "*.localdomain",
    "*.internal",
    "*.home.arpa",
    "*.in-addr.arpa",
    "*.ip6.arpa",
)
"""Host names that name this machine or a private network (blocked unless ``allow_hosts`` lists them)."""

DEFAULT_BLOCKED_SCHEMES: tuple[str, ...] = ("gopher", "dict", "file", "ldap", "ldaps", "tftp", "jar", "netdoc", "phar", "expect")
"""Schemes used to smuggle requests to internal services; blocked wherever they appear."""

_PATTERN = re.compile(
    r"^(?P<scheme>\*|[a-z][a-z0-9+.\-]*)://(?P<host>\[[^\]]+\]|[^:/?#\[\]]+)(?::(?P<port>\*|[0-9]{1,5}(?:-[0-9]{1,5})?))?(?P<path>/[^?#]*)?$"
)


@dataclass(frozen=True, slots=True)
class Scope:
    """Who reaches out: the tool, its connector and the acting agent (any may be unknown)."""

    tool: str | None = None
    connector: str | None = None
    agent: str | None = None

    def describe(self) -> str:
        parts = [
            f"tool {self.tool}" if self.tool else "",
            f"connector {self.connector}" if self.connector else "",
            f"agent {self.agent}" if self.agent else "",
        ]
        return ", ".join(p for p in parts if p) or "an unscoped caller"


@dataclass(frozen=True, slots=True)
class EgressPattern:
    """One allow/deny pattern: ``scheme://host[:port][/path-glob]``.

    * scheme: a scheme, or ``*`` for http and https;
    * host: a name, ``*.example.com`` (any sub-domain, not the apex), ``*`` (any host) or an IP literal;
    * port: omitted (the scheme's default), a number, a range ``8000-8099`` or ``*``;
    * path: omitted (any path) or a glob matched against the normalized path (``*`` crosses ``/``).
    """

    text: str
    schemes: frozenset[str]
    host: str
    """Canonical host, ``*`` or a ``.suffix`` (for ``*.suffix``)."""
    ports: tuple[int, int] | None
    """Inclusive range; None: the scheme's default port."""
    path: str | None

    @classmethod
    def parse(cls, text: str) -> EgressPattern:
        m = _PATTERN.match(text.strip())
        if m is None:
            raise ValueError(
                f"egress pattern {text!r} must look like scheme://host[:port][/path], e.g. https://*.example.com/api/*"
            )
        scheme = m.group("scheme")
        schemes = frozenset({"http", "https"}) if scheme == "*" else frozenset({scheme})
        raw_host = m.group("host")
        if raw_host == "*":
            host = "*"
        elif raw_host.startswith("*."):
            host = "." + _pattern_host(raw_host[2:], text).name
        elif "*" in raw_host:
            raise ValueError(f"egress pattern {text!r}: a host wildcard must be a leading '*.' or '*' alone")
        else:
            host = _pattern_host(raw_host, text).name
        port = m.group("port")
        ports: tuple[int, int] | None = None
        if port == "*":
            ports = (1, 65535)
        elif port:
            lo, _, hi = port.partition("-")
            ports = (int(lo), int(hi or lo))
            if not 0 < ports[0] <= ports[1] < 65536:
                raise ValueError(f"egress pattern {text!r}: invalid port {port!r}")
        elif not all(s in DEFAULT_PORTS for s in schemes):
            raise ValueError(f"egress pattern {text!r}: scheme {scheme!r} has no default port; write one")
        path = m.group("path")
        return cls(text=text, schemes=schemes, host=host, ports=ports, path=path)

    def matches(self, url: ParsedURL) -> bool:
        if url.scheme not in self.schemes:
            return False
        name = url.host.name
        if self.host != "*" and name != self.host and not (self.host[0] == "." and name.endswith(self.host)):
            return False
        if self.ports is None:
            if url.port != DEFAULT_PORTS.get(url.scheme):
                return False
        elif url.port is None or not self.ports[0] <= url.port <= self.ports[1]:
            return False
        return self.path is None or (not url.ambiguous_path and fnmatchcase(url.path, self.path))

    def matches_host(self, host: Host, port: int | None) -> bool:
        """For bare host arguments: the host (and port, if given) could be reached under this pattern."""
        name = host.name
        if self.host != "*" and name != self.host and not (self.host[0] == "." and name.endswith(self.host)):
            return False
        if port is None:
            return True
        if self.ports is None:
            return any(DEFAULT_PORTS.get(s) == port for s in self.schemes)
        return self.ports[0] <= port <= self.ports[1]


def _pattern_host(text: str, pattern: str) -> Host:
    try:
        return canonical_host(text)
    except UrlError as exc:
        raise ValueError(f"egress pattern {pattern!r}: {exc.message}") from None


@dataclass(frozen=True)
class EgressRule:
    id: str
    allow: tuple[EgressPattern, ...] = ()
    deny: tuple[EgressPattern, ...] = ()
    tools: Glob = field(default_factory=lambda: Glob(()))
    connectors: Glob = field(default_factory=lambda: Glob(()))
    agents: Glob = field(default_factory=lambda: Glob(()))
    networks: tuple[IPNetwork, ...] = ()
    """Non-public networks the hosts this rule allows may be in (an internal API)."""
    description: str = ""

    def applies(self, scope: Scope) -> bool:
        if self.tools and not self.tools.matches(scope.tool):
            return False
        if self.connectors and not self.connectors.matches(scope.connector):
            return False
        return not (self.agents and not self.agents.matches(scope.agent))

    @property
    def targets_tools(self) -> bool:
        """Scoped to tools or connectors (so the tools it covers take URLs)."""
        return bool(self.tools or self.connectors)


@dataclass(frozen=True, slots=True)
class UrlCheck:
    """The outcome of checking one URL (or host) for one scope."""

    target: str
    """The URL or host as given (clipped)."""
    allowed: bool
    code: str
    """``allowed``, ``ssrf``, ``egress_denied``, ``not_allowed``, ``scheme_blocked``, or a :class:`UrlError` code."""
    message: str
    rule_id: str
    """The egress rule that allowed or denied it, or ``network.ssrf`` / ``network.egress`` / ``network.invalid_url``."""
    url: ParsedURL | None = None
    host: Host | None = None
    port: int | None = None
    networks: tuple[IPNetwork, ...] = ()
    """Networks that are allowed for this target beyond the public internet (for the DNS check)."""

    @property
    def ssrf(self) -> bool:
        return self.rule_id == "network.ssrf"


def _clip(text: str, limit: int = 100) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


class EgressPolicy:
    """Compiled egress rules and SSRF settings. Immutable; safe to share between threads."""

    def __init__(
        self,
        rules: Sequence[EgressRule] = (),
        *,
        allow_networks: Iterable[IPNetwork | str] = (),
        allow_hosts: Iterable[str] = (),
        block_hosts: Iterable[str] = (),
        blocked_schemes: Iterable[str] = DEFAULT_BLOCKED_SCHEMES,
        allow_userinfo: bool = False,
    ) -> None:
        self.rules = tuple(rules)
        self.allow_networks = tuple(n if not isinstance(n, str) else ipaddress.ip_network(n, strict=True) for n in allow_networks)
        self.allow_hosts = Glob(_host_glob(h) for h in allow_hosts)
        self.block_hosts = Glob((*DEFAULT_BLOCKED_HOSTS, *block_hosts))
        self.blocked_schemes = frozenset(s.lower() for s in blocked_schemes)
        self.allow_userinfo = allow_userinfo
        self._scope_cache: dict[Scope, tuple[EgressRule, ...]] = {}

    # ---- scope ----------------------------------------------------------------------------

    def rules_for(self, scope: Scope) -> tuple[EgressRule, ...]:
        hit = self._scope_cache.get(scope)
        if hit is None:
            hit = tuple(r for r in self.rules if r.applies(scope))
            if len(self._scope_cache) < 10_000:
                self._scope_cache[scope] = hit
        return hit

    def targets(self, scope: Scope) -> bool:
        """Some rule is scoped to this tool or connector (so it takes URLs: default deny applies)."""
        return any(r.targets_tools for r in self.rules_for(scope))

    # ---- checks -----------------------------------------------------------------------------

    def check_url(self, url: str | ParsedURL, scope: Scope, *, egress: bool = True) -> UrlCheck:
        """Check a URL: SSRF always, the egress allow-list when ``egress`` (the tool takes URLs)."""
        if isinstance(url, ParsedURL):
            parsed = url
        else:
            try:
                parsed = parse_url(url, self.allow_userinfo)
            except UrlError as exc:
                return self._url_error(str(url), exc)
        target = parsed.short()
        if parsed.userinfo and not self.allow_userinfo:
            return UrlCheck(
                target, False, "userinfo", f"{target}: the URL carries user info before '@'", "network.invalid_url", parsed
            )
        if parsed.scheme in self.blocked_schemes:
            return UrlCheck(
                target,
                False,
                "scheme_blocked",
                f"{target}: the {parsed.scheme}: scheme is blocked (used to smuggle requests to internal services)",
                "network.ssrf",
                parsed,
            )
        allowed_by: EgressRule | None = None
        denied_by: EgressRule | None = None
        if egress:
            for rule in self.rules_for(scope):
                if any(p.matches(parsed) for p in rule.deny):
                    denied_by = rule
                    break
                if allowed_by is None and any(p.matches(parsed) for p in rule.allow):
                    allowed_by = rule
        networks = self.allow_networks + (allowed_by.networks if allowed_by else ())
        ssrf = self._ssrf_host(parsed.host, networks)
        if ssrf is not None:
            return UrlCheck(target, False, "ssrf", f"{target} is blocked: {ssrf} (SSRF protection)", "network.ssrf", parsed)
        if not egress:
            return UrlCheck(target, True, "allowed", f"{target}: no SSRF risk found", "network.ssrf", parsed, networks=networks)
        if denied_by is not None:
            return UrlCheck(
                target, False, "egress_denied", f"{target} is denied by egress rule {denied_by.id}", denied_by.id, parsed
            )
        if allowed_by is None:
            return UrlCheck(
                target,
                False,
                "not_allowed",
                f"{target} is not on the egress allow-list for {scope.describe()}",
                "network.egress",
                parsed,
            )
        return UrlCheck(
            target,
            True,
            "allowed",
            f"{target} is allowed by egress rule {allowed_by.id}",
            allowed_by.id,
            parsed,
            networks=networks,
        )

    def check_host(self, text: str, scope: Scope, *, egress: bool = True) -> UrlCheck:
        """Check a bare ``host`` or ``host:port`` argument."""
        from ._url import parse_host_port

        try:
            host, port = parse_host_port(text)
        except UrlError as exc:
            return self._url_error(str(text), exc)
        target = _clip(str(text).strip())
        allowed_by: EgressRule | None = None
        denied_by: EgressRule | None = None
        if egress:
            for rule in self.rules_for(scope):
                if any(p.matches_host(host, port) for p in rule.deny):
                    denied_by = rule
                    break
                if allowed_by is None and any(p.matches_host(host, port) for p in rule.allow):
                    allowed_by = rule
        networks = self.allow_networks + (allowed_by.networks if allowed_by else ())
        ssrf = self._ssrf_host(host, networks)
        if ssrf is not None:
            return UrlCheck(
                target, False, "ssrf", f"host {target} is blocked: {ssrf} (SSRF protection)", "network.ssrf", host=host, port=port
            )
        if not egress:
            return UrlCheck(
                target,
                True,
                "allowed",
                f"host {target}: no SSRF risk found",
                "network.ssrf",
                host=host,
                port=port,
                networks=networks,
            )
        if denied_by is not None:
            return UrlCheck(
                target,
                False,
                "egress_denied",
                f"host {target} is denied by egress rule {denied_by.id}",
                denied_by.id,
                host=host,
                port=port,
            )
        if allowed_by is None:
            return UrlCheck(
                target,
                False,
                "not_allowed",
                f"host {target} is not on the egress allow-list for {scope.describe()}",
                "network.egress",
                host=host,
                port=port,
            )
        return UrlCheck(
            target,
            True,
            "allowed",
            f"host {target} is allowed by egress rule {allowed_by.id}",
            allowed_by.id,
            host=host,
            port=port,
            networks=networks,
        )

    def check_addresses(self, host: Host, addresses: Sequence[str], networks: Sequence[IPNetwork]) -> str | None:
        """Judge every address a host name resolved to; the reason to block, or None."""
        if not addresses:
            return f"{host} resolved to no address"
        for text in addresses:
            ip = parse_ip(text)
            if ip is None:
                return f"{host} resolved to {text!r}, which is not an IP address"
            reason = self._ssrf_ip(ip, networks)
            if reason is not None:
                return f"{host} resolves to {reason}"
        return None

    # ---- internals -------------------------------------------------------------------------

    def _ssrf_host(self, host: Host, networks: Sequence[IPNetwork]) -> str | None:
        if host.ip is not None:
            return self._ssrf_ip(host.ip, networks)
        return _name_reason(host.name, self.block_hosts, self.allow_hosts)

    @staticmethod
    def _ssrf_ip(ip: IPAddress, networks: Sequence[IPNetwork]) -> str | None:
        verdict = classify_ip(ip)
        if verdict.metadata:
            return verdict.describe()
        if not verdict.blocked:
            return None
        if any(verdict.address.version == n.version and verdict.address in n for n in networks):
            return None
        return verdict.describe()

    @staticmethod
    def _url_error(text: str, exc: UrlError) -> UrlCheck:
        target = _clip(text.strip())
        blocked_address = exc.address is not None and classify_ip(exc.address).blocked
        blocked_name = False
        if exc.host is not None:
            ip = parse_ip(exc.host)
            blocked_name = (
                classify_ip(ip).blocked if ip is not None else _name_reason(exc.host, _DEFAULT_BLOCK, _NO_HOSTS) is not None
            )
        rule = "network.ssrf" if blocked_address or blocked_name else "network.invalid_url"
        return UrlCheck(target, False, exc.code, f"{target!r} is blocked: {exc.message}", rule)


def _host_glob(text: str) -> str:
    """Canonicalize a host glob (``name`` or ``*.name``)."""
    if text == "*":
        raise ValueError("allow_hosts: '*' would switch SSRF protection off; list the hosts")
    if text.startswith("*."):
        return "*." + canonical_host(text[2:]).name
    return canonical_host(text).name


_DEFAULT_BLOCK = Glob(DEFAULT_BLOCKED_HOSTS)
_NO_HOSTS = Glob(())


@lru_cache(maxsize=4096)
def _name_reason(name: str, block: Glob, allow: Glob) -> str | None:
    if name in METADATA_HOSTNAMES:
        return f"{name} is a cloud metadata service"
    if block.matches(name) and not allow.matches(name):
        return f"{name} names this machine or a private network"
    return None
