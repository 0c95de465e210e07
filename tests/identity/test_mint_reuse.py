"""One authorization per proceeding tool call: ``on_decision`` reuses the evaluation only when nothing changed."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from biscuit_auth import KeyPair

import fiveplane._planes._identity as identity_module
from fiveplane import Action, Decision, Governor, MediationPoint, PlaneContext, PlaneResult, Principal, PrincipalKind, Verdict
from fiveplane._identity import CapabilityVerifier, MemoryRevocationStore, SqlRevocationStore
from fiveplane._planes._base import BasePlane
from fiveplane._planes._identity import IdentityConfig, IdentityPlane

from .conftest import DELEGATION

U1 = Principal(kind=PrincipalKind.USER, id="u1", roles=("staff",))
PLANNER = Principal(kind=PrincipalKind.AGENT, id="planner")

MakeGov = Callable[..., tuple[Governor, IdentityPlane]]


@pytest.fixture
def authorize_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Counts the plane's grant authorizations (the real function still runs)."""
    calls: list[int] = []
    real = identity_module.authorize

    def counting(*args: Any, **kwargs: Any) -> Any:
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(identity_module, "authorize", counting)
    return calls


def note_call(session: str = "r1", **args: Any) -> Action:
    return Action(
        point=MediationPoint.TOOL_CALL,
        tool="crm.get_note",
        arguments={"note_id": "n1", **args},
        principal=(U1, PLANNER),
        session_id=session,
    )


class _Hook(BasePlane):
    """A plane after the identity plane: runs ``fn`` while the decision is being evaluated."""

    name = "hook"

    def __init__(self, fn: Callable[[Action, PlaneContext], PlaneResult | None]) -> None:
        self.fn = fn

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        return self.fn(action, ctx) or PlaneResult(plane=self.name)


def test_a_proceeding_call_is_authorized_once_and_its_token_verifies(
    make_governor: MakeGov, authorize_calls: list[int], root: KeyPair, db: str
) -> None:
    gov, plane = make_governor(DELEGATION)
    action = note_call()
    d = gov.decide(action)
    assert d.verdict is Verdict.ALLOW
    assert len(authorize_calls) == 1  # evaluate; on_decision reused it
    cap = plane.take_capability(action.action_id)
    assert cap is not None and cap.scope.grants == {"user:u1": ["u1.crm"], "agent:planner": ["planner.crm"]}
    v = CapabilityVerifier(root.public_key, revocations=SqlRevocationStore(db))
    assert v.verify(cap, tool="crm.get_note", operation="read", resource="notes/n1").token_id == cap.id
    assert len(plane._judged) == 0


def test_a_grant_revoked_between_evaluation_and_mint_blocks(make_governor: MakeGov, authorize_calls: list[int]) -> None:
    holder: dict[str, IdentityPlane] = {}

    def revoke(action: Action, ctx: PlaneContext) -> None:
        holder["plane"].grant_store(ctx).revoke("planner.crm", by="test", reason="revoked mid-decision")

    gov, plane = make_governor(DELEGATION, extra_planes=[_Hook(revoke)])
    holder["plane"] = plane
    action = note_call()
    d = gov.decide(action)
    assert d.verdict is Verdict.BLOCK
    assert "authority changed before the token was minted" in d.explanation or any(
        "authority changed before the token was minted" in f.message for f in d.findings
    )
    assert len(authorize_calls) == 2  # the grants changed, so the mint authorized again
    assert plane.take_capability(action.action_id) is None


def test_rewritten_arguments_are_authorized_again(make_governor: MakeGov, authorize_calls: list[int]) -> None:
    def rewrite(action: Action, ctx: PlaneContext) -> PlaneResult:
        res = PlaneResult(plane="hook")
        res.modified_arguments = {"note_id": "n2"}
        return res

    gov, plane = make_governor(DELEGATION, extra_planes=[_Hook(rewrite)])
    action = note_call()
    d = gov.decide(action)
    assert d.verdict is Verdict.MODIFY
    assert len(authorize_calls) == 2
    cap = plane.take_capability(action.action_id)
    assert cap is not None and cap.scope.resource == "notes/n2"  # the resource of the arguments the tool receives


def test_on_decision_in_another_context_authorizes_again(make_governor: MakeGov, authorize_calls: list[int]) -> None:
    gov, plane = make_governor(DELEGATION)
    action = note_call()
    d = gov.decide(action)
    assert d.verdict is Verdict.ALLOW and len(authorize_calls) == 1
    plane.discard(action.action_id)
    action, _notes = gov.normalize(action)  # what the engine hands the planes (the catalog's class filled in)
    config = IdentityConfig.model_validate(gov.policy.planes.get("identity", {}))
    ctx = PlaneContext(policy=gov.policy, session=gov.sessions.get("r1"), now=datetime.now(UTC), config=config)
    plane.evaluate(action, ctx)
    other = PlaneContext(policy=gov.policy, session=gov.sessions.get("r1"), now=datetime.now(UTC), config=config)
    obligations = plane.on_decision(action, d, other)  # not the context it was evaluated in
    assert len(authorize_calls) == 3 and obligations and plane.take_capability(action.action_id) is not None


def test_blocked_and_abandoned_evaluations_are_not_kept(make_governor: MakeGov) -> None:
    gov, plane = make_governor(DELEGATION, plane={"revocations": MemoryRevocationStore()})
    outsider = Principal(kind=PrincipalKind.USER, id="nobody", roles=("staff",))
    blocked = Action(
        point=MediationPoint.TOOL_CALL,
        tool="crm.get_note",
        arguments={"note_id": "n1"},
        principal=(outsider, PLANNER),
        session_id="b",
    )
    assert gov.decide(blocked).verdict is Verdict.BLOCK and len(plane._judged) == 0
    config = IdentityConfig.model_validate(gov.policy.planes.get("identity", {}))
    plane._judged.max_entries = 8
    for i in range(20):  # evaluated, never decided
        ctx = PlaneContext(policy=gov.policy, session=gov.sessions.get("b"), now=datetime.now(UTC), config=config)
        plane.evaluate(gov.normalize(note_call(session="b", n=i))[0], ctx)
    assert len(plane._judged) == 8


def test_decision_type_is_unchanged(make_governor: MakeGov) -> None:
    gov, _plane = make_governor(DELEGATION)
    d = gov.decide(note_call())
    assert isinstance(d, Decision) and [o.params["capability"]["tool"] for o in d.obligations if o.plane == "identity"] == [
        "crm.get_note"
    ]
