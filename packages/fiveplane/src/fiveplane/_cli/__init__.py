"""The ``fiveplane`` command line: one module per command group.

Exit codes: 0 success; 1 the thing checked is wrong (policy errors, failing tests, failed
verification); 2 bad input or usage (unreadable file, malformed JSON, unknown option).
"""

from __future__ import annotations

import warnings

import typer

from ._approvals import app as approvals_app
from ._audit import app as audit_app
from ._console import console_command
from ._coverage import coverage
from ._demo import demo
from ._export import app as export_app
from ._grants import app as grants_app
from ._policy import app as policy_app
from ._report import app as report_app
from ._sessions import app as sessions_app

app = typer.Typer(
    name="fiveplane",
    help="Runtime governance for production AI agents: policies, evidence and demos.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(policy_app, name="policy")
app.add_typer(approvals_app, name="approvals")
app.add_typer(grants_app, name="grants")
app.add_typer(audit_app, name="audit")
app.add_typer(export_app, name="export")
app.add_typer(report_app, name="report")
app.add_typer(sessions_app, name="sessions")
app.command("demo")(demo)
app.command("coverage")(coverage)
app.command("console")(console_command)


def _warning_line(message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None) -> str:
    return f"warning: {message}\n"


def main() -> None:
    warnings.formatwarning = _warning_line  # people read one line, not the source of the warning
    app()


__all__ = ["app", "main"]
