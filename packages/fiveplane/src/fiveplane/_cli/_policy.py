"""``fiveplane policy check | test | explain``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer
from pydantic import ValidationError
from rich.table import Table
from rich.text import Text

from .._actions import MAX_PAYLOAD_DEPTH, Action
from .._engine import Governor
from .._planes._registry import planes_for
from .._policy._lint import lint_policy
from .._policy._load import load_policy
from .._policy._testing import discover_tests, dry_run_options, run_test_file
from .._policy._yaml import PolicyError
from ._common import EXIT_BAD_INPUT, EXIT_FAILED, console, die, err_console, print_json

app = typer.Typer(help="Validate, lint, test and explain policy packs.", no_args_is_help=True)

Paths = Annotated[list[Path], typer.Argument(help="Policy pack files (each loaded with its `extends`).")]


def _pack_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(f for f in sorted(p.rglob("*.yaml")) if not f.name.endswith(".tests.yaml"))
        elif not p.exists():
            die(f"{p}: no such file")
        else:
            files.append(p)
    return files


@app.command()
def check(
    paths: Paths,
    strict: Annotated[bool, typer.Option(help="Treat lint warnings as errors.")] = False,
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable results.")] = False,
) -> None:
    """Validate and lint packs: unknown keys, bad CEL, unknown tools, unreachable and shadowed rules.

    Exit 1 with file:line messages on any error.
    """
    report: list[dict[str, Any]] = []
    failed = False
    for f in _pack_files(paths):
        entry: dict[str, Any] = {"file": str(f), "errors": [], "warnings": []}
        try:
            policy = load_policy(f)
        except PolicyError as exc:
            entry["errors"] = exc.errors
            failed = True
        else:
            issues = lint_policy(policy)
            errs = [str(i) for i in issues if i.level == "error"]
            warns = [str(i) for i in issues if i.level != "error"]
            entry.update(errors=errs, warnings=warns, rules=len(policy.rules), tools=len(policy.tools), hash=policy.hash)
            failed = failed or bool(errs) or (strict and bool(warns))
        report.append(entry)
    if json_out:
        print_json({"ok": not failed, "packs": report})
    else:
        shown: set[str] = set()
        for entry in report:
            # a base pack's issues appear again under every pack that extends it: print them once
            errors: list[str] = entry["errors"]
            warnings: list[str] = entry["warnings"]
            for line in errors:
                if line not in shown:
                    err_console.print(Text(line, style="red"))
            for line in warnings:
                if line not in shown:
                    err_console.print(Text(line, style="yellow"))
            shown.update(errors, warnings)
            if not errors:
                console.print(
                    Text(
                        f"ok  {entry['file']}: {entry['rules']} rules, {entry['tools']} tools, {len(warnings)} warning(s), {entry['hash']}"
                    )
                )
    if failed:
        raise typer.Exit(EXIT_FAILED)


@app.command()
def test(
    paths: Annotated[list[Path], typer.Argument(help="Test files, pack files (their <name>.tests.yaml) or directories.")],
    json_out: Annotated[bool, typer.Option("--json", help="Print machine-readable results.")] = False,
) -> None:
    """Run the YAML test cases shipped beside packs; print a pass/fail table. Exit 1 on any failure."""
    files = discover_tests(paths)
    if not files:
        die(f"no test files found in {', '.join(map(str, paths))} (expected *.tests.yaml)")
    rows: list[dict[str, Any]] = []
    failed = False
    for f in files:
        try:
            results = run_test_file(f)
        except PolicyError as exc:
            for line in exc.errors:
                err_console.print(Text(line, style="red"))
            failed = True
            continue
        for case in results:
            failures = [msg for s in case.steps for msg in (f"step {s.index + 1}: {m}" for m in s.failures)]
            failed = failed or not case.passed
            rows.append(
                {
                    "file": str(f),
                    "case": case.name,
                    "where": case.where,
                    "passed": case.passed,
                    "steps": len(case.steps),
                    "failures": failures,
                }
            )
    if json_out:
        print_json({"ok": not failed, "cases": rows})
    else:
        table = Table(title="policy tests", show_lines=False)
        table.add_column("result")
        table.add_column("case")
        table.add_column("steps", justify="right")
        table.add_column("where / why")
        for r in rows:
            why = "\n".join(r["failures"]) if r["failures"] else str(r["where"])
            table.add_row(
                Text("PASS", style="green") if r["passed"] else Text("FAIL", style="bold red"),
                str(r["case"]),
                str(r["steps"]),
                Text(why),
            )
        console.print(table)
        passed = sum(1 for r in rows if r["passed"])
        console.print(f"{passed} passed, {len(rows) - passed} failed")
    if failed:
        raise typer.Exit(EXIT_FAILED)


class _NotJson(ValueError):
    pass


def _no_constant(name: str) -> Any:
    raise _NotJson(f"{name} is not a JSON value (non-finite numbers are rejected)")


def _strict_json(line: str) -> Any:
    """Standard JSON only: ``NaN`` / ``Infinity`` literals (which Python's ``json`` accepts) and
    nesting too deep to parse are errors, not values."""
    try:
        return json.loads(line, parse_constant=_no_constant)
    except RecursionError:
        raise _NotJson(f"nested too deeply (an action may nest at most {MAX_PAYLOAD_DEPTH} levels)") from None


@app.command()
def explain(
    policy: Annotated[list[Path], typer.Option("--policy", "-p", help="Policy pack file(s).")],
    actions: Annotated[
        Path, typer.Option("--actions", "-a", help="JSON Lines of actions, judged in order in one process ('-' for stdin).")
    ],
    fmt: Annotated[str, typer.Option("--format", "-f", help="json (one decision per line) or text.")] = "json",
) -> None:
    """Judge a file of actions and print one decision per line. Exit 0 whatever the verdicts."""
    if fmt not in ("json", "text"):
        die(f"--format must be json or text, not {fmt!r}")
    try:
        loaded = load_policy(policy)
        gov = Governor(loaded, planes=planes_for(loaded, **dry_run_options()))
    except PolicyError as exc:
        for line in exc.errors:
            err_console.print(Text(line, style="red"))
        raise typer.Exit(EXIT_BAD_INPUT) from None
    try:
        text = typer.get_text_stream("stdin").read() if str(actions) == "-" else actions.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        die(f"{actions}: cannot read: {exc}")
    parsed: list[Action] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            parsed.append(Action.model_validate(_strict_json(line)))
        except json.JSONDecodeError as exc:
            die(f"{actions}:{n}: not JSON: {exc.msg} (column {exc.colno})")
        except _NotJson as exc:
            die(f"{actions}:{n}: not JSON: {exc}")
        except ValidationError as exc:
            first = exc.errors()[0]
            loc = ".".join(str(p) for p in first["loc"]) or "action"
            die(f"{actions}:{n}: invalid action: {loc}: {str(first['msg']).removeprefix('Value error, ')}")
    for action in parsed:
        decision = gov.decide(action)
        if fmt == "json":
            print_json(decision.summary())
        else:
            style = "green" if decision.verdict.proceeds else "red" if decision.verdict.value == "block" else "yellow"
            console.print(
                Text(f"{decision.verdict.value:<17}", style=style)
                + Text(f" {', '.join(decision.rule_ids)}  {decision.explanation}")
            )
