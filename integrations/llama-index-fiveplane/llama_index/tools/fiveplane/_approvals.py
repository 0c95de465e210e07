"""Approvals through LlamaIndex workflow events: ``InputRequiredEvent`` out, ``HumanResponseEvent`` in.

When a governed tool call is ``require_approval`` inside an agent workflow, the tool files the
request in the Governor's :class:`~fiveplane.ApprovalStore` (the engine does that while deciding),
writes an :class:`ApprovalRequestEvent` to the workflow's event stream and pauses on
``ctx.wait_for_event(ApprovalResponseEvent, requirements={"approval_id": ...})``. The application
shows the request to a person and sends back an :class:`ApprovalResponseEvent`; the tool hands the
answer to the approval store, which enforces the rules (the approver's role, separation of duties,
expiry, a request decided once), and then decides the call again: only an approved, unexpired
request for this exact action (same digest) lets it run, once.

The application is responsible for who the approver is: it must authenticate the person before it
puts their id and roles in the response event. An approval given elsewhere (``fiveplane approvals
approve``, :meth:`ApprovalStore.approve`) works too: send ``ApprovalResponseEvent.decided(request)``
to resume the paused call, which then reads the outcome from the store.
"""

from __future__ import annotations

from typing import Any

from llama_index.core.workflow import HumanResponseEvent, InputRequiredEvent
from pydantic import Field

from fiveplane import Principal

__all__ = ["ApprovalRequestEvent", "ApprovalResponseEvent"]


class ApprovalRequestEvent(InputRequiredEvent):
    """A governed tool call waits for a person's approval (written to the workflow's event stream)."""

    approval_id: str
    """The :class:`~fiveplane.ApprovalRequest` id; answer with the same id."""
    tool_name: str
    """The tool as the model calls it."""
    policy_tool: str
    """The tool as the policy's catalog names it."""
    arguments: dict[str, Any] = Field(default_factory=dict)
    """The arguments as stored with the request (after the evidence redaction hook)."""
    explanation: str = ""
    """The decision's one-sentence explanation."""
    role: str = ""
    """The role an approver must hold."""
    requester: str = ""
    """Who asked (the human user of the run); with separation of duties they cannot approve."""
    separation_of_duties: bool = True
    expires_at: str = ""
    """ISO 8601; after it the request neither approves nor blocks, the call must ask again."""
    rule_id: str | None = None
    prefix: str = ""
    """A question to show a person (``InputRequiredEvent``'s customary field)."""


class ApprovalResponseEvent(HumanResponseEvent):
    """A person's answer to an :class:`ApprovalRequestEvent` (send it with ``handler.ctx.send_event``)."""

    approval_id: str
    approved: bool | None = None
    """``True`` approve, ``False`` deny, ``None`` decided elsewhere: read the outcome from the store."""
    approver_id: str | None = None
    approver_roles: list[str] = Field(default_factory=list)
    reason: str | None = None
    response: str = ""
    """``HumanResponseEvent``'s customary free-text field (``approve`` / ``deny`` / ``decided``)."""

    @classmethod
    def approve(
        cls, request: ApprovalRequestEvent | str, approver: Principal, reason: str | None = None
    ) -> ApprovalResponseEvent:
        """Approve ``request`` as ``approver`` (a person with roles, e.g. ``fiveplane.approver(...)``)."""
        return cls._answer(request, approver, True, reason)

    @classmethod
    def deny(cls, request: ApprovalRequestEvent | str, approver: Principal, reason: str | None = None) -> ApprovalResponseEvent:
        """Deny ``request``: the exact action is then blocked for the rest of its session."""
        return cls._answer(request, approver, False, reason)

    @classmethod
    def decided(cls, request: ApprovalRequestEvent | str) -> ApprovalResponseEvent:
        """Resume a paused call whose request was approved or denied through the store or the CLI."""
        return cls(approval_id=_id(request), approved=None, response="decided")

    @classmethod
    def _answer(
        cls, request: ApprovalRequestEvent | str, approver: Principal, approved: bool, reason: str | None
    ) -> ApprovalResponseEvent:
        return cls(
            approval_id=_id(request),
            approved=approved,
            approver_id=approver.id,
            approver_roles=list(approver.roles),
            reason=reason,
            response="approve" if approved else "deny",
        )


def _id(request: ApprovalRequestEvent | str) -> str:
    return request if isinstance(request, str) else request.approval_id
