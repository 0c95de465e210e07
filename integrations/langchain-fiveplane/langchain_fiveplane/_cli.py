"""``fiveplane demo --framework langchain`` and ``fiveplane coverage``: the adapter's side of the CLI.

The core CLI imports :func:`run_demo_cli` and :func:`run_coverage_cli` lazily (the core must import
without LangChain installed) and exits with the code they return (0 ok, 1 ungoverned tools,
2 unusable input). ``python -m langchain_fiveplane demo | coverage`` runs the same commands without
the core wiring (:data:`app`).

Importing this module is cheap: LangChain is imported only when a command runs.
"""

from __future__ import annotations

import importlib
import inspect
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table
from rich.text import Text

from fiveplane import console_url
from fiveplane._cli._common import EXIT_BAD_INPUT, EXIT_FAILED, console, die, err_console, print_json

if TYPE_CHECKING:
    from fiveplane import Governor

    from ._demo import DemoResult

__all__ = ["app", "coverage", "demo", "run_coverage_cli", "run_demo_cli"]

_STYLE = {
    "allow": "green",
    "modify": "cyan",
    "narrow": "cyan",
    "defer": "yellow",
    "require_approval": "yellow",
    "block": "bold red",
}
DEMO_ORIGIN = "demo.fiveplane.local/langchain"


def _default_policy() -> Path:
    rel = Path("policies/examples/sales-support.yaml")
    if rel.exists():
        return rel
    for parent in Path(__file__).resolve().parents:
        if (parent / rel).exists():
            return parent / rel
    die(f"{rel} not found; run from the repository root or pass --policy")


class _Evidence:
    """The ledger of the demo, when the ledger is available: recreated per run, signed, verified."""

    def __init__(self, directory: Path, ledger: Any = None) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.receipt_file = directory / "langchain-demo-receipt.tlog-proof"
        self.key_pub = directory / "langchain-demo.key.pub"
        self.owned = ledger is None
        if ledger is not None:  # the caller's ledger (a Governor handed in): verify with its recorded keys
            self.ledger, self.verifier, self.url = ledger, None, str(getattr(ledger, "url", "the caller's ledger"))
            return
        from fiveplane._ledger import NoteVerifier, generate_signing_key, load_signing_key, open_ledger

        self.db = directory / "langchain-demo.db"
        for suffix in ("", "-wal", "-shm"):
            Path(f"{self.db}{suffix}").unlink(missing_ok=True)
        self.key_file = directory / "langchain-demo.key"
        if not self.key_file.exists():
            generate_signing_key(self.key_file, DEMO_ORIGIN)
        signer = load_signing_key(self.key_file)
        self.verifier = NoteVerifier.parse(signer.verifier_key())
        self.url = f"sqlite:///{self.db}"
        self.ledger = open_ledger(self.url, key=signer, checkpoint_interval=None)

    def record_approval(self, kind: str, payload: dict[str, Any]) -> None:
        self.ledger.record(kind, payload)

    def finish(self, result: DemoResult) -> dict[str, Any]:
        from fiveplane._ledger import TimelineFilter

        try:
            self.ledger.flush()
            cp = self.ledger.checkpoint()
            report = self.ledger.verify(keys=[self.verifier]) if self.verifier is not None else self.ledger.verify()
            change = next(iter(result.action_ids("contracts.update_status")[-1:]), None)
            out: dict[str, Any] = {
                "url": self.url,
                "entries": report.size,
                "verified": report.ok,
                "problems": [str(p) for p in report.problems],
                "checkpoint": (cp.note or "").splitlines()[:3],
                "timeline": [
                    {"seq": r.seq, "kind": r.kind, "tool": r.meta.get("tool"), "verdict": r.meta.get("verdict")}
                    for r in self.ledger.timeline(TimelineFilter(session=result.session_id), limit=None)
                ],
            }
            if change is not None:
                seq = next(r.seq for r in self.ledger.records(change) if r.kind == "decision")
                self.receipt_file.write_text(self.ledger.receipt(seq).encode())
                out["receipt"] = {
                    "action_id": change,
                    "seq": seq,
                    "file": str(self.receipt_file),
                    "key": str(self.verifier) if self.verifier is not None else None,
                }
            return out
        finally:
            self.close()

    def close(self) -> None:
        if self.owned:
            self.ledger.close()


