"""``fiveplane sessions list | show | gc | end``: the session state every worker shares."""

from __future__ import annotations

import os
from typing import Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from .._db import default_database_url
from .._sessions_sql import SESSIONS_ENV, SqlSessionStore
from ._common import EXIT_FAILED, console, die, print_json

app = typer.Typer(help="Inspect and tidy the session state shared by every worker.", no_args_is_help=True)

Db = Annotated[
    str | None,
    typer.Option(
        "--db",
        help=f"Session database URL (default: ${SESSIONS_ENV}, else $FIVEPLANE_DATABASE_URL or sqlite:///.fiveplane/fiveplane.db).",
    ),
]


def _store(db: str | None, **options: float | None) -> SqlSessionStore:
    url = db or os.environ.get(SESSIONS_ENV) or default_database_url()
    if url in ("memory", "memory:"):
        die("in-memory sessions live in their process: give a database URL")
    try:
        return SqlSessionStore(url, gc_interval=None, **options)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - any connection problem is bad input here
        die(f"cannot open the sessions database: {exc}")


@app.command("list")
def list_(
    db: Db = None,
    limit: Annotated[int, typer.Option(help="At most this many sessions, most recently active first.")] = 100,
    active: Annotated[bool, typer.Option("--active", help="Leave out expired sessions.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="One JSON object per session.")] = False,
) -> None:
    """Sessions in the store: steps, flow-index size, labels, last activity, expiry."""
    rows = _store(db).sessions(limit=limit, include_expired=not active)
    if json_out:
        for r in rows:
            print_json(r)
        return
    table = Table(title=f"sessions ({len(rows)})")
    for col in ("session", "steps", "flow entries", "labels", "last seen", "state"):
        table.add_column(col, overflow="fold")
    for r in rows:
        state = Text("expired", style="red") if r["expired"] else Text("active", style="green")
        flow = f"{r['flow_entries']}" + (" (truncated)" if r["flow_truncated"] else "")
        table.add_row(r["session_id"], str(r["steps"]), flow, ", ".join(r["labels"]) or "-", r["last_seen"], state)
    console.print(table)


@app.command()
def show(
    session_id: Annotated[str, typer.Argument(help="The session id.")],
    db: Db = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """The steps of one session as every worker sees them. Exit 1 if the session has expired."""
    state = _store(db).get(session_id)
    data: dict[str, Any] = {
        "session_id": state.session_id,
        "intent": state.intent,
        "purpose": state.purpose,
        "labels": sorted(state.labels),
        "counts": dict(state.counts),
        "flow_entries": state.flow.entries,
        "flow_truncated": state.flow.truncated,
        "expired": state.expired,
        "steps": [
            {
                "action_id": s.action_id,
                "point": s.point.value,
                "tool": s.tool,
                "class": s.action_class.value if s.action_class else None,
                "verdict": s.verdict.value,
                "at": s.timestamp.isoformat(),
                "untrusted": s.untrusted,
            }
            for s in state.steps
        ],
    }
    if json_out:
        print_json(data)
    else:
        table = Table(title=f"session {session_id}: {len(state.steps)} steps, labels {', '.join(sorted(state.labels)) or '-'}")
        for col in ("#", "at", "point", "tool", "verdict", "untrusted"):
            table.add_column(col, overflow="fold")
        for i, s in enumerate(data["steps"], 1):
            style = "green" if s["verdict"] in ("allow", "modify", "narrow") else "red" if s["verdict"] == "block" else "yellow"
            table.add_row(
                str(i), s["at"], s["point"], s["tool"] or "-", Text(s["verdict"], style=style), "yes" if s["untrusted"] else ""
            )
        console.print(table)
        if state.expired:
            console.print(Text(f"expired: {state.expired}", style="red"))
    if state.expired:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def gc(
    db: Db = None,
    idle_ttl: Annotated[float, typer.Option(help="Evict sessions idle for longer than this many seconds.")] = 86_400,
    limit: Annotated[int, typer.Option(help="At most this many sessions in one run.")] = 10_000,
    ledger: Annotated[str | None, typer.Option(help="Record each eviction in this evidence ledger (URL).")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Machine-readable.")] = False,
) -> None:
    """Evict idle sessions now (their next step is refused), recording each eviction in the ledger."""
    if idle_ttl <= 0:
        die("--idle-ttl must be > 0")
    store = _store(db, idle_ttl=idle_ttl)
    led = None
    if ledger:
        from .._ledger import open_ledger

        try:
            led = open_ledger(ledger, create=False)
        except Exception as exc:  # noqa: BLE001
            die(f"cannot open the ledger {ledger}: {exc}")
        store.record = led.record
    try:
        gone = store.evict_idle(limit=limit)
    finally:
        if led is not None:
            led.close()
    if json_out:
        print_json({"evicted": gone})
    else:
        console.print(f"evicted {len(gone)} idle session(s)")


@app.command()
def end(
    session_id: Annotated[str, typer.Argument(help="The session id.")],
    db: Db = None,
) -> None:
    """Delete a session's state (its task ended); a later step with the same id starts a new session."""
    _store(db).end(session_id)
    console.print(f"ended session {session_id}")
