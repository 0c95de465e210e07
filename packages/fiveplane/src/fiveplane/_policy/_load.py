"""Loading, composing and compiling policy packs into an indexed :class:`Policy`."""

from __future__ import annotations

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
from ._cel import Condition
from ._models import AgentSpec, ApprovalsSpec, ConnectorSpec, Defaults, FlowSpec, PackSpec, RuleSpec, SessionsSpec, ToolSpec
from ._yaml import Located, PolicyError, load_yaml

__all__ = ["CompiledRule", "Glob", "Policy", "load_policy"]


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
    _index: dict[tuple[MediationPoint, str | None, str | None, ActionClass | None], tuple[CompiledRule, ...]] = field(
        default_factory=dict, repr=False
    )

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
        spec = self.tools.get(tool) if tool else None
        if spec is None:
            return False
        if spec.trusted_output is not None:
            return spec.trusted_output
        conn = self.connectors.get(spec.connector) if spec.connector else None
        return conn.trusted if conn else True


# --------------------------------------------------------------------------------------------
# loading


def _validation_errors(exc: ValidationError, located: Located, prefix: tuple[str | int, ...] = ()) -> list[str]:
    out = []
    for err in exc.errors():
        loc = prefix + tuple(err["loc"])
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
    sessions: SessionsSpec | None = None
    approvals: ApprovalsSpec | None = None
    evidence = "required"

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
            for i, fr in enumerate(flow.rules):
                for j, g in enumerate(fr.tools):
                    if not any(Glob([g]).matches(n) for n in tools):
                        errors.append(
                            f"{located.where(('information_flow', 'rules', i, 'tools', j))}: flow rule {fr.id!r} names unknown tool {g!r}"
                        )
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
                )
            )
    if not rules and not any(p.spec.unsafe_empty for p in packs):
        errors.append(
            f"{top.located.where(('name',))}: the composed policy has no rules (set `unsafe_empty: true` if that is meant)"
        )
    if errors:
        raise PolicyError(errors)

    digest = hashlib.sha256()
    for pack in packs:
        # a pack without the (later) `approvals:` section hashes as it did before the section existed
        skip = {"approvals"} if pack.spec.approvals is None else None
        digest.update(canonical_json(json.loads(pack.spec.model_dump_json(by_alias=True, exclude=skip))))
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
    )
    policy.warm()
    return policy


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
