"""``fiveplane demo``: the reference scenario, printed as a timeline."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.text import Text

from .._demo import build_demo_governor, default_policy_path
from .._policy._yaml import PolicyError
from ._common import EXIT_BAD_INPUT, EXIT_FAILED, console, die, err_console, print_json

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
    directory: Annotated[
        Path, typer.Option("--dir", help="core: where the demo's ledger (demo.db, recreated), key and receipt go.")
    ] = Path(".fiveplane"),
    framework: Annotated[
        str,
        typer.Option(
            "--framework",
            "-f",
            help="langchain (the sales-support scenario as a real LangChain agent), core (the same as engine calls) "
            "or llamaindex (a RAG pipeline and agent).",
        ),
    ] = "langchain",
    model: Annotated[
        str | None, typer.Option("--model", help="langchain: provider:name of a real chat model (default: scripted, offline).")
    ] = None,
) -> None:
    """Run the reference scenario (a sales-support agent) offline and print its timeline."""
    if framework == "langchain":
        try:
            from langchain_fiveplane import run_demo_cli as run_langchain_demo_cli
        except ImportError as exc:
            die(
                f"the LangChain demo needs the adapter, which is not installed ({exc}): "
                "uv pip install -e integrations/langchain-fiveplane (or make setup), or use --framework core"
            )
        raise typer.Exit(run_langchain_demo_cli(policy, json_out=json_out, model=model))
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
        die(f"unknown --framework {framework!r}; choose langchain, core or llamaindex")
    try:
        path = policy or default_policy_path()
    except FileNotFoundError as exc:
        die(str(exc))
    from .._ledger._demo import run_demo_with_evidence

    # approvals, grants and revocations live beside the ledger in their own file: on SQLite one
    # file has one writer at a time, and the identity plane records grant changes inside its
    # own transaction (PostgreSQL shares one database without this concern)
    state = directory / "demo-state.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{state}{suffix}").unlink(missing_ok=True)
    database = f"sqlite:///{state}"
    try:
        ev = run_demo_with_evidence(path, directory, governor=lambda ledger: build_demo_governor(path, database, evidence=ledger))
    except PolicyError as exc:
        for line in exc.errors:
            err_console.print(Text(line, style="red"))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    steps = ev.steps
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
                    "console_url": s.console_link,
                    **s.decision.summary(),
                }
            )
        return
    console.print(Text(f"fiveplane demo (core engine calls): the reference scenario under {path}", style="bold"))
    console.print(Text(f"policy {steps[0].decision.policy_version} {steps[0].decision.policy_hash}", style="dim"))
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
        if s.console_link is not None:
            console.print(Text(f"      decide it in the console: {s.console_link}", style="yellow"))
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
    console.print(Text(f"\nevidence: {ev.url}", style="bold"))
    console.print(Text(f"  audit verify: {ev.report.summary()}", style="green" if ev.report.ok else "bold red"))
    console.print(Text(f"  receipt for the contract change's decision (#{ev.receipt_seq}) written to {ev.receipt_file}"))
    console.print(
        Text(f"  check it offline: fiveplane audit verify-receipt {ev.receipt_file} --key {ev.key_file}.pub", style="dim")
    )
    console.print(Text(f"  the story of one action: fiveplane audit reconstruct ACTION_ID --db {ev.url}", style="dim"))
    if not ev.report.ok:
        raise typer.Exit(EXIT_FAILED)
