"""Run every notebook headless on a fresh demo ledger, as ``make notebooks`` and CI do.

Usage: ``python notebooks/run.py [--db URL] [--out DIR] [NAME ...]``

Without ``--db`` it records the demo scenario (plus a shadow-mode policy trial) into a new ledger
under ``<out>/ledger``, offline. Each notebook runs in a fresh kernel (nbclient, matplotlib's Agg
backend) with ``FIVEPLANE_NOTEBOOK_DB`` and ``FIVEPLANE_NOTEBOOK_OUT`` set; executed copies go to
``<out>/`` and figures to ``<out>/figures/``. The notebooks in git keep their outputs cleared.
Exit 0 when every notebook ran and wrote at least one figure, 1 otherwise, 2 for bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", help="ledger database URL (default: build a fresh demo ledger)")
    parser.add_argument("--out", type=Path, default=ROOT / ".notebooks-out", help="where executed notebooks and figures go")
    parser.add_argument("--timeout", type=int, default=600, help="seconds per cell")
    parser.add_argument("names", nargs="*", help="only notebooks whose file name contains one of these")
    args = parser.parse_args(argv)
    try:
        import nbclient
        import nbformat
        from jupyter_client import KernelManager
    except ImportError:
        print("running the notebooks needs: pip install 'fiveplane[notebooks]'", file=sys.stderr)
        return 2

    out: Path = args.out.resolve()
    figures = out / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    db = args.db
    if db is None:
        from fiveplane._export import build_sample_ledger

        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the data plane's notes about the small spaCy model and the pseudonym key
            sample = build_sample_ledger(out / "ledger", policy=ROOT / "policies" / "examples" / "sales-support.yaml")
        db = sample.url
        print(f"demo ledger: {db} ({time.perf_counter() - t0:.1f}s)")
    os.environ["FIVEPLANE_NOTEBOOK_DB"] = db
    os.environ["FIVEPLANE_NOTEBOOK_OUT"] = str(figures)
    os.environ["MPLBACKEND"] = "Agg"
    os.environ.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")

    books = sorted(p for p in HERE.glob("*.ipynb") if not args.names or any(n in p.name for n in args.names))
    if not books:
        print("no notebooks matched", file=sys.stderr)
        return 2
    failed = 0
    for path in books:
        for old in figures.glob(f"{path.stem.split('-')[0]}-*.png"):
            old.unlink()  # each notebook names its figures after its number: a re-run must make them again
        before = set(figures.glob("*.png"))
        nb = nbformat.read(path, as_version=4)
        t0 = time.perf_counter()
        # the kernel talks over Unix sockets under <out>/ (no TCP port, not even on loopback)
        km = KernelManager(kernel_name="python3", transport="ipc", ip=str(out / f".kernel-{path.stem[:2]}"))
        client = nbclient.NotebookClient(
            nb,
            km=km,
            timeout=args.timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(HERE)}},
            allow_errors=False,
        )
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as exc:
            failed += 1
            print(f"FAILED {path.name}:\n{exc}", file=sys.stderr)
        except Exception as exc:  # noqa: BLE001 - a kernel that did not start is a failure of this notebook
            failed += 1
            print(f"FAILED {path.name}: {type(exc).__name__}: {exc}", file=sys.stderr)
        else:
            made = sorted(set(figures.glob("*.png")) - before)
            if not made:
                failed += 1
                print(f"FAILED {path.name}: produced no figure", file=sys.stderr)
            else:
                print(f"ok     {path.name} ({time.perf_counter() - t0:.1f}s): {', '.join(p.name for p in made)}")
        finally:
            if km.has_kernel:
                km.shutdown_kernel(now=True)
            km.cleanup_resources()
        nbformat.write(nb, out / path.name)
    print(f"{len(books) - failed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
