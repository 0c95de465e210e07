"""Loading, composing and compiling policy packs into an indexed :class:`Policy`."""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from fnmatch import translate
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from .._actions import ActionClass, MediationPoint, canonical_json
from .._decisions import Mode, Verdict
from .._flow import JsonPath
from ._cel import CEL_VARIABLES, Condition
from ._lists import Lists
from ._models import (
    AgentSpec,
    ApprovalsSpec,
    ConnectorSpec,
    Defaults,
    FlowRuleSpec,
    FlowSpec,
    PackSpec,
    RuleSpec,
    SessionsSpec,
    ToolSpec,
)
from ._yaml import Located, PolicyError, load_yaml

__all__ = ["CompiledFlowRule", "CompiledRule", "Glob", "Policy", "Trust", "load_policy"]

FLOW_VARIABLES = (*CEL_VARIABLES, "match")
"""A flow rule's ``unless:`` also sees ``match`` (field, kind, value, source, action_id)."""


class Glob:
    """A set of shell-style globs, matched without re-parsing per call."""

    __slots__ = ("_exact", "_regex", "patterns")

    def __init__(self, patterns: Iterable[str]) -> None:
        self.patterns = tuple(patterns)
        exact = {p for p in self.patterns if not any(c in p for c in "*?[")}
        wild = [p for p in self.patterns if p not in exact]
        self._exact = frozenset(exact)
        self._regex = re.compile("|".join(f"(?:{translate(p)})" for p in wild)) if wild else None

    def __bool__(self) -> bool:
        return bool(self.patterns)

    def matches(self, value: str | None) -> bool:
        if value is None:
            return False
        if value in self._exact:
            return True
        return bool(self._regex and self._regex.match(value))


@dataclass(frozen=True)
class Source:
    path: Path
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line}"


@dataclass
class CompiledRule:
    spec: RuleSpec
    pack: str
    mode: Mode
    source: Source
    tools: Glob
    connectors: Glob
    agents: Glob
    roles: frozenset[str]
    condition: Condition | None
    after_tools: Glob
    after_connectors: Glob
    order: int
    overrides: Glob = field(default_factory=lambda: Glob(()))
    """Plane findings (``plane.code`` or a plane rule's id) this rule overrides when it matches."""

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def verdict(self) -> Verdict:
        return self.spec.verdict

    def matches_static(self, point: MediationPoint, tool: str | None, connector: str | None, cls: ActionClass | None) -> bool:
        m = self.spec.match
        if point not in m.points:
            return False
        if self.tools and not self.tools.matches(tool):
            return False
        if self.connectors and not self.connectors.matches(connector):
            return False
        return not (m.classes and cls not in m.classes)


@dataclass(frozen=True)
class CompiledFlowRule:
    """A flow rule with its tool globs, kinds and compiled ``unless:``."""

    spec: FlowRuleSpec
    tools: Glob
    kinds: frozenset[str] | None
    unless: Condition | None
    mode: Mode
    source: Source

    @property
    def id(self) -> str:
        return self.spec.id


@dataclass(frozen=True)
class Trust:
    """How far a tool's results are trusted: the base, and the fields (JSON paths) that differ from it."""

    trusted: bool
    paths: tuple[JsonPath, ...] = ()
    """Untrusted fields of a trusted tool, or trusted fields of an untrusted one."""


