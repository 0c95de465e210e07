"""The ``fiveplane`` command line: one module per command group.

Exit codes: 0 success; 1 the thing checked is wrong (policy errors, failing tests, failed
verification); 2 bad input or usage (unreadable file, malformed JSON, unknown option).
"""

from __future__ import annotations

import typer

from ._approvals import app as approvals_app
from ._demo import demo
from ._grants import app as grants_app
from ._policy import app as policy_app

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
app.command("demo")(demo)


def main() -> None:
    app()


__all__ = ["app", "main"]
