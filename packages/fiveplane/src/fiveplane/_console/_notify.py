"""Notifications of new approval requests: a Slack incoming webhook (Block Kit) and a signed webhook.

Both go through the export package's :class:`~fiveplane._export._sinks.WebhookSink` (one ``POST`` per
event, ``Idempotency-Key``, the HMAC-SHA256 ``X-Fiveplane-Signature`` when a secret is set, the same
transient / fatal classification of HTTP answers). A message names the tool, its class, the role
that may decide, the rule, the expiry and a link to the request in the console; it never carries the
arguments (only the action digest the approval binds to) nor, unless the pack asks, the requester.

The :class:`Notifier` finds new requests by reading the approvals table, so requests filed by any
process (the agents) are announced; what was sent is kept in ``fiveplane_console_notifications``,
so a restart announces nothing twice and a receiver that is down is retried with backoff.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
from sqlalchemy import Column, Integer, MetaData, String, Table, Text, and_, insert, select, update
from sqlalchemy.exc import IntegrityError

from .._approvals import ApprovalRequest, ApprovalStatus, ApprovalStore
from .._db import UTCDateTime, create_tables
from .._export._format import ExportEvent, NativeFormat
from .._export._sinks import FatalSinkError, TransientSinkError, WebhookSink
from .._policy._models import NotifySpec
from ._links import console_url

__all__ = ["Channel", "Notifier", "approval_event", "build_channels", "slack_message"]

log = logging.getLogger("fiveplane.console")

EVENT_SCHEMA = "fiveplane.approval/1"

_meta = MetaData()
_sent = Table(
    "fiveplane_console_notifications",
    _meta,
    Column("approval_id", String(64), primary_key=True),
    Column("channel", String(64), primary_key=True),
    Column("status", String(16), nullable=False),  # pending | sent | failed
    Column("attempts", Integer, nullable=False),
    Column("next_attempt", UTCDateTime(), nullable=False),
    Column("last_error", Text, nullable=True),
    Column("updated_at", UTCDateTime(), nullable=False),
)


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _facts(req: ApprovalRequest, include_requester: bool) -> dict[str, Any]:
    action = req.action
    facts: dict[str, Any] = {
        "approval_id": req.id,
        "action_id": req.action_id,
        "session_id": req.session_id,
        "digest": req.digest,
        "tool": req.tool,
        "connector": action.get("connector"),
        "action_class": action.get("action_class"),
        "role": req.role,
        "separation_of_duties": req.separation_of_duties,
        "rule_id": req.rule_id,
        "created_at": req.created_at.isoformat(),
        "expires_at": req.expires_at.isoformat(),
    }
    if include_requester:
        facts["requester"] = req.requester
    return facts


def _explanation(req: ApprovalRequest, include_requester: bool) -> str:
    """The decision's explanation (it names kinds of values and digests, never values); the requester's
    id is replaced unless the pack asks to name people."""
    if include_requester or not req.requester:
        return req.explanation
    return re.sub(rf"(?<![\w.@-]){re.escape(req.requester)}(?![\w@-])", "the requester", req.explanation)


def approval_event(req: ApprovalRequest, link: str, *, include_requester: bool = False) -> dict[str, Any]:
    """The generic webhook's body: ids, the tool, who may decide, the expiry and the link; no arguments."""
    return {
        "schema": EVENT_SCHEMA,
        "event": "approval.requested",
        **_facts(req, include_requester),
        "explanation": _explanation(req, include_requester),
        "url": link,
    }


