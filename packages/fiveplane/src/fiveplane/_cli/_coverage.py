"""``fiveplane coverage MODULE:OBJECT``: which tools of an agent are not governed (mediation coverage)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ._common import die


def coverage(
    target: Annotated[
        str, typer.Argument(help="MODULE:OBJECT: an agent, a ToolNode, a list of tools, or a function returning one.")
    ],
    policy: Annotated[Path | None, typer.Option("--policy", "-p", help="Policy pack whose catalog the tools map to.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable results.")] = False,
) -> None:
    """Report which tools of a LangChain agent are not governed. Exit 1 if any tool is ungoverned."""
    try:
        from langchain_fiveplane import run_coverage_cli
    except ImportError as exc:
        die(
            f"fiveplane coverage needs the LangChain adapter, which is not installed ({exc}): "
            "uv pip install -e integrations/langchain-fiveplane"
        )
    raise typer.Exit(run_coverage_cli(target, policy=policy, json_out=json_out))
