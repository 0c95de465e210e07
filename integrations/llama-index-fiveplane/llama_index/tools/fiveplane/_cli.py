"""``fiveplane demo --framework llamaindex``: the LlamaIndex demo printed as a timeline.

The core CLI imports this module lazily (the core must import without LlamaIndex installed) and
calls :func:`run_demo_cli`; the exit codes follow the core CLI (0 ok, 2 unusable input).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from rich.console import Console
from rich.text import Text

from fiveplane import Governor, PolicyError

from ._demo import build_demo_governor, demo_policy_path, run_demo

__all__ = ["run_demo_cli"]

_STYLE = {
    "allow": "green",
    "modify": "cyan",
    "narrow": "cyan",
    "defer": "yellow",
    "require_approval": "yellow",
    "block": "bold red",
}


def run_demo_cli(policy: Path | None = None, *, json_out: bool = False, governor: Governor | None = None) -> int:
    """Run the demo and print its timeline (``json_out``: one JSON object per line). Returns the exit code.

    ``governor`` replaces the default one (the ledger and the real planes can be plugged in this way).
    """
    out = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)
    if governor is None:
        try:
            path = policy or demo_policy_path()
            governor = build_demo_governor(path)
        except FileNotFoundError as exc:
            err.print(Text(f"error: {exc}", style="red"))
            return 2
        except PolicyError as exc:
            for line in exc.errors:
                err.print(Text(line, style="red"))
            return 2
    result = run_demo(governor)
    if json_out:
        for step in result.steps:
            sys.stdout.write(json.dumps(step.to_json(), ensure_ascii=False) + "\n")
        return 0
    pol = governor.policy
    out.print(Text("fiveplane demo: LlamaIndex RAG pipeline and agent (offline, scripted mock LLMs)", style="bold"))
    out.print(Text(f"policy {pol.name}@{pol.version} {pol.hash}", style="dim"))
    phase = None
    for s in result.steps:
        if s.phase != phase:
            phase = s.phase
            title = (
                "phase 1: query engine over a governed retriever"
                if phase == "rag"
                else "phase 2: FunctionAgent with governed tools"
            )
            out.print(Text(title, style="bold underline"))
        if s.kind == "note":
            out.print(Text(f"{s.number:>2}. ") + Text(f"{'·':<17}", style="dim") + Text(f" {s.title}", style="italic"))
            if s.explanation:
                out.print(Text(f"      {s.explanation}", style="dim"))
            continue
        v = s.verdict or ""
        head = Text(f"{s.number:>2}. ") + Text(f"{v:<17}", style=_STYLE.get(v, "")) + Text(f" {s.title}")
        head += Text(f"  [{s.point}{' ' + s.tool if s.tool else ''} · {', '.join(s.rule_ids)}]", style="dim")
        out.print(head)
        if v != "allow":
            out.print(Text(f"      {s.explanation}"))
    out.print(Text(f"answer (query engine): {result.rag_answer}", style="bold"))
    out.print(Text(f"answer (agent): {result.agent_answer}", style="bold"))
    ran = ", ".join(f"{name}({', '.join(f'{k}={v!r}' for k, v in args.items())})" for name, args in result.executed)
    out.print(Text(f"tools that ran: {ran or 'none'}", style="dim"))
    return 0
