"""Random bytes from the OS's CSPRNG, drawn 4 KiB at a time.

Action ids and ledger record ids / salts need 16–32 random bytes each, several per governed call;
one ``getrandom`` system call per id cost more than building the rest of the action. The pool is
process-wide (frameworks run tools in fresh threads, so a per-thread pool would refill on every
call) and emptied in a forked child, so no two processes ever hand out the same bytes.
"""

from __future__ import annotations

import os
import threading

__all__ = ["random_bytes"]

_POOL = bytearray()
_LOCK = threading.Lock()
_REFILL = 4096


def random_bytes(n: int) -> bytes:
    """``n`` (≤ 4096) bytes of ``os.urandom`` quality, never handed out twice."""
    with _LOCK:
        if len(_POOL) < n:
            _POOL.extend(os.urandom(_REFILL))
        out = bytes(_POOL[-n:])
        del _POOL[-n:]
    return out


def _forget() -> None:
    global _LOCK
    _LOCK = threading.Lock()  # (a lock another thread held at fork time stays held in the child)
    _POOL.clear()


os.register_at_fork(after_in_child=_forget)
