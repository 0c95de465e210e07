"""Approvals that cannot be bypassed: interrupt / resume on a real agent with an InMemorySaver checkpointer.

The three bypass classes LangChain's own HITL middleware shipped are regression tests here, each run
against a plausible naive gate as well (marked ``xfail(strict=True)``: the test must catch it):

- langchain#40166 — an approver's edit turns the call into *another tool*, which then runs unchecked;
- langchain#40492 — another middleware's ``jump_to="tools"`` reaches the tools without the gate;
- langchain#33787 — after an edit the model re-attempts its original call, which runs unapproved.
"""

from __future__ import annotations

import asyncio
import threading
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from langchain.agents.middleware import AgentMiddleware, HumanInTheLoopMiddleware, hook_config
from langchain_core.messages import AIMessage, ToolMessage
from langgraph.types import interrupt
from typer.testing import CliRunner

from fiveplane import ApprovalError, ApprovalStatus, ApprovalStore, Governor, Principal, approver
from langchain_fiveplane import resume_approve, resume_check, resume_deny, resume_edit, run_config, tool_calls
from tests.langchain.conftest import MANAGER, PACK, Harness

UPDATE = tool_calls(("contracts_update_status", {"contract_id": "C-7", "status": "signed"}))
NAIVE = pytest.mark.xfail(strict=True, reason="a naive gate must fail this test (it checks the bypass)")


def approve() -> dict[str, Any]:
    return resume_approve(MANAGER[0], MANAGER[1], "ok")


class NaiveGate(AgentMiddleware[Any, Any, Any]):
    """A plausible, naive approval gate: approvals remembered per tool name, edits executed as given,
    rejections forgotten. What the regression tests must catch."""

    def __init__(self, gated: set[str]) -> None:
        self.gated = gated
        self.reviewed: set[str] = set()

    def _gate(self, request: Any) -> tuple[Any, ToolMessage | None]:
        name = request.tool_call["name"]
        if name not in self.gated or name in self.reviewed:
            return request, None
        answer = interrupt({"type": "tool_approval", "name": name, "args": request.tool_call["args"], "fiveplane": {}})
        if answer.get("type") in ("deny", "reject"):
            return request, ToolMessage("rejected", tool_call_id=request.tool_call["id"], name=name, status="error")
        self.reviewed.add(name)
        if answer.get("type") == "edit":
            call = {**request.tool_call, "name": answer.get("name", name), "args": answer["args"]}
            tool = next((t for t in request.runtime.tools if t.name == call["name"]), request.tool)
            return request.override(tool_call=call, tool=tool), None
        return request, None

    def wrap_tool_call(self, request: Any, handler: Any) -> Any:
        req, refusal = self._gate(request)
        return refusal if refusal is not None else handler(req)

    async def awrap_tool_call(self, request: Any, handler: Any) -> Any:
        req, refusal = self._gate(request)
        return refusal if refusal is not None else await handler(req)