def slack_message(req: ApprovalRequest, link: str, *, include_requester: bool = False) -> dict[str, Any]:
    """A Block Kit message for a Slack incoming webhook (``text`` is the notification fallback)."""
    facts = _facts(req, include_requester)
    tool = _slack_escape(req.tool or "an action")
    expires = int(req.expires_at.timestamp())
    fields = [
        {"type": "mrkdwn", "text": f"*Class*\n{_slack_escape(str(facts['action_class'] or '-'))}"},
        {"type": "mrkdwn", "text": f"*Who may decide*\n{_slack_escape(req.role)}"},
        {"type": "mrkdwn", "text": f"*Rule*\n`{_slack_escape(req.rule_id or '-')}`"},
        {
            "type": "mrkdwn",
            "text": f"*Expires*\n<!date^{expires}^{{date_short_pretty}} {{time}}|{req.expires_at:%Y-%m-%d %H:%M:%SZ}>",
        },
    ]
    if include_requester:
        fields.append({"type": "mrkdwn", "text": f"*Requested by*\n{_slack_escape(req.requester)}"})
    return {
        "text": f"Approval needed: {tool} ({req.id})",
        "blocks": [
            {"type": "header", "text": {"type": "plain_text", "text": f"Approval needed: {req.tool or 'an action'}"[:150]}},
            {"type": "section", "fields": fields},
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": _slack_escape(_explanation(req, include_requester))[:2900] or "-"},
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Review in the console"},
                        "url": link,
                        "style": "primary",
                        "action_id": "fiveplane_review",
                    }
                ],
            },
            {
                "type": "context",
                "elements": [
                    {
                        "type": "mrkdwn",
                        "text": f"request `{req.id}` · session `{_slack_escape(req.session_id)}` · "
                        "the arguments are shown only in the console",
                    }
                ],
            },
        ],
    }


@dataclass
class Channel:
    """One destination: a name, the sink that posts, and how a request becomes its body."""

    name: str
    sink: WebhookSink
    body: Callable[[ApprovalRequest, str], dict[str, Any]]

    def send(self, req: ApprovalRequest, link: str) -> None:
        """Deliver one announcement; raises :class:`TransientSinkError` (retry) or :class:`FatalSinkError`."""
        event = ExportEvent(
            uid=f"{req.id}:{self.name}",
            seq=0,
            kind="approval.requested",
            time=req.created_at.isoformat(),
            data=self.body(req, link),
        )
        delivery = self.sink.send([event])
        if delivery.rejected:
            raise FatalSinkError(f"{self.sink.describe()}: {delivery.rejected[0]}")

    def close(self) -> None:
        self.sink.close()


def build_channels(
    spec: NotifySpec | None,
    *,
    slack_url: str | None = None,
    webhook_url: str | None = None,
    webhook_secret: str | None = None,
    transport: httpx.BaseTransport | None = None,
    env: dict[str, str] | None = None,
) -> list[Channel]:
    """The channels the pack's ``approvals.notify`` and the CLI options configure (the CLI wins).

    Secrets come from the environment variables the pack names (the Slack URL, the HMAC key).
    """
    environ = os.environ if env is None else env
    include = spec.include_requester if spec is not None else False
    channels: list[Channel] = []
    slack = slack_url
    if slack is None and spec is not None and spec.slack is not None:
        slack = environ.get(spec.slack.webhook_url_env) or None
        if slack is None:
            raise ValueError(f"approvals.notify.slack: ${spec.slack.webhook_url_env} is not set (the incoming-webhook URL)")
    if slack:
        sink = WebhookSink("slack", slack, NativeFormat(), transport=transport)
        channels.append(Channel("slack", sink, lambda r, link: slack_message(r, link, include_requester=include)))
    hook = webhook_url
    secret = webhook_secret
    if hook is None and spec is not None and spec.webhook is not None:
        hook = spec.webhook.endpoint
        secret = secret or environ.get(spec.webhook.secret_env) or None
    if hook:
        sink = WebhookSink("webhook", hook, NativeFormat(), secret=secret, transport=transport)
        channels.append(Channel("webhook", sink, lambda r, link: approval_event(r, link, include_requester=include)))
    return channels


@dataclass
class Delivery:
    approval_id: str
    channel: str
    status: str
    attempts: int
    last_error: str | None


