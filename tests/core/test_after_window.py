"""Sequence rules (`after:`) look at the session newest first and stop at their `within` window, and without a window
at the distinct kinds of its steps: the same answer as filtering the whole history, at the cost of the window (or of
the kinds) rather than of the session's length."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from fiveplane import ActionClass, MediationPoint, SessionState, Verdict, load_policy
from fiveplane._planes._reasoning import ReasoningPlane
from fiveplane._session import Step

PACK = """\
name: after-window
connectors: [{name: crm}, {name: mail}, {name: contracts}]
tools:
  - {name: crm.read, connector: crm, class: read}
  - {name: crm.notes, connector: crm, class: read}
  - {name: mail.send, connector: mail, class: invoke}
  - {name: contracts.cancel, connector: contracts, class: modify}
agents: [{name: helper, purpose: test, tools: ['*']}]
rules:
  - {id: by-tool, match: {tools: [contracts.cancel], after: {tools: [crm.notes], within: WITHIN}}, verdict: block}
  - id: by-connector-and-class
    match: {tools: [mail.send], after: {points: [tool_call, tool_result], connectors: [crm], classes: [read], within: WITHIN}}
    verdict: block
  - {id: unbounded, match: {tools: [crm.read], after: {tools: [contracts.*]}}, verdict: block}
"""

TOOLS = {
    "crm.read": ("crm", ActionClass.READ),
    "crm.notes": ("crm", ActionClass.READ),
    "mail.send": ("mail", ActionClass.INVOKE),
    "contracts.cancel": ("contracts", ActionClass.MODIFY),
}
_step = st.tuples(
    st.sampled_from(sorted(TOOLS)),
    st.sampled_from([MediationPoint.TOOL_CALL, MediationPoint.TOOL_RESULT, MediationPoint.RETRIEVAL]),
    st.sampled_from([Verdict.ALLOW, Verdict.BLOCK, Verdict.MODIFY, Verdict.REQUIRE_APPROVAL]),
)


def _reference(rule, steps: list[Step]) -> bool:  # type: ignore[no-untyped-def]
    """The definition: the last `within` steps at the rule's points that proceeded, any of them matching."""
    after = rule.spec.match.after
    kept = [s for s in steps if s.point in after.points and s.verdict.proceeds]
    if after.within:
        kept = kept[-after.within :]
    return any(
        (not rule.after_tools or rule.after_tools.matches(s.tool))
        and (not rule.after_connectors or rule.after_connectors.matches(s.connector))
        and (not after.classes or s.action_class in after.classes)
        for s in kept
    )


_POLICIES: dict[int, object] = {}


def _policy(tmp: Path, within: int):  # type: ignore[no-untyped-def]
    if within not in _POLICIES:
        path = tmp / f"after-{within}.yaml"
        path.write_text(PACK.replace("WITHIN", str(within)))
        _POLICIES[within] = load_policy(path)
    return _POLICIES[within]


@settings(max_examples=300, deadline=None)
@given(history=st.lists(_step, max_size=40), within=st.integers(1, 6))
def test_the_window_answers_as_the_whole_history_filtered(tmp_path_factory, history, within) -> None:  # type: ignore[no-untyped-def]
    policy = _policy(tmp_path_factory.getbasetemp(), within)
    session = SessionState("s")
    now = datetime.now(UTC)
    for i, (tool, point, verdict) in enumerate(history):
        connector, cls = TOOLS[tool]
        session.steps.append(Step(f"a{i}", point, tool, connector, cls, verdict, now))
        if i % 3 == 0:  # asked as the session grows, too (the unbounded rule's kinds are kept up to date)
            for rule in policy.rules:  # type: ignore[attr-defined]
                assert ReasoningPlane._after(rule, session) == _reference(rule, session.steps), (rule.id, history[: i + 1])
    for rule in policy.rules:  # type: ignore[attr-defined]
        assert ReasoningPlane._after(rule, session) == _reference(rule, session.steps), (rule.id, history)