@dataclass
class Policy:
    """A composed, compiled set of policy packs, indexed by (point, tool)."""

    name: str
    version: str
    mode: Mode
    defaults: Defaults
    connectors: dict[str, ConnectorSpec]
    tools: dict[str, ToolSpec]
    agents: dict[str, AgentSpec]
    rules: list[CompiledRule]
    planes: dict[str, dict[str, Any]]
    plane_sources: dict[str, Source]
    hash: str
    files: list[Path]
    sources: dict[str, Source] = field(default_factory=dict)
    """Where each tool/connector/agent was declared (``tool:NAME`` → file:line)."""
    agent_tools: dict[str, Glob] = field(default_factory=dict)
    """Each declared agent's tool globs, compiled."""
    flow: FlowSpec | None = None
    """Information-flow rules (the last pack that declares them wins)."""
    flow_globs: list[Glob] = field(default_factory=list)
    """Compiled tool globs of each flow rule, then the extra consequential tools (last)."""
    sessions: SessionsSpec | None = None
    """Session-store settings (the last pack that declares them wins)."""
    evidence: str = "required"
    """``required`` or ``best_effort`` (the last pack that declares it wins)."""
    approvals: ApprovalsSpec | None = None
    """The approval console's settings (the last pack that declares them wins)."""
    flow_rules: list[CompiledFlowRule] = field(default_factory=list)
    """The information-flow rules, compiled (same order as ``flow.rules``)."""
    lists: Lists = field(default_factory=Lists)
    """Named lists (``lists.NAME`` in CEL; trusted values for information flow)."""
    trust: dict[str, Trust] = field(default_factory=dict)
    """Per catalogued tool: how far its results are trusted."""
    uses_provenance: bool = False
    """Some condition calls from_user / untrusted / source: the session's flow index is kept even
    without ``information_flow`` rules."""
    _index: dict[tuple[MediationPoint, str | None, str | None, ActionClass | None], tuple[CompiledRule, ...]] = field(
        default_factory=dict, repr=False
    )
    plans: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)
    """The reasoning plane's compiled decision plans, per (point, tool, connector, class)."""

    @functools.cached_property
    def label(self) -> str:
        """``name@version``: how decisions name the policy."""
        return f"{self.name}@{self.version}"

    def candidates(
        self, point: MediationPoint, tool: str | None, connector: str | None, cls: ActionClass | None
    ) -> tuple[CompiledRule, ...]:
        """Rules whose static part (point, tool, connector, class) matches; cached per key."""
        key = (point, tool, connector, cls)
        hit = self._index.get(key)
        if hit is None:
            hit = tuple(r for r in self.rules if r.matches_static(point, tool, connector, cls))
            if len(self._index) < 100_000:
                self._index[key] = hit
        return hit

    def warm(self) -> None:
        """Build the index for every catalogued tool (done once at load)."""
        for tool in self.tools.values():
            for point in (MediationPoint.TOOL_CALL, MediationPoint.TOOL_RESULT):
                self.candidates(point, tool.name, tool.connector, tool.action_class)

    def tool_trusted(self, tool: str | None) -> bool:
        """Whether a tool's results are trusted as a whole (some fields may differ: :meth:`trust_of`)."""
        return self.trust_of(tool).trusted

    def trust_of(self, tool: str | None) -> Trust:
        """How far a tool's results are trusted; an unknown tool's are not."""
        found = self.trust.get(tool) if tool else None
        if found is not None:
            return found
        spec = self.tools.get(tool) if tool else None
        if spec is None:
            return _UNTRUSTED
        return _trust(spec, self.connectors)

    @property
    def indexes_flow(self) -> bool:
        """Whether steps are indexed for information flow (flow rules or provenance functions)."""
        return self.flow is not None or self.uses_provenance

    def reload_lists(self, *names: str) -> dict[str, int]:
        """Read file and SQL lists again (see :meth:`Lists.reload`)."""
        return self.lists.reload(*names)


_UNTRUSTED = Trust(False)


def _trust(spec: ToolSpec, connectors: dict[str, ConnectorSpec]) -> Trust:
    conn = connectors.get(spec.connector) if spec.connector else None
    trusted = spec.trusted_output if spec.trusted_output is not None else (conn.trusted if conn else True)
    if spec.trusted_fields or spec.untrusted_fields:
        paths = spec.trusted_fields if not trusted else spec.untrusted_fields
    elif conn is not None and conn.trusted == trusted:
        paths = conn.trusted_fields if not trusted else conn.untrusted_fields
    else:
        paths = ()
    return Trust(trusted, tuple(JsonPath(p) for p in paths))


# --------------------------------------------------------------------------------------------
# loading


