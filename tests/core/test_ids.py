"""Action ids (and ledger record ids and salts): CSPRNG bytes from the process pool (`_entropy`), which
a forked child never shares."""

from __future__ import annotations

import os
import re
import threading

import pytest

from fiveplane import Action, MediationPoint
from fiveplane._actions import _new_id


def test_ids_are_distinct_hex_across_threads() -> None:
    out: list[list[str]] = [[] for _ in range(4)]

    def draw(bucket: list[str]) -> None:
        bucket.extend(_new_id() for _ in range(5_000))

    threads = [threading.Thread(target=draw, args=(b,)) for b in out]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [i for b in out for i in b]
    assert len(set(ids)) == len(ids) == 20_000
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)
    a = Action(point=MediationPoint.INPUT, content="x", principal=({"kind": "user", "id": "u"},), session_id="s")  # type: ignore[arg-type]
    assert re.fullmatch(r"[0-9a-f]{32}", a.action_id)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_does_not_reuse_the_parents_pool() -> None:
    _new_id()  # the pool is filled in the parent
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        os.write(w, ",".join(_new_id() for _ in range(50)).encode())
        os._exit(0)
    os.close(w)
    os.waitpid(pid, 0)
    child = set(os.read(r, 65536).decode().split(","))
    os.close(r)
    parent = {_new_id() for _ in range(50)}
    assert len(child) == 50 and not child & parent
