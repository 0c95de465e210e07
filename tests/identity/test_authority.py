"""Composite authority (invariant 1) and bounded delegation (invariant 2), with property tests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fiveplane import ActionClass, Principal, PrincipalKind
from fiveplane._identity import (
    DelegatedRight,
    Delegation,
    Grant,
    GrantSpec,
    Request,
    authorize,
    check_delegation,
)
from fiveplane._identity._authority import chain_key
from fiveplane._identity._grants import GrantIndex

NOW = datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
U, A, C = PrincipalKind.USER, PrincipalKind.AGENT, PrincipalKind.CONNECTOR
R, INV, M = ActionClass.READ, ActionClass.INVOKE, ActionClass.MODIFY

USER = Principal(kind=U, id="rep-1", roles=("sales-rep",))
AGENT = Principal(kind=A, id="sales-assistant")
HELPER = Principal(kind=A, id="helper")


def g(gid: str, principal: str, classes: list[str], **kw: Any) -> Grant:
    data: dict[str, Any] = {"id": gid, "principal": principal, "classes": classes}
    data.update(kw)
    if "connectors" not in data and "tools" not in data:
        data["connectors"] = ["*"]
    return Grant(GrantSpec.model_validate(data))


def req(chain: tuple[Principal, ...], cls: ActionClass, tool: str, connector: str, resource: str | None = None) -> Request:
    return Request(chain, cls, tool, connector, resource)


def test_every_link_must_hold_a_grant_and_the_denial_names_it() -> None:
    idx = GrantIndex([g("u", "user:rep-1", ["read", "modify"]), g("a", "agent:sales-assistant", ["read"])])
    ok = authorize(idx, req((USER, AGENT), R, "crm.get", "crm"), NOW)
    assert ok.allowed and ok.grants_by_link() == {"user:rep-1": ["u"], "agent:sales-assistant": ["a"]}
    no = authorize(idx, req((USER, AGENT), M, "contracts.update_status", "contracts"), NOW)
    assert not no.allowed and len(no.denials) == 1
    d = no.denials[0]
    assert d.index == 1 and d.code == "no_grant"
    assert d.message == "agent 'sales-assistant' holds no grant for modify on contracts (contracts.update_status)"


def test_expired_and_conditional_grants() -> None:
    idx = GrantIndex(
        [
            g("old", "user:rep-1", ["read"], expires=NOW - timedelta(seconds=1)),
            g("a", "agent:sales-assistant", ["read"]),
            g("cond", "agent:other", ["read"], when="args.limit <= 10"),
        ]
    )
    d = authorize(idx, req((USER, AGENT), R, "crm.get", "crm"), NOW).denials[0]
    assert d.code == "grant_expired" and "grant 'old' expired at" in d.message
    other = Principal(kind=A, id="other")
    chain = (other,)

    def variables(args: dict[str, Any]) -> Any:
        return lambda i: lambda name: args if name == "args" else (_ for _ in ()).throw(KeyError(name))

    assert authorize(idx, Request(chain, R, "crm.get", "crm", None, variables({"limit": 5})), NOW).allowed
    d = authorize(idx, Request(chain, R, "crm.get", "crm", None, variables({"limit": 50})), NOW).denials[0]
    assert d.code == "condition_false"
    d = authorize(idx, Request(chain, R, "crm.get", "crm", None, variables({})), NOW).denials[0]
    assert d.code == "condition_error" and "cond" in d.message
    # without variables a conditional grant never applies (fail closed)
    assert not authorize(idx, req(chain, R, "crm.get", "crm"), NOW).allowed


def test_expiry_is_the_earliest_link_cap() -> None:
    idx = GrantIndex(
        [
            g("u1", "user:rep-1", ["read"], expires=NOW + timedelta(hours=1)),
            g("u2", "role:sales-rep", ["read"], expires=NOW + timedelta(hours=3)),
            g("a", "agent:sales-assistant", ["read"], expires=NOW + timedelta(hours=2)),
        ]
    )
    auth = authorize(idx, req((USER, AGENT), R, "crm.get", "crm"), NOW)
    assert auth.expires_at == NOW + timedelta(hours=2)  # user: latest of its grants (3h); agent: 2h


def test_link_kinds_that_need_no_grant() -> None:
    conn = Principal(kind=C, id="crm")
    idx = GrantIndex([g("u", "user:rep-1", ["read"]), g("a", "agent:sales-assistant", ["read"])])
    chain = (USER, AGENT, conn)
    assert authorize(idx, req(chain, R, "crm.get", "crm"), NOW).denials[0].link == conn
    assert authorize(idx, req(chain, R, "crm.get", "crm"), NOW, kinds=frozenset({U, A})).allowed
    assert not authorize(idx, req(chain, R, "crm.get", "crm"), NOW, kinds=frozenset({PrincipalKind.SERVICE})).allowed


def test_subagent_needs_a_delegation_covering_the_action() -> None:
    idx = GrantIndex(
        [
            g("u", "user:rep-1", ["read", "modify"]),
            g("a", "agent:sales-assistant", ["read", "modify"]),
            g("h", "subagent:helper", ["read", "modify"]),
        ]
    )
    chain = (USER, AGENT, HELPER)
    d = authorize(idx, req(chain, R, "crm.get", "crm"), NOW).denials[0]
    assert d.code == "not_delegated" and "holds no delegation from agent 'sales-assistant'" in d.message
    assert authorize(idx, req(chain, R, "crm.get", "crm"), NOW, require_delegation=False).allowed
    deleg = Delegation(
        "d1", chain_key((USER, AGENT)), "helper", (DelegatedRight("crm.get", "crm", R, ("acc/*",)),), NOW + timedelta(minutes=5)
    )
    auth = authorize(idx, req(chain, R, "crm.get", "crm", "acc/1"), NOW, delegations=[deleg])
    assert auth.allowed and auth.expires_at == NOW + timedelta(minutes=5) and auth.links[2].delegation == "d1"
    assert authorize(idx, req(chain, M, "crm.get", "crm", "acc/1"), NOW, delegations=[deleg]).denials[0].code == "not_delegated"
    assert not authorize(idx, req(chain, R, "crm.get", "crm", "other/1"), NOW, delegations=[deleg]).allowed
    assert not authorize(idx, req(chain, R, "crm.get", "crm", "acc/1"), NOW + timedelta(minutes=6), delegations=[deleg]).allowed
    # a delegation made by another chain does not count
    other_user = Principal(kind=U, id="rep-2", roles=("sales-rep",))
    assert not authorize(idx, req((other_user, AGENT, HELPER), R, "crm.get", "crm", "acc/1"), NOW, delegations=[deleg]).allowed


def test_delegation_hands_down_only_what_every_link_holds() -> None:
    idx = GrantIndex(
        [
            g("u", "user:rep-1", ["read", "modify"], connectors=["crm"], resources=["acc/*"]),
            g("a", "agent:sales-assistant", ["read"], connectors=["crm"], expires=NOW + timedelta(minutes=30)),
            g("cond", "agent:sales-assistant", ["modify"], connectors=["crm"], when="true"),
        ]
    )
    rights = [
        DelegatedRight("crm.get", "crm", R, ("acc/1",)),
        DelegatedRight("crm.get", "crm", R, ("acc/*",)),
        DelegatedRight("crm.get", "crm", R, ("*",)),  # wider than the user's acc/*
        DelegatedRight("crm.put", "crm", M, ("acc/1",)),  # the agent's modify grant is conditional: never delegable
    ]
    covered, uncovered, cap = check_delegation(idx, (USER, AGENT), rights, NOW)
    assert covered == rights[:2]
    assert [d.link.id for _, d in uncovered] == ["rep-1", "sales-assistant"]
    assert cap == NOW + timedelta(minutes=30)


# ---- properties ------------------------------------------------------------------------------------

TOOLS = [("crm.get", "crm", R), ("crm.put", "crm", M), ("mail.send", "mail", INV), ("doc.edit", "docs", M)]
RESOURCES = [None, "r/1", "r/2", "s/1"]
SELECTORS = ["user:u1", "user:u*", "role:x", "role:y", "agent:a1", "agent:a*", "subagent:a2", "subagent:a2@a1", "connector:c1"]


@st.composite
def grants(draw: st.DrawFn) -> list[Grant]:
    out = []
    for i in range(draw(st.integers(0, 14))):
        classes = draw(st.lists(st.sampled_from(["read", "invoke", "modify"]), min_size=1, max_size=3, unique=True))
        scope = draw(
            st.sampled_from(
                [
                    {"connectors": ["*"]},
                    {"connectors": ["crm"]},
                    {"connectors": ["mail", "docs"]},
                    {"tools": ["crm.*"]},
                    {"tools": ["doc.edit"]},
                ]
            )
        )
        resources = draw(st.sampled_from([["*"], ["r/*"], ["r/1"], ["s/*", "r/2"]]))
        expires = draw(st.sampled_from([None, NOW - timedelta(seconds=1), NOW + timedelta(hours=1), NOW + timedelta(hours=2)]))
        out.append(g(f"g{i}", draw(st.sampled_from(SELECTORS)), classes, resources=resources, expires=expires, **scope))
    return out


@st.composite
def chains(draw: st.DrawFn) -> tuple[Principal, ...]:
    user = Principal(
        kind=U, id=draw(st.sampled_from(["u1", "u2"])), roles=tuple(draw(st.lists(st.sampled_from(["x", "y"]), unique=True)))
    )
    agents = draw(st.lists(st.sampled_from(["a1", "a2", "a3"]), min_size=1, max_size=3))
    links = [user, *(Principal(kind=A, id=a) for a in agents)]
    if draw(st.booleans()):
        links.append(Principal(kind=C, id="c1"))
    return tuple(links)


def _naive_link_ok(
    grants_: list[Grant], chain: tuple[Principal, ...], i: int, tool: str, conn: str, cls: ActionClass, res: str | None
) -> bool:
    return any(gr.active(NOW) and gr.spec.principal.matches(chain, i) and gr.covers(cls, tool, conn, res) for gr in grants_)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(grants_=grants(), chain=chains(), action=st.sampled_from(TOOLS), res=st.sampled_from(RESOURCES))
def test_authority_is_the_intersection_of_every_link(
    grants_: list[Grant], chain: tuple[Principal, ...], action: tuple[str, str, ActionClass], res: str | None
) -> None:
    tool, conn, cls = action
    auth = authorize(GrantIndex(grants_), req(chain, cls, tool, conn, res), NOW, require_delegation=False)
    assert auth.allowed == all(_naive_link_ok(grants_, chain, i, tool, conn, cls, res) for i in range(len(chain)))
    if auth.allowed:
        assert auth.expires_at is None or auth.expires_at > NOW
        for i in range(len(chain)):  # never longer than any link's grants
            caps = [
                gr.expires_at
                for gr in grants_
                if gr.active(NOW) and gr.spec.principal.matches(chain, i) and gr.covers(cls, tool, conn, res)
            ]
            if caps and all(c is not None for c in caps):
                assert auth.expires_at is not None and auth.expires_at <= max(c for c in caps if c is not None)
    else:
        assert auth.denials and all(0 <= d.index < len(chain) for d in auth.denials)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    grants_=grants(),
    chain=chains(),
    extra=st.sampled_from(["a1", "a2", "a3"]),
    action=st.sampled_from(TOOLS),
    res=st.sampled_from(RESOURCES),
)
def test_adding_a_link_never_adds_authority(
    grants_: list[Grant], chain: tuple[Principal, ...], extra: str, action: tuple[str, str, ActionClass], res: str | None
) -> None:
    tool, conn, cls = action
    idx = GrantIndex(grants_)
    longer = (*chain, Principal(kind=A, id=extra))
    if authorize(idx, req(longer, cls, tool, conn, res), NOW, require_delegation=False).allowed:
        assert authorize(idx, req(chain, cls, tool, conn, res), NOW, require_delegation=False).allowed


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    grants_=grants(),
    chain=chains(),
    wanted=st.lists(
        st.tuples(st.sampled_from(TOOLS), st.sampled_from([("*",), ("r/*",), ("r/1",), ("s/1", "r/2")])), min_size=1, max_size=4
    ),
    probe=st.tuples(st.sampled_from(TOOLS), st.sampled_from(RESOURCES)),
)
def test_a_delegated_subagent_never_exceeds_its_delegating_chain(
    grants_: list[Grant], chain: tuple[Principal, ...], wanted: list[Any], probe: Any
) -> None:
    chain = tuple(p for p in chain if p.kind is not C)
    idx = GrantIndex(
        [*grants_, g("sub", "subagent:helper", ["read", "invoke", "modify"])]
    )  # the sub-agent itself is unconstrained
    rights = [DelegatedRight(t, c, k, res) for (t, c, k), res in wanted]
    covered, _uncovered, cap = check_delegation(idx, chain, rights, NOW, require_delegation=False)
    book = [Delegation("d", chain_key(chain), "helper", tuple(covered), cap)] if covered else []
    (tool, conn, cls), res = probe
    sub = (*chain, Principal(kind=A, id="helper"))
    sub_auth = authorize(idx, req(sub, cls, tool, conn, res), NOW, delegations=book)
    if sub_auth.allowed:
        parent = authorize(idx, req(chain, cls, tool, conn, res), NOW, require_delegation=False)
        assert parent.allowed, (covered, probe)
        if parent.expires_at is not None:
            assert sub_auth.expires_at is not None and sub_auth.expires_at <= parent.expires_at
