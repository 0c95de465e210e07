"""Resume payloads for a call paused for approval: ``agent.invoke(Command(resume=resume_approve(...)), config)``.

A paused call's interrupt carries the fiveplane approval request (``value["fiveplane"]``: the
request id, the action digest, the requester, the role that may approve, the expiry). The answer
is checked by the approval store exactly as ``fiveplane approvals approve`` would be: the approver
must hold the role and must not be the requester; the request must be pending and unexpired. An
edit is a new action, decided again (and, when it needs approval, paused again); the request it
replaced is denied once the edited call is settled, so the original can never run later.
An answer the store refuses pauses the call again with the reason (``value["fiveplane"]["error"]``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["resume_approve", "resume_check", "resume_deny", "resume_edit"]


def _who(approver_id: str, roles: Sequence[str]) -> dict[str, Any]:
    return {"id": approver_id, "roles": list(roles)}


def _answer(kind: str, approver_id: str, roles: Sequence[str], reason: str | None, approval_id: str | None) -> dict[str, Any]:
    answer: dict[str, Any] = {"type": kind, "approver": _who(approver_id, roles), "reason": reason}
    if approval_id is not None:
        answer["approval_id"] = approval_id
    return answer


def resume_approve(
    approver_id: str, roles: Sequence[str], reason: str | None = None, *, approval_id: str | None = None
) -> dict[str, Any]:
    """Approve the paused call: it runs once, exactly as proposed.

    ``approval_id`` (from the interrupt, ``value["fiveplane"]["approval_id"]``) binds the answer to
    that request: if it expired and the call was filed again, the answer is refused instead of
    approving a request the approver has not seen.
    """
    return _answer("approve", approver_id, roles, reason, approval_id)


def resume_deny(
    approver_id: str, roles: Sequence[str], reason: str | None = None, *, approval_id: str | None = None
) -> dict[str, Any]:
    """Deny the paused call: it does not run, and the same call is blocked for the rest of the session."""
    return _answer("deny", approver_id, roles, reason, approval_id)


def resume_edit(
    approver_id: str,
    roles: Sequence[str],
    args: Mapping[str, Any],
    *,
    tool: str | None = None,
    reason: str | None = None,
    approval_id: str | None = None,
) -> dict[str, Any]:
    """Replace the paused call (new arguments, or another tool of the agent): decided again, never auto-approved."""
    answer = _answer("edit", approver_id, roles, reason, approval_id)
    answer["args"] = dict(args)
    if tool is not None:
        answer["name"] = tool
    return answer


def resume_check() -> dict[str, Any]:
    """Resume after deciding the request elsewhere (CLI, ``ApprovalStore.approve``): the store's state applies."""
    return {"type": "check"}