def _validation_errors(exc: ValidationError, located: Located, prefix: tuple[str | int, ...] = ()) -> list[str]:
    out = []
    errors = exc.errors()
    locs = [tuple(e["loc"]) for e in errors]
    for err in errors:
        here = tuple(err["loc"])
        # "Tuple should have at least 1 item" after its items failed: the items' errors say it all
        if err["type"] == "too_short" and any(len(o) > len(here) and o[: len(here)] == here for o in locs):
            continue
        loc = prefix + here
        # pydantic puts the model-validator name into loc for model-level errors; trim non-keys.
        shown = ".".join(str(p) for p in loc if not (isinstance(p, str) and p.startswith("function-")))
        msg = err["msg"]
        if err["type"] == "extra_forbidden":
            msg = f"unknown key {str(loc[-1])!r}"
            shown = ".".join(str(p) for p in loc[:-1])
        out.append(f"{located.where(loc)}: {shown + ': ' if shown else ''}{msg}")
    return out


@dataclass
class _LoadedPack:
    spec: PackSpec
    located: Located


def _load_pack(path: Path, stack: tuple[Path, ...]) -> list[_LoadedPack]:
    path = path.resolve()
    if path in stack:
        chain = " -> ".join(str(p) for p in (*stack, path))
        raise PolicyError([f"{path}:1: `extends` cycle: {chain}"])
    located = load_yaml(path)
    if not isinstance(located.data, dict):
        raise PolicyError([f"{path}:1: a policy pack must be a mapping, got {type(located.data).__name__}"])
    try:
        spec = PackSpec.model_validate(located.data)
    except ValidationError as exc:
        raise PolicyError(_validation_errors(exc, located)) from None
    packs: list[_LoadedPack] = []
    for i, rel in enumerate(spec.extends):
        base = path.parent / rel
        if not base.exists():
            raise PolicyError([f"{located.where(('extends', i))}: extended pack {rel!r} not found ({base})"])
        for p in _load_pack(base, (*stack, path)):
            if all(p.located.path != q.located.path for q in packs):
                packs.append(p)
    packs.append(_LoadedPack(spec, located))
    return packs