def _open_evidence(directory: Path) -> tuple[_Evidence | None, str | None]:
    try:
        return _Evidence(directory), None
    except Exception as exc:  # noqa: BLE001 - the ledger is optional for the demo
        return None, f"{type(exc).__name__}: {exc}"


def _governor(path: Path, db: str, evidence: _Evidence | None) -> tuple[Governor, str]:
    from fiveplane import PolicyError

    from ._demo import build_demo_governor

    try:
        return build_demo_governor(
            path,
            db,
            evidence=evidence.ledger if evidence else None,
            record=evidence.record_approval if evidence else None,
        )
    except PolicyError as exc:
        for line in exc.errors:
            err_console.print(Text(line, style="red"))
        raise typer.Exit(EXIT_BAD_INPUT) from None


def _chat_model(spec: str) -> Any:
    try:
        from langchain.chat_models import init_chat_model

        return init_chat_model(spec)
    except Exception as exc:  # noqa: BLE001 - any provider problem is bad input here
        die(
            f"--model {spec}: {type(exc).__name__}: {exc}\n"
            "  give provider:name (e.g. openai:gpt-4.1-mini), install the provider package "
            "(pip install langchain-openai) and set its API key"
        )


def _print_timeline(result: DemoResult) -> None:
    for e in result.events:
        if e.kind == "decision":
            v = e.verdict or ""
            dim = e.point in ("model_output", "tool_result") and v == "allow"
            head = (
                Text(f"{e.number:>2}. ")
                + Text(f"{v:<17}", style=_STYLE.get(v, ""))
                + Text(f" {e.title}", style="dim" if dim else "")
            )
            head += Text(f"  [{e.point} · {', '.join(e.rule_ids)}]", style="dim")
            console.print(head)
            if not dim:
                console.print(Text(f"      {e.explanation}"))
            if e.outcome and e.outcome != "runs":
                console.print(Text(f"      outcome: {e.outcome}", style="dim"))
            token = e.detail.get("token")
            if isinstance(token, dict) and token.get("token_id"):
                where = token.get("resource") or token.get("connector")
                scope = f"{token.get('operation')} {token.get('tool')} on {where}, expires {token.get('expires_at')}"
                console.print(Text(f"      token {str(token['token_id'])[:12]}…: {scope}", style="dim"))
        elif e.kind == "answer":
            console.print(Text(f"{e.number:>2}. answer            ", style="bold") + Text(e.explanation))
        else:
            console.print(Text(f"{e.number:>2}. {e.kind:<17}", style="magenta") + Text(f" {e.title}"))
            console.print(Text(f"      {e.explanation}", style="dim"))


