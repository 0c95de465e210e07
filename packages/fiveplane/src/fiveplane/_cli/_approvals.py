"""``fiveplane approvals list | approve | deny``."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from .._actions import Principal
from .._approvals import ApprovalError, ApprovalStatus, ApprovalStore, approver
from .._db import default_database_url
from ._common import EXIT_FAILED, console, die, print_json

app = typer.Typer(help="List, approve and deny actions waiting for a person.", no_args_is_help=True)

Db = Annotated[
    str | None, typer.Option("--db", help="Database URL (default: $FIVEPLANE_DATABASE_URL or sqlite:///.fiveplane/fiveplane.db).")
]


def _store(db: str | None) -> ApprovalStore:
    try:
        return ApprovalStore(db or default_database_url())
    except Exception as exc:  # noqa: BLE001 - any connection problem is bad input here
        die(f"cannot open the approvals database: {exc}")


@app.command("list")
def list_(
    db: Db = None,
    status: Annotated[str | None, typer.Option(help="pending, approved, denied or consumed (default: all).")] = None,
    session: Annotated[str | None, typer.Option(help="Only this session.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per request.")] = False,
) -> None:
    """Show approval requests (pending first)."""
    try:
        wanted = ApprovalStatus(status) if status else None
    except ValueError:
        die(f"--status must be one of {', '.join(s.value for s in ApprovalStatus)}")
    requests = _store(db).requests(status=wanted, session_id=session)
    requests.sort(key=lambda r: (r.status is not ApprovalStatus.PENDING, r.created_at))
    if json_out:
        for r in requests:
            print_json(r.model_dump(mode="json"))
        return
    table = Table(title=f"approval requests ({len(requests)})")
    for col in ("id", "status", "tool", "requester", "needs role", "expires", "why"):
        table.add_column(col, overflow="fold")
    for r in requests:
        style = {"pending": "yellow", "approved": "green", "denied": "red"}.get(r.status.value, "")
        table.add_row(
            Text(r.id),
            Text(r.status.value, style=style),
            Text(r.tool or "-"),
            Text(r.requester),
            Text(r.role),
            Text(r.expires_at.strftime("%Y-%m-%d %H:%M:%SZ")),
            Text(r.explanation),
        )
    console.print(table)


def _who(user: str | None, roles: list[str], token: str | None, policy: Path | None) -> Principal:
    """The approver: verified from an OIDC token (the pack's ``planes.identity.oidc``), or asserted."""
    if token is not None:
        if user is not None or roles:
            die("give either --token (verified) or --as/--role (asserted), not both")
        if policy is None:
            die("--token needs --policy: the pack whose planes.identity.oidc says how to verify it")
        from .._identity._model import IdentityError
        from .._planes._identity import oidc_mapper
        from .._policy._load import load_policy
        from .._policy._yaml import PolicyError

        try:
            return oidc_mapper(load_policy(policy)).principal(token)
        except (IdentityError, PolicyError) as exc:
            console.print(Text(f"refused: {exc}", style="red"))
            raise typer.Exit(EXIT_FAILED) from None
    if user is None or not roles:
        die("say who decides: --token JWT --policy PACK (verified), or --as USER --role ROLE (asserted)")
    return approver(user, roles)


def _decide(request_id: str, who: Principal, reason: str | None, db: str | None, deny: bool) -> None:
    store = _store(db)
    try:
        req = store.deny(request_id, who, reason) if deny else store.approve(request_id, who, reason)
    except ApprovalError as exc:
        console.print(Text(f"refused: {exc}", style="red"))
        raise typer.Exit(EXIT_FAILED) from None
    verb = "denied" if deny else "approved"
    console.print(
        Text(
            f"{verb} {req.id} as {who.id}: {req.tool or 'action'} requested by {req.requester}; the same action can now "
            f"{'never run in that session' if deny else 'run once'}."
        )
    )


User = Annotated[str | None, typer.Option("--as", help="Your user id (asserted; prefer --token).")]
Roles = Annotated[list[str] | None, typer.Option("--role", help="A role you hold (repeatable; asserted).")]
Token = Annotated[
    str | None, typer.Option("--token", envvar="FIVEPLANE_APPROVER_TOKEN", help="Your OIDC/JWT identity token (verified).")
]
Pack = Annotated[Path | None, typer.Option("--policy", "-p", help="The pack whose planes.identity.oidc verifies --token.")]
Reason = Annotated[str | None, typer.Option(help="Why (recorded).")]


@app.command()
def approve(
    request_id: Annotated[str, typer.Argument(help="The request id (apr-…).")],
    user: User = None,
    role: Roles = None,
    token: Token = None,
    policy: Pack = None,
    reason: Reason = None,
    db: Db = None,
) -> None:
    """Approve one pending request: the exact action may then run once. Exit 1 if refused."""
    _decide(request_id, _who(user, role or [], token, policy), reason, db, deny=False)


@app.command()
def deny(
    request_id: Annotated[str, typer.Argument(help="The request id (apr-…).")],
    user: User = None,
    role: Roles = None,
    token: Token = None,
    policy: Pack = None,
    reason: Reason = None,
    db: Db = None,
) -> None:
    """Deny one pending request: the exact action can never run in its session. Exit 1 if refused."""
    _decide(request_id, _who(user, role or [], token, policy), reason, db, deny=True)
