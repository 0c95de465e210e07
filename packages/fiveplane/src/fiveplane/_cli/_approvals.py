"""``fiveplane approvals list | approve | deny``."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

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


def _decide(request_id: str, user: str, roles: list[str], reason: str | None, db: str | None, deny: bool) -> None:
    store = _store(db)
    who = approver(user, roles)
    try:
        req = store.deny(request_id, who, reason) if deny else store.approve(request_id, who, reason)
    except ApprovalError as exc:
        console.print(Text(f"refused: {exc}", style="red"))
        raise typer.Exit(EXIT_FAILED) from None
    verb = "denied" if deny else "approved"
    console.print(
        Text(
            f"{verb} {req.id}: {req.tool or 'action'} requested by {req.requester}; the same action can now {'never run in that session' if deny else 'run once'}."
        )
    )


@app.command()
def approve(
    request_id: Annotated[str, typer.Argument(help="The request id (apr-…).")],
    user: Annotated[str, typer.Option("--as", help="Your user id.")],
    role: Annotated[list[str], typer.Option("--role", help="A role you hold (repeatable).")],
    reason: Annotated[str | None, typer.Option(help="Why (recorded).")] = None,
    db: Db = None,
) -> None:
    """Approve one pending request: the exact action may then run once. Exit 1 if refused."""
    _decide(request_id, user, role, reason, db, deny=False)


@app.command()
def deny(
    request_id: Annotated[str, typer.Argument(help="The request id (apr-…).")],
    user: Annotated[str, typer.Option("--as", help="Your user id.")],
    role: Annotated[list[str], typer.Option("--role", help="A role you hold (repeatable).")],
    reason: Annotated[str | None, typer.Option(help="Why (recorded).")] = None,
    db: Db = None,
) -> None:
    """Deny one pending request: the exact action can never run in its session. Exit 1 if refused."""
    _decide(request_id, user, role, reason, db, deny=True)