def _run_demo(
    policy: Path | None,
    *,
    json_out: bool,
    model: str | None,
    db: str | None,
    directory: Path,
    evidence: bool,
    governor: Governor | None,
) -> None:
    from ._demo import run_langchain_demo

    chat_model = _chat_model(model) if model else None
    ev: _Evidence | None = None
    why_not: str | None = "--no-evidence"
    if governor is not None:  # the caller's Governor: its planes, its approvals, its evidence
        planes_note = "planes: " + (", ".join(p.name for p in governor.planes) or "reasoning only")
        if evidence and governor.evidence is not None and hasattr(governor.evidence, "verify"):
            ev, why_not = _Evidence(directory, governor.evidence), None
        elif evidence:
            why_not = "the Governor has no ledger as its evidence sink"
        db = db or "the caller's approval store"
    else:
        path = policy or _default_policy()
        if evidence:
            ev, why_not = _open_evidence(directory)
        if db is None:
            directory.mkdir(parents=True, exist_ok=True)
            db = ev.url if ev is not None else f"sqlite:///{directory / 'langchain-demo-state.db'}"
        try:
            governor, planes_note = _governor(path, db, ev)
        except (typer.Exit, SystemExit):
            raise
        except Exception as exc:  # noqa: BLE001 - a database or key problem is bad input here
            if ev is not None:
                ev.close()
            die(f"cannot set up the demo's Governor ({db}): {type(exc).__name__}: {exc}")
    try:
        result = run_langchain_demo(governor, model=chat_model)
    except BaseException:
        if ev is not None:
            ev.close()
        raise
    report = ev.finish(result) if ev is not None else None
    if json_out:
        for e in result.events:
            print_json(e.to_json())
        print_json(
            {
                "evidence": report or {"unavailable": why_not},
                "executed": result.executed,
                "tokens": result.tokens,
                "session_id": result.session_id,
            }
        )
        return
    console.print(
        Text("fiveplane demo: the reference scenario as a LangChain agent (create_agent + FiveplaneMiddleware)", style="bold")
    )
    console.print(Text(f"policy {governor.policy.name}@{governor.policy.version} {governor.policy.hash}", style="dim"))
    console.print(Text(f"model: {model or 'scripted (offline)'} · {planes_note} · session {result.session_id}", style="dim"))
    _print_timeline(result)
    console.print(Text("\ntools that really ran:", style="bold"))
    for call in result.executed:
        token = result.tokens.get(call)
        console.print(
            Text(f"  {call}") + Text(f"  with token {token[:12]}…" if token else "  (no capability token)", style="dim")
        )
    console.print(Text("the CRM note as the model read it:", style="bold"))
    console.print(Text(f"  {result.notes_seen_by_model}"))
    console.print(Text("\nevidence:", style="bold"))
    if report is None:
        console.print(Text(f"  no ledger ({why_not})", style="yellow"))
    else:
        kinds: dict[str, int] = {}
        for r in report["timeline"]:
            kinds[r["kind"]] = kinds.get(r["kind"], 0) + 1
            if r["kind"] == "intent":
                continue  # each decision's intent record; counted below
            bits = " ".join(str(x) for x in (r["tool"], r["verdict"]) if x)
            console.print(Text(f"  #{r['seq']:<4} {r['kind']:<22} {bits}", style="dim"))
        console.print(Text("  ledger: " + ", ".join(f"{n} {k}" for k, n in kinds.items()), style="dim"))
        ok = (
            Text("verified", style="green")
            if report["verified"]
            else Text("FAILED: " + "; ".join(report["problems"]), style="bold red")
        )
        console.print(Text(f"  audit verify: {report['entries']} entries, ") + ok)
        if "receipt" in report:
            rc = report["receipt"]
            console.print(Text(f"  receipt for the contract change's decision (#{rc['seq']}) written to {rc['file']}"))
            if rc.get("key"):
                console.print(
                    Text(
                        f"  check it offline: fiveplane audit verify-receipt {rc['file']} --key {ev.key_pub if ev else ''}",
                        style="dim",
                    )
                )
    console.print(Text(f"  approvals: fiveplane approvals list --db {db}", style="dim"))
    console.print(
        Text(
            f"  or in a browser: fiveplane console --db {db} --policy PACK, then open {console_url()} "
            "(a pause prints its own link)",
            style="dim",
        )
    )


def _exit_code(fn: Callable[[], None]) -> int:
    try:
        fn()
    except typer.Exit as exc:
        return int(exc.exit_code)
    return 0


def run_demo_cli(
    policy: Path | None = None,
    *,
    json_out: bool = False,
    model: str | None = None,
    db: str | None = None,
    directory: Path | str = ".fiveplane",
    evidence: bool = True,
    governor: Governor | None = None,
) -> int:
    """``fiveplane demo --framework langchain``: run the scenario as a LangChain agent and print it.

    Args:
        policy: the pack (default: ``policies/examples/sales-support.yaml``).
        json_out: one JSON object per step, then one with the evidence.
        model: ``provider:name`` of a real chat model (``init_chat_model``); default: the scripted one.
        db: approvals, grants and revocations (default: the demo's own SQLite file under ``directory``).
        directory: where the demo's ledger, signing key and receipt go (the ledger is recreated each run).
        evidence: record into a ledger, verify it and cut a receipt for the contract change.
        governor: use this Governor (its planes, approvals and ledger) instead of building the demo's.

    Returns the exit code: 0, or 2 for unusable input (a bad pack, a model that cannot be loaded).
    """
    return _exit_code(
        lambda: _run_demo(
            policy, json_out=json_out, model=model, db=db, directory=Path(directory), evidence=evidence, governor=governor
        )
    )


