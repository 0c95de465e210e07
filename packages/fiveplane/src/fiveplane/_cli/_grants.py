"""``fiveplane grants list | add | revoke | keygen``: the identity plane's grants store at run time.

Exit codes: 0 done; 1 the change could not be made (the grant id exists, is unknown or already
revoked); 2 bad input (invalid principal, class, date, CEL condition) or an unusable database.
"""

from __future__ import annotations

import getpass
import re
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text
from sqlalchemy.exc import SQLAlchemyError

from .._identity._db import Recorder, default_database_url
from .._identity._grants import GrantStore
from .._identity._keys import generate_root_key, public_key_text
from .._identity._model import Grant, GrantSpec, IdentityError
from ._common import EXIT_BAD_INPUT, EXIT_FAILED, console, die, err_console, print_json

__all__ = ["app"]

app = typer.Typer(
    help="List, add and revoke identity grants: which principals may perform which action classes where.",
    no_args_is_help=True,
)

Db = Annotated[
    str | None,
    typer.Option(
        "--db", help="SQLAlchemy URL of the grants store (default: $FIVEPLANE_DATABASE_URL or sqlite:///.fiveplane/fiveplane.db)."
    ),
]
JsonOut = Annotated[bool, typer.Option("--json", help="Print machine-readable output.")]
By = Annotated[str | None, typer.Option("--by", help="Who makes the change (default: the login name).")]


def _recorder(url: str) -> Recorder | None:
    """Where grant changes are recorded besides the store's own columns (wired to the ledger by the engine)."""
    return None


def _store(db: str | None) -> GrantStore:
    url = db or default_database_url()
    try:
        return GrantStore(url, record=_recorder(url))
    except (SQLAlchemyError, OSError) as exc:
        die(f"the grants store at {url} is unusable: {type(exc).__name__}: {str(exc).splitlines()[0]}")
    except Exception as exc:  # noqa: BLE001 - e.g. an invalid URL
        die(f"the grants store at {url} is unusable: {exc}")


def _who(by: str | None) -> str:
    if by:
        return by
    try:
        return getpass.getuser()
    except Exception:  # noqa: BLE001
        return "unknown"


def _state(g: Grant, now: datetime) -> str:
    if g.revoked_at is not None:
        return "revoked"
    if g.expires_at is not None and g.expires_at <= now:
        return "expired"
    return "active"


_DURATION = re.compile(r"^(\d+)([smhd]?)$")


def _parse_ttl(text: str) -> timedelta:
    m = _DURATION.match(text.strip())
    if not m:
        die(f"--ttl {text!r}: give seconds or a number with s, m, h or d (e.g. 8h)")
    n, unit = int(m.group(1)), m.group(2) or "s"
    seconds = n * {"s": 1, "m": 60, "h": 3600, "d": 86400}[unit]
    if seconds <= 0:
        die("--ttl must be positive")
    return timedelta(seconds=seconds)


