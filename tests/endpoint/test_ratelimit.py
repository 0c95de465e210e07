"""Rate limits kept in the database: atomic across threads and processes, SQLite and PostgreSQL."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from fiveplane._endpoint._ratelimit import RateLimitStore, RateRequest

NOW = 1_800_000_000_000_000  # µs


def test_sliding_window(tmp_path: Path) -> None:
    store = RateLimitStore(f"sqlite:///{tmp_path / 'rl.db'}")
    req = [RateRequest("r", "k", 3, 60)]
    assert all(store.acquire(req, NOW + i).ok for i in range(3))
    blocked = store.acquire(req, NOW + 10)
    assert not blocked.ok and blocked.exceeded is not None
    assert blocked.exceeded.used == 3 and 59 < blocked.exceeded.retry_after_s <= 60
    assert store.acquire(req, NOW + 60_000_001).ok  # the first one fell out of the window
    assert store.used("k", 60, NOW + 60_000_001) == 2  # NOW+2 and the new one


def test_all_or_nothing_and_release(tmp_path: Path) -> None:
    store = RateLimitStore(f"sqlite:///{tmp_path / 'rl.db'}")
    a, b = RateRequest("a", "ka", 2, 3600), RateRequest("b", "kb", 1, 3600)
    first = store.acquire([a, b], NOW)
    assert first.ok and len(first.reservations) == 2
    second = store.acquire([a, b], NOW + 1)
    assert not second.ok and second.exceeded is not None and second.exceeded.rule_id == "b"
    assert store.used("ka", 3600, NOW + 2) == 1  # nothing was taken for `a` either
    store.release(first.reservations)
    assert store.used("ka", 3600, NOW + 2) == 0 and store.acquire([a, b], NOW + 3).ok


def test_in_memory_store_and_threads() -> None:
    store = RateLimitStore("sqlite://")
    req = [RateRequest("r", "k", 25, 3600)]
    results: list[bool] = []

    def worker() -> None:
        for i in range(10):
            results.append(store.acquire(req, NOW + i).ok)

    threads = [threading.Thread(target=worker) for _ in range(5)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count(True) == 25


_WORKER = textwrap.dedent(
    """
    import sys, time
    from fiveplane._endpoint._ratelimit import RateLimitStore, RateRequest
    url, start, n = sys.argv[1], float(sys.argv[2]), int(sys.argv[3])
    store = RateLimitStore(url)
    req = [RateRequest("modifies", "agent=ops", 5, 3600), RateRequest("per-session", "session=" + sys.argv[4], 50, 3600)]
    while time.time() < start:
        time.sleep(0.001)
    ok = sum(store.acquire(req, int(time.time() * 1e6)).ok for _ in range(n))
    print(ok)
    """
)


def _run_processes(url: str, n: int = 15) -> list[int]:
    start = time.time() + 1.0
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, url, str(start), str(n), f"s{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for i in range(2)
    ]
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
        outs.append(int(out.strip()))
    return outs


@pytest.mark.slow
def test_two_processes_share_a_sqlite_limit(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'shared.db'}"
    RateLimitStore(url)._setup()
    counts = _run_processes(url)
    assert sum(counts) == 5, counts  # exactly the limit, never more, across both processes
    assert RateLimitStore(url).used("agent=ops", 3600, int(time.time() * 1e6)) == 5


def _pg_url() -> str:
    url = os.environ.get("FIVEPLANE_TEST_PG_URL")
    if not url:
        if os.environ.get("CI"):
            pytest.fail("FIVEPLANE_TEST_PG_URL is not set; PostgreSQL tests never skip under CI")
        pytest.skip("set FIVEPLANE_TEST_PG_URL to run the PostgreSQL tests")
    return url


@pytest.mark.postgres
@pytest.mark.slow
def test_two_processes_share_a_postgres_limit() -> None:
    import sqlalchemy as sa

    url = _pg_url()
    store = RateLimitStore(url)
    store._setup()
    with store.engine.begin() as conn:
        conn.execute(sa.text("DELETE FROM fiveplane_endpoint_rate_events"))
        conn.execute(sa.text("DELETE FROM fiveplane_endpoint_rate_keys"))
    counts = _run_processes(url)
    assert sum(counts) == 5, counts
    first = store.acquire([RateRequest("x", "pg-key", 1, 60)], NOW)
    assert first.ok and not store.acquire([RateRequest("x", "pg-key", 1, 60)], NOW + 1).ok
    store.release(first.reservations)
    assert store.acquire([RateRequest("x", "pg-key", 1, 60)], NOW + 2).ok