def demo(
    policy: Annotated[
        Path | None, typer.Option("--policy", "-p", help="Policy pack (default: policies/examples/sales-support.yaml).")
    ] = None,
    model: Annotated[
        str | None,
        typer.Option("--model", help="provider:name of a real chat model (init_chat_model); default: scripted, offline."),
    ] = None,
    db: Annotated[
        str | None, typer.Option("--db", help="Approvals / grants database (default: the demo's own file under --dir).")
    ] = None,
    directory: Annotated[Path, typer.Option("--dir", help="Where the demo keeps its ledger, key and receipt.")] = Path(
        ".fiveplane"
    ),
    evidence: Annotated[
        bool, typer.Option("--evidence/--no-evidence", help="Record into a fresh ledger, verify it, cut a receipt.")
    ] = True,
    json_out: Annotated[bool, typer.Option("--json", help="Print one JSON object per step, then the evidence.")] = False,
) -> None:
    """Run the reference scenario as a LangChain agent offline and print its timeline."""
    raise typer.Exit(run_demo_cli(policy, json_out=json_out, model=model, db=db, directory=directory, evidence=evidence))


# ---- coverage -----------------------------------------------------------------------------------


def _load(target: str) -> Any:
    module_name, sep, attr = target.partition(":")
    if not sep or not module_name or not attr:
        die(f"{target!r}: give MODULE:OBJECT, e.g. myapp.agents:agent")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        obj: Any = importlib.import_module(module_name)
    except Exception as exc:  # noqa: BLE001 - any import problem is bad input here
        die(f"cannot import {module_name}: {type(exc).__name__}: {exc}")
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            die(f"{module_name} has no {attr}")
    if inspect.isfunction(obj) and not any(
        p.default is inspect.Parameter.empty and p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        for p in inspect.signature(obj).parameters.values()
    ):
        factory: Callable[[], Any] = obj
        obj = factory()  # a factory of the agent
    return obj


def _run_coverage(target: str, policy: Path | None, json_out: bool) -> None:
    from fiveplane import Governor, PolicyError

    from ._coverage import check_coverage

    obj = _load(target)
    gov = None
    if policy is not None:
        try:
            gov = Governor(policy)
        except PolicyError as exc:
            for line in exc.errors:
                err_console.print(Text(line, style="red"))
            raise typer.Exit(EXIT_BAD_INPUT) from None
    try:
        report = check_coverage(obj, gov)
    except TypeError as exc:
        die(str(exc))
    if json_out:
        print_json(report.to_json())
    else:
        table = Table(title=f"mediation coverage of {target}")
        for col in ("tool", "catalog", "status", "governed by", "class", "why"):
            table.add_column(col, overflow="fold")
        style = {"governed": "green", "unknown_tool": "yellow", "ungoverned": "bold red", "provider_side": "bold red"}
        for t in report.tools:
            table.add_row(
                Text(t.name),
                Text(t.catalog_tool or "-"),
                Text(t.status, style=style[t.status]),
                Text(", ".join(t.governed_by) or "-"),
                Text(t.action_class or "-"),
                Text(t.reason),
            )
        console.print(table)
        for w in report.warnings:
            console.print(Text(f"warning: {w}", style="yellow"))
        n = len(report.ungoverned)
        console.print(Text(f"{len(report.tools) - n} governed, {n} ungoverned", style="green" if not n else "bold red"))
    if not report.ok:
        raise typer.Exit(EXIT_FAILED)


def run_coverage_cli(target: str, *, policy: Path | None = None, json_out: bool = False) -> int:
    """``fiveplane coverage MODULE:OBJECT``: print which tools are not governed.

    Returns the exit code: 0 all governed, 1 some tool is ungoverned, 2 unusable input.
    """
    return _exit_code(lambda: _run_coverage(target, policy, json_out))


def coverage(
    target: Annotated[
        str, typer.Argument(help="MODULE:OBJECT — an agent, a ToolNode, a list of tools, or a function returning one.")
    ],
    policy: Annotated[
        Path | None, typer.Option("--policy", "-p", help="Check catalog names against this pack (default: the agent's Governor).")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Report which tools of an agent are not governed. Exit 1 if any tool is ungoverned."""
    raise typer.Exit(run_coverage_cli(target, policy=policy, json_out=json_out))


app = typer.Typer(
    name="python -m langchain_fiveplane",
    help="The LangChain adapter's commands (also `fiveplane demo` and `fiveplane coverage`).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.command("demo")(demo)
app.command("coverage")(coverage)
