"""``fiveplane console``: the approval console, a web app over the approvals and the evidence ledger."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape
from rich.text import Text

from .._db import default_database_url
from ._common import EXIT_BAD_INPUT, console, die, err_console

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def _die(message: str) -> NoReturn:
    """``die`` with the message escaped: it may hold paths, URLs and errors with ``[``."""
    die(escape(message))


def _is_loopback(host: str) -> bool:
    if host in _LOOPBACK:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def console_command(
    policy: Annotated[
        Path,
        typer.Option(
            "--policy",
            "-p",
            help="The pack: its planes.identity.oidc verifies approvers; its approvals: section configures the console.",
        ),
    ],
    db: Annotated[
        str | None,
        typer.Option(
            "--db", help="Approvals database URL (default: $FIVEPLANE_DATABASE_URL or sqlite:///.fiveplane/fiveplane.db)."
        ),
    ] = None,
    ledger: Annotated[
        str | None,
        typer.Option(
            "--ledger", envvar="FIVEPLANE_LEDGER_URL", help="Evidence ledger URL (default: sqlite:///.fiveplane/ledger.db)."
        ),
    ] = None,
    ledger_origin: Annotated[
        str | None, typer.Option("--ledger-origin", help="Which ledger, when the database holds several.")
    ] = None,
    ledger_key: Annotated[
        Path | None,
        typer.Option("--ledger-key", help="The ledger's signing key file: lets the console sign checkpoints for receipts."),
    ] = None,
    host: Annotated[str, typer.Option("--host", help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option("--port", min=1, max=65535, help="Port to listen on.")] = 8765,
    public_url: Annotated[
        str | None,
        typer.Option(
            "--public-url", help="The address people open (links in notifications; default: the pack's, else http://HOST:PORT)."
        ),
    ] = None,
    allowed_host: Annotated[
        list[str] | None,
        typer.Option("--allowed-host", help="A further Host header to accept (repeatable; DNS-rebinding protection)."),
    ] = None,
    dev_user: Annotated[
        str | None, typer.Option("--dev-user", help="LOCAL DEMOS ONLY: every browser is this user, unauthenticated.")
    ] = None,
    dev_roles: Annotated[
        list[str] | None, typer.Option("--dev-roles", help="Roles of --dev-user (repeatable or comma-separated).")
    ] = None,
    slack_url: Annotated[
        str | None,
        typer.Option(
            "--notify-slack-url",
            envvar="FIVEPLANE_SLACK_WEBHOOK_URL",
            show_envvar=True,
            help="A Slack incoming-webhook URL (a secret: prefer the variable).",
        ),
    ] = None,
    webhook_url: Annotated[
        str | None,
        typer.Option("--notify-webhook", help="A webhook URL to POST new requests to (signed with $FIVEPLANE_WEBHOOK_SECRET)."),
    ] = None,
    sweep: Annotated[
        float, typer.Option("--sweep-interval", min=0.2, help="Seconds between expiry sweeps and notification rounds.")
    ] = 2.0,
) -> None:
    """Serve the approval console: the queue, decisions, history, the evidence explorer; notify and expire requests."""
    try:
        from .._console._app import create_app
        from .._console._notify import build_channels
    except ImportError as exc:
        _die(f"the approval console needs the console extra: pip install 'fiveplane[console]' ({exc})")
    from .._actions import Principal, PrincipalKind
    from .._approvals import ApprovalStore
    from .._identity._model import IdentityError
    from .._ledger._errors import LedgerError
    from .._ledger._note import NoteError
    from .._ledger._sink import DEFAULT_URL, open_ledger
    from .._planes._identity import oidc_mapper
    from .._policy._load import load_policy
    from .._policy._yaml import PolicyError

    try:
        pack = load_policy(policy)
    except PolicyError as exc:
        for line in exc.errors:
            err_console.print(Text(line, style="red"))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    mapper = None
    try:
        mapper = oidc_mapper(pack)
    except IdentityError as exc:
        if "configures no planes.identity.oidc" not in str(exc):
            _die(f"{policy}: planes.identity.oidc: {exc}")
    roles = [r.strip() for group in (dev_roles or []) for r in group.split(",") if r.strip()]
    dev = None
    if dev_user is not None:
        if not roles:
            _die("--dev-user needs --dev-roles (the roles the demo user decides with)")
        dev = Principal(kind=PrincipalKind.USER, id=dev_user, roles=tuple(roles))
    elif roles:
        _die("--dev-roles only applies with --dev-user")
    if mapper is None and dev is None:
        _die(
            f"{policy} configures no planes.identity.oidc, so nobody could sign in: add the section "
            "(issuer, audience, key_file or jwks_file, role_map) or pass --dev-user ID --dev-roles ROLE for a local demo"
        )
    try:
        store = ApprovalStore(db or default_database_url())
    except Exception as exc:  # noqa: BLE001 - any connection problem is bad input here
        _die(f"cannot open the approvals database: {exc}")
    ledger_url = ledger or DEFAULT_URL
    try:
        led = open_ledger(
            ledger_url,
            key=ledger_key,
            origin=ledger_origin,
            create=ledger_key is not None or ledger_origin is not None,
            checkpoint_interval=None,
        )
    except (FileNotFoundError, LookupError, LedgerError, NoteError) as exc:
        _die(f"cannot open the evidence ledger {ledger_url} (every decision is recorded there): {exc}")
    except Exception as exc:  # noqa: BLE001 - any driver problem is bad input here
        _die(f"cannot open the evidence ledger {ledger_url}: {type(exc).__name__}: {exc}")
    try:
        channels = build_channels(
            pack.approvals.notify if pack.approvals else None,
            slack_url=slack_url,
            webhook_url=webhook_url,
            webhook_secret=os.environ.get("FIVEPLANE_WEBHOOK_SECRET") or None,
        )
    except ValueError as exc:
        _die(str(exc))
    own = f"http://{'[' + host + ']' if ':' in host else host}:{port}"
    url = public_url or (pack.approvals.console_url if pack.approvals else None) or own
    hosts = [*_LOOPBACK, host, *(allowed_host or [])]
    app = create_app(
        store, led, pack, mapper=mapper, dev_user=dev, public_url=url, allowed_hosts=hosts, channels=channels, tick_seconds=sweep
    )
    if dev is not None:
        err_console.print(Text("WARNING — DEV MODE: nobody is authenticated.", style="bold red"))
        err_console.print(
            Text(
                f"Every browser that reaches {own} decides as {dev.id} ({', '.join(dev.roles)}), unverified. "
                "Use it only for a local demo; configure planes.identity.oidc in the pack for real use.",
                style="red",
            )
        )
    if not _is_loopback(host) and not url.startswith("https://"):
        err_console.print(
            Text(
                f"warning: listening on {host} without https: tokens and session cookies would cross the network in clear; "
                "put the console behind a TLS proxy and pass --public-url https://…",
                style="yellow",
            )
        )
    console.print(Text(f"fiveplane console: {url}/queue", style="bold"))
    console.print(
        Text(
            f"approvals {store.engine.url.render_as_string(hide_password=True)} · ledger {led.origin} ({led.url}) · "
            f"sign-in: {'OIDC token' if mapper else 'dev user only'} · notifications: {', '.join(c.name for c in channels) or 'none'}",
            style="dim",
        )
    )
    import uvicorn

    try:
        uvicorn.run(app, host=host, port=port, log_level="warning", server_header=False)
    finally:
        led.close()