@pytest.fixture(params=["fiveplane", pytest.param("naive", marks=NAIVE)])
def gate(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def harness(gov: Governor, api: str, gate: str, turns: list[Any], **kw: Any) -> Harness:
    if gate == "naive":
        return Harness(gov, api, turns, middleware=[NaiveGate({"contracts_update_status"})], **kw)
    return Harness(gov, api, turns, **kw)


# ---- the workflow ---------------------------------------------------------------------------------


async def test_pause_file_approve_resume_run_once(gov: Governor, api: str) -> None:
    store = gov.approvals
    assert store is not None
    h = Harness(gov, api, [UPDATE, "C-7 is signed."])
    await h.start()
    assert h.executed == [] and len(h.interrupts) == 1
    value = h.interrupts[0].value
    # LangChain's per-call ToolApprovalRequest shape, so HITL-aware UIs can render it
    assert {k: value[k] for k in ("type", "name", "args")} == {
        "type": "tool_approval",
        "name": "contracts_update_status",
        "args": {"contract_id": "C-7", "status": "signed"},
    }
    assert value["tool_call_id"] and "contract changes need a sales manager's approval" in value["description"]
    fp = h.approval()
    req = await asyncio.to_thread(store.get, fp["approval_id"])
    # stored in the database: the exact action and its digest, the requester, the role, the expiry
    assert (req.status, req.requester, req.role, req.tool) == (
        ApprovalStatus.PENDING,
        "rep-1",
        "sales-manager",
        "contracts.update_status",
    )
    assert req.digest == fp["digest"] and req.action["arguments"] == {"contract_id": "C-7", "status": "signed"}
    assert req.expires_at > datetime.now(UTC) + timedelta(minutes=59)
    assert fp["requester"] == "rep-1" and fp["role"] == "sales-manager"

    await h.resume(approve())
    assert h.executed == ["contracts_update_status(contract_id='C-7', status='signed')"]
    assert h.interrupts == [] and h.answer() == "C-7 is signed."
    assert (await asyncio.to_thread(store.get, fp["approval_id"])).status is ApprovalStatus.CONSUMED


async def test_approved_elsewhere_then_resumed(gov: Governor, db: str, api: str) -> None:
    """The approver uses the CLI (another process, same database); the run resumes with a check."""
    h = Harness(gov, api, [UPDATE, "ok"])
    await h.start()
    rid = h.approval()["approval_id"]
    out = await asyncio.to_thread(
        CliRunner().invoke,
        __import__("fiveplane._cli", fromlist=["app"]).app,
        ["approvals", "approve", rid, "--as", "manager-1", "--role", "sales-manager", "--db", db],
    )
    assert out.exit_code == 0, out.stdout
    await h.resume(resume_check())
    assert h.ran("contracts_update_status") and h.interrupts == []


async def test_python_api_approval_then_resume(gov: Governor, db: str, api: str) -> None:
    h = Harness(gov, api, [UPDATE, "ok"])
    await h.start()
    rid = h.approval()["approval_id"]
    await asyncio.to_thread(lambda: ApprovalStore(db).approve(rid, approver(*MANAGER)))
    await h.resume({})  # any resume value: the store is authoritative
    assert h.ran("contracts_update_status")


async def test_the_requester_cannot_approve_her_own_call(gov: Governor, api: str) -> None:
    h = Harness(gov, api, [UPDATE, "ok"])
    await h.start()
    await h.resume(resume_approve("rep-1", ["sales-manager"]))
    assert h.executed == []
    assert "separation of duties" in h.approval()["error"]  # paused again, with the reason
    await h.resume(resume_approve("rep-2", ["sales-rep"]))
    assert h.executed == [] and "does not hold the role 'sales-manager'" in h.approval()["error"]
    await h.resume(approve())
    assert h.ran("contracts_update_status")


async def test_an_answer_must_name_the_approver(gov: Governor, api: str) -> None:
    h = Harness(gov, api, [UPDATE, "ok"])
    await h.start()
    await h.resume({"type": "approve"})
    assert h.executed == [] and "must name the approver" in h.approval()["error"]
    await h.resume("maybe")
    assert h.executed == [] and "unknown answer type" in h.approval()["error"]


async def test_rounds_are_bounded(gov: Governor, api: str) -> None:
    h = Harness(gov, api, [UPDATE, "ok"], max_approval_rounds=2)
    await h.start()
    await h.resume("nonsense")
    await h.resume("nonsense")
    # two refused answers: the call gives up, as pending (it did not run; the request stays filed)
    assert h.interrupts == [] and h.executed == []
    [msg] = h.tool_messages("contracts_update_status")
    assert msg.status == "error" and "needs approval" in str(msg.content)


async def test_resume_by_another_caller_still_acts_for_the_requester(gov: Governor, api: str) -> None:
    """The manager's UI resumes the thread with its own config: the call is still rep-1's (bound digest)."""
    chains: list[tuple[str, ...]] = []
    gov.add_listener(lambda a, d: chains.append(tuple(p.id for p in a.principal)))
    h = Harness(gov, api, [UPDATE, "ok"])
    await h.start()
    manager_cfg = dict(run_config(user="manager-1", roles=["sales-manager"], thread_id="t-1"))
    await h.resume(approve(), config=manager_cfg)
    assert h.ran("contracts_update_status")
    assert set(chains) == {("rep-1", "sales-assistant")}


async def test_custom_approver_resolution(gov: Governor, api: str) -> None:
    def verify(answer: Any) -> Principal:
        if answer.get("token") != "signed-by-idp":
            raise ApprovalError("the approval token does not verify")
        return approver("manager-1", ["sales-manager"])

    h = Harness(gov, api, [UPDATE, "ok"], resolve_approver=verify)
    await h.start()
    await h.resume(resume_approve("manager-1", ["sales-manager"]))  # self-asserted: refused
    assert h.executed == [] and "does not verify" in h.approval()["error"]
    await h.resume({"type": "approve", "token": "signed-by-idp"})
    assert h.ran("contracts_update_status")


async def test_hitl_shaped_answers_are_understood(gov: Governor, api: str) -> None:
    h = Harness(gov, api, [UPDATE, "ok"])
    await h.start()
    await h.resume({"type": "reject", "message": "not now", "approver": {"id": "manager-1", "roles": ["sales-manager"]}})
    assert h.executed == []
    assert "not now" in str(h.tool_messages("contracts_update_status")[0].content)


async def test_two_paused_calls_in_one_turn(gov: Governor, api: str) -> None:
    both = tool_calls(
        ("contracts_update_status", {"contract_id": "C-7", "status": "signed"}),
        ("contracts_update_status", {"contract_id": "C-8", "status": "signed"}),
    )
    h = Harness(gov, api, [both, "ok"])
    await h.start()
    assert len(h.interrupts) == 2
    ids = {i.value["args"]["contract_id"]: i.id for i in h.interrupts}
    await h.resume({ids["C-7"]: approve(), ids["C-8"]: resume_deny(*MANAGER, "not C-8")})
    assert h.executed == ["contracts_update_status(contract_id='C-7', status='signed')"]


async def test_an_approval_is_single_use(gov: Governor, api: str) -> None:
    h = Harness(gov, api, [UPDATE, UPDATE, "ok"])
    await h.start()
    first = h.approval()["approval_id"]
    await h.resume(approve())
    assert len(h.ran("contracts_update_status")) == 1
    assert len(h.interrupts) == 1 and h.approval()["approval_id"] != first  # the same call again: asked again


async def test_an_expired_request_is_filed_again(db: str, api: str) -> None:
    now = [datetime(2026, 1, 1, tzinfo=UTC)]
    gov = await asyncio.to_thread(lambda: Governor(PACK, approvals=ApprovalStore(db, clock=lambda: now[0])))
    h = Harness(gov, api, [UPDATE, "ok"])
    await h.start()
    first = h.approval()["approval_id"]
    now[0] += timedelta(hours=2)  # expires_in: 3600
    # an answer bound to the expired request does not approve the request filed anew
    await h.resume(resume_approve(*MANAGER, approval_id=first))
    assert h.executed == []
    fp = h.approval()
    assert fp["approval_id"] != first and "no longer current" in fp["error"]
    await h.resume(resume_approve(*MANAGER, approval_id=fp["approval_id"]))
    assert h.ran("contracts_update_status")


# ---- denial is final -------------------------------------------------------------------------------


async def test_a_denied_call_never_runs_later_in_the_run(gov: Governor, api: str, gate: str) -> None:
    h = harness(gov, api, gate, [UPDATE, UPDATE, "ok"])
    await h.start()
    await h.resume(resume_deny(*MANAGER, "not this quarter"))
    assert h.executed == []
    # the model re-proposes the identical call: blocked outright, nobody is asked again
    assert h.interrupts == []
    msgs = h.tool_messages("contracts_update_status")
    assert len(msgs) == 2 and all(m.status == "error" for m in msgs)
    assert "not this quarter" in str(msgs[1].content)


class Replayer(AgentMiddleware[Any, Any, Any]):
    """After the model's turn, re-issues the last contract change it saw and jumps straight to the tools."""

    def __init__(self) -> None:
        self.fired = False

    @hook_config(can_jump_to=["tools"])
    def after_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        if self.fired:
            return None
        denied = [m for m in state["messages"] if isinstance(m, ToolMessage) and m.name == "contracts_update_status"]
        if not denied:
            return None
        self.fired = True
        again = tool_calls(("contracts_update_status", {"contract_id": "C-7", "status": "signed"}))
        return {"messages": [again], "jump_to": "tools"}

    @hook_config(can_jump_to=["tools"])
    async def aafter_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        return self.after_model(state, runtime)


async def test_another_middleware_replaying_a_denied_call_via_jump_to(gov: Governor, api: str) -> None:
    h = Harness(gov, api, [UPDATE, "ok", "ok"], before=[Replayer()])
    await h.start()
    await h.resume(resume_deny(*MANAGER))
    assert h.executed == [] and h.interrupts == []
    assert len(h.tool_messages("contracts_update_status")) == 2


# ---- langchain#40492: jump_to="tools" must not skip the gate -----------------------------------------


class JumpToTools(AgentMiddleware[Any, Any, Any]):
    """Another middleware that sends every tool-calling turn straight to the tools node."""

    @hook_config(can_jump_to=["tools"])
    def after_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        last = state["messages"][-1]
        return {"jump_to": "tools"} if isinstance(last, AIMessage) and last.tool_calls else None

    @hook_config(can_jump_to=["tools"])
    async def aafter_model(self, state: Any, runtime: Any) -> dict[str, Any] | None:
        return self.after_model(state, runtime)


@pytest.mark.parametrize("gatekeeper", ["fiveplane", pytest.param("hitl", marks=NAIVE)])
async def test_jump_to_tools_cannot_skip_the_approval(gov: Governor, api: str, gatekeeper: str) -> None:
    # after_model hooks run in reverse list order: JumpToTools (listed last) runs first and jumps
    if gatekeeper == "hitl":  # LangChain's own HumanInTheLoopMiddleware, gating in after_model
        h = Harness(
            gov, api, [UPDATE, "ok"], middleware=[HumanInTheLoopMiddleware({"contracts_update_status": True}), JumpToTools()]
        )
    else:
        h = Harness(gov, api, [UPDATE, "ok"], after=[JumpToTools()])
    await h.start()
    assert h.executed == []  # nothing ran before a person answered
    assert len(h.interrupts) == 1


# ---- langchain#40166: an edit into another tool is decided as that tool ---------------------------------


async def test_cross_tool_edit_is_decided_on_its_own(gov: Governor, api: str, gate: str) -> None:
    h = harness(gov, api, gate, [UPDATE, "ok"])
    await h.start()
    await h.resume(resume_edit(*MANAGER, {"to": "x@evil.example", "subject": "C-7", "body": "contract"}, tool="email_send"))
    assert h.executed == []  # the edited call is an e-mail outside acme.example: blocked like any other
    [msg] = h.tool_messages()
    assert msg.status == "error" and "email.external-blocked" in str(msg.content)


async def test_cross_tool_edit_to_an_allowed_call_runs_and_tells_the_model(gov: Governor, api: str) -> None:
    h = Harness(gov, api, [UPDATE, "ok"])
    await h.start()
    await h.resume(resume_edit(*MANAGER, {"to": "bob@acme.example", "subject": "C-7", "body": "please sign"}, tool="email_send"))
    assert h.executed == ["email_send(to='bob@acme.example')"]
    [msg] = h.tool_messages()
    assert "the approver manager-1 replaced your tool call" in str(msg.content)


async def test_an_edit_into_a_tool_the_agent_lacks_is_refused(gov: Governor, api: str) -> None:
    h = Harness(gov, api, [UPDATE, "ok"])
    await h.start()
    await h.resume(resume_edit(*MANAGER, {"cmd": "ls"}, tool="shell"))
    assert h.executed == [] and "cannot be edited into the tool 'shell'" in h.approval()["error"]


# ---- langchain#33787: after an edit, the original call can never run -----------------------------------


async def test_an_edit_is_a_new_action_and_the_original_can_never_run(gov: Governor, api: str, gate: str) -> None:
    store = gov.approvals
    assert store is not None
    h = harness(gov, api, gate, [UPDATE, UPDATE, "ok"])
    await h.start()
    original = h.approval().get("approval_id")
    await h.resume(resume_edit(*MANAGER, {"contract_id": "C-7", "status": "negotiation"}))
    # the edited call is decided again: it needs its own approval (never auto-approved by the edit)
    assert h.executed == [] and len(h.interrupts) == 1
    assert h.approval()["approval_id"] != original
    await h.resume(approve())
    assert h.executed == ["contracts_update_status(contract_id='C-7', status='negotiation')"]
    # the model re-attempts its original call: blocked without asking anyone
    assert h.interrupts == []
    assert (await asyncio.to_thread(store.get, original)).status is ApprovalStatus.DENIED
    last = h.tool_messages("contracts_update_status")[-1]
    assert last.status == "error" and "replaced by an edit by manager-1" in str(last.content)


async def test_an_edit_that_changes_nothing_is_refused(gov: Governor, api: str) -> None:
    h = Harness(gov, api, [UPDATE, "ok"])
    await h.start()
    await h.resume(resume_edit(*MANAGER, {"contract_id": "C-7", "status": "signed"}))
    assert h.executed == [] and "changes nothing" in h.approval()["error"]


async def test_only_an_approver_may_edit(gov: Governor, api: str) -> None:
    h = Harness(gov, api, [UPDATE, "ok"])
    await h.start()
    await h.resume(resume_edit("rep-1", ["sales-manager"], {"contract_id": "C-7", "status": "draft"}))
    assert h.executed == [] and "separation of duties" in h.approval()["error"]


# ---- without a checkpointer --------------------------------------------------------------------------


async def test_without_checkpointer_the_call_is_deferred_until_approved(gov: Governor, api: str) -> None:
    store = gov.approvals
    assert store is not None
    h = Harness(gov, api, [UPDATE, "ok"], checkpointer=False)
    await h.start()
    assert h.executed == [] and h.interrupts == []
    [msg] = h.tool_messages()
    assert msg.status == "error" and "needs approval by a sales-manager" in str(msg.content)
    [req] = await asyncio.to_thread(store.requests, status=ApprovalStatus.PENDING)
    await asyncio.to_thread(store.approve, req.id, approver(*MANAGER))
    again = Harness(gov, api, [UPDATE, "ok"], checkpointer=False)  # the same call proposed again runs, once
    await again.start()
    assert again.ran("contracts_update_status")


async def test_without_checkpointer_the_call_can_wait(gov: Governor, api: str) -> None:
    store = gov.approvals
    assert store is not None
    h = Harness(gov, api, [UPDATE, "ok"], checkpointer=False, approval_timeout=10.0)

    def manager() -> None:
        for _ in range(200):
            pending = store.requests(status=ApprovalStatus.PENDING)
            if pending:
                store.approve(pending[0].id, approver(*MANAGER))
                return
            threading.Event().wait(0.05)

    t = threading.Thread(target=manager)
    t.start()
    await h.start()
    await asyncio.to_thread(t.join)
    assert h.ran("contracts_update_status")


async def test_waiting_times_out_as_pending(gov: Governor, api: str) -> None:
    h = Harness(gov, api, [UPDATE, "ok"], checkpointer=False, approval_mode="wait", approval_timeout=0.3)
    await h.start()
    assert h.executed == [] and "needs approval" in str(h.tool_messages()[0].content)


async def test_interrupt_mode_without_checkpointer_refuses_rather_than_hang(gov: Governor, api: str) -> None:
    h = Harness(gov, api, [UPDATE, "ok"], checkpointer=False, approval_mode="interrupt")
    await h.start()
    assert h.executed == [] and h.interrupts == []
    assert "needs approval" in str(h.tool_messages()[0].content)


async def test_without_an_approval_store_nothing_can_approve(db: str, api: str) -> None:
    gov = await asyncio.to_thread(Governor, PACK)
    h = Harness(gov, api, [UPDATE, "ok"])
    await h.start()
    assert h.executed == [] and h.interrupts == []
    assert "needs approval" in str(h.tool_messages()[0].content)


def test_store_rules_hold_for_the_middlewares_requests(gov: Governor) -> None:
    assert gov.approvals is not None
    with pytest.raises(ApprovalError):
        gov.approvals.approve("apr-missing", approver(*MANAGER))
