"""Grants and principal selectors: who may perform which action classes on which tools and resources.

A :class:`GrantSpec` is what a policy pack (``planes: {identity: {grants: [...]}}``), the CLI
(``fiveplane grants add``) and Python code write; a :class:`Grant` is a stored grant (with its
provenance and revocation state). A grant names one principal selector (a user by id, role or
claim; an agent; a sub-agent, optionally only when delegated by a given agent; a connector or a
service), a non-empty set of action classes, and globs over connectors, tools and resources. A
grant may carry a CEL condition and an expiry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .._actions import ActionClass, Principal, PrincipalKind
from .._policy._load import Glob

__all__ = [
    "Grant",
    "GrantSpec",
    "IdentityError",
    "PrincipalSelector",
    "glob_covers",
    "utc",
]

_ID = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:@/+-]{0,127}$")
_WILD = frozenset("*?[")


class IdentityError(Exception):
    """An identity-plane failure (bad grant, unknown grant, bad key, bad identity token)."""


def utc(value: datetime) -> datetime:
    """``value`` as an aware UTC datetime; a naive value is read as UTC (databases drop the zone)."""
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _check_globs(values: tuple[str, ...], what: str) -> tuple[str, ...]:
    for v in values:
        if not v or not v.strip() or any(ord(c) < 32 for c in v):
            raise ValueError(f"invalid {what} glob {v!r}")
    return values


class PrincipalSelector(BaseModel):
    """Which principal-chain links a grant applies to.

    In YAML and on the command line a selector may be written as a string:

    - ``user:rep-1`` (a user by id; globs allowed), ``role:sales-rep`` (a user holding the role),
      ``claim:department=sales`` (a user whose verified claim has that value, or a list holding it);
    - ``agent:sales-assistant`` (the agent anywhere in the chain), ``subagent:researcher`` (only when
      acting as a sub-agent, i.e. after another agent in the chain), ``subagent:researcher@sales-assistant``
      (only when delegated by ``sales-assistant``);
    - ``connector:crm``, ``service:billing-batch``.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: PrincipalKind
    id: str | None = None
    """The link's id (a glob)."""
    role: str | None = None
    """The link must hold this role."""
    claims: dict[str, str | int | bool] = Field(default_factory=dict)
    """Every listed claim must equal the value (or be a list that holds it)."""
    delegated: bool | None = None
    """Agents only: ``True`` matches only a sub-agent (an agent after another agent in the chain),
    ``False`` only the first agent; ``None`` either."""
    via: str | None = None
    """Sub-agents only: the delegating agent (the agent link right before) must match this glob."""

    @model_validator(mode="before")
    @classmethod
    def _shorthand(cls, value: Any) -> Any:
        if isinstance(value, str):
            return parse_selector(value)
        return value

    @model_validator(mode="after")
    def _something(self) -> PrincipalSelector:
        if self.id is None and self.role is None and not self.claims:
            raise ValueError("a principal selector needs an id, a role or claims")
        if self.id is not None:
            _check_globs((self.id,), "principal id")
        if (self.delegated is not None or self.via is not None) and self.kind is not PrincipalKind.AGENT:
            raise ValueError("`delegated` and `via` apply to agents only")
        if self.via is not None and self.delegated is False:
            raise ValueError("`via` names the delegating agent, so `delegated` cannot be false")
        return self

    def __str__(self) -> str:
        if self.kind is PrincipalKind.AGENT and self.delegated:
            base = f"subagent:{self.id or '*'}" + (f"@{self.via}" if self.via else "")
        elif self.id is not None:
            base = f"{self.kind.value}:{self.id}"
        elif self.role is not None:
            base = f"role:{self.role}" if self.kind is PrincipalKind.USER else f"{self.kind.value}:role={self.role}"
        else:
            base = ""
        extra = [f"{k}={v}" for k, v in sorted(self.claims.items())]
        if self.role is not None and self.id is not None:
            extra.insert(0, f"role={self.role}")
        if not base:
            return f"claim:{','.join(extra)}" if self.kind is PrincipalKind.USER else f"{self.kind.value}:claim:{','.join(extra)}"
        return base + (f" [{', '.join(extra)}]" if extra else "")

    @property
    def exact_id(self) -> str | None:
        """The id when it is a plain name (no glob), for indexing."""
        if self.id is not None and not (_WILD & set(self.id)):
            return self.id
        return None

    def id_matches(self, link_id: str) -> bool:
        """Does the selector's id (glob) admit ``link_id``? (No id admits every one.)"""
        return self.id is None or _glob(self.id).matches(link_id)

    def matches(self, chain: Sequence[Principal], index: int) -> bool:
        """Does the selector match link ``index`` of ``chain``?"""
        link = chain[index]
        if link.kind is not self.kind:
            return False
        if not self.id_matches(link.id):
            return False
        if self.role is not None and self.role not in link.roles:
            return False
        for key, want in self.claims.items():
            have = link.claims.get(key)
            wanted = _norm(want)
            if isinstance(have, (list, tuple)):
                if not any(_norm(h) == wanted for h in have):
                    return False
            elif have is None or _norm(have) != wanted:
                return False
        if self.kind is PrincipalKind.AGENT and (self.delegated is not None or self.via is not None):
            parent = _delegating_agent(chain, index)
            if self.delegated is True and parent is None:
                return False
            if self.delegated is False and parent is not None:
                return False
            if self.via is not None and (parent is None or not _glob(self.via).matches(parent.id)):
                return False
        return True