def _parse_expires(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        die(f"--expires {text!r} is not an ISO 8601 date-time (e.g. 2026-12-31T00:00:00Z)")
    if value.tzinfo is None:
        die(f"--expires {text!r} needs a time zone (e.g. append Z for UTC)")
    return value


@app.command("list")
def list_grants(
    db: Db = None,
    all_: Annotated[bool, typer.Option("--all", help="Include revoked grants.")] = False,
    active: Annotated[bool, typer.Option("--active", help="Only grants that hold now (not expired or revoked).")] = False,
    principal: Annotated[
        str | None, typer.Option("--principal", help="Only grants whose principal selector contains this text.")
    ] = None,
    json_out: JsonOut = False,
) -> None:
    """List grants (active and expired; --all adds revoked ones)."""
    store = _store(db)
    try:
        items = store.list(include_revoked=all_ and not active, include_expired=not active)
    except SQLAlchemyError as exc:
        die(f"could not read grants: {type(exc).__name__}")
    if principal:
        items = [g for g in items if principal in str(g.spec.principal)]
    now = datetime.now(UTC)
    if json_out:
        print_json({"grants": [{**g.to_json(), "state": _state(g, now)} for g in items]})
        return
    table = Table(title=f"grants ({len(items)})", show_lines=False)
    for col in ("id", "principal", "classes", "connectors", "tools", "resources", "expires", "source", "state"):
        table.add_column(col)
    for g in items:
        s = g.spec
        state = _state(g, now)
        table.add_row(
            Text(s.id),
            Text(str(s.principal)),
            Text(",".join(c.value for c in s.classes)),
            Text(",".join(s.connectors) or "*"),
            Text(",".join(s.tools) or "*"),
            Text(",".join(s.resources)),
            Text(s.expires.isoformat() if s.expires else "never"),
            Text(g.source),
            Text(state, style={"active": "green", "expired": "yellow", "revoked": "red"}[state]),
        )
    console.print(table)


@app.command("add")
def add(
    principal: Annotated[
        str,
        typer.Argument(help="user:ID, role:ROLE, claim:NAME=VALUE, agent:ID, subagent:ID[@PARENT], connector:ID or service:ID."),
    ],
    classes: Annotated[list[str], typer.Option("--class", "-c", help="Action class: read, invoke or modify (repeatable).")],
    connector: Annotated[list[str] | None, typer.Option("--connector", help="Connector glob (repeatable).")] = None,
    tool: Annotated[list[str] | None, typer.Option("--tool", help="Tool glob (repeatable).")] = None,
    resource: Annotated[list[str] | None, typer.Option("--resource", help="Resource glob (repeatable; default *).")] = None,
    expires: Annotated[str | None, typer.Option("--expires", help="Expiry, ISO 8601 with a time zone.")] = None,
    ttl: Annotated[str | None, typer.Option("--ttl", help="Or: expire after this long (e.g. 3600, 30m, 8h, 7d).")] = None,
    when: Annotated[str | None, typer.Option("--when", help="A CEL condition the action must meet.")] = None,
    grant_id: Annotated[str | None, typer.Option("--id", help="Grant id (default: generated).")] = None,
    description: Annotated[str, typer.Option("--description", "-d", help="Why this grant exists.")] = "",
    db: Db = None,
    by: By = None,
    json_out: JsonOut = False,
) -> None:
    """Add a run-time grant (recorded with who added it). Exit 1 if the id is taken."""
    if expires and ttl:
        die("give --expires or --ttl, not both")
    exp = _parse_expires(expires) if expires else (datetime.now(UTC) + _parse_ttl(ttl) if ttl else None)
    data: dict[str, Any] = {
        "id": grant_id or f"g-{uuid.uuid4().hex[:12]}",
        "principal": principal,
        "classes": classes,
        "connectors": connector or [],
        "tools": tool or [],
        "resources": resource or ["*"],
        "when": when,
        "expires": exp,
        "description": description,
    }
    try:
        spec = GrantSpec.model_validate(data)
    except ValidationError as exc:
        for err in exc.errors():
            loc = ".".join(str(p) for p in err["loc"])
            err_console.print(Text(f"error: {loc + ': ' if loc else ''}{err['msg']}", style="red"))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    store = _store(db)
    try:
        grant = store.add(spec, by=_who(by))
    except IdentityError as exc:
        die(str(exc), EXIT_FAILED)
    except SQLAlchemyError as exc:
        die(f"could not store the grant: {type(exc).__name__}")
    if json_out:
        print_json({"added": grant.to_json()})
    else:
        console.print(
            Text("added ", style="green")
            + Text(f"{grant.id}: {grant.spec.principal} may {', '.join(c.value for c in spec.classes)}")
        )


@app.command("revoke")
def revoke(
    grant_id: Annotated[str, typer.Argument(help="The grant to revoke (policy grants too: they stay revoked).")],
    reason: Annotated[str | None, typer.Option("--reason", help="Why (recorded).")] = None,
    db: Db = None,
    by: By = None,
    json_out: JsonOut = False,
) -> None:
    """Revoke a grant now. Exit 1 if it is unknown or already revoked."""
    store = _store(db)
    try:
        grant = store.revoke(grant_id, by=_who(by), reason=reason)
    except IdentityError as exc:
        die(str(exc), EXIT_FAILED)
    except SQLAlchemyError as exc:
        die(f"could not revoke the grant: {type(exc).__name__}")
    if json_out:
        print_json({"revoked": grant.to_json()})
    else:
        console.print(Text("revoked ", style="red") + Text(grant.id) + (Text(f" ({reason})") if reason else Text("")))


@app.command("keygen")
def keygen(
    path: Annotated[
        Path, typer.Argument(help="Where to write the root key (PKCS#8 PEM, mode 600); PATH.pub gets the public key.")
    ],
    force: Annotated[bool, typer.Option("--force", help="Overwrite an existing key (invalidates every token).")] = False,
    json_out: JsonOut = False,
) -> None:
    """Create the Ed25519 root key capability tokens are signed with; prints the public key for connectors."""
    try:
        public = generate_root_key(path, overwrite=force)
    except IdentityError as exc:
        die(str(exc), EXIT_FAILED)
    except OSError as exc:
        die(f"cannot write {path}: {exc.strerror}")
    if json_out:
        print_json({"key_file": str(path), "public_key": public_key_text(public), "public_key_file": f"{path}.pub"})
    else:
        console.print(Text(f"wrote {path} (keep it secret) and {path}.pub\npublic key: {public_key_text(public)}"))