class Notifier:
    """Announces every pending request once per channel; retries a receiver that is down with backoff.

    Args:
        store: the approvals.
        channels: where to announce.
        base_url: the console's address for the links.
        max_attempts: give a channel up for a request after this many failed tries.
        backoff: seconds before the first retry (doubled per failure, at most 10 minutes).
    """

    def __init__(
        self,
        store: ApprovalStore,
        channels: Sequence[Channel],
        *,
        base_url: str | None = None,
        max_attempts: int = 8,
        backoff: float = 2.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.channels = list(channels)
        self.base_url = base_url
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.clock = clock or store.clock
        create_tables(_meta, store.engine)

    def _claim(self, req: ApprovalRequest, channel: str, now: datetime) -> int | None:
        """The attempt number this process may make now, or ``None`` (sent, given up, not due, or another process has it)."""
        engine = self.store.engine
        with engine.connect() as conn:
            row = conn.execute(select(_sent).where(and_(_sent.c.approval_id == req.id, _sent.c.channel == channel))).first()
        if row is None:
            try:  # the first attempt belongs to whoever inserts the row (the primary key decides)
                with engine.begin() as conn:
                    conn.execute(
                        insert(_sent).values(
                            approval_id=req.id, channel=channel, status="pending", attempts=1, next_attempt=now, updated_at=now
                        )
                    )
            except IntegrityError:
                return None
            return 1
        if row.status != "pending" or row.next_attempt > now:
            return None
        with engine.begin() as conn:
            claimed = conn.execute(
                update(_sent)
                .where(and_(_sent.c.approval_id == req.id, _sent.c.channel == channel, _sent.c.attempts == row.attempts))
                .values(attempts=row.attempts + 1, updated_at=now)
            ).rowcount
        return int(row.attempts) + 1 if claimed == 1 else None

    def _settle(self, req: ApprovalRequest, channel: str, attempt: int, error: str | None, fatal: bool) -> None:
        now = self.clock()
        if error is None:
            values: dict[str, Any] = {"status": "sent", "last_error": None}
        elif fatal or attempt >= self.max_attempts:
            values = {"status": "failed", "last_error": error}
            log.error("approval %s: %s notification given up after %d attempt(s): %s", req.id, channel, attempt, error)
        else:
            delay = min(600.0, self.backoff * 2 ** (attempt - 1))
            values = {"status": "pending", "last_error": error, "next_attempt": now + timedelta(seconds=delay)}
            log.warning(
                "approval %s: %s notification failed (attempt %d, retry in %.0fs): %s", req.id, channel, attempt, delay, error
            )
        with self.store.engine.begin() as conn:
            conn.execute(
                update(_sent)
                .where(and_(_sent.c.approval_id == req.id, _sent.c.channel == channel))
                .values(updated_at=now, **values)
            )

    def poll(self) -> int:
        """Announce what is due now; returns how many messages were delivered."""
        if not self.channels:
            return 0
        delivered = 0
        now = self.clock()
        for req in self.store.requests(status=ApprovalStatus.PENDING):
            link = console_url(req.id, base=self.base_url)
            for ch in self.channels:
                attempt = self._claim(req, ch.name, now)
                if attempt is None:
                    continue
                try:
                    ch.send(req, link)
                except TransientSinkError as exc:
                    self._settle(req, ch.name, attempt, str(exc), fatal=False)
                except FatalSinkError as exc:
                    self._settle(req, ch.name, attempt, str(exc), fatal=True)
                except Exception as exc:  # noqa: BLE001 - a broken channel must not stop the others
                    self._settle(req, ch.name, attempt, f"{type(exc).__name__}: {exc}", fatal=False)
                else:
                    self._settle(req, ch.name, attempt, None, fatal=False)
                    delivered += 1
        return delivered

    def deliveries(self, approval_id: str) -> list[Delivery]:
        """What was sent for one request (shown on its page)."""
        with self.store.engine.connect() as conn:
            rows = conn.execute(select(_sent).where(_sent.c.approval_id == approval_id).order_by(_sent.c.channel)).all()
        return [Delivery(r.approval_id, r.channel, r.status, int(r.attempts), r.last_error) for r in rows]

    def close(self) -> None:
        for ch in self.channels:
            ch.close()