def _norm(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _delegating_agent(chain: Sequence[Principal], index: int) -> Principal | None:
    for link in reversed(chain[:index]):
        if link.kind is PrincipalKind.AGENT:
            return link
    return None


_GLOB_CACHE: dict[str, Glob] = {}


def _glob(pattern: str) -> Glob:
    g = _GLOB_CACHE.get(pattern)
    if g is None:
        g = Glob([pattern])
        if len(_GLOB_CACHE) < 50_000:
            _GLOB_CACHE[pattern] = g
    return g


def parse_selector(text: str) -> dict[str, Any]:
    """The mapping form of a selector shorthand (see :class:`PrincipalSelector`)."""
    prefix, sep, rest = text.strip().partition(":")
    if not sep or not rest:
        raise ValueError(
            f"invalid principal {text!r}: write user:ID, role:ROLE, claim:NAME=VALUE, agent:ID, subagent:ID[@PARENT], connector:ID or service:ID"
        )
    prefix = prefix.lower()
    if prefix == "role":
        return {"kind": "user", "role": rest}
    if prefix == "claim":
        claims: dict[str, Any] = {}
        for part in rest.split(","):
            key, eq, value = part.partition("=")
            if not eq or not key.strip():
                raise ValueError(f"invalid claim selector {text!r}: write claim:NAME=VALUE[,NAME=VALUE]")
            claims[key.strip()] = value.strip()
        return {"kind": "user", "claims": claims}
    if prefix == "subagent":
        ident, at, via = rest.partition("@")
        out: dict[str, Any] = {"kind": "agent", "id": ident, "delegated": True}
        if at:
            out["via"] = via
        return out
    if prefix in {k.value for k in PrincipalKind}:
        return {"kind": prefix, "id": rest}
    raise ValueError(f"invalid principal {text!r}: unknown kind {prefix!r}")


def glob_covers(outer: str, inner: str) -> bool:
    """Conservatively: does every string matched by glob ``inner`` also match glob ``outer``?

    Exact for a plain ``inner``; for a wildcard ``inner`` it answers yes only when ``outer`` is
    ``*``, equals ``inner``, or is ``PREFIX*`` (plain prefix) and ``inner`` starts with that prefix.
    A "no" may be a false negative (the delegation is then refused or narrowed), never a false yes.
    """
    if not (_WILD & set(inner)):
        return _glob(outer).matches(inner)
    if outer in ("*", inner):
        return True
    if outer.endswith("*") and not (_WILD & set(outer[:-1])):
        return inner.startswith(outer[:-1])
    return False


class GrantSpec(BaseModel):
    """One grant as written in a policy pack, on the command line or in code."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str
    """Unique id (letters, digits, ``_.:@/+-``)."""
    principal: PrincipalSelector
    classes: tuple[ActionClass, ...] = Field(min_length=1)
    """Action classes granted: read, invoke, modify."""
    connectors: tuple[str, ...] = ()
    """Connector globs; empty: any connector (then ``tools`` must be given)."""
    tools: tuple[str, ...] = ()
    """Tool globs; empty: any tool of the connectors."""
    resources: tuple[str, ...] = ("*",)
    """Resource globs (see the plane's ``resources`` templates); ``*`` also matches "no resource"."""
    when: str | None = None
    """A CEL condition over ``action``, ``args``, ``tool``, ``user``, ``agent``, ``principal``, ``link``,
    ``resource``, ``now``; the grant applies only when it is true (an error: it does not apply)."""
    expires: datetime | None = None
    """When the grant stops applying (with a time zone, e.g. ``2026-12-31T00:00:00Z``)."""
    description: str = ""

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not _ID.match(v):
            raise ValueError(f"invalid grant id {v!r} (letters, digits and _.:@/+- only, at most 128)")
        return v

    @field_validator("connectors", "tools", "resources")
    @classmethod
    def _globs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        return _check_globs(v, "connector/tool/resource")

    @field_validator("classes")
    @classmethod
    def _classes(cls, v: tuple[ActionClass, ...]) -> tuple[ActionClass, ...]:
        return tuple(dict.fromkeys(v))

    @field_validator("expires")
    @classmethod
    def _aware(cls, v: datetime | None) -> datetime | None:
        if v is not None and v.tzinfo is None:
            raise ValueError("give the expiry a time zone, e.g. 2026-12-31T00:00:00Z")
        return utc(v) if v is not None else None

    @model_validator(mode="after")
    def _scoped(self) -> GrantSpec:
        if not self.connectors and not self.tools:
            raise ValueError("a grant must name connectors or tools (use '*' explicitly for any)")
        if not self.resources:
            raise ValueError("a grant needs at least one resource glob ('*' for any)")
        if self.when is not None:
            if not self.when.strip():
                raise ValueError("`when:` is empty")
            from .._policy._cel import Condition

            Condition(self.when)  # raises ValueError with the CEL message
        return self


@dataclass(frozen=True)
class Grant:
    """A stored grant: the spec plus where it came from and whether it still holds."""

    spec: GrantSpec
    source: str = "runtime"
    """``policy:<pack>`` for grants loaded from a pack, ``runtime`` for grants added later."""
    created_at: datetime | None = None
    created_by: str | None = None
    revoked_at: datetime | None = None
    revoked_by: str | None = None
    revoke_reason: str | None = None
    _compiled: _Compiled | None = field(default=None, compare=False, repr=False)

    @property
    def id(self) -> str:
        return self.spec.id

    @property
    def expires_at(self) -> datetime | None:
        return self.spec.expires

    def active(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.spec.expires is None or self.spec.expires > now)

    @property
    def compiled(self) -> _Compiled:
        c = self._compiled
        if c is None:
            c = _Compiled.of(self.spec)
            object.__setattr__(self, "_compiled", c)
        return c

    def covers(self, cls: ActionClass, tool: str | None, connector: str | None, resource: str | None) -> bool:
        """Does the grant's scope (not its principal, expiry or condition) cover the action?"""
        c = self.compiled
        if cls not in c.classes:
            return False
        if c.connectors is not None and not c.connectors.matches(connector or ""):
            return False
        if c.tools is not None and not c.tools.matches(tool or ""):
            return False
        return c.resources.matches(resource or "")

    def covers_pattern(self, cls: ActionClass, tool: str, connector: str | None, resource_glob: str) -> bool:
        """Like :meth:`covers` for a delegated resource glob (conservative, see :func:`glob_covers`)."""
        c = self.compiled
        if cls not in c.classes:
            return False
        if c.connectors is not None and not c.connectors.matches(connector or ""):
            return False
        if c.tools is not None and not c.tools.matches(tool):
            return False
        return any(glob_covers(r, resource_glob) for r in self.spec.resources)

    def to_json(self) -> dict[str, Any]:
        data = self.spec.model_dump(mode="json")
        data["principal"] = str(self.spec.principal)
        data["principal_selector"] = self.spec.principal.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        data.update(
            source=self.source,
            created_at=self.created_at.isoformat() if self.created_at else None,
            created_by=self.created_by,
            revoked_at=self.revoked_at.isoformat() if self.revoked_at else None,
            revoked_by=self.revoked_by,
            revoke_reason=self.revoke_reason,
        )
        return data


@dataclass(frozen=True)
class _Compiled:
    classes: frozenset[ActionClass]
    connectors: Glob | None
    tools: Glob | None
    resources: Glob
    condition: Callable[[Callable[[str], Any]], bool] | None

    @classmethod
    def of(cls, spec: GrantSpec) -> _Compiled:
        condition = None
        if spec.when is not None:
            from .._policy._cel import Condition

            condition = Condition(spec.when).evaluate
        return cls(
            classes=frozenset(spec.classes),
            connectors=Glob(spec.connectors) if spec.connectors else None,
            tools=Glob(spec.tools) if spec.tools else None,
            resources=Glob(spec.resources),
            condition=condition,
        )
