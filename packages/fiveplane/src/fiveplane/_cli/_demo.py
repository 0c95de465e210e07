"""``fiveplane demo``: the reference scenario, printed as a timeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from .._demo import DEMO_DB, build_demo_governor, default_policy_path, run_scenario
from .._policy._yaml import PolicyError
from ._common import EXIT_BAD_INPUT, console, die, err_console, print_json

_STYLE = {
    "allow": "green",
    "modify": "cyan",
    "narrow": "cyan",
    "defer": "yellow",
    "require_approval": "yellow",
    "block": "bold red",
}


def demo(
    policy: Annotated[
        Path | None, typer.Option("--policy", "-p", help="Policy pack (default: policies/examples/sales-support.yaml).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per step.")] = False,
    db: Annotated[str, typer.Option("--db", help="Database for evidence, approvals, grants and revocations.")] = DEMO_DB,
    framework: Annotated[
        str, typer.Option("--framework", "-f", help="core (the sales-support scenario) or llamaindex (a RAG pipeline and agent).")
    ] = "core",
) -> None:
    """Run the reference scenario (a sales-support agent) offline and print its timeline."""
    if framework == "llamaindex":
        try:
            from llama_index.tools.fiveplane import run_demo_cli
        except ImportError as exc:
            die(
                f"the LlamaIndex demo needs the adapter, which is not installed ({exc}): "
                "uv pip install -e integrations/llama-index-fiveplane (or make setup)"
            )
        raise typer.Exit(run_demo_cli(policy, json_out=json_out))
    if framework != "core":
        die(f"unknown --framework {framework!r}; choose core or llamaindex")
    try:
        path = policy or default_policy_path()
    except FileNotFoundError as exc:
        die(str(exc))
    try:
        governor = build_demo_governor(path, db)
    except PolicyError as exc:
        for line in exc.errors:
            err_console.print(Text(line, style="red"))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    steps = run_scenario(governor)
    if json_out:
        for s in steps:
            print_json(
                {
                    "step": s.number,
                    "title": s.title,
                    "point": s.action.point.value,
                    "tool": s.action.tool,
                    "outcome": s.outcome,
                    "token": s.token,
                    **s.decision.summary(),
                }
            )
        return
    console.print(Text(f"fiveplane demo: the reference scenario under {path}", style="bold"))
    console.print(Text(f"policy {governor.policy.name}@{governor.policy.version} {governor.policy.hash}", style="dim"))
    for s in steps:
        v = s.decision.verdict.value
        head = Text(f"{s.number:>2}. ") + Text(f"{v:<17}", style=_STYLE.get(v, "")) + Text(f" {s.title}")
        head += Text(
            f"  [{s.action.point.value}{' ' + s.action.tool if s.action.tool else ''} · {', '.join(s.decision.rule_ids)}]",
            style="dim",
        )
        console.print(head)
        console.print(Text(f"      {s.decision.explanation}"))
        if s.outcome not in (v,):
            console.print(Text(f"      outcome: {s.outcome}", style="dim"))
        if s.token is not None:
            t = s.token
            bound = ", bound to these arguments" if t.get("arguments_bound") else ""
            console.print(
                Text(
                    f"      token {t['token_id'][:12]}…: {t['operation']} {t['tool']} on {t.get('resource') or t['connector']}"
                    f", expires {t['expires_at']}{bound}",
                    style="cyan",
                )
            )
