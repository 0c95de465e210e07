"""Many processes, one ledger: crash safety under SIGKILL and concurrent appends (SQLite and PostgreSQL).

Writers are forked children (no interpreter start-up per round); each reports every record it was
told is durable as ``seq leafhash`` on a pipe, *after* the durable append returned. After the
children are killed the parent checks the ledger with a full verify and looks up every acknowledged
record: none may be missing.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import random
import signal
import time
from pathlib import Path

import pytest

from fiveplane._ledger import Ledger, NoteVerifier, open_ledger
from fiveplane._ledger import _merkle as m
from fiveplane._ledger._note import Checkpoint
from fiveplane._ledger._records import make_record
from tests.ledger.conftest import pg_url_or_skip

CRASH_ROUNDS = int(os.environ.get("FIVEPLANE_CRASH_ROUNDS", "50"))
FORK = mp.get_context("fork")


def _writer(url: str, origin: str, key: str | None, fd: int, seed: int, limit: int | None) -> None:
    """Append forever (or ``limit`` records), acknowledging durable ones on ``fd``."""
    rng = random.Random(seed)
    led = open_ledger(url, key=key, origin=origin, checkpoint_interval=0.03 if key else None)
    i = 0
    while limit is None or i < limit:
        group = [
            make_record(origin, "crash.event", {"w": seed, "i": i + k}, {"pad": "x" * rng.randint(0, 300)}, session_id=f"w{seed}")
            for k in range(rng.choice((1, 1, 1, 2, 3)))
        ]
        durable = limit is not None or rng.random() < 0.8
        seq = led.append_records(group, durable=durable)
        if durable:
            assert seq is not None
            os.write(fd, "".join(f"{seq + k} {r.leaf_hash.hex()}\n" for k, r in enumerate(group)).encode())
        i += len(group)
    led.close()
    os.write(fd, b"done\n")


def _read_acks(fd: int) -> tuple[dict[int, str], bool]:
    os.set_blocking(fd, False)
    chunks = []
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    acks: dict[int, str] = {}
    done = False
    for line in b"".join(chunks).decode().splitlines():
        if line == "done":
            done = True
            continue
        seq, h = line.split()
        acks[int(seq)] = h
    return acks, done


def _start(url: str, origin: str, key: str | None, seed: int, limit: int | None) -> tuple[mp.process.BaseProcess, int]:
    r, w = os.pipe()
    proc = FORK.Process(target=_writer, args=(url, origin, key, w, seed, limit))
    proc.start()
    os.close(w)
    return proc, r


def _check(led: Ledger, acks: dict[int, str], verifier: NoteVerifier | None) -> None:
    # a writer killed between its commit and its next checkpoint leaves an uncovered tail: reported,
    # not failed here (the next writer with the key covers it); everything else must hold, checkpoint
    # sequence numbers included (several processes sign concurrently)
    report = led.verify(keys=[verifier] if verifier else [], require_signed=False)
    assert report.ok, report.problems[:5]
    assert all(w.check == "coverage" for w in report.warnings), report.warnings
    if acks:
        rows = {int(r.seq): bytes(r.leaf_hash).hex() for r in led.store.iter_leaves(led.ledger_id, min(acks), max(acks) + 1)}
        missing = {s: h for s, h in acks.items() if rows.get(s) != h}
        assert not missing, f"acknowledged records missing or different: {sorted(missing)[:10]}"


@pytest.mark.slow
def test_sigkill_writers_never_lose_acknowledged_records(
    tmp_path: Path, key_file: Path, verifier: NoteVerifier, origin: str
) -> None:
    url = f"sqlite:///{tmp_path / 'crash.db'}"
    rng = random.Random(1234)
    all_acks: dict[int, str] = {}
    killed_mid_write = 0
    for rnd in range(CRASH_ROUNDS):
        writers = [_start(url, origin, str(key_file), rnd * 10 + k, None) for k in range(rng.choice((1, 2, 3)))]
        time.sleep(rng.uniform(0.02, 0.25))
        for proc, _ in writers:
            assert proc.pid is not None
            os.kill(proc.pid, signal.SIGKILL)
        for proc, fd in writers:
            proc.join(10)
            assert proc.exitcode == -signal.SIGKILL
            acks, done = _read_acks(fd)
            os.close(fd)
            assert not done
            killed_mid_write += bool(acks)
            assert not acks.keys() & all_acks.keys(), "a seq was acknowledged twice"
            all_acks.update(acks)
        with open_ledger(
            url, origin=origin, checkpoint_interval=None
        ) as led:  # (the first writers may have died before creating it)
            _check(led, all_acks, verifier)
    assert killed_mid_write >= CRASH_ROUNDS // 2  # the kills really landed while records were being written
    assert len(all_acks) > CRASH_ROUNDS * 10
    with open_ledger(url, origin=origin, create=False) as led:
        latest = led.latest_checkpoint()
        assert latest is not None  # checkpoints were being signed while processes died
        numbers = [Checkpoint.parse_unverified(n).number for _, _, n in led.store.checkpoints(led.ledger_id)]
        assert numbers == list(range(1, len(numbers) + 1)) and len(numbers) > CRASH_ROUNDS // 2


def _concurrent(url: str, origin: str, procs: int = 8, per_proc: int = 250) -> None:
    writers = [_start(url, origin, None, k, per_proc) for k in range(procs)]
    acks: dict[int, str] = {}
    by_writer: list[list[int]] = []
    for proc, fd in writers:
        proc.join(120)
        assert proc.exitcode == 0
        got, done = _read_acks(fd)
        os.close(fd)
        assert done and len(got) >= per_proc
        assert not acks.keys() & got.keys(), "two processes were given the same seq"
        acks.update(got)
        by_writer.append(sorted(got))
    with open_ledger(url, origin=origin, create=False) as led:
        size = led.size()
        assert sorted(acks) == list(range(size))  # contiguous: 0..size-1, every one acknowledged once
        hashes = [bytes(r.leaf_hash) for r in led.store.iter_leaves(led.ledger_id)]
        assert [h.hex() for h in hashes] == [acks[s] for s in range(size)]
        assert led.root() == m.root_hash(hashes)  # one consistent root
        _check(led, acks, None)


def test_eight_processes_append_to_one_sqlite_ledger(tmp_path: Path, origin: str) -> None:
    _concurrent(f"sqlite:///{tmp_path / 'conc.db'}", origin)


@pytest.mark.postgres
def test_eight_processes_append_to_one_postgres_ledger(origin: str) -> None:
    _concurrent(pg_url_or_skip(), origin)
