"""Session-store benchmarks (issue: one call protocol + shared session state).

``adjudication_1000_rules_sql_sessions``: the ``adjudication_1000_rules`` pack and action, decided with
the session state in memory, in a SQLite file and in PostgreSQL, in one run (p50 / p99 of each and the
ratio to in memory). Every decision takes the session's lock, reads its version and commits its step.

``session_store_throughput``: 8 worker processes on one PostgreSQL server deciding as fast as they
can for a few seconds, each in its own sessions (the common case), then all 8 on ONE session (the
worst case: every decision serialized by the session lock); decisions per second in total.
"""

from __future__ import annotations

import multiprocessing as mp
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import yaml

from bench._pg import SKIPPED, pg_url
from bench.bench_core import _pack
from fiveplane import Action, Governor, InMemorySessionStore, MediationPoint, SqlSessionStore, Verdict

N_MEMORY = 20_000
N_SQL = 2_000
WARMUP = 200
PRINCIPAL = ({"kind": "user", "id": "u", "roles": ["analyst"]}, {"kind": "agent", "id": "bench-agent"})


def _action(session: str) -> Action:
    return Action(
        point=MediationPoint.TOOL_CALL,
        tool="svc3.op23",
        arguments={"amount": 10, "memo": "x"},
        principal=PRINCIPAL,  # type: ignore[arg-type]
        session_id=session,
    )


def _measure(gov: Governor, n: int) -> dict[str, float]:
    action = _action(f"bench-{uuid.uuid4().hex[:8]}")
    for _ in range(WARMUP):
        gov.decide(action)
    assert gov.decide(action).verdict is Verdict.ALLOW
    samples = []
    clock = time.perf_counter_ns
    for _ in range(n):
        t = clock()
        gov.decide(action)
        samples.append(clock() - t)
    samples.sort()
    return {
        "p50_us": round(samples[n // 2] / 1000, 1),
        "p99_us": round(samples[int(n * 0.99)] / 1000, 1),
        "mean_us": round(statistics.fmean(samples) / 1000, 1),
    }


def _pack_file(d: str) -> Path:
    path = Path(d) / "bench.yaml"
    path.write_text(yaml.safe_dump(_pack(True), sort_keys=False))
    return path


def adjudication_sql_sessions() -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as d:
        pack = _pack_file(d)
        mem = _measure(Governor(pack, sessions=InMemorySessionStore()), N_MEMORY)
        out.update({f"memory_{k}": v for k, v in mem.items()})
        sqlite = _measure(Governor(pack, sessions=SqlSessionStore(f"sqlite:///{Path(d) / 'sessions.db'}")), N_SQL)
        out.update({f"sqlite_{k}": v for k, v in sqlite.items()})
        out["sqlite_vs_memory_p50"] = round(sqlite["p50_us"] / mem["p50_us"], 1)
        url = pg_url()
        if url is None:
            out["postgres"] = SKIPPED["skipped"]
        else:
            pg = _measure(Governor(pack, sessions=SqlSessionStore(url)), N_SQL)
            out.update({f"postgres_{k}": v for k, v in pg.items()})
            out["postgres_vs_memory_p50"] = round(pg["p50_us"] / mem["p50_us"], 1)
    out["decisions_memory"], out["decisions_sql"] = N_MEMORY, N_SQL
    return out


def _worker(pack: str, url: str, session: str | None, start: Any, seconds: float, counts: Any, i: int) -> None:
    gov = Governor(pack, sessions=SqlSessionStore(url))
    own = session or f"tp-{uuid.uuid4().hex[:8]}"
    gov.decide(_action(own))  # connect, create tables, warm the caches
    start.wait()
    done = 0
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        gov.decide(_action(own))
        done += 1
    counts[i] = done


def _throughput(pack: Path, url: str, procs: int, seconds: float, shared_session: str | None) -> float:
    ctx = mp.get_context("spawn")
    start = ctx.Event()
    counts = ctx.Array("i", procs)
    workers = [
        ctx.Process(target=_worker, args=(str(pack), url, shared_session, start, seconds, counts, i)) for i in range(procs)
    ]
    for w in workers:
        w.start()
    time.sleep(8)  # let every worker import, connect and warm up before the clock starts
    start.set()
    for w in workers:
        w.join(120)
    return sum(counts[:]) / seconds


def session_store_throughput() -> dict[str, Any]:
    url = pg_url()
    if url is None:
        return dict(SKIPPED)
    procs, seconds = 8, 5.0
    with tempfile.TemporaryDirectory() as d:
        pack = _pack_file(d)
        independent = _throughput(pack, url, procs, seconds, None)
        one = _throughput(pack, url, procs, seconds, f"tp-shared-{uuid.uuid4().hex[:8]}")
    return {
        "processes": procs,
        "seconds": seconds,
        "own_sessions_decisions_per_s": round(independent),
        "one_session_decisions_per_s": round(one),
    }


BENCHMARKS = {
    "adjudication_1000_rules_sql_sessions": adjudication_sql_sessions,
    "session_store_throughput": session_store_throughput,
}
