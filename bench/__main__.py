"""Run every benchmark, print a table and write ``.bench/results.json`` (name → figures).

Usage: ``python -m bench [NAME-SUBSTRING ...]``.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import platform
import sys
import time
import traceback
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.progress import Progress
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent


def collect() -> dict[str, Any]:
    found: dict[str, Any] = {}
    for mod in sorted(m.name for m in pkgutil.iter_modules([str(Path(__file__).parent)]) if m.name.startswith("bench_")):
        module = importlib.import_module(f"bench.{mod}")
        for name, fn in getattr(module, "BENCHMARKS", {}).items():
            if name in found:
                raise SystemExit(f"benchmark {name!r} defined twice")
            found[name] = fn
    return found


def main(argv: list[str]) -> int:
    console = Console()
    benches = collect()
    if argv:
        benches = {k: v for k, v in benches.items() if any(a in k for a in argv)}
    results: dict[str, Any] = {}
    failed = 0
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("benchmarks", total=len(benches))
        for name, fn in benches.items():
            progress.update(task, description=name)
            t0 = time.perf_counter()
            try:
                figures = dict(fn())
            except Exception as exc:  # a failing benchmark is reported, the others still run
                failed += 1
                figures = {"error": f"{type(exc).__name__}: {exc}"}
                traceback.print_exc()
            figures["wall_s"] = round(time.perf_counter() - t0, 3)
            results[name] = figures
            progress.advance(task)
    table = Table(title="fiveplane benchmarks")
    table.add_column("benchmark")
    table.add_column("figures")
    for name, figures in results.items():
        table.add_row(name, ", ".join(f"{k}={v}" for k, v in figures.items()))
    console.print(table)
    out = ROOT / ".bench" / "results.json"
    out.parent.mkdir(exist_ok=True)
    meta = {
        "python": sys.version.split()[0],
        "machine": platform.machine(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    out.write_text(json.dumps({**results, "_meta": meta}, indent=2) + "\n")
    console.print(f"wrote {out.relative_to(ROOT)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