def load_policy(paths: Sequence[Path | str] | Path | str) -> Policy:
    """Load one or more pack files (each with its ``extends``), validate and compile them.

    Raises :class:`PolicyError` listing every problem as ``file:line: message``.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    if not paths:
        raise PolicyError(["<policy>:1: no policy pack given"])
    packs: list[_LoadedPack] = []
    for p in paths:
        for pack in _load_pack(Path(p), ()):
            if all(pack.located.path != q.located.path for q in packs):
                packs.append(pack)
    return _compile(packs)


def _compile(packs: list[_LoadedPack]) -> Policy:
    errors: list[str] = []
    top = packs[-1]
    connectors: dict[str, ConnectorSpec] = {}
    tools: dict[str, ToolSpec] = {}
    agents: dict[str, AgentSpec] = {}
    sources: dict[str, Source] = {}
    defaults_data: dict[str, Any] = {}
    planes: dict[str, dict[str, Any]] = {}
    plane_sources: dict[str, Source] = {}
    flow: FlowSpec | None = None
    flow_rules: list[CompiledFlowRule] = []
    sessions: SessionsSpec | None = None
    approvals: ApprovalsSpec | None = None
    evidence = "required"
    lists = Lists()
    conditions: list[tuple[Condition, str, str]] = []
    """Every compiled condition, where it is, and its rule (list references are checked at the end)."""

    def declare(kind: str, registry: dict[str, Any], item: Any, loc: tuple[str | int, ...], located: Located) -> None:
        key = f"{kind}:{item.name}"
        here = Source(located.path, located.line_of(loc))
        if item.name in registry and registry[item.name] != item:
            errors.append(f"{here}: {kind} {item.name!r} is already declared differently at {sources[key]}")
            return
        registry[item.name] = item
        sources.setdefault(key, here)

    for pack in packs:
        spec, located = pack.spec, pack.located
        for i, c in enumerate(spec.connectors):
            declare("connector", connectors, c, ("connectors", i), located)
        for i, t in enumerate(spec.tools):
            declare("tool", tools, t, ("tools", i), located)
        for i, a in enumerate(spec.agents):
            declare("agent", agents, a, ("agents", i), located)
        if spec.defaults is not None:
            defaults_data.update(spec.defaults.model_dump(exclude_unset=True))
        if spec.information_flow is not None:
            flow = spec.information_flow
            flow_rules = []
            for i, fr in enumerate(flow.rules):
                for j, g in enumerate(fr.tools):
                    if not any(Glob([g]).matches(n) for n in tools):
                        errors.append(
                            f"{located.where(('information_flow', 'rules', i, 'tools', j))}: flow rule {fr.id!r} names unknown tool {g!r}"
                        )
                unless = None
                if fr.unless is not None:
                    try:
                        unless = Condition(fr.unless, variables=FLOW_VARIABLES)
                    except ValueError as exc:
                        errors.append(
                            f"{located.where(('information_flow', 'rules', i, 'unless'))}: flow rule {fr.id!r} unless: {exc}"
                        )
                    else:
                        conditions.append((unless, located.where(("information_flow", "rules", i, "unless")), fr.id))
                flow_rules.append(
                    CompiledFlowRule(
                        spec=fr,
                        tools=Glob(fr.tools),
                        kinds=frozenset(fr.kinds) if fr.kinds else None,
                        unless=unless,
                        mode=fr.mode or spec.mode,
                        source=Source(located.path, located.line_of(("information_flow", "rules", i))),
                    )
                )
        for name, ls in spec.lists.items():
            lists.declare(name, ls, located.path.parent, located.where(("lists", name)))
        if spec.sessions is not None:
            sessions = spec.sessions
        if spec.evidence is not None:
            evidence = spec.evidence
        if spec.approvals is not None:
            approvals = spec.approvals
        for name, cfg in spec.planes.items():
            planes.setdefault(name, {}).update(cfg)
            plane_sources[name] = Source(located.path, located.line_of(("planes", name)))

    # references from tools and agents
    for pack in packs:
        spec, located = pack.spec, pack.located
        for i, t in enumerate(spec.tools):
            if t.connector is not None and t.connector not in connectors:
                errors.append(
                    f"{located.where(('tools', i, 'connector'))}: tool {t.name!r} names unknown connector {t.connector!r}"
                )
                continue
            base = _trust(t, connectors).trusted
            if base and t.trusted_fields:
                errors.append(
                    f"{located.where(('tools', i, 'trusted_fields'))}: tool {t.name!r}: its output is trusted already; "
                    "name the fields that are not with `untrusted_fields`"
                )
            if not base and t.untrusted_fields:
                errors.append(
                    f"{located.where(('tools', i, 'untrusted_fields'))}: tool {t.name!r}: its output is untrusted already; "
                    "name the fields that are with `trusted_fields`"
                )
        for i, a in enumerate(spec.agents):
            for j, g in enumerate(a.tools):
                if not any(Glob([g]).matches(n) for n in tools):
                    errors.append(
                        f"{located.where(('agents', i, 'tools', j))}: agent {a.name!r} lists {g!r}, which matches no catalogued tool"
                    )
            for j, d in enumerate(a.delegates_to):
                if d not in agents:
                    errors.append(
                        f"{located.where(('agents', i, 'delegates_to', j))}: agent {a.name!r} delegates to unknown agent {d!r}"
                    )

    rules: list[CompiledRule] = []
    seen: dict[str, Source] = {}
    for pack in packs:
        spec, located = pack.spec, pack.located
        for i, r in enumerate(spec.rules):
            loc = ("rules", i)
            src = Source(located.path, located.line_of(loc))
            if r.id in seen:
                errors.append(f"{src}: duplicate rule id {r.id!r} (first at {seen[r.id]})")
                continue
            seen[r.id] = src
            errors.extend(_check_rule_refs(r, loc, located, tools, connectors, agents))
            condition = None
            if r.when is not None:
                try:
                    condition = Condition(r.when)
                except ValueError as exc:
                    errors.append(f"{located.where(loc + ('when',))}: rule {r.id!r}: {exc}")
                else:
                    conditions.append((condition, located.where(loc + ("when",)), r.id))
            after = r.match.after
            rules.append(
                CompiledRule(
                    spec=r,
                    pack=spec.name,
                    mode=r.mode or spec.mode,
                    source=src,
                    tools=Glob(r.match.tools),
                    connectors=Glob(r.match.connectors),
                    agents=Glob(r.match.agents),
                    roles=frozenset(r.match.roles),
                    condition=condition,
                    after_tools=Glob(after.tools if after else ()),
                    after_connectors=Glob(after.connectors if after else ()),
                    order=len(rules),
                    overrides=Glob(r.override),
                )
            )
    if not rules and not any(p.spec.unsafe_empty for p in packs):
        errors.append(
            f"{top.located.where(('name',))}: the composed policy has no rules (set `unsafe_empty: true` if that is meant)"
        )
    for condition, where, rule_id in conditions:
        for name in sorted(condition.list_names() - set(lists.names)):
            errors.append(
                f"{where}: rule {rule_id!r} reads lists.{name}, which the pack does not declare"
                f" (declared: {', '.join(lists.names) or 'none'})"
            )
    if errors:
        raise PolicyError(errors)
    errors.extend(lists.load_all())
    if errors:
        raise PolicyError(errors)

    digest = hashlib.sha256()
    for pack in packs:
        digest.update(canonical_json(_hash_view(json.loads(pack.spec.model_dump_json(by_alias=True)))))
    policy = Policy(
        name=top.spec.name,
        version=top.spec.version,
        mode=top.spec.mode,
        defaults=Defaults.model_validate(defaults_data),
        connectors=connectors,
        tools=tools,
        agents=agents,
        rules=rules,
        planes=planes,
        plane_sources=plane_sources,
        hash="sha256:" + digest.hexdigest(),
        files=[p.located.path for p in packs],
        sources=sources,
        agent_tools={name: Glob(a.tools) for name, a in agents.items()},
        flow=flow,
        approvals=approvals,
        flow_globs=[Glob(r.tools) for r in flow.rules] + [Glob(flow.tools)] if flow else [],
        sessions=sessions,
        evidence=evidence,
        flow_rules=flow_rules if flow else [],
        lists=lists,
        trust={name: _trust(t, connectors) for name, t in tools.items()},
        uses_provenance=any(c.uses_provenance for c, _, _ in conditions),
    )
    policy.warm()
    return policy


# Keys added to the pack format after its hash was first defined: at their default they are left out,
# so a pack that does not use them hashes exactly as before they existed.
_LATER_KEYS: dict[str, tuple[str, ...]] = {
    "": ("approvals", "lists"),
    "connectors": ("trusted_fields", "untrusted_fields"),
    "tools": ("trusted_fields", "untrusted_fields"),
    "rules": ("override",),
    "information_flow.rules": ("kinds", "unless", "mode"),
    "defaults": ("approval",),
}


def _hash_view(data: dict[str, Any]) -> dict[str, Any]:
    def drop(obj: Any, keys: tuple[str, ...]) -> None:
        if isinstance(obj, dict):
            for k in keys:
                if k in obj and obj[k] in (None, [], {}):
                    del obj[k]

    drop(data, _LATER_KEYS[""])
    for section in ("connectors", "tools", "rules"):
        for item in data.get(section) or ():
            drop(item, _LATER_KEYS[section])
    flow = data.get("information_flow")
    if isinstance(flow, dict):
        for item in flow.get("rules") or ():
            drop(item, _LATER_KEYS["information_flow.rules"])
    drop(data.get("defaults"), _LATER_KEYS["defaults"])
    return data


def _check_rule_refs(
    r: RuleSpec,
    loc: tuple[str | int, ...],
    located: Located,
    tools: dict[str, ToolSpec],
    connectors: dict[str, ConnectorSpec],
    agents: dict[str, AgentSpec],
) -> list[str]:
    errors = []
    m = r.match
    for key, names, registry in (
        ("tools", m.tools, tools),
        ("connectors", m.connectors, connectors),
        ("agents", m.agents, agents),
    ):
        for j, g in enumerate(names):
            if not any(Glob([g]).matches(n) for n in registry):
                errors.append(f"{located.where(loc + ('match', key, j))}: rule {r.id!r} names unknown {key[:-1]} {g!r}")
    if m.after is not None:
        for key, names, registry in (("tools", m.after.tools, tools), ("connectors", m.after.connectors, connectors)):
            for j, g in enumerate(names):
                if not any(Glob([g]).matches(n) for n in registry):
                    errors.append(
                        f"{located.where(loc + ('match', 'after', key, j))}: rule {r.id!r} names unknown {key[:-1]} {g!r} in `after`"
                    )
    return errors
