"""Notifications of new requests (Slack Block Kit, signed webhook) to loopback receivers; the expiry sweeper."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import pytest

from fiveplane import ApprovalStatus, ApprovalStore, Verdict, load_policy
from fiveplane._console._notify import Notifier, approval_event, build_channels
from fiveplane._policy._load import Policy
from fiveplane._policy._yaml import PolicyError
from tests.console.conftest import Clock, Idp, Receiver, World, approval_id, login, make_client, write_console_pack

SECRET = "s3cret-hmac-key"


def _channels(rx: Receiver, secret: str | None = SECRET) -> list:  # type: ignore[type-arg]
    return build_channels(None, slack_url=rx.url + "/slack", webhook_url=rx.url + "/hook", webhook_secret=secret)


def test_new_requests_are_announced_once_per_channel_without_arguments(
    world: World, policy: Policy, clock: Clock, receiver: Receiver, idp: Idp
) -> None:
    client = make_client(world, policy, clock, channels=_channels(receiver))
    console = client.app.state.console  # type: ignore[attr-defined]
    decision, _ = world.tainted_email("s-n")
    rid = approval_id(decision)
    assert console.tick() == (0, 2)
    assert console.tick() == (0, 0)  # nothing twice
    by_path = {p.path: p for p in receiver.posts}
    assert set(by_path) == {"/slack", "/hook"}
    for post in receiver.posts:
        text = post.body.decode()
        assert "procurement@globex-review.example" not in text and "Attached." not in text
        assert f"/requests/{rid}" in text
        assert post.headers["idempotency-key"] == f"{rid}:{post.path.strip('/').replace('hook', 'webhook')}"

    slack = json.loads(by_path["/slack"].body)
    assert slack["text"].startswith("Approval needed: email.send")
    kinds = [b["type"] for b in slack["blocks"]]
    assert kinds == ["header", "section", "section", "actions", "context"]
    button = slack["blocks"][3]["elements"][0]
    assert button["type"] == "button" and button["url"] == f"http://127.0.0.1:8765/requests/{rid}"
    fields = " ".join(f["text"] for f in slack["blocks"][1]["fields"])
    assert "sales-manager" in fields and "flow.consequential" in fields and "rep-1" not in json.dumps(slack)

    hook = by_path["/hook"]
    body = json.loads(hook.body)
    assert body["schema"] == "fiveplane.approval/1" and body["approval_id"] == rid and body["tool"] == "email.send"
    assert "arguments" not in body and "requester" not in body
    assert "rep-1" not in hook.body.decode() and "for the requester via sales-assistant" in body["explanation"]
    named = approval_event(ApprovalStore(world.db).get(rid), "x", include_requester=True)
    assert named["requester"] == "rep-1" and "for rep-1 via" in named["explanation"]
    assert body["digest"] == ApprovalStore(world.db).get(rid).digest
    ts = hook.headers["x-fiveplane-timestamp"]
    expected = "sha256=" + hmac.new(SECRET.encode(), ts.encode() + b"." + hook.body, hashlib.sha256).hexdigest()
    assert hook.headers["x-fiveplane-signature"] == expected
    # the request page says what was sent
    login(client, idp.token("manager-1"))
    page = client.get(f"/requests/{rid}").text
    assert "Notified via slack: sent" in page and "Notified via webhook: sent" in page


def test_a_receiver_that_is_down_is_retried_with_backoff_and_nothing_is_sent_twice(
    world: World, clock: Clock, receiver: Receiver
) -> None:
    store = ApprovalStore(world.db, clock=clock)
    channels = build_channels(None, webhook_url=receiver.url + "/hook")
    notifier = Notifier(store, channels, backoff=10)
    rid = approval_id(world.contract())
    receiver.fail = [503]
    assert notifier.poll() == 0
    [d] = notifier.deliveries(rid)
    assert d.status == "pending" and d.attempts == 1 and "503" in (d.last_error or "")
    assert notifier.poll() == 0 and receiver.posts == []  # not due yet
    clock.advance(11)
    assert notifier.poll() == 1
    [d] = notifier.deliveries(rid)
    assert d.status == "sent" and d.attempts == 2
    # a second console (or a restart) over the same database sends nothing again
    again = Notifier(ApprovalStore(world.db, clock=clock), build_channels(None, webhook_url=receiver.url + "/hook"))
    assert again.poll() == 0
    assert len(receiver.posts) == 1


def test_a_rejected_message_is_given_up_not_retried(world: World, clock: Clock, receiver: Receiver) -> None:
    notifier = Notifier(ApprovalStore(world.db, clock=clock), build_channels(None, webhook_url=receiver.url + "/hook"))
    rid = approval_id(world.contract())
    receiver.fail = [401]
    assert notifier.poll() == 0
    [d] = notifier.deliveries(rid)
    assert d.status == "failed" and "401" in (d.last_error or "")
    clock.advance(3000)
    assert notifier.poll() == 0 and receiver.posts == []


def test_the_pack_configures_notifications_with_secrets_from_the_environment(tmp_path: Path, idp: Idp) -> None:
    pack = write_console_pack(
        tmp_path,
        approvals="approvals:\n  console_url: https://approvals.acme.example\n  deny_reasons: [Not today]\n"
        "  notify:\n    slack: {webhook_url_env: ACME_SLACK_URL}\n"
        "    webhook: {endpoint: 'https://soar.acme.example/hooks/approvals', secret_env: ACME_HOOK_KEY}\n"
        "    include_requester: true\n",
    )
    policy = load_policy(pack)
    assert policy.approvals is not None and policy.approvals.console_url == "https://approvals.acme.example"
    assert policy.approvals.deny_reasons == ("Not today",)
    with pytest.raises(ValueError, match=r"\$ACME_SLACK_URL is not set"):
        build_channels(policy.approvals.notify, env={})
    chans = build_channels(
        policy.approvals.notify, env={"ACME_SLACK_URL": "https://hooks.slack.test/T/B/X", "ACME_HOOK_KEY": "k"}
    )
    assert [c.name for c in chans] == ["slack", "webhook"]
    assert chans[0].sink.url == "https://hooks.slack.test/T/B/X"
    assert chans[1].sink.url == "https://soar.acme.example/hooks/approvals" and chans[1].sink.secret == b"k"
    # the CLI's options win over the pack
    chans = build_channels(policy.approvals.notify, slack_url="http://127.0.0.1:9/s", env={"ACME_HOOK_KEY": "k"})
    assert chans[0].sink.url == "http://127.0.0.1:9/s"


def test_a_pack_cannot_hold_the_slack_url_itself(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "name: bad\nunsafe_empty: true\napprovals:\n  notify:\n    slack: {webhook_url_env: 'https://hooks.slack.com/x'}\n"
    )
    with pytest.raises(PolicyError) as err:
        load_policy(bad)
    assert "bad.yaml:5" in str(err.value) and "environment variable name" in str(err.value)


def test_an_unanswered_request_is_denied_at_expiry_and_recorded(world: World, policy: Policy, clock: Clock) -> None:
    client = make_client(world, policy, clock)
    console = client.app.state.console  # type: ignore[attr-defined]
    rid = approval_id(world.contract("s-exp"))
    assert console.tick() == (0, 0)
    clock.advance(3599)
    assert console.tick() == (0, 0)
    clock.advance(2)
    assert console.tick() == (1, 0)
    req = ApprovalStore(world.db).get(rid)
    assert req.status is ApprovalStatus.DENIED and req.decided_by == "fiveplane:expiry"
    assert "nobody answered" in (req.reason or "")
    world.ledger.flush()
    rec = next(r for r in world.ledger.records(req.action_id) if r.kind == "approval.expired")
    assert rec.meta["status"] == "denied" and rec.payload["approver"]["verified_by"] == "console expiry sweeper"
    # fail closed: the same action stays blocked in its session
    again = world.contract("s-exp")
    assert again.verdict is Verdict.BLOCK and "nobody answered" in again.explanation
    assert console.tick() == (0, 0)


def test_a_ledger_that_cannot_record_the_expiry_keeps_the_request_pending_and_announcements_going(
    world: World, policy: Policy, clock: Clock, receiver: Receiver, tmp_path: Path
) -> None:
    from fiveplane import Governor
    from fiveplane._ledger import open_ledger
    from tests.console.conftest import AGENT_PACK

    own = open_ledger(f"sqlite:///{tmp_path / 'ledger.db'}", checkpoint_interval=None)
    client = make_client(
        World(world.directory, world.db, own, world.gov, world.key_file), policy, clock, channels=_channels(receiver)
    )
    console = client.app.state.console  # type: ignore[attr-defined]
    old = approval_id(world.contract("s-old"))
    clock.advance(3601)
    later = Governor(
        AGENT_PACK, approvals=ApprovalStore(world.db, clock=clock, record=world.ledger.record), evidence=world.ledger
    )
    fresh = approval_id(World(world.directory, world.db, world.ledger, later, world.key_file).contract("s-new"))
    own.close()  # the console's ledger is gone
    assert console.tick() == (0, 2)  # nothing denied unrecorded; the new request is still announced (twice: 2 channels)
    assert ApprovalStore(world.db).get(old).status is ApprovalStatus.PENDING
    assert {p.path for p in receiver.posts} == {"/slack", "/hook"} and all(fresh in p.body.decode() for p in receiver.posts)
