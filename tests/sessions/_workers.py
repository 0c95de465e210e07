"""Worker processes for the multi-process session suites: each is a full Governor in its own process.

A worker loads the pack, builds its planes (rate limits in the shared database, identity grants from
the pack), a :class:`~fiveplane.SqlSessionStore` and an :class:`~fiveplane.ApprovalStore` on the
shared URLs, then serves requests over a pipe: ``("decide", action_json)`` → the decision's JSON.
``("race", action_json)`` waits on the shared barrier first, so several workers decide at once.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from multiprocessing.synchronize import Barrier
from typing import Any

from fiveplane import Action, Decision

CTX = mp.get_context("spawn")


def _serve(
    conn: Connection,
    pack_files: list[str],
    sessions_url: str,
    shared_url: str,
    approvals_url: str | None,
    barrier: Barrier | None,
    slow_plane: bool,
) -> None:
    from biscuit_auth import KeyPair

    from fiveplane import ApprovalStore, BasePlane, Governor, PlaneResult, SqlSessionStore, load_policy, planes_for

    class Slow(BasePlane):
        """Holds the session lock for a long time when an action asks for it (the kill test)."""

        name = "slow"

        def evaluate(self, action: Action, ctx: Any) -> PlaneResult:
            if action.arguments.get("hold"):
                conn.send("holding")
                import time

                time.sleep(600)
            return PlaneResult(plane=self.name)

    policy = load_policy(pack_files)
    sessions = SqlSessionStore(sessions_url)
    approvals = ApprovalStore(approvals_url) if approvals_url else None

    def build(rate_limits_url: str) -> Governor:
        planes = planes_for(
            policy,
            [Slow()] if slow_plane else [],
            endpoint={"database_url": rate_limits_url},
            identity={"database": "sqlite://", "root_key": KeyPair()},
        )
        return Governor(policy, planes=planes, sessions=sessions, approvals=approvals)

    governor = build(shared_url)
    conn.send(("ready", os.getpid()))
    while True:
        msg = conn.recv()
        if msg is None:
            return
        kind, payload = msg
        if kind == "reset":  # a new test case: fresh rate-limit counters, as a fresh Governor would have
            governor = build(payload)
            conn.send("reset")
            continue
        action = Action.model_validate(payload)
        if kind == "race" and barrier is not None:
            barrier.wait(timeout=60)
        conn.send(governor.decide(action).to_json())


@dataclass
class Worker:
    process: Any
    conn: Connection
    pid: int

    def decide(self, action: Action) -> Decision:
        self.conn.send(("decide", action.to_json()))
        return Decision.model_validate(self.conn.recv())

    def reset(self, rate_limits_url: str) -> None:
        self.conn.send(("reset", rate_limits_url))
        assert self.conn.recv() == "reset"

    def send(self, kind: str, action: Action) -> None:
        self.conn.send((kind, action.to_json()))

    def result(self) -> Decision:
        return Decision.model_validate(self.conn.recv())

    def kill(self) -> None:
        os.kill(self.pid, signal.SIGKILL)
        self.process.join(10)

    def stop(self) -> None:
        try:
            self.conn.send(None)
        except (BrokenPipeError, OSError):
            pass
        self.process.join(10)
        if self.process.is_alive():
            self.process.kill()


def start_workers(
    n: int,
    pack_files: Sequence[str],
    sessions_url: str,
    shared_url: str,
    approvals_url: str | None = None,
    *,
    barrier: Barrier | None = None,
    slow_plane: bool = False,
) -> list[Worker]:
    workers = []
    for _ in range(n):
        parent, child = CTX.Pipe()
        p = CTX.Process(
            target=_serve,
            args=(child, list(pack_files), sessions_url, shared_url, approvals_url, barrier, slow_plane),
            daemon=True,
        )
        p.start()
        workers.append((p, parent))
    out = []
    for p, parent in workers:
        if not parent.poll(180):
            raise RuntimeError("a worker did not start within 180 s")
        msg = parent.recv()
        assert msg[0] == "ready", msg
        out.append(Worker(p, parent, msg[1]))
    return out


@dataclass
class RoundRobin:
    """A ``Governor``-like decider for the pack test runner: step i goes to worker i mod N."""

    workers: list[Worker]
    served: list[int] = field(default_factory=list)

    def decide(self, action: Action) -> Decision:
        i = len(self.served) % len(self.workers)
        self.served.append(self.workers[i].pid)
        return self.workers[i].decide(action)
