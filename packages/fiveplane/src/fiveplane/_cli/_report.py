"""``fiveplane report …``: compliance reports from the evidence ledger.

Exit codes: 0 report written and the ledger verifies; 1 report written but the ledger does NOT verify
(the report says why); 2 bad input (no such ledger or pack, unreadable key, unwritable output).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.markup import escape
from rich.text import Text

from .._export._read import open_for_export
from .._export._report import build_nist_report
from .._ledger import DEFAULT_URL, LedgerError, NoteError, NoteVerifier, load_verifier
from .._policy._yaml import PolicyError
from ._common import EXIT_BAD_INPUT, EXIT_FAILED, die, err_console, print_json

app = typer.Typer(help="Compliance reports from the evidence ledger.", no_args_is_help=True)


def _die(message: str, code: int = EXIT_BAD_INPUT) -> NoReturn:
    die(escape(message), code)


@app.command()
def nist(
    db: Annotated[
        str,
        typer.Option("--db", envvar="FIVEPLANE_LEDGER_URL", help="Ledger database URL (sqlite:///… or postgresql+psycopg://…)."),
    ] = DEFAULT_URL,
    origin: Annotated[str | None, typer.Option("--origin", help="Which ledger, when the database holds several.")] = None,
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="The policy pack in force: lists its controls.")] = None,
    html: Annotated[Path | None, typer.Option("--html", help="Also write the report as HTML to this file.")] = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="Write the Markdown here instead of stdout.")] = None,
    key: Annotated[
        list[str] | None,
        typer.Option(
            "--key", "-k", help="Trusted verifier key (or a file holding one); default: the keys recorded in the database."
        ),
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report's figures as JSON instead of Markdown.")] = False,
) -> None:
    """The NIST AI RMF report (Markdown, optionally HTML): controls in force, evidence per GOVERN /
    MAP / MEASURE / MANAGE category, blocked / approved / denied actions, open approvals, ledger
    verification and the latest signed checkpoint."""
    if policy is not None and not policy.is_file():
        _die(f"{policy}: no such policy pack")
    keys: list[NoteVerifier] | None = None
    if key:
        try:
            keys = [load_verifier(k) for k in key]
        except NoteError as exc:
            _die(str(exc))
    try:
        ledger = open_for_export(db, origin)
    except (FileNotFoundError, LookupError, LedgerError, ValueError) as exc:
        _die(str(exc))
    except Exception as exc:  # noqa: BLE001 - any driver error opening the database is bad input here
        _die(f"cannot open ledger {db}: {type(exc).__name__}: {exc}")
    try:
        report = build_nist_report(ledger, policy=policy, keys=keys)
    except PolicyError as exc:
        for line in exc.errors:
            err_console.print(Text(line, style="red"))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    finally:
        ledger.close()
    try:
        if html is not None:
            html.parent.mkdir(parents=True, exist_ok=True)
            html.write_text(report.html(), encoding="utf-8")
        if out is not None:
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(report.markdown(), encoding="utf-8")
    except OSError as exc:
        _die(f"cannot write the report: {exc.strerror or exc}")
    if json_out:
        print_json(report.summary)
    elif out is None:
        sys.stdout.write(report.markdown())
    else:
        err_console.print(f"wrote {out}" + (f" and {html}" if html else ""))
    if not report.summary["verified"]:
        err_console.print(Text("FAILED: ", style="bold red") + Text("the ledger does not verify (see the report)"))
        raise typer.Exit(EXIT_FAILED)
