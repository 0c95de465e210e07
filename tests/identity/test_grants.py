"""The grants store: specs and selectors, add / revoke / sync, recording, cross-process refresh."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from fiveplane import ActionClass, Principal, PrincipalKind
from fiveplane._identity import GrantSpec, GrantStore, IdentityError, PrincipalSelector, glob_covers
from fiveplane._policy._load import Glob

from .conftest import Events

U = PrincipalKind.USER
A = PrincipalKind.AGENT


def spec(gid: str = "g1", principal: str = "user:rep-1", **kw: object) -> GrantSpec:
    data: dict[str, object] = {"id": gid, "principal": principal, "classes": ["read"], "connectors": ["crm"]}
    data.update(kw)
    return GrantSpec.model_validate(data)


# ---- specs and selectors -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user:rep-1", {"kind": U, "id": "rep-1"}),
        ("role:sales-rep", {"kind": U, "role": "sales-rep"}),
        ("claim:department=sales", {"kind": U, "claims": {"department": "sales"}}),
        ("agent:sales-*", {"kind": A, "id": "sales-*"}),
        ("subagent:helper", {"kind": A, "id": "helper", "delegated": True}),
        ("subagent:helper@planner", {"kind": A, "id": "helper", "delegated": True, "via": "planner"}),
        ("connector:crm", {"kind": PrincipalKind.CONNECTOR, "id": "crm"}),
        ("service:batch", {"kind": PrincipalKind.SERVICE, "id": "batch"}),
    ],
)
def test_selector_shorthand(text: str, expected: dict[str, object]) -> None:
    sel = PrincipalSelector.model_validate(text)
    for key, value in expected.items():
        assert getattr(sel, key) == value
    assert PrincipalSelector.model_validate(str(sel)) == sel or text.startswith("claim")


@pytest.mark.parametrize("bad", ["rep-1", "user:", "robot:x", "claim:novalue", "subagent:@planner"])
def test_selector_rejects(bad: str) -> None:
    with pytest.raises(ValidationError):
        GrantSpec.model_validate({"id": "g", "principal": bad, "classes": ["read"], "tools": ["*"]})


def test_selector_matching_by_position_and_claims() -> None:
    user = Principal(kind=U, id="rep-1", roles=("sales-rep",), claims={"department": "sales", "groups": ["a", "b"], "level": 3})
    planner = Principal(kind=A, id="planner")
    helper = Principal(kind=A, id="helper")
    chain = (user, planner, helper)
    assert PrincipalSelector.model_validate("role:sales-rep").matches(chain, 0)
    assert PrincipalSelector.model_validate("claim:department=sales").matches(chain, 0)
    assert PrincipalSelector.model_validate("claim:groups=b").matches(chain, 0)
    assert PrincipalSelector.model_validate("claim:level=3").matches(chain, 0)
    assert not PrincipalSelector.model_validate("claim:department=legal").matches(chain, 0)
    assert not PrincipalSelector.model_validate("claim:missing=x").matches(chain, 0)
    assert not PrincipalSelector.model_validate("role:sales-rep").matches(chain, 1)  # roles select users
    assert PrincipalSelector.model_validate("agent:planner").matches(chain, 1)
    assert not PrincipalSelector.model_validate("subagent:planner").matches(chain, 1)  # top-level agent
    assert PrincipalSelector.model_validate("subagent:helper").matches(chain, 2)
    assert PrincipalSelector.model_validate("subagent:helper@planner").matches(chain, 2)
    assert not PrincipalSelector.model_validate("subagent:helper@other").matches(chain, 2)
    assert PrincipalSelector.model_validate({"kind": "agent", "id": "planner", "delegated": False}).matches(chain, 1)


def test_spec_validation() -> None:
    with pytest.raises(ValidationError, match="connectors or tools"):
        GrantSpec.model_validate({"id": "g", "principal": "user:x", "classes": ["read"]})
    with pytest.raises(ValidationError, match="time zone"):
        spec(expires=datetime(2030, 1, 1))
    with pytest.raises(ValidationError, match="invalid CEL"):
        spec(when="args.x ==")
    with pytest.raises(ValidationError, match="grant id"):
        spec(gid="has space")
    with pytest.raises(ValidationError):
        spec(classes=[])
    with pytest.raises(ValidationError):
        spec(classes=["write"])
    assert spec(classes=["read", "read"]).classes == (ActionClass.READ,)


def test_covers() -> None:
    g = spec(tools=["crm.get_*"], resources=["accounts/*"])
    from fiveplane._identity import Grant

    grant = Grant(g)
    assert grant.covers(ActionClass.READ, "crm.get_notes", "crm", "accounts/A1")
    assert not grant.covers(ActionClass.MODIFY, "crm.get_notes", "crm", "accounts/A1")
    assert not grant.covers(ActionClass.READ, "crm.search", "crm", "accounts/A1")
    assert not grant.covers(ActionClass.READ, "crm.get_notes", "email", "accounts/A1")
    assert not grant.covers(ActionClass.READ, "crm.get_notes", "crm", "contracts/C1")
    assert not grant.covers(ActionClass.READ, "crm.get_notes", "crm", None)
    assert Grant(spec()).covers(ActionClass.READ, "crm.x", "crm", None)  # default resource * covers "none"


# ---- store -----------------------------------------------------------------------------------------


def test_add_get_list_revoke_records_every_change(store: GrantStore, events: Events) -> None:
    g = store.add(spec(), by="alice")
    assert g.created_by == "alice" and g.source == "runtime"
    assert store.get("g1") is not None and store.get("nope") is None
    assert [x.id for x in store.list()] == ["g1"]
    with pytest.raises(IdentityError, match="already exists"):
        store.add(spec())
    revoked = store.revoke("g1", by="bob", reason="left the team")
    assert revoked.revoked_by == "bob" and revoked.revoked_at is not None
    assert store.list() == [] and [x.id for x in store.list(include_revoked=True)] == ["g1"]
    with pytest.raises(IdentityError, match="already revoked"):
        store.revoke("g1")
    with pytest.raises(IdentityError, match="no grant"):
        store.revoke("ghost")
    with pytest.raises(IdentityError, match="already exists"):
        store.add(spec())  # ids are never reused
    assert events.kinds() == ["identity.grant.added", "identity.grant.revoked"]
    assert events[0][1]["grant"]["id"] == "g1" and events[1][1]["reason"] == "left the team"


def test_failed_recording_rolls_the_change_back(db: str) -> None:
    def broken(kind: str, payload: dict[str, object]) -> None:
        raise RuntimeError("ledger down")

    store = GrantStore(db, record=broken)
    with pytest.raises(RuntimeError):
        store.add(spec())
    assert store.get("g1") is None
    GrantStore(db).add(spec())
    with pytest.raises(RuntimeError):
        store.revoke("g1")
    got = store.get("g1")
    assert got is not None and got.revoked_at is None


def test_expired_listing(store: GrantStore) -> None:
    store.add(spec("old", expires=datetime.now(UTC) - timedelta(seconds=5)))
    store.add(spec("new", expires=datetime.now(UTC) + timedelta(days=1)))
    assert [g.id for g in store.list()] == ["new", "old"]
    assert [g.id for g in store.list(include_expired=False)] == ["new"]


def test_sync_adds_updates_removes_and_never_resurrects(store: GrantStore, events: Events) -> None:
    a, b = spec("a"), spec("b")
    rep = store.sync([a, b], source="policy:p")
    assert rep.added == ["a", "b"] and rep.changed
    v = store.version()
    assert not store.sync([a, b], source="policy:p").changed
    assert store.version() == v  # a no-op writes nothing
    store.revoke("b", reason="incident")
    rep = store.sync([spec("a", classes=["read", "modify"]), b, spec("c")], source="policy:p")
    assert rep.updated == ["a"] and rep.added == ["c"] and rep.kept_revoked == ["b"]
    got_b = store.get("b")
    assert got_b is not None and got_b.revoked_at is not None  # a restart never re-grants
    rep = store.sync([spec("c")], source="policy:p")
    assert rep.removed == ["a"]
    got_a = store.get("a")
    assert got_a is not None and got_a.revoke_reason == "removed from policy:p"
    store.add(spec("rt"))
    with pytest.raises(IdentityError, match="another source"):
        store.sync([spec("rt")], source="policy:p")
    with pytest.raises(IdentityError, match="duplicate"):
        store.sync([spec("x"), spec("x")], source="policy:p")
    assert "identity.grant.updated" in events.kinds()


def test_index_sees_changes_from_another_process(db: str) -> None:
    mine = GrantStore(db, refresh_seconds=0)
    theirs = GrantStore(db)  # e.g. `fiveplane grants add` in another process
    assert len(mine.index()) == 0
    theirs.add(spec("x"))
    assert "x" in mine.index().grants
    theirs.revoke("x")
    assert "x" not in mine.index().grants


def test_index_refresh_interval(db: str) -> None:
    lazy = GrantStore(db, refresh_seconds=300)
    idx = lazy.index()
    GrantStore(db).add(spec("y"))
    assert lazy.index() is idx  # within the interval: the cached view
    lazy.add(spec("z"))  # a change through this store is seen at once
    assert {"y", "z"} <= set(lazy.index().grants)


def test_index_lookup_by_id_role_and_scan() -> None:
    from fiveplane._identity import Grant, GrantIndex

    grants = [
        Grant(spec("by-id", "user:rep-1")),
        Grant(spec("by-role", "role:sales-rep")),
        Grant(spec("by-glob", "user:rep-*")),
        Grant(spec("by-claim", "claim:department=sales")),
        Grant(spec("other", "user:rep-2")),
        Grant(spec("agent", "agent:rep-1")),
    ]
    idx = GrantIndex(grants)
    chain = (Principal(kind=U, id="rep-1", roles=("sales-rep",), claims={"department": "sales"}),)
    assert sorted(g.id for g in idx.for_link(chain, 0)) == ["by-claim", "by-glob", "by-id", "by-role"]


_ids = st.text(alphabet=st.sampled_from(list("ab-")), min_size=1, max_size=4)
_selectors = st.one_of(
    _ids.map(lambda i: f"user:{i}"),
    st.text(alphabet=st.sampled_from(list("ab-*")), min_size=1, max_size=4).map(lambda g: f"user:{g}"),
    st.sampled_from(["role:r1", "claim:dept=a", "agent:a*", "subagent:b*", "subagent:*@a", "agent:*"]),
)


@settings(max_examples=150, deadline=None)
@given(
    selectors=st.lists(_selectors, min_size=1, max_size=12),
    links=st.lists(st.tuples(st.sampled_from([U, A]), _ids, st.booleans()), min_size=1, max_size=4),
)
def test_index_lookup_is_the_brute_force_match_every_time(
    selectors: list[str], links: list[tuple[PrincipalKind, str, bool]]
) -> None:
    """The index (and what it remembers per link id) finds exactly the grants whose selector matches."""
    from fiveplane._identity import Grant, GrantIndex

    grants = [Grant(spec(f"g{i}", sel)) for i, sel in enumerate(selectors)]
    idx = GrantIndex(grants)
    chain = tuple(
        Principal(kind=k, id=i, roles=("r1",) if flag else (), claims={"dept": "a"} if flag and k is U else {})
        for k, i, flag in links
    )
    for _ in range(2):  # the second lookup answers from what the first remembered
        for n in range(len(chain)):
            want = sorted(g.id for g in grants if g.spec.principal.matches(chain, n))
            assert sorted(g.id for g in idx.for_link(chain, n)) == want


# ---- glob coverage (delegation subset check) -----------------------------------------------------

_alphabet = st.sampled_from(list("ab/-*"))
_plain = st.text(alphabet=st.sampled_from(list("ab/-")), max_size=6)


@settings(max_examples=300, deadline=None)
@given(
    outer=st.text(alphabet=_alphabet, min_size=1, max_size=5),
    inner=st.text(alphabet=_alphabet, min_size=1, max_size=5),
    probes=st.lists(_plain, max_size=20),
)
def test_glob_covers_is_sound(outer: str, inner: str, probes: list[str]) -> None:
    """If ``glob_covers`` says yes, every string the inner glob matches is matched by the outer one."""
    if not glob_covers(outer, inner):
        return
    g_in, g_out = Glob([inner]), Glob([outer])
    # probe strings: random ones plus instantiations of the inner glob
    candidates = [*probes, inner.replace("*", ""), inner.replace("*", "ab/"), inner.replace("*", "-")]
    for s in candidates:
        if g_in.matches(s):
            assert g_out.matches(s), (outer, inner, s)
