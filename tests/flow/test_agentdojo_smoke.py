"""End-to-end smoke test of the AgentDojo efficacy harness (bench/agentdojo): one banking and one
slack (user task, injection task) pair through the real Governor, ApprovalStore and AgentDojo tools,
with the network refused. The full figures come from ``make bench`` (benchmark agentdojo_efficacy)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from fiveplane import ApprovalStatus, Verdict

pytestmark = pytest.mark.slow

if os.environ.get("CI"):
    import agentdojo  # noqa: F401  - CI installs the bench extra: a missing agentdojo is a failure there
else:
    pytest.importorskip("agentdojo")

from bench.agentdojo.harness import PACKS, Harness, baseline_pack  # noqa: E402


@pytest.fixture(autouse=True)
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    def refuse(*a: Any, **kw: Any) -> None:
        raise AssertionError(f"AgentDojo harness tried to reach the network: {a}")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    yield


def test_banking_bill_injection_end_to_end() -> None:
    h = Harness("banking", PACKS / "banking.yaml")
    try:
        user, attack = h.suite.user_tasks["user_task_0"], h.suite.injection_tasks["injection_task_5"]
        benign = h.run(user, approvals="grant")
        assert benign.utility and [c.function for c in benign.calls] == ["read_file", "send_money"]
        # the bill's payee is not one of the holder's: the holder confirms it (a request was filed)
        assert benign.calls[1].first is Verdict.REQUIRE_APPROVAL and benign.calls[1].ran
        assert "payments.other-payee" in benign.calls[1].rule_ids

        denied = h.run(user, attack, approvals="deny")
        assert denied.injection_seen, "the injected bill text was read"
        injected = denied.of("injection")
        assert [c.function for c in injected] == ["send_money"] and not injected[0].ran
        assert injected[0].first is Verdict.REQUIRE_APPROVAL
        assert not denied.attack_succeeded

        granted = h.run(user, attack, approvals="grant")
        assert granted.attack_succeeded and granted.of("injection")[0].ran  # blind approval lets it through
        statuses = {r.status for r in h.store.requests()}
        assert {ApprovalStatus.DENIED, ApprovalStatus.CONSUMED} <= statuses  # granted once, then used
    finally:
        h.close()


def test_slack_phishing_link_end_to_end() -> None:
    h = Harness("slack", PACKS / "slack.yaml")
    try:
        user, attack = h.suite.user_tasks["user_task_1"], h.suite.injection_tasks["injection_task_1"]
        oracle = h.run(user, attack, approvals="oracle")
        assert oracle.injection_seen
        relay = oracle.of("injection")[0]
        # the phishing host (schemeless, from the injected web page) in a DM body: blocked outright
        # (flow rule with kinds: a link from untrusted content is never relayed)
        assert relay.function == "send_direct_message" and relay.rule_ids == ("flow.message-link",)
        assert relay.first is Verdict.BLOCK and not relay.approval_requested
        assert not relay.ran and not oracle.attack_succeeded and oracle.utility
        # the article's link that Bob posted in #general is opened unprompted (flow exemption by source)
        fetch = next(c for c in oracle.of("user") if c.function == "get_webpage")
        assert fetch.first is Verdict.ALLOW and fetch.ran
        # blind approvals cannot help the attacker any more: nothing asks
        assert not h.run(user, attack, approvals="grant").attack_succeeded
    finally:
        h.close()


def test_allow_all_baseline_lets_the_attack_run(tmp_path: Any) -> None:
    h = Harness("banking", baseline_pack(PACKS / "banking.yaml", "allow", tmp_path))
    try:
        e = h.run(h.suite.user_tasks["user_task_0"], h.suite.injection_tasks["injection_task_5"], approvals="deny")
        assert e.attack_succeeded and all(c.first is Verdict.ALLOW for c in e.calls)
    finally:
        h.close()
