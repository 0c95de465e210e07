"""A PostgreSQL server for the benchmarks: ``$FIVEPLANE_BENCH_PG_URL`` / ``$FIVEPLANE_TEST_PG_URL``, else a
throwaway loopback cluster started once per ``make bench`` run (scripts/pg-test-cluster.sh) and
stopped at exit. ``None`` when neither is possible (the PostgreSQL figures then say why they are missing)."""

from __future__ import annotations

import atexit
import functools
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "scripts" / "pg-test-cluster.sh"


@functools.cache
def pg_url() -> str | None:
    url = os.environ.get("FIVEPLANE_BENCH_PG_URL") or os.environ.get("FIVEPLANE_TEST_PG_URL")
    if url:
        return url
    try:
        out = subprocess.run([str(SCRIPT), "start"], check=True, capture_output=True, text=True, timeout=600).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    env = dict(line.removeprefix("export ").split("=", 1) for line in out.splitlines() if line.startswith("export "))
    if "FIVEPLANE_PG_TEST_DIR" in env:
        atexit.register(
            lambda: subprocess.run([str(SCRIPT), "stop", env["FIVEPLANE_PG_TEST_DIR"]], check=False, capture_output=True)
        )
    return env.get("FIVEPLANE_TEST_PG_URL")


SKIPPED = {"skipped": "no PostgreSQL: set FIVEPLANE_BENCH_PG_URL, or run as root so scripts/pg-test-cluster.sh can start one"}
