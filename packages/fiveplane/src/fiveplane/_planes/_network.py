"""The network plane: where data may go.

Egress is enforced twice. Before a tool runs, the plane checks the URLs and hosts in its arguments
(declared URL / host fields, schema fields with ``format: uri`` or ``hostname``, and URL-looking
strings anywhere in the arguments). While it runs, :class:`~fiveplane.GovernedTransport` /
:class:`~fiveplane.AsyncGovernedTransport` check every request, redirect hop and DNS answer, and
keep a tool that takes URLs to the origins its arguments showed.

Policy (``planes: {network: ...}`` in a pack)::

    planes:
      network:
        tools:                       # tools that take URLs, and where the URLs are
          web.fetch: {urls: [url]}
        egress:                      # allow-lists per tool / connector / agent (deny by default)
          - id: web.company-sites
            tools: [web.fetch]
            allow: ["https://acme.example", "https://*.acme.example"]
        ssrf:                        # on by default; these only widen or narrow it
          allow_networks: []         # non-public networks you mean to reach (never metadata)

A tool "takes URLs" when it is listed under ``tools``, has URL-formatted schema fields, or an
egress rule is scoped to it or its connector: URLs in its arguments must then be on an allow-list.
URLs in other tools' arguments are checked for SSRF only (``other_tools: ssrf``, or ``off``).
"""

from __future__ import annotations

import asyncio
import inspect
import re
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from .._actions import Action, MediationPoint
from .._decisions import Decision, Obligation, Severity, Verdict, value_digest
from .._net._addr import IPNetwork
from .._net._egress import DEFAULT_BLOCKED_SCHEMES, EgressPattern, EgressPolicy, EgressRule, Scope, UrlCheck
from .._net._messages import check_message, subject
from .._net._transport import (
    AsyncGovernedTransport,
    AsyncResolver,
    EgressGrant,
    GovernedTransport,
    Origin,
    Resolver,
    async_system_resolver,
    current_grant,
    set_grant,
    system_resolver,
)
from .._net._url import Host, find_urls
from .._policy._load import Glob, Policy
from ._base import BasePlane, PlaneContext, PlaneResult

if TYPE_CHECKING:
    import httpx

__all__ = [
    "EgressRuleConfig",
    "NetworkConfig",
    "NetworkPlane",
    "SsrfConfig",
    "ToolUrlsConfig",
]

PLANE = "network"
_URI_FORMATS = frozenset({"uri", "url", "iri", "uri-reference", "iri-reference"})
_HOST_FORMATS = frozenset({"hostname", "idn-hostname"})
_FIELD_PATH = re.compile(r"^[A-Za-z0-9_\-]+(\[\])?(\.([A-Za-z0-9_\-]+(\[\])?|\*))*$")
_MAX_FINDINGS = 10


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SsrfConfig(_Strict):
    """SSRF protection. Always on; these settings only say what else to allow or block."""

    allow_networks: tuple[str, ...] = ()
    """CIDRs of non-public networks every tool may reach (e.g. an internal API). Metadata endpoints stay blocked."""
    allow_hosts: tuple[str, ...] = ()
    """Host names (``name`` or ``*.name``) exempt from the name-based block (``localhost``, ``*.internal``, ...).
    Their DNS answers are still judged."""
    block_hosts: tuple[str, ...] = ()
    """More host globs to block, on top of ``localhost``, ``*.local``, ``*.internal``, ``*.home.arpa``, ..."""
    blocked_schemes: tuple[str, ...] = DEFAULT_BLOCKED_SCHEMES
    """Schemes blocked wherever they appear in arguments (``gopher``, ``dict``, ``file``, ...)."""
    allow_userinfo: bool = False
    """Allow ``user:password@`` in URLs (off: ``http://good.example@evil.example`` tricks are blocked)."""
    resolve_arguments: bool = False
    """Also resolve host names found in arguments and judge their addresses before the tool runs
    (the transports always do this at request time)."""

    @field_validator("allow_networks")
    @classmethod
    def _networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for n in v:
            _network(n)
        return v


