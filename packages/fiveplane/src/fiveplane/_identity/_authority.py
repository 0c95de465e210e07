"""Composite-principal authority: the intersection of every link's unexpired grants.

An action may run only if *every* link of its principal chain (of the kinds that must hold grants)
holds an active grant covering it; a sub-agent link must also have been delegated the work by the
agent before it, in this session. The effective expiry is the earliest of the links' latest grant
expiries (and the delegations'). A denial names the link that denied.

A delegation can only hand down a subset: every right it hands down must be covered by every
link of the delegating chain (conditional grants never cover a delegation, since their condition
cannot be evaluated for an action that does not exist yet).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .._actions import ActionClass, Principal, PrincipalKind
from .._policy._cel import ConditionError
from .._policy._load import Glob
from ._grants import GrantIndex
from ._model import Grant, glob_covers

__all__ = [
    "ALL_KINDS",
    "Authority",
    "DelegatedRight",
    "Delegation",
    "Denial",
    "LinkAuthority",
    "Request",
    "authorize",
    "chain_key",
    "check_delegation",
    "describe_link",
    "is_subagent",
]

ALL_KINDS = frozenset(PrincipalKind)


def describe_link(link: Principal) -> str:
    return f"{link.kind.value} {link.id!r}"


def chain_key(chain: Sequence[Principal]) -> tuple[tuple[str, str], ...]:
    return tuple((p.kind.value, p.id) for p in chain)


def is_subagent(chain: Sequence[Principal], index: int) -> bool:
    """An agent link with another agent before it in the chain."""
    return chain[index].kind is PrincipalKind.AGENT and any(p.kind is PrincipalKind.AGENT for p in chain[:index])


@dataclass(frozen=True)
class Request:
    """What is being authorized: one action class on one tool / connector / resource, by a chain."""

    chain: tuple[Principal, ...]
    action_class: ActionClass
    tool: str | None
    connector: str | None
    resource: str | None = None
    variables: Callable[[int], Callable[[str], Any]] | None = None
    """For grant conditions: ``variables(link_index)`` returns the CEL variable resolver."""

    @property
    def target(self) -> str:
        return self.connector or self.tool or "-"

    def what(self) -> str:
        detail = [self.tool] if self.tool and self.tool != self.target else []
        if self.resource:
            detail.append(f"resource {self.resource!r}")
        return f"{self.action_class.value} on {self.target}" + (f" ({', '.join(detail)})" if detail else "")


@dataclass(frozen=True)
class DelegatedRight:
    tool: str
    connector: str | None
    action_class: ActionClass
    resources: tuple[str, ...] = ("*",)

    def covers(self, tool: str | None, cls: ActionClass, resource: str | None) -> bool:
        return tool == self.tool and cls is self.action_class and Glob(self.resources).matches(resource or "")

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DelegatedRight:
        return cls(
            tool=data["tool"],
            connector=data.get("connector"),
            action_class=ActionClass(data["class"]),
            resources=tuple(data.get("resources") or ("*",)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "tool": self.tool,
            "connector": self.connector,
            "class": self.action_class.value,
            "resources": list(self.resources),
        }


@dataclass(frozen=True)
class Delegation:
    """Work handed down to a sub-agent in a session (recorded by the identity plane)."""

    id: str
    chain: tuple[tuple[str, str], ...]
    """The delegating chain (kind, id) — the sub-agent acts with this chain as its prefix."""
    to_agent: str
    rights: tuple[DelegatedRight, ...]
    expires_at: datetime | None

    def covers(self, tool: str | None, cls: ActionClass, resource: str | None) -> bool:
        return any(r.covers(tool, cls, resource) for r in self.rights)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Delegation:
        """The inverse of :meth:`to_json` (delegations live in the session state as JSON)."""
        chain = tuple(tuple(link.split(":", 1)) for link in data["chain"])
        expires = data.get("expires_at")
        return cls(
            id=data["delegation_id"],
            chain=chain,  # type: ignore[arg-type]
            to_agent=data["to_agent"],
            rights=tuple(DelegatedRight.from_json(r) for r in data.get("rights") or ()),
            expires_at=datetime.fromisoformat(expires) if expires else None,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "delegation_id": self.id,
            "chain": [f"{k}:{i}" for k, i in self.chain],
            "to_agent": self.to_agent,
            "rights": [r.to_json() for r in self.rights],
            "expires_at": self.expires_at.isoformat() if self.expires_at else None,
        }


@dataclass(frozen=True)
class LinkAuthority:
    index: int
    link: Principal
    grants: tuple[str, ...]
    """The active grants (ids) that authorize the request for this link."""
    expires_at: datetime | None
    """The latest expiry among those grants (``None``: one never expires), capped by a delegation."""
    delegation: str | None = None


@dataclass(frozen=True)
class Denial:
    index: int
    link: Principal
    code: str
    """``no_grant``, ``grant_expired``, ``condition_false``, ``condition_error``, ``not_delegated``."""
    message: str


@dataclass(frozen=True)
class Authority:
    """The result of evaluating a request against every link of its chain."""

    links: tuple[LinkAuthority, ...] = ()
    denials: tuple[Denial, ...] = ()
    checked: tuple[int, ...] = field(default=())
    """Indexes of the links that had to hold grants."""

    @property
    def allowed(self) -> bool:
        return not self.denials and bool(self.checked)

    @property
    def expires_at(self) -> datetime | None:
        caps = [a.expires_at for a in self.links if a.expires_at is not None]
        return min(caps) if caps else None

    def grants_by_link(self) -> dict[str, list[str]]:
        return {f"{a.link.kind.value}:{a.link.id}": list(a.grants) for a in self.links}


def _eval_link(
    index: GrantIndex,
    req: Request,
    i: int,
    now: datetime,
) -> tuple[LinkAuthority | None, Denial | None]:
    link = req.chain[i]
    matching = [g for g in index.for_link(req.chain, i) if g.covers(req.action_class, req.tool, req.connector, req.resource)]
    expired: list[Grant] = []
    false_cond: list[Grant] = []
    errors: list[str] = []
    ok: list[Grant] = []
    resolver: Callable[[str], Any] | None = None
    for g in matching:
        if not g.active(now):
            expired.append(g)
            continue
        cond = g.compiled.condition
        if cond is not None:
            if req.variables is None:
                false_cond.append(g)
                continue
            if resolver is None:
                resolver = req.variables(i)
            try:
                if not cond(resolver):
                    false_cond.append(g)
                    continue
            except ConditionError as exc:
                errors.append(f"grant {g.id!r}: {exc}")
                continue
        ok.append(g)
    if ok:
        exps = [g.expires_at for g in ok]
        cap = None if any(e is None for e in exps) else max(e for e in exps if e is not None)
        return LinkAuthority(i, link, tuple(g.id for g in ok), cap), None
    base = f"{describe_link(link)} holds no grant for {req.what()}"
    if errors:
        return None, Denial(i, link, "condition_error", f"{base}: {'; '.join(errors)}")
    if false_cond:
        return None, Denial(i, link, "condition_false", f"{base} (the condition of grant {false_cond[0].id!r} is false)")
    if expired:
        g = max(expired, key=lambda x: x.expires_at or now)
        when = g.expires_at.isoformat() if g.expires_at else "?"
        return None, Denial(i, link, "grant_expired", f"{base} (grant {g.id!r} expired at {when})")
    return None, Denial(i, link, "no_grant", base)


def authorize(
    index: GrantIndex,
    req: Request,
    now: datetime,
    *,
    kinds: frozenset[PrincipalKind] = ALL_KINDS,
    delegations: Sequence[Delegation] = (),
    require_delegation: bool = True,
    stop_at_first: bool = False,
) -> Authority:
    """Evaluate ``req`` for every link of its chain whose kind is in ``kinds``."""
    links: list[LinkAuthority] = []
    denials: list[Denial] = []
    checked: list[int] = []
    for i, link in enumerate(req.chain):
        if link.kind not in kinds:
            continue
        checked.append(i)
        auth, denial = _eval_link(index, req, i, now)
        if auth is not None and is_subagent(req.chain, i):
            auth, denial = _delegated(auth, req, i, now, delegations, require_delegation)
        if denial is not None:
            denials.append(denial)
            if stop_at_first:
                break
        elif auth is not None:
            links.append(auth)
    return Authority(tuple(links), tuple(denials), tuple(checked))


def _delegated(
    auth: LinkAuthority, req: Request, i: int, now: datetime, delegations: Sequence[Delegation], required: bool
) -> tuple[LinkAuthority | None, Denial | None]:
    link = req.chain[i]
    prefix = chain_key(req.chain[:i])
    live = [
        d for d in delegations if d.to_agent == link.id and d.chain == prefix and (d.expires_at is None or d.expires_at > now)
    ]
    covering = [d for d in live if d.covers(req.tool, req.action_class, req.resource)]
    if covering:
        best = max(covering, key=lambda d: d.expires_at or datetime.max.replace(tzinfo=now.tzinfo))
        caps = [c for c in (auth.expires_at, best.expires_at) if c is not None]
        return LinkAuthority(auth.index, link, auth.grants, min(caps) if caps else None, best.id), None
    if not required:
        return auth, None
    parent = next(p for p in reversed(req.chain[:i]) if p.kind is PrincipalKind.AGENT)
    if live:
        msg = f"sub-agent {link.id!r} was delegated work by agent {parent.id!r}, but not {req.what()}"
    else:
        msg = f"sub-agent {link.id!r} holds no delegation from agent {parent.id!r} in this session for {req.what()}"
    return None, Denial(i, link, "not_delegated", msg)


def check_delegation(
    index: GrantIndex,
    chain: Sequence[Principal],
    rights: Sequence[DelegatedRight],
    now: datetime,
    *,
    kinds: frozenset[PrincipalKind] = ALL_KINDS,
    delegations: Sequence[Delegation] = (),
    require_delegation: bool = True,
) -> tuple[list[DelegatedRight], list[tuple[DelegatedRight, Denial]], datetime | None]:
    """Split ``rights`` into those the delegating ``chain`` holds (each link covers them) and those it does not.

    Returns (covered, uncovered with the first denying link, the chain's expiry cap over the covered rights).
    """
    chain = tuple(chain)
    covered: list[DelegatedRight] = []
    uncovered: list[tuple[DelegatedRight, Denial]] = []
    caps: list[datetime] = []
    active = {gid: g for gid, g in index.grants.items() if g.active(now) and g.compiled.condition is None}
    for right in rights:
        denial: Denial | None = None
        for i, link in enumerate(chain):
            if link.kind not in kinds:
                continue
            holders = [g for g in index.for_link(chain, i) if g.id in active]
            per_resource: list[datetime | None] = []
            for res in right.resources:
                ok = [g for g in holders if g.covers_pattern(right.action_class, right.tool, right.connector, res)]
                if not ok:
                    req = Request(chain, right.action_class, right.tool, right.connector, None if res == "*" else res)
                    denial = Denial(i, link, "no_grant", f"{describe_link(link)} holds no grant for {req.what()}")
                    break
                exps = [g.expires_at for g in ok]
                per_resource.append(None if any(e is None for e in exps) else max(e for e in exps if e is not None))
            if denial is None and is_subagent(chain, i):
                prefix = chain_key(chain[:i])
                live = [
                    d
                    for d in delegations
                    if d.to_agent == link.id and d.chain == prefix and (d.expires_at is None or d.expires_at > now)
                ]
                hit = [
                    d for d in live
                    if any(r.tool == right.tool and r.action_class is right.action_class and all(any(glob_covers(x, res) for x in r.resources) for res in right.resources) for r in d.rights)
                ]  # fmt: skip
                if hit:
                    per_resource.extend(d.expires_at for d in hit[:1])
                elif require_delegation:
                    denial = Denial(
                        i,
                        link,
                        "not_delegated",
                        f"sub-agent {link.id!r} was not delegated {right.action_class.value} on {right.tool} itself",
                    )
            if denial is not None:
                break
            caps.extend(c for c in per_resource if c is not None)
        if denial is None:
            covered.append(right)
        else:
            uncovered.append((right, denial))
    return covered, uncovered, (min(caps) if caps else None)