class EgressRuleConfig(_Strict):
    """One egress rule: which URLs the tools / connectors / agents in its scope may reach."""

    id: str = Field(min_length=1)
    description: str = ""
    tools: tuple[str, ...] = ()
    """Tool globs; empty: any tool."""
    connectors: tuple[str, ...] = ()
    agents: tuple[str, ...] = ()
    allow: tuple[str, ...] = ()
    """Patterns ``scheme://host[:port][/path-glob]``; ``*.example.com`` for sub-domains, ``*`` scheme for http+https."""
    deny: tuple[str, ...] = ()
    """Patterns that are blocked even if an allow pattern (of any rule) matches."""
    networks: tuple[str, ...] = ()
    """Non-public CIDRs the hosts of this rule may be in (an internal service); never metadata."""

    @field_validator("allow", "deny")
    @classmethod
    def _patterns(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            EgressPattern.parse(p)
        return v

    @field_validator("networks")
    @classmethod
    def _networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for n in v:
            _network(n)
        return v

    @model_validator(mode="after")
    def _something(self) -> EgressRuleConfig:
        if not (self.allow or self.deny):
            raise ValueError(f"egress rule {self.id!r} needs `allow` or `deny` patterns")
        return self


class ToolUrlsConfig(_Strict):
    """Where a tool's arguments hold URLs and hosts (dotted paths; ``[]`` or ``*`` for list items)."""

    urls: tuple[str, ...] = ()
    hosts: tuple[str, ...] = ()
    """Fields holding a bare ``host`` or ``host:port``."""
    bind: bool = True
    """At the transport, keep the tool to the origins its arguments showed (plus allowed redirects)."""

    @field_validator("urls", "hosts")
    @classmethod
    def _paths(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for p in v:
            if not _FIELD_PATH.match(p):
                raise ValueError(f"invalid argument path {p!r} (use dotted names, `[]` or `*` for list items)")
        return v


class NetworkConfig(_Strict):
    """The ``planes.network`` section of a policy pack."""

    egress: tuple[EgressRuleConfig, ...] = ()
    tools: dict[str, ToolUrlsConfig] = Field(default_factory=dict)
    ssrf: SsrfConfig = Field(default_factory=SsrfConfig)
    scan_arguments: bool = True
    """Also check URL-looking strings (``scheme://...``) anywhere in the arguments."""
    other_tools: Literal["ssrf", "off"] = "ssrf"
    """URLs in the arguments of tools that do not take URLs: check for SSRF, or ignore."""
    unlisted: Literal["block", "require_approval"] = "block"
    """Verdict for a URL no egress rule allows (SSRF and invalid URLs always block)."""
    max_urls: int = Field(default=256, ge=1)
    """More URLs than this in one call's arguments: block."""
    scan_limit: int = Field(default=4_000_000, ge=1)
    """Characters of string arguments scanned for URLs; beyond this the call is blocked."""

    _policy: EgressPolicy | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _compile(self) -> NetworkConfig:
        ids = [r.id for r in self.egress]
        dupes = sorted({i for i in ids if ids.count(i) > 1})
        if dupes:
            raise ValueError(f"duplicate egress rule id(s): {', '.join(dupes)}")
        rules = [
            EgressRule(
                id=r.id,
                description=r.description,
                allow=tuple(EgressPattern.parse(p) for p in r.allow),
                deny=tuple(EgressPattern.parse(p) for p in r.deny),
                tools=Glob(r.tools),
                connectors=Glob(r.connectors),
                agents=Glob(r.agents),
                networks=tuple(_network(n) for n in r.networks),
            )
            for r in self.egress
        ]
        s = self.ssrf
        self._policy = EgressPolicy(
            rules,
            allow_networks=[_network(n) for n in s.allow_networks],
            allow_hosts=s.allow_hosts,
            block_hosts=s.block_hosts,
            blocked_schemes=s.blocked_schemes,
            allow_userinfo=s.allow_userinfo,
        )
        return self

    @property
    def egress_policy(self) -> EgressPolicy:
        """The compiled policy (shared by the plane and the transports)."""
        assert self._policy is not None
        return self._policy


def _network(text: str) -> IPNetwork:
    import ipaddress

    try:
        return ipaddress.ip_network(text, strict=True)
    except ValueError as exc:
        raise ValueError(f"invalid network {text!r}: {exc}") from None


# ---- where URLs are in the arguments ---------------------------------------------------------


@dataclass(frozen=True)
class _Plan:
    """How to check one tool's arguments (per policy and tool; cached)."""

    url_paths: tuple[str, ...]
    host_paths: tuple[str, ...]
    egress: bool
    """The tool takes URLs: the allow-list applies (default deny)."""
    bound: bool


def _schema_fields(schema: Any, prefix: str = "") -> Iterator[tuple[str, str]]:
    """(path, kind) of URL / host fields declared in a JSON schema with ``format``."""
    if not isinstance(schema, Mapping):
        return
    fmt = schema.get("format")
    if prefix and fmt in _URI_FORMATS:
        yield prefix, "url"
    elif prefix and fmt in _HOST_FORMATS:
        yield prefix, "host"
    props = schema.get("properties")
    if isinstance(props, Mapping):
        for name, sub in props.items():
            yield from _schema_fields(sub, f"{prefix}.{name}" if prefix else str(name))
    items = schema.get("items")
    if prefix and isinstance(items, Mapping):
        yield from _schema_fields(items, f"{prefix}[]")


def _values_at(obj: Any, path: str) -> Iterator[tuple[str, Any]]:
    parts = path.replace("[]", ".*").split(".")

    def walk(value: Any, i: int, where: str) -> Iterator[tuple[str, Any]]:
        if i == len(parts):
            yield where, value
            return
        part = parts[i]
        if part == "*":
            if isinstance(value, (list, tuple)):
                for j, item in enumerate(value):
                    yield from walk(item, i + 1, f"{where}[{j}]")
            elif isinstance(value, Mapping):
                for k, item in value.items():
                    yield from walk(item, i + 1, f"{where}.{k}")
            elif value is not None:
                yield where, value  # not a list: the value itself is checked (and fails if not a URL)
            return
        if isinstance(value, Mapping) and part in value:
            yield from walk(value[part], i + 1, f"{where}.{part}" if where else part)

    yield from walk(obj, 0, "")


def _strings(obj: Any, budget: list[int]) -> Iterator[str]:
    if isinstance(obj, str):
        budget[0] -= len(obj)
        yield obj
    elif isinstance(obj, Mapping):
        for value in obj.values():
            yield from _strings(value, budget)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from _strings(value, budget)


@dataclass
class _Outcome:
    checks: list[UrlCheck]
    problems: list[tuple[str, str, str]]
    """(code, message, rule_id) of things that are not URL checks (too many URLs, too large)."""
    raw: dict[int, str] = field(default_factory=dict)
    """id(check) → the argument text it checked (for its digest: ``check.target`` is clipped)."""
    fields: dict[int, dict[str, Any]] = field(default_factory=dict)
    """index in ``problems`` → structured fields of that finding."""
    bare: set[int] = field(default_factory=set)
    """id(check) of the URL arguments written as a bare host (checked as ``https://`` + the value)."""


_BARE_HOST = re.compile(r"^(?![/.:])[^\s/\\:@?#%\[\]]+\.[^\s/\\:@?#%\[\]]+(?::\d{1,5})?(?:[/?#][^\s\\]*)?$")
"""``www.example.com``, ``example.com:8443/x``: a host (with a dot) and an optional port and path,
no scheme, no user info, no percent-encoding, no backslash."""


def _bare_host(value: str) -> str | None:
    """A URL argument written as a bare host is checked as ``https://`` + the value (the scheme a
    client assumes; ``GovernedTransport`` checks the request as it is really sent)."""
    if "://" in value or value.startswith("//"):
        return None
    text = value.strip()
    return f"https://{text}" if text == value and _BARE_HOST.match(text) else None


def _check_fields(check: UrlCheck, raw: str) -> dict[str, Any]:
    out: dict[str, Any] = {"kind": "url" if check.url is not None or check.host is None else "host", "digest": value_digest(raw)}
    if check.url is not None:
        out.update(scheme=check.url.scheme, host=check.url.host.name, port=check.url.port)
    elif check.host is not None:
        out.update(host=check.host.name, port=check.port)
    out.update(code=check.code, allowed=check.allowed, rule_id=check.rule_id)
    return out


class NetworkPlane(BasePlane):
    """Egress allow-lists and SSRF protection for tool arguments and HTTP transports.

    Args:
        resolver: ``host -> [ip, ...]`` for the sync paths (default ``socket.getaddrinfo``).
        async_resolver: the async twin (default ``loop.getaddrinfo``).
        config: the configuration used outside a Governor (``check_url``, ``transport()``); under a
            Governor the policy pack's ``planes.network`` section is authoritative.
    """

    name = PLANE
    config_model = NetworkConfig

    def __init__(
        self,
        *,
        resolver: Resolver | None = None,
        async_resolver: AsyncResolver | None = None,
        config: NetworkConfig | Mapping[str, Any] | None = None,
    ) -> None:
        self.resolver: Resolver = resolver or system_resolver
        self.async_resolver: AsyncResolver | Resolver = async_resolver or (
            resolver if resolver is not None else async_system_resolver
        )
        self.config = config if isinstance(config, NetworkConfig) or config is None else NetworkConfig.model_validate(config)
        self._plans: dict[tuple[int, str, str | None, str | None], tuple[NetworkConfig, _Plan]] = {}
        self._policies: dict[str, NetworkConfig] = {}
        self._recent: OrderedDict[str, list[UrlCheck]] = OrderedDict()
        self._bound: NetworkConfig | None = None

    def bind(self, policy: Policy, config: BaseModel | None) -> None:
        """Remember the Governor's configuration so ``transport()`` needs no source."""
        if isinstance(config, NetworkConfig):
            self._bound = config

    # ---- configuration ------------------------------------------------------------------------

    def _config(self, ctx: PlaneContext | None) -> NetworkConfig:
        if ctx is not None and isinstance(ctx.config, NetworkConfig):
            return ctx.config
        if self.config is not None:
            return self.config
        return NetworkConfig()

    def config_for(self, source: Any = None) -> NetworkConfig:
        """The network configuration of a Governor, a Policy, a config (or this plane's own)."""
        if source is None:
            if self.config is not None:
                return self.config
            if self._bound is not None:
                return self._bound
            raise ValueError("NetworkPlane has no configuration: pass the Governor or Policy, or construct it with config=")
        if isinstance(source, NetworkConfig):
            return source
        if isinstance(source, Mapping):
            return NetworkConfig.model_validate(source)
        policy = source if isinstance(source, Policy) else getattr(source, "policy", None)
        if not isinstance(policy, Policy):
            raise TypeError(f"cannot take a network configuration from {type(source).__name__}")
        cfg = self._policies.get(policy.hash)
        if cfg is None:
            cfg = self._policies[policy.hash] = NetworkConfig.model_validate(policy.planes.get(PLANE, {}))
        return cfg

    def egress_policy(self, source: Any = None) -> EgressPolicy:
        return self.config_for(source).egress_policy

    def check_policy(self, policy: Policy) -> list[str]:
        """Cross-checks against the catalog: configured tools that do not exist, rules naming unknown tools."""
        cfg = self.config_for(policy)
        problems = [f"planes.network.tools: {name!r} is not a catalogued tool" for name in cfg.tools if name not in policy.tools]
        for rule in cfg.egress:
            for g in rule.tools:
                if not any(Glob([g]).matches(t) for t in policy.tools):
                    problems.append(f"planes.network.egress {rule.id}: tool glob {g!r} matches no catalogued tool")
            for g in rule.connectors:
                if not any(Glob([g]).matches(c) for c in policy.connectors):
                    problems.append(f"planes.network.egress {rule.id}: connector glob {g!r} matches no declared connector")
            for g in rule.agents:
                if not any(Glob([g]).matches(a) for a in policy.agents):
                    problems.append(f"planes.network.egress {rule.id}: agent glob {g!r} matches no declared agent")
        return problems

    # ---- the standalone API ---------------------------------------------------------------

    def check_url(
        self, url: str, *, tool: str | None = None, connector: str | None = None, agent: str | None = None, source: Any = None
    ) -> UrlCheck:
        """Check one URL for a scope (no DNS). ``allowed`` says whether it may be reached."""
        policy = self.egress_policy(source)
        scope = Scope(tool=tool, connector=connector, agent=agent)
        return policy.check_url(url, scope, egress=True)

    def transport(
        self,
        source: Any = None,
        inner: httpx.BaseTransport | None = None,
        *,
        tool: str | None = None,
        connector: str | None = None,
        agent: str | None = None,
        bind: bool = True,
        pin: bool = True,
    ) -> GovernedTransport:
        """A :class:`GovernedTransport` for ``source``'s policy (a Governor, Policy or config)."""
        return GovernedTransport(
            self.egress_policy(source),
            inner,
            tool=tool,
            connector=connector,
            agent=agent,
            resolver=self.resolver,
            bind=bind,
            pin=pin,
        )

    def async_transport(
        self,
        source: Any = None,
        inner: httpx.AsyncBaseTransport | None = None,
        *,
        tool: str | None = None,
        connector: str | None = None,
        agent: str | None = None,
        bind: bool = True,
        pin: bool = True,
    ) -> AsyncGovernedTransport:
        """An :class:`AsyncGovernedTransport` for ``source``'s policy."""
        return AsyncGovernedTransport(
            self.egress_policy(source),
            inner,
            tool=tool,
            connector=connector,
            agent=agent,
            resolver=self.async_resolver,
            bind=bind,
            pin=pin,
        )

    # ---- judging ----------------------------------------------------------------------------

    def _plan(self, policy: Policy, cfg: NetworkConfig, action: Action, scope: Scope) -> _Plan:
        key = (id(cfg), policy.hash, action.tool, action.connector)
        hit = self._plans.get(key)
        if hit is not None and hit[0] is cfg:
            return hit[1]
        tool_cfg = cfg.tools.get(action.tool or "")
        urls = list(tool_cfg.urls) if tool_cfg else []
        hosts = list(tool_cfg.hosts) if tool_cfg else []
        spec = policy.tools.get(action.tool or "")
        if spec is not None and spec.arguments:
            for path, kind in _schema_fields(spec.arguments):
                (urls if kind == "url" else hosts).append(path)
        declared = bool(urls or hosts)
        egress = declared or cfg.egress_policy.targets(scope)
        plan = _Plan(
            tuple(dict.fromkeys(urls)), tuple(dict.fromkeys(hosts)), egress, declared and (tool_cfg.bind if tool_cfg else True)
        )
        if len(self._plans) < 10_000:
            self._plans[key] = (cfg, plan)
        return plan

    def _scan(self, action: Action, arguments: Mapping[str, Any], cfg: NetworkConfig, plan: _Plan, scope: Scope) -> _Outcome:
        policy = cfg.egress_policy
        checks: list[UrlCheck] = []
        problems: list[tuple[str, str, str]] = []
        raw: dict[int, str] = {}
        seen: set[str] = set()
        bare_checks: set[int] = set()
        for path in plan.url_paths:
            for where, value in _values_at(arguments, path):
                if value is None:
                    continue
                if not isinstance(value, str):
                    problems.append(
                        ("invalid_url", f"argument {where} should hold a URL, not {type(value).__name__}", "network.invalid_url")
                    )
                    continue
                seen.add(value)
                bare = _bare_host(value)
                checks.append(policy.check_url(bare or value, scope, egress=plan.egress))
                raw[id(checks[-1])] = value
                if bare:
                    bare_checks.add(id(checks[-1]))
        for path in plan.host_paths:
            for where, value in _values_at(arguments, path):
                if value is None:
                    continue
                if not isinstance(value, str):
                    problems.append(
                        (
                            "invalid_host",
                            f"argument {where} should hold a host name, not {type(value).__name__}",
                            "network.invalid_url",
                        )
                    )
                    continue
                seen.add(value)
                checks.append(policy.check_host(value, scope, egress=plan.egress))
                raw[id(checks[-1])] = value
        scan = cfg.scan_arguments and (plan.egress or cfg.other_tools == "ssrf")
        if scan:
            budget = [cfg.scan_limit]
            for text in _strings(arguments, budget):
                if budget[0] < 0:
                    problems.append(
                        (
                            "arguments_too_large",
                            f"the arguments hold more than {cfg.scan_limit} characters of text to scan for URLs",
                            "network.scan_limit",
                        )
                    )
                    break
                for found in find_urls(text):
                    if found in seen:
                        continue
                    seen.add(found)
                    if len(seen) > cfg.max_urls:
                        break
                    check = policy.check_url(found, scope, egress=plan.egress)
                    if not check.allowed and not plan.egress and check.rule_id != "network.ssrf":
                        continue  # a malformed link in free text of a tool that does not take URLs: no SSRF risk
                    checks.append(check)
                    raw[id(check)] = found
        if len(seen) > cfg.max_urls:
            problems.append(("too_many_urls", f"the arguments hold more than {cfg.max_urls} URLs", "network.max_urls"))
        return _Outcome(checks, problems, raw, bare=bare_checks)

    def _result(self, outcome: _Outcome, cfg: NetworkConfig, plan: _Plan, scope: Scope) -> PlaneResult:
        result = PlaneResult(plane=PLANE)
        blocked = [c for c in outcome.checks if not c.allowed]
        for i, (code, message, rule_id) in enumerate(outcome.problems):
            result.add(
                code, message, verdict=Verdict.BLOCK, severity=Severity.HIGH, rule_id=rule_id, fields=outcome.fields.get(i)
            )
        for check in blocked[:_MAX_FINDINGS]:
            verdict = Verdict(cfg.unlisted) if check.code == "not_allowed" else Verdict.BLOCK
            raw = outcome.raw.get(id(check), check.target)
            fields = _check_fields(check, raw)
            if id(check) in outcome.bare:
                fields = {**fields, "bare_host": True, "assumed_scheme": "https"}
            result.add(
                check.code,
                check_message(check, raw, scope),
                verdict=verdict,
                severity=Severity.HIGH,
                rule_id=check.rule_id,
                fields=fields,
            )
        if len(blocked) > _MAX_FINDINGS:
            result.add(
                "more_blocked",
                f"{len(blocked) - _MAX_FINDINGS} more URLs were blocked",
                verdict=Verdict.BLOCK,
                severity=Severity.HIGH,
                rule_id="network.egress",
            )
        allowed = [c for c in outcome.checks if c.allowed]
        if allowed:
            shown = "; ".join(check_message(c, outcome.raw.get(id(c), c.target), scope) for c in allowed[:3]) + (
                f"; and {len(allowed) - 3} more" if len(allowed) > 3 else ""
            )
            result.add(
                "checked",
                f"{len(allowed)} URL(s) checked{' against the egress allow-list' if plan.egress else ' for SSRF'}: {shown}",
                fields={"checks": [_check_fields(c, outcome.raw.get(id(c), c.target)) for c in allowed[:_MAX_FINDINGS]]},
            )
        return result

    def _prepare(self, action: Action, ctx: PlaneContext) -> tuple[NetworkConfig, _Plan, Scope] | None:
        if action.point is not MediationPoint.TOOL_CALL:
            return None
        cfg = self._config(ctx)
        agent = action.agent
        scope = Scope(tool=action.tool, connector=action.connector, agent=agent.id if agent else None)
        plan = self._plan(ctx.policy, cfg, action, scope)
        if not plan.egress and (cfg.other_tools == "off" or not cfg.scan_arguments):
            return None
        return cfg, plan, scope

    def _remember(self, action_id: str, checks: list[UrlCheck]) -> None:
        self._recent[action_id] = checks
        while len(self._recent) > 1024:
            self._recent.popitem(last=False)

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        prepared = self._prepare(action, ctx)
        if prepared is None:
            return PlaneResult(plane=PLANE)
        cfg, plan, scope = prepared
        outcome = self._scan(action, action.arguments, cfg, plan, scope)
        if cfg.ssrf.resolve_arguments:
            for check in self._dns_targets(outcome):
                try:
                    addresses = list(self.resolver(_host_of(check)))
                except Exception as exc:  # noqa: BLE001 - resolver failure fails closed
                    outcome.problems.append(
                        ("resolver_error", f"resolving {_host_of(check)} failed ({type(exc).__name__}: {exc})", "network.dns")
                    )
                    continue
                self._judge_dns(outcome, cfg, check, addresses)
        self._remember(action.action_id, outcome.checks)
        return self._result(outcome, cfg, plan, scope)

    async def aevaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        """Async twin: the checks are CPU-only and run inline; DNS (if enabled) uses the async resolver."""
        prepared = self._prepare(action, ctx)
        if prepared is None:
            return PlaneResult(plane=PLANE)
        cfg, plan, scope = prepared
        outcome = self._scan(action, action.arguments, cfg, plan, scope)
        if cfg.ssrf.resolve_arguments:
            for check in self._dns_targets(outcome):
                try:
                    addresses = await self._aresolve(_host_of(check))
                except Exception as exc:  # noqa: BLE001
                    outcome.problems.append(
                        ("resolver_error", f"resolving {_host_of(check)} failed ({type(exc).__name__}: {exc})", "network.dns")
                    )
                    continue
                self._judge_dns(outcome, cfg, check, addresses)
        self._remember(action.action_id, outcome.checks)
        return self._result(outcome, cfg, plan, scope)

    async def _aresolve(self, host: str) -> list[str]:
        resolver = self.async_resolver
        if inspect.iscoroutinefunction(resolver):
            return list(await resolver(host))
        result: Any = await asyncio.to_thread(resolver, host)
        if inspect.isawaitable(result):
            result = await result
        return list(result)

    @staticmethod
    def _dns_targets(outcome: _Outcome) -> list[UrlCheck]:
        out = []
        for c in outcome.checks:
            host = _host(c)
            if c.allowed and host is not None and host.ip is None:
                out.append(c)
        return out

    @staticmethod
    def _judge_dns(outcome: _Outcome, cfg: NetworkConfig, check: UrlCheck, addresses: list[str]) -> None:
        host = _host(check)
        assert host is not None
        reason = cfg.egress_policy.check_addresses(host, addresses, check.networks)
        if reason is not None:
            raw = outcome.raw.get(id(check), check.target)
            outcome.fields[len(outcome.problems)] = {**_check_fields(check, raw), "code": "ssrf", "allowed": False}
            outcome.problems.append(("ssrf", f"{subject(check, raw)} is blocked: {reason} (SSRF protection)", "network.ssrf"))

    # ---- after the decision: the grant the transports enforce -------------------------------

    def on_decision(self, action: Action, decision: Decision, ctx: PlaneContext) -> list[Obligation]:
        if action.point is MediationPoint.TOOL_RESULT:
            grant = current_grant()
            if grant is not None and grant.action_id == action.parent_action_id:
                set_grant(None)
            return []
        if action.point is not MediationPoint.TOOL_CALL:
            return []
        checks = self._recent.pop(action.action_id, None)
        if not decision.verdict.proceeds:
            set_grant(None)
            return []
        cfg = self._config(ctx)
        agent = action.agent
        scope = Scope(tool=action.tool, connector=action.connector, agent=agent.id if agent else None)
        plan = self._plan(ctx.policy, cfg, action, scope)
        if checks is None or decision.modified_arguments is not None:
            arguments = decision.modified_arguments if decision.modified_arguments is not None else action.arguments
            checks = self._scan(action, arguments, cfg, plan, scope).checks
        origins: set[Origin] = set()
        for c in checks:
            if not c.allowed:
                continue
            if c.url is not None:
                origins.add(c.url.origin)
            elif c.host is not None:
                origins.add((None, c.host.name, c.port))
        set_grant(EgressGrant(action_id=action.action_id, scope=scope, origins=frozenset(origins), bound=plan.bound))
        return []


def _host(check: UrlCheck) -> Host | None:
    return check.url.host if check.url is not None else check.host


def _host_of(check: UrlCheck) -> str:
    host = _host(check)
    return host.name if host else ""
