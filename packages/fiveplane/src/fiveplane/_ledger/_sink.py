"""The Ledger: the evidence sink the Governor records through, with group commit, checkpoints and receipts.

Producers (``record_decision``, ``record_outcome``, ``record_event`` and their async twins) build
their records (envelope, leaf hash, salted payload) once, in the calling thread, and put them in one
FIFO. Whoever commits takes everything waiting there (up to ``max_batch`` records) into **one**
transaction: a durable producer that finds no commit running commits itself, on its own thread (no
hop to another thread); otherwise the running committer's batch, or the next one, takes its records
and it is woken when they are on disk. Non-durable and async producers leave the work to one flusher
thread per ledger. While a commit runs new records pile up and go into the next one: batches grow
with load and an idle ledger commits at once (no timer to wait for).

Durability: a ``durable=True`` call returns only after its records are committed (SQLite
``synchronous=FULL``; PostgreSQL ``synchronous_commit=on``); it raises :class:`LedgerUnavailable`
when that fails or takes longer than ``durable_timeout`` — from ``record_decision`` this blocks the
governed action. A ``durable=False`` call returns once the records are queued; if a flush fails they
stay queued and are retried, and every new record is refused until they are written (fail closed),
so nothing accepted is dropped silently. Records of one call are always committed together.

Fail closed: after a failed commit, and until one succeeds, every record is committed synchronously
(``durable=False`` included), so each call learns whether the database takes it. A SQLite file that
is deleted or replaced while the ledger is open makes every later record raise (they would go to an
unlinked file); so does an unknown ledger format. ``open_ledger(..., required=True)`` makes every
record durable before its call returns (no evidence, no action — for any action class).

Checkpoints: a ledger opened with a signing key signs one after its own commits every
``checkpoint_every`` entries or ``checkpoint_interval`` seconds (whichever comes first), and at close,
on the flusher thread (never on a producer's). Each checkpoint carries its sequence number in an
extension line, so ``verify`` notices a deleted checkpoint row.
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import socket
import threading
import time
import weakref
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from .._actions import Action
from .._decisions import Decision, Verdict
from .._evidence import Outcome, OutcomeStatus
from ._errors import LedgerError, LedgerUnavailable
from ._merkle import ProofError, consistency_plan, fold_plan, hash_leaf, inclusion_plan, verify_consistency, verify_inclusion
from ._note import CHECKPOINT_NUMBER, Checkpoint, NoteError, NoteSigner, NoteVerifier, Receipt, load_signing_key, parse_note
from ._reconstruct import ActionStory, EvidenceRecord, TimelineFilter, read_records, reconstruct, timeline
from ._records import (
    PendingRecord,
    RecordKind,
    action_records,
    decode_envelope,
    make_record,
    outcome_record,
    validate_custom_kind,
)
from ._store import FORMAT_VERSION, LedgerRow, Store
from ._verify import VerifyReport, verify_store
from ._witness import CosignatureVerifier, verify_cosignatures

__all__ = ["DEFAULT_URL", "Ledger", "open_ledger"]

log = logging.getLogger("fiveplane.ledger")

DEFAULT_URL = "sqlite:///.fiveplane/ledger.db"
DEFAULT_CHECKPOINT_INTERVAL = 1.0
"""Seconds: a writer holding the key signs a checkpoint at most this long after its first uncovered commit."""
DEFAULT_CHECKPOINT_EVERY = 10_000
"""Entries: ... or as soon as this many of its entries are uncovered, whichever comes first."""
DEFAULT_LINGER = 0.05
"""Seconds a record queued for the next commit (``with_next=True``) waits for that commit before the
flusher writes it on its own."""


_ASYNC_FILE_CHECK_TTL = 0.05
"""Seconds an async record relies on the last check of the SQLite file (a fresh one runs in a thread)."""


def _format_problem(fmt: int) -> str:
    return (
        f"unknown ledger format {fmt} in the state row (this version of fiveplane reads and writes format "
        f"{FORMAT_VERSION}): the row was changed, or the ledger belongs to another version"
    )


def _process_start() -> str:
    try:
        with open(f"/proc/{os.getpid()}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode()
    except (OSError, IndexError):
        return str(int(time.time()))


def _writer_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_process_start()}"


def _writer_alive(writer: str) -> bool | None:
    """True/False for a writer process on this host; None when it can't be told (another host)."""
    host, _, rest = writer.partition(":")
    pid_s, _, start = rest.partition(":")
    if host != socket.gethostname() or not pid_s.isdigit():
        return None
    try:
        with open(f"/proc/{pid_s}/stat", "rb") as fh:
            return fh.read().rsplit(b")", 1)[1].split()[19].decode() == start
    except (OSError, IndexError):
        try:
            os.kill(int(pid_s), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return not Path("/proc").is_dir()


@dataclass(eq=False)
class _Group:
    """Records of one call: committed together, in order."""

    records: list[PendingRecord]
    durable: bool
    event: threading.Event | None = None
    loop: asyncio.AbstractEventLoop | None = None
    future: asyncio.Future[int | None] | None = None
    first_seq: int | None = None
    error: BaseException | None = None
    attempted: bool = False
    done: bool = False
    hold_until: float | None = None
    """Held (``with_next``): waits for the next commit, or until this monotonic time, instead of
    waking the flusher."""


def _settle_all(items: list[tuple[asyncio.Future[int | None], int | None, BaseException | None]]) -> None:
    for fut, seq, error in items:
        if fut.done():
            continue
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(seq)


@dataclass
class _Stats:
    flushes: int = 0
    records: int = 0
    failures: int = 0
    max_batch: int = 0
    last_error: str | None = None
    lost: int = 0
    commit_seconds: float = 0.0
    """Wall time spent in the store's commits that succeeded (÷ ``flushes``: the mean commit)."""
    extra: dict[str, Any] = field(default_factory=dict)


_LIVE: weakref.WeakSet[Ledger] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:  # flush whatever is queued when the interpreter exits normally
    for ledger in list(_LIVE):
        try:
            ledger.close(timeout=10)
        except Exception as exc:  # noqa: BLE001 - report at exit, never hang it
            log.error("ledger %s: %s", ledger.origin, exc)


def _after_fork() -> None:
    for ledger in list(_LIVE):
        ledger._forked()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


_ENVELOPE_KEYS = (
    "id", "approval_id", "grant_id", "token_id", "digest", "tool", "connector", "operation",
    "status", "verdict", "source", "expires_at", "span_id", "trace_id", "parent_span_id",
)  # fmt: skip
"""Keys of a recorder payload that are identifiers, safe for the never-erasable envelope."""


def _str_or_none(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class Ledger:
    """A tamper-evident evidence ledger (RFC 9162 Merkle log) implementing ``EvidenceSink``.

    Open it with :func:`open_ledger`. One ledger object per process and database; many processes
    (and machines, on PostgreSQL) may append to the same ledger: sequencing happens in the database.
    """

    def __init__(
        self,
        store: Store,
        row: LedgerRow,
        *,
        signer: NoteSigner | None = None,
        checkpoint_interval: float | None = DEFAULT_CHECKPOINT_INTERVAL,
        checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
        store_results: bool = False,
        max_batch: int = 1000,
        durable_timeout: float = 30.0,
        required: bool = False,
        linger: float = DEFAULT_LINGER,
    ) -> None:
        if checkpoint_every is not None and checkpoint_every < 1:
            raise ValueError("checkpoint_every must be at least 1 (or None)")
        if checkpoint_interval is not None and checkpoint_interval <= 0:
            raise ValueError("checkpoint_interval must be positive (or None)")
        if linger < 0:
            raise ValueError("linger must not be negative")
        self._store = store
        self._row = row
        self.signer = signer
        self.checkpoint_interval = checkpoint_interval
        self.checkpoint_every = checkpoint_every
        self.store_results = store_results
        self.max_batch = max_batch
        self.durable_timeout = durable_timeout
        self.required = required
        """Every record durable before its call returns (``evidence: required``)."""
        self.linger = linger
        """Seconds a ``with_next`` record waits for the commit it rides with (see :meth:`record_decision`)."""
        self.stats = _Stats()
        self._writer = _writer_id()
        self._fresh_sync()
        self._closed = False
        self._broken: str | None = None if row.format == FORMAT_VERSION else _format_problem(row.format)
        self._known_size = 0
        self._own_size = 0  # the tree size after this process's latest commit
        self._last_cp_size = 0  # the size of the latest checkpoint this process signed (or found)
        self._tail_since: float | None = None  # when this process committed the first entry no checkpoint covers
        self._file_checked = 0.0  # monotonic time of the latest check that the SQLite file is still ours
        _LIVE.add(self)

    def _fresh_sync(self) -> None:
        """Locks, FIFO and flusher state (again in a forked child: the parent's are not ours)."""
        self._cv = threading.Condition(threading.Lock())
        self._pending: deque[_Group] = deque()
        self._commit_lock = threading.Lock()
        self._cp_lock = threading.Lock()
        self._tail_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._start_lock = threading.Lock()
        self._stopping = False
        self._stuck: BaseException | None = None  # records could not be written: refuse new ones until they are
        self._crash: BaseException | None = None  # the writer crashed: refuse everything from now on
        self._failing: BaseException | None = None  # the last commit failed: commit every record synchronously
        self._cp_wanted = False
        self._wake_at: float | None = 0.0  # when the sleeping flusher wakes (None: when notified; 0: it is awake)

    # ---- identity -------------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        """The log's origin: the first line of its checkpoints, unique per ledger."""
        return self._row.origin

    @property
    def store(self) -> Store:
        return self._store

    @property
    def ledger_id(self) -> int:
        return self._row.ledger_id

    @property
    def url(self) -> str:
        return self._store.url.render_as_string(hide_password=True)

    def verifiers(self) -> list[NoteVerifier]:
        """Verifier keys recorded in the database (self-asserted: pass your own to :meth:`verify`)."""
        keys: list[NoteVerifier] = []
        for k in self._row.verifier_keys:
            try:
                keys.append(NoteVerifier.parse(k))
            except NoteError:
                continue
        if self.signer is not None:
            try:
                v = NoteVerifier.parse(self.signer.verifier_key())
            except NoteError:
                pass
            else:
                if v not in keys:
                    keys.append(v)
        return keys

    def size(self) -> int:
        """Committed tree size."""
        return self._store.state(self.ledger_id).size

    def root(self) -> bytes:
        return self._store.state(self.ledger_id).root

    # ---- EvidenceSink -------------------------------------------------------------------------

    holds_records = True
    """This sink takes ``with_next=True`` on ``record_decision`` / ``record_outcome`` (the Governor asks
    before passing it)."""

    def record_decision(self, action: Action, decision: Decision, *, durable: bool, with_next: bool = False) -> None:
        """Record intent, decision and enforcement of one judged action (durably if asked).

        ``with_next``: the records must not be released before the ones the caller appends next,
        and go into their commit — one commit instead of two: a tool call's outcome rides with the
        decision on its result, a proposal made only of tool calls with the decision on its first
        call. If no commit comes within :attr:`linger` seconds the flusher writes them alone. While
        the ledger is failing they are committed at once, like every record."""
        self._hold_or_append(
            action_records(self.origin, action, decision, store_results=self.store_results, writer=self._writer),
            durable,
            with_next,
        )

    def record_outcome(self, action: Action, outcome: Outcome, *, durable: bool, with_next: bool = False) -> None:
        """Record what a call did (``with_next``: as for :meth:`record_decision`)."""
        self._hold_or_append([outcome_record(self.origin, action, outcome)], durable, with_next)

    async def arecord_decision(self, action: Action, decision: Decision, *, durable: bool, with_next: bool = False) -> None:
        await self._ahold_or_append(
            action_records(self.origin, action, decision, store_results=self.store_results, writer=self._writer),
            durable,
            with_next,
        )

    async def arecord_outcome(self, action: Action, outcome: Outcome, *, durable: bool, with_next: bool = False) -> None:
        await self._ahold_or_append([outcome_record(self.origin, action, outcome)], durable, with_next)

    def _hold_or_append(self, records: list[PendingRecord], durable: bool, with_next: bool) -> None:
        if with_next and self._failing is None:
            self._submit(records, False, hold=True)
        else:
            self._append(records, durable)

    async def _ahold_or_append(self, records: list[PendingRecord], durable: bool, with_next: bool) -> None:
        if with_next and self._failing is None:
            await self._acheck_file()
            self._submit(records, False, hold=True, check_file=False)
        else:
            await self._aappend(records, durable)

    def record(self, kind: str, payload: dict[str, Any], *, durable: bool = True) -> int | None:
        """The ``record(kind, payload)`` recorder the approval store, the identity plane and the
        adapters take: identifiers go into the hashed envelope, everything (user ids, reasons,
        roles included) into the erasable payload."""
        meta = {k: payload[k] for k in _ENVELOPE_KEYS if payload.get(k) is not None}
        return self.record_event(
            kind,
            meta,
            payload,
            action_id=_str_or_none(payload.get("action_id")),
            session_id=_str_or_none(payload.get("session_id")),
            durable=durable,
        )

    def record_event(
        self,
        kind: str,
        metadata: dict[str, Any],
        payload: Any = None,
        *,
        action_id: str | None = None,
        session_id: str | None = None,
        durable: bool = True,
    ) -> int | None:
        """Record an event of another plane (``identity.grant_changed``...). Returns its seq when durable.

        ``metadata`` goes into the hashed, never-erasable envelope: identifiers only, no personal
        data. ``payload`` (any JSON value) is stored apart and can be erased.
        """
        rec = make_record(
            self.origin, validate_custom_kind(kind), dict(metadata), payload, action_id=action_id, session_id=session_id
        )
        return self._append([rec], durable)

    async def arecord_event(
        self,
        kind: str,
        metadata: dict[str, Any],
        payload: Any = None,
        *,
        action_id: str | None = None,
        session_id: str | None = None,
        durable: bool = True,
    ) -> int | None:
        rec = make_record(
            self.origin, validate_custom_kind(kind), dict(metadata), payload, action_id=action_id, session_id=session_id
        )
        return await self._aappend([rec], durable)

    def append_records(self, records: Sequence[PendingRecord], *, durable: bool = True) -> int | None:
        """Append prepared records (see ``_records.make_record``) as one group."""
        return self._append(list(records), durable)

    def flush(self, timeout: float | None = None) -> None:
        """Wait until every record queued so far is committed (raises if that fails)."""
        g = self._submit([], durable=True, event=threading.Event())
        self._lead_if_idle(g)
        self._wait(g, timeout)

    # ---- producer side ----------------------------------------------------------------------------

    def _ensure_thread(self) -> None:
        if self._thread is None:
            with self._start_lock:
                if self._thread is None:
                    t = threading.Thread(target=self._run, name=f"fiveplane-ledger-{self.ledger_id}", daemon=True)
                    t.start()
                    self._thread = t

    def _refusal(self, *, check_file: bool = True) -> LedgerError | None:
        """Why no record may be accepted now, or ``None``. ``check_file``: stat the SQLite file (not
        on an event loop: async callers rely on a check at most ``_ASYNC_FILE_CHECK_TTL`` old)."""
        if self._closed:
            return LedgerError(f"ledger {self.origin} is closed")
        if self._broken is None and check_file:
            self._broken = self._store.file_problem()
            self._file_checked = time.monotonic()
        if self._broken is not None:
            return LedgerUnavailable(f"ledger {self.origin}: {self._broken}; refusing every record (reopen the ledger)")
        stuck = self._stuck
        if stuck is not None:
            return LedgerUnavailable(
                f"ledger {self.origin} cannot write ({type(stuck).__name__}: {stuck}); refusing new records until the queued ones are stored"
            )
        return None

    def _submit(
        self,
        records: list[PendingRecord],
        durable: bool,
        *,
        event: threading.Event | None = None,
        loop: asyncio.AbstractEventLoop | None = None,
        future: asyncio.Future[int | None] | None = None,
        check_file: bool = True,
        hold: bool = False,
    ) -> _Group:
        refusal = self._refusal(check_file=check_file)
        if refusal is not None:
            raise refusal
        self._ensure_thread()
        g = _Group(records, durable, event, loop, future, hold_until=time.monotonic() + self.linger if hold else None)
        with self._cv:
            self._pending.append(g)
            if g.hold_until is not None:  # the next commit takes it; the flusher only has to know when to write it anyway
                wake = self._wake_at
                if wake is None or (wake and wake > g.hold_until):  # (0: awake, it will look)
                    self._cv.notify()
            elif event is None:  # nobody on this side will commit it: the flusher does
                self._cv.notify()
        return g

    def _wait(self, g: _Group, timeout: float | None) -> int | None:
        assert g.event is not None
        if not g.event.wait(self.durable_timeout if timeout is None else timeout):
            raise LedgerUnavailable(
                f"ledger {self.origin}: records not durable after {self.durable_timeout if timeout is None else timeout:.1f}s"
            )
        if g.error is not None:
            raise g.error
        return g.first_seq

    def _sync(self, durable: bool) -> bool:
        """Whether a call must wait for its commit: asked to, ``required``, or the last commit failed."""
        return durable or self.required or self._failing is not None

    def _append(self, records: list[PendingRecord], durable: bool) -> int | None:
        if not self._sync(durable):
            self._submit(records, False)
            return None
        g = self._submit(records, True, event=threading.Event(), check_file=False)  # its commit checks the file
        self._lead_if_idle(g)
        return self._wait(g, None)

    async def _acheck_file(self) -> None:
        """Check the SQLite file unless a check at most ``_ASYNC_FILE_CHECK_TTL`` old did (never on the loop)."""
        if self._file_checked + _ASYNC_FILE_CHECK_TTL < time.monotonic():
            problem = await asyncio.to_thread(self._store.file_problem)
            self._broken = self._broken or problem
            self._file_checked = time.monotonic()

    async def _aappend(self, records: list[PendingRecord], durable: bool) -> int | None:
        await self._acheck_file()
        if not self._sync(durable):
            self._submit(records, False, check_file=False)
            return None
        loop = asyncio.get_running_loop()
        fut: asyncio.Future[int | None] = loop.create_future()
        self._submit(records, True, loop=loop, future=fut, check_file=False)  # committed by the flusher, off the loop
        try:
            async with asyncio.timeout(self.durable_timeout):
                return await fut
        except TimeoutError:
            raise LedgerUnavailable(f"ledger {self.origin}: records not durable after {self.durable_timeout:.1f}s") from None

    # ---- committing -------------------------------------------------------------------------------

    def _lead_if_idle(self, g: _Group) -> None:
        """Commit ``g`` (and whatever waits before it) on this thread, unless a commit is running.

        If one is, its committer passes what is left to the flusher once it is done (it looks at the
        FIFO after letting go of the commit lock, so a group queued meanwhile is never stranded).
        """
        if not self._commit_lock.acquire(blocking=False):
            return
        try:
            while not g.done and self._commit_once():  # (stops on a failure: the flusher retries with backoff)
                pass
        except BaseException as exc:
            self._crashed(exc)
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
        finally:
            self._commit_lock.release()
            with self._cv:
                if self._pending or self._cp_wanted:
                    self._cv.notify()

    def _take(self, *, due_only: bool = False) -> list[_Group]:
        """The next batch from the FIFO. ``due_only`` (the flusher): nothing while only held records
        wait within their linger — a producer's commit takes them."""
        with self._cv:
            if due_only and not self._due():
                return []
            batch: list[_Group] = []
            count = 0
            pending = self._pending
            while pending and (not batch or count + len(pending[0].records) <= self.max_batch):
                g = pending.popleft()
                batch.append(g)
                count += len(g.records)
            return batch

    def _drain(self) -> list[_Group]:
        """Take everything out of the FIFO (to fail it)."""
        with self._cv:
            left = list(self._pending)
            self._pending.clear()
        return left

    def _due(self) -> bool:
        """Whether the flusher has records to commit now (``self._cv`` is held): any not held, or held
        ones past their linger."""
        if any(g.hold_until is None for g in self._pending):
            return True
        until = self._hold_until()
        return until is not None and until <= time.monotonic()

    def _hold_until(self) -> float | None:
        """When the oldest held group is written anyway (``self._cv`` is held); ``None``: none waits."""
        return next((g.hold_until for g in self._pending if g.hold_until is not None), None)

    def _commit_once(self, *, due_only: bool = False) -> bool | None:
        """Commit one batch from the FIFO (the commit lock is held): ``True`` done, ``False`` the commit
        failed, ``None`` nothing was waiting (``due_only``: nothing due, see :meth:`_take`)."""
        batch = self._take(due_only=due_only)
        if not batch:
            return None
        ready: list[_Group] = []
        for g in batch:
            if g.attempted and g.records:  # did an earlier, failed-looking commit actually land?
                seq = self._already_committed(g)
                if seq is not None:
                    g.first_seq = seq
                    self._finish(g)
                    continue
            ready.append(g)
        records = [r for g in ready for r in g.records]
        started = time.perf_counter()
        try:
            result = self._store.append(self.ledger_id, records) if records else None
        except Exception as exc:  # noqa: BLE001 - reported to waiters; queued non-durable records are retried
            self._failed(ready, exc)
            return False
        except BaseException as exc:  # a bug or an interrupt mid-commit: nobody in this batch is left waiting
            err = LedgerUnavailable(f"ledger {self.origin}: writer crashed ({type(exc).__name__}: {exc})")
            for g in ready:
                self._finish(g, err)
            raise
        if result is not None:  # (only a real commit shows the database works again, not an empty flush)
            self._failing = None
            self._file_checked = time.monotonic()  # the store checked the file before and after the commit
            self._known_size = self._own_size = result.size
            self.stats.flushes += 1  # (counted before its producers are woken: they see their commit in the stats)
            self.stats.commit_seconds += time.perf_counter() - started
            self.stats.records += len(records)
            self.stats.max_batch = max(self.stats.max_batch, len(records))
        seq = result.first_seq if result is not None else None
        settle: dict[asyncio.AbstractEventLoop, list[Any]] = {}
        for g in ready:
            g.first_seq = seq
            if seq is not None:
                seq += len(g.records)
            self._finish(g, settle=settle)
        for loop, items in settle.items():
            self._wake(loop, items)
        if self._stuck is not None and self._crash is None:
            with self._cv:
                if not any(g.attempted and not g.durable for g in self._pending):
                    self._stuck = None
        if result is not None and self.signer is not None:
            with self._tail_lock:
                first = self._tail_since is None
                if first:
                    self._tail_since = time.monotonic()
            if self._checkpoint_due():
                self._cp_wanted = True
            elif first and self.checkpoint_interval is not None:
                with self._cv:  # the flusher sleeps without a timeout while nothing is uncovered
                    self._cv.notify()
        return True

    def _failed(self, batch: list[_Group], exc: Exception) -> None:
        self.stats.failures += 1
        self.stats.last_error = f"{type(exc).__name__}: {exc}"
        self._failing = exc
        if isinstance(exc, LedgerUnavailable) and self._broken is None:
            self._broken = self._store.file_problem()
        err = LedgerUnavailable(f"ledger {self.origin}: could not store records ({type(exc).__name__}: {exc})")
        keep: list[_Group] = []
        for g in batch:
            g.attempted = True
            if self._broken is not None:
                self._finish(g, err)  # the file is gone: nothing can be retried into it
            elif g.durable or not g.records:
                seq = self._already_committed(g) if g.records else None
                if seq is not None:
                    g.first_seq = seq
                    self._finish(g)
                else:
                    self._finish(g, err)
            else:
                g.hold_until = None  # retried by the flusher now, like any queued record
                keep.append(g)
        if keep:
            self._stuck = exc
            with self._cv:
                self._pending.extendleft(reversed(keep))

    def _crashed(self, exc: BaseException) -> None:
        """A bug (or an interrupt) in a commit: fail closed instead of hanging or dropping, for good."""
        self._stuck = self._crash = exc
        log.critical("ledger %s: writer crashed: %r; refusing new records", self.origin, exc)
        err = LedgerUnavailable(f"ledger {self.origin}: writer crashed ({type(exc).__name__}: {exc})")
        for g in self._drain():
            self._finish(g, err)

    def _finish(
        self, g: _Group, error: BaseException | None = None, settle: dict[asyncio.AbstractEventLoop, list[Any]] | None = None
    ) -> None:
        """Wake the producer of ``g``. Async producers are woken per loop in one call (``settle``)."""
        g.error = error
        g.done = True
        if g.event is not None:
            g.event.set()
        if g.future is not None and g.loop is not None:
            if settle is not None:
                settle.setdefault(g.loop, []).append((g.future, g.first_seq, error))
            else:
                self._wake(g.loop, [(g.future, g.first_seq, error)])
        if error is not None and not g.durable and g.records:
            self.stats.lost += len(g.records)
            log.error("ledger %s: %d queued records could not be written: %s", self.origin, len(g.records), error)

    @staticmethod
    def _wake(loop: asyncio.AbstractEventLoop, items: list[Any]) -> None:
        try:
            loop.call_soon_threadsafe(_settle_all, items)
        except RuntimeError:  # the caller's loop is gone
            pass

    def _already_committed(self, g: _Group) -> int | None:
        if self._broken is not None:
            return None
        try:
            return self._store.committed_at(self.ledger_id, self._known_size, [r.leaf_hash for r in g.records])
        except Exception:  # noqa: BLE001 - still unreachable: the caller retries or fails
            return None

    # ---- the flusher ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        except BaseException as exc:  # noqa: BLE001 - a bug in the flusher: fail closed instead of hanging or dropping
            self._crashed(exc)

    def _loop(self) -> None:
        failures = 0
        deadline: float | None = None
        while True:
            with self._cv:
                while not self._due() and not self._stopping and not self._cp_wanted:
                    timeout = self._idle_timeout()
                    hold_until = self._hold_until()
                    if hold_until is not None:
                        wait = max(0.0, hold_until - time.monotonic())
                        timeout = wait if timeout is None else min(timeout, wait)
                    self._wake_at = None if timeout is None else time.monotonic() + timeout
                    self._cv.wait(timeout)
                    self._wake_at = 0.0
                    if timeout is not None and self._checkpoint_due():
                        self._cp_wanted = True
                stopping = self._stopping
                work = bool(self._pending)
            ok = True
            if work:
                with self._commit_lock:
                    while True:
                        done = self._commit_once(due_only=not stopping)
                        if done is None:
                            break
                        if done is False:
                            ok = False
                            break
            if not ok:
                failures += 1
                if stopping:
                    deadline = deadline or time.monotonic() + 10.0
                    if time.monotonic() > deadline:
                        err = LedgerUnavailable(f"ledger {self.origin}: could not store records ({self.stats.last_error})")
                        for g in self._drain():
                            self._finish(g, err)
                        if self._crash is None:
                            self._stuck = None
                        break
                time.sleep(min(1.0, 0.005 * 2**failures))
                continue
            failures = 0
            if self._cp_wanted:
                self._cp_wanted = False
                if self._checkpoint_due():  # (still: a commit may have asked again for what was just signed)
                    self._auto_checkpoint()
            if stopping and not self._pending:
                break
        if self.signer is not None and self._own_size > self._last_cp_size:
            self._auto_checkpoint()  # at close: leave no entry of ours uncovered

    # ---- checkpoint schedule ----------------------------------------------------------------------

    def _checkpoint_due(self) -> bool:
        if self.signer is None or self._own_size <= self._last_cp_size or self._broken is not None:
            return False
        if self.checkpoint_every is not None and self._own_size - self._last_cp_size >= self.checkpoint_every:
            return True
        since = self._tail_since
        return self.checkpoint_interval is not None and since is not None and time.monotonic() - since >= self.checkpoint_interval

    def _idle_timeout(self) -> float | None:
        if self.signer is None or self.checkpoint_interval is None or self._tail_since is None:
            return None
        return max(0.005, self._tail_since + self.checkpoint_interval - time.monotonic())

    def _auto_checkpoint(self) -> None:
        try:
            self.checkpoint()
        except Exception as exc:  # noqa: BLE001 - a failed checkpoint must not stop recording
            self._tail_since = time.monotonic()  # try again one interval later, not in a loop
            log.error("ledger %s: checkpoint failed: %s", self.origin, exc)

    # ---- lifecycle ------------------------------------------------------------------------------

    def close(self, timeout: float = 30.0) -> None:
        """Flush what is queued, sign a last checkpoint (if a signer is set and this process wrote
        entries no checkpoint covers yet) and stop."""
        if self._closed:
            return
        self._closed = True
        _LIVE.discard(self)
        thread = self._thread
        lost_before = self.stats.lost
        if thread is not None:
            with self._cv:
                self._stopping = True
                self._cv.notify()
            thread.join(timeout)
            if thread.is_alive():
                raise LedgerUnavailable(f"ledger {self.origin}: queued records not written within {timeout:.0f}s")
        self._store.dispose()
        if self._stuck is not None:
            raise LedgerUnavailable(
                f"ledger {self.origin}: closed with records not written ({type(self._stuck).__name__}: {self._stuck})"
            )
        if self.stats.lost > lost_before:
            raise LedgerUnavailable(
                f"ledger {self.origin}: {self.stats.lost - lost_before} queued records could not be written ({self.stats.last_error})"
            )

    async def aclose(self) -> None:
        """Async twin of :meth:`close` (runs it off the event loop)."""
        await asyncio.to_thread(self.close)

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _forked(self) -> None:
        """In a forked child: the flusher thread did not survive; start afresh with new connections."""
        self._fresh_sync()
        self._writer = _writer_id()
        self._store.after_fork()

    # ---- checkpoints, proofs, receipts ----------------------------------------------------------

    def latest_checkpoint(self) -> Checkpoint | None:
        """The latest stored signed checkpoint, with any witness cosignatures imported for it (not
        re-verified: use :meth:`verify` for that)."""
        with self._store.read_conn() as conn, conn.begin():
            row = self._store.latest_checkpoint(self.ledger_id, conn)
            cosigs = self._store.cosignatures(self.ledger_id, row[0], conn) if row else []
        return Checkpoint.parse_unverified(row[2] + "".join(cosigs)) if row else None

    def checkpoint(self) -> Checkpoint:
        """Sign a checkpoint of the committed tree and store it (needs a signer).

        It carries the next checkpoint sequence number (``fiveplane-checkpoint N``). Refuses (raises
        :class:`LedgerError`) if the tree is not consistent with the latest stored checkpoint: a log
        must never sign two inconsistent checkpoints. Returns the stored one if the tree has not grown.
        """
        if self.signer is None:
            raise LedgerError(f"ledger {self.origin} has no signing key: open it with key=...")
        if self._broken is not None:
            raise LedgerUnavailable(f"ledger {self.origin}: {self._broken}; refusing to sign")
        with self._cp_lock:
            for _ in range(20):  # another writer storing a checkpoint in between: re-read and sign the next one
                with self._store.read_conn() as conn, conn.begin():
                    st = self._store.state(self.ledger_id, conn)
                    latest = self._store.latest_checkpoint(self.ledger_id, conn)
                    if latest is not None:
                        old_size, old_root, note = latest
                        if old_size > st.size:
                            raise LedgerError(
                                f"refusing to sign: tree size {st.size} is behind checkpoint {old_size} (truncated or restored database?)"
                            )
                        if old_size == st.size:
                            if old_root != st.root:
                                raise LedgerError(f"refusing to sign: root at size {st.size} differs from the signed checkpoint")
                            self._signed(old_size)
                            return Checkpoint.parse_unverified(note)
                        if old_size > 0:
                            proof = fold_plan(
                                plan := consistency_plan(old_size, st.size),
                                self._store.subtrees(conn, self.ledger_id, (c for g in plan for c in g)),
                            )
                            try:
                                verify_consistency(old_size, st.size, proof, old_root, st.root)
                            except ProofError as exc:
                                raise LedgerError(
                                    f"refusing to sign: tree is not consistent with checkpoint {old_size}: {exc}"
                                ) from exc
                number = 1
                if latest is not None:
                    number = (Checkpoint.parse_unverified(latest[2]).number or 0) + 1
                cp = Checkpoint(self.origin, st.size, st.root, (f"{CHECKPOINT_NUMBER} {number}",)).signed([self.signer])
                assert cp.note is not None
                if self._store.insert_checkpoint(self.ledger_id, cp.size, cp.root, cp.note, after=latest[0] if latest else None):
                    self._signed(cp.size)
                    return cp
        raise LedgerError(f"ledger {self.origin}: could not store a checkpoint (other writers kept storing theirs first)")

    def _signed(self, size: int) -> None:
        with self._tail_lock:
            self._last_cp_size = max(self._last_cp_size, size)
            self._tail_since = None if self._own_size <= self._last_cp_size else time.monotonic()

    def add_cosignatures(self, note: str, *, witnesses: Sequence[CosignatureVerifier] | None = None) -> int:
        """Store the witness cosignatures of ``note`` (a stored checkpoint as cosigned by witnesses,
        e.g. by ``fiveplane audit cosign``) next to the checkpoint. Returns how many were new.

        The note's text must be exactly that of the checkpoint stored at its size. With ``witnesses``
        only their valid cosignatures are stored (and at least one must be there); without, every
        signature line the stored note does not already have is kept, to be checked by
        ``verify(witness_keys=…)``.
        """
        text, sigs = parse_note(note)
        cp = Checkpoint.parse_body(text)
        with self._store.read_conn() as conn, conn.begin():
            stored = {size: n for size, _, n in self._store.checkpoints(self.ledger_id, conn)}.get(cp.size)
            have = set(self._store.cosignatures(self.ledger_id, cp.size, conn))
        if stored is None:
            raise LedgerError(f"no checkpoint at size {cp.size} is stored in ledger {self.origin}")
        stored_text, stored_sigs = parse_note(stored)
        if stored_text != text:
            raise LedgerError(f"the note differs from the checkpoint stored at size {cp.size} (another log, or altered)")
        own = {(s.name, s.key_id) for s in stored_sigs}
        extra = [s for s in sigs if (s.name, s.key_id) not in own and s.line() not in have]
        if witnesses is not None:
            valid = {(w.name, w.key_id) for w, _ in verify_cosignatures(note, witnesses)}
            if not valid:
                raise LedgerError("the note carries no cosignature from the witness keys given")
            extra = [s for s in extra if (s.name, s.key_id) in valid]
        self._store.insert_cosignatures(self.ledger_id, cp.size, [(s.name, s.key_id, s.line()) for s in extra])
        return len(extra)

    def inclusion_proof(self, seq: int, size: int | None = None) -> list[bytes]:
        """Inclusion proof of leaf ``seq`` in the tree of ``size`` leaves (default: committed size)."""
        with self._store.read_conn() as conn, conn.begin():
            size = self._store.state(self.ledger_id, conn).size if size is None else size
            plan = inclusion_plan(seq, size)
            return fold_plan(plan, self._store.subtrees(conn, self.ledger_id, (c for g in plan for c in g)))

    def consistency_proof(self, old_size: int, new_size: int | None = None) -> list[bytes]:
        with self._store.read_conn() as conn, conn.begin():
            new_size = self._store.state(self.ledger_id, conn).size if new_size is None else new_size
            if old_size == new_size:
                return []
            plan = consistency_plan(old_size, new_size)
            return fold_plan(plan, self._store.subtrees(conn, self.ledger_id, (c for g in plan for c in g)))

    def receipt(self, seq: int) -> Receipt:
        """A tlog-proof receipt for entry ``seq``: verifiable offline with the log's verifier key.

        Uses the latest stored checkpoint if it covers ``seq``, else signs a new one (needs a signer).
        """
        with self._store.read_conn() as conn, conn.begin():
            latest = self._store.latest_checkpoint(self.ledger_id, conn)
            if latest is not None:  # hand out the checkpoint with its witnesses' cosignatures
                latest = (latest[0], latest[1], latest[2] + "".join(self._store.cosignatures(self.ledger_id, latest[0], conn)))
        if latest is None or latest[0] <= seq:
            if self.signer is None:
                raise LedgerError(f"no checkpoint covers entry {seq} yet and no signing key is loaded to sign one")
            cp = self.checkpoint()
            latest = (cp.size, cp.root, cp.note or "")
        size, root, note = latest
        if seq < 0 or seq >= size:
            raise LedgerError(f"entry {seq} does not exist (tree size {size})")
        stored = self._store.leaf(self.ledger_id, seq)
        if stored is None:
            raise LedgerError(f"entry {seq} is missing from the database")
        leaf_hash, envelope = stored
        if hash_leaf(envelope) != leaf_hash:
            raise LedgerError(f"entry {seq}: stored envelope does not match its leaf hash (tampered?)")
        proof = self.inclusion_proof(seq, size)
        try:
            verify_inclusion(leaf_hash, seq, size, proof, root)
        except ProofError as exc:
            raise LedgerError(
                f"entry {seq}: proof from the stored tree does not reach the checkpoint root (tampered?): {exc}"
            ) from exc
        return Receipt(seq, tuple(proof), note, envelope)

    def receipts(self, action_id: str) -> list[Receipt]:
        """Receipts for every record of one action (intent, decision, enforcement, outcomes)."""
        rows = self._store.rows_for_actions(self.ledger_id, [action_id])
        if not rows:
            return []
        return [self.receipt(int(r.seq)) for r in rows]

    # ---- maintenance ------------------------------------------------------------------------------

    def erase(self, seqs: Sequence[int], *, reason: str, requested_by: str | None = None) -> list[int]:
        """Erase the payloads of entries ``seqs`` (data-protection requests); proofs keep verifying.

        The erasure is recorded first, durably, as its own ``erasure`` entry (which seqs; the reason
        and requester go in its own payload), then the payload rows are deleted.
        """
        targets = sorted(set(int(s) for s in seqs))
        size = self.size()
        bad = [s for s in targets if s < 0 or s >= size]
        if bad or not targets:
            raise LedgerError(f"no such entries: {bad or 'none given'} (tree size {size})")
        rows = {
            int(r.seq): r
            for r in self._store.iter_leaves(self.ledger_id, targets[0], targets[-1] + 1)
            if int(r.seq) in set(targets)
        }
        if any(rows[s].kind == RecordKind.ERASURE for s in targets if s in rows):
            raise LedgerError("erasure records themselves cannot be erased")
        meta = {"erased": targets, "action_ids": sorted({r.action_id for r in rows.values() if r.action_id})}
        rec = make_record(self.origin, RecordKind.ERASURE, meta, {"reason": reason, "requested_by": requested_by})
        self._append([rec], durable=True)
        self._store.delete_payloads(self.ledger_id, targets)
        self._vouch()
        return targets

    def _vouch(self) -> None:
        """After a maintenance append: cover it by a signed checkpoint at once, if we hold the key
        (without it the entry stays uncovered, and ``verify`` with the log's key fails on it)."""
        if self.signer is not None:
            self.checkpoint()

    def erase_action(self, action_id: str, *, reason: str, requested_by: str | None = None) -> list[int]:
        """Erase the payloads of every record of one action (and of its result actions)."""
        rows = self._store.rows_for_actions(self.ledger_id, [action_id]) + self._store.rows_for_actions(
            self.ledger_id, [action_id], children=True
        )
        seqs = [int(r.seq) for r in rows if r.kind != RecordKind.ERASURE]
        if not seqs:
            raise LedgerError(f"no records for action {action_id}")
        return self.erase(seqs, reason=reason, requested_by=requested_by)

    def recover(self, *, older_than: timedelta | None = None) -> list[str]:
        """Record outcome ``unknown`` for actions that were allowed to run but never got an outcome.

        An action counts as abandoned when the process that recorded its decision is dead (same
        host), or — for writers on other hosts — when its decision is older than ``older_than``.
        Returns the action ids marked.
        """
        decided: dict[str, tuple[dict[str, Any], int]] = {}
        done: set[str] = set()
        with self._store.read_conn() as conn, conn.begin():
            for r in self._store.seqs_by_kind(self.ledger_id, [RecordKind.DECISION, RecordKind.OUTCOME], conn):
                if r.action_id is None:
                    continue
                if r.kind == RecordKind.OUTCOME:
                    done.add(r.action_id)
                else:
                    env = decode_envelope(bytes(r.envelope))
                    meta = env.get("meta", {})
                    if meta.get("point") == "tool_call" and Verdict(meta.get("verdict", "block")).proceeds:
                        decided[r.action_id] = (env, int(r.seq))
        now = datetime.now(UTC)
        marked: list[str] = []
        records: list[PendingRecord] = []
        for action_id, (env, seq) in decided.items():
            if action_id in done:
                continue
            meta = env["meta"]
            alive = _writer_alive(str(meta.get("writer", "")))
            if alive is None:
                when = datetime.fromisoformat(env["time"].replace("Z", "+00:00"))
                alive = older_than is None or now - when < older_than
            if alive:
                continue
            out = Outcome(
                action_id=action_id,
                status=OutcomeStatus.UNKNOWN,
                detail={"recovered": True, "decision_seq": seq, "writer": meta.get("writer")},
            )
            base = {k: meta[k] for k in ("point", "tool", "connector", "class", "agent") if k in meta}
            records.append(
                make_record(
                    self.origin,
                    RecordKind.OUTCOME,
                    {**base, "status": OutcomeStatus.UNKNOWN.value},
                    {"outcome": out.model_dump(mode="json")},
                    action_id=action_id,
                    session_id=env.get("session_id"),
                    parent_id=env.get("parent_id"),
                )
            )
            marked.append(action_id)
        if records:
            self._append(records, durable=True)
            self._vouch()
        return marked

    # ---- reading ----------------------------------------------------------------------------------

    def verify(
        self,
        *,
        keys: Sequence[NoteVerifier] | None = None,
        against: str | Checkpoint | None = None,
        progress: Callable[[int, int], None] | None = None,
        require_signed: bool | None = None,
        witness_keys: Sequence[CosignatureVerifier] = (),
        witnesses_required: int = 1,
        grace: float = 0.0,
    ) -> VerifyReport:
        """Full fsck (see ``_verify``).

        Args:
            keys: trusted verifier keys. Default: the ones recorded in the database and the loaded
                signer's — self-asserted, so pass your own when it matters.
            against: a signed checkpoint saved earlier, to prove the ledger is consistent with it.
            require_signed: fail (rather than warn) when an entry is not covered by a checkpoint
                signed by a trusted key, or when there is no such checkpoint. Default: when ``keys``
                are given (non-empty).
            witness_keys: witnesses whose cosignature the ``against`` checkpoint (or else the
                latest stored one) must carry; ``witnesses_required`` of them.
            grace: seconds; uncovered entries recorded this recently only warn (a live ledger signs
                its tail within ``checkpoint_interval``). Their time is the one they claim.
        """
        if isinstance(against, Checkpoint):
            if against.note is None:
                raise ValueError("the checkpoint to verify against must carry its signed note")
            against = against.note
        return verify_store(
            self._store,
            self.ledger_id,
            self.origin,
            keys=self.verifiers() if keys is None else list(keys),
            against=against,
            progress=progress,
            require_signed=bool(keys) if require_signed is None else require_signed,
            witness_keys=list(witness_keys),
            witnesses_required=witnesses_required,
            grace=grace,
        )

    def reconstruct(self, action_id: str) -> ActionStory | None:
        """Who, what, why, decision per plane, token and outcome of one action, from the ledger alone."""
        return reconstruct(self._store, self.ledger_id, action_id)

    def timeline(self, flt: TimelineFilter | None = None, *, limit: int | None = 50) -> list[EvidenceRecord]:
        """The latest matching entries (oldest first), without payloads."""
        return list(timeline(self._store, self.ledger_id, flt or TimelineFilter(), limit=limit))

    def records(self, action_id: str) -> list[EvidenceRecord]:
        """Every entry of one action, with its payload (checked against its digest)."""
        return read_records(self._store, self.ledger_id, self._store.rows_for_actions(self.ledger_id, [action_id]))

    def iter_records(
        self, start: int = 0, end: int | None = None, *, descending: bool = False
    ) -> Iterator[tuple[int, dict[str, Any]]]:
        """``(seq, envelope)`` of stored entries, in order."""
        for r in self._store.iter_leaves(self.ledger_id, start, end, descending=descending):
            yield int(r.seq), decode_envelope(bytes(r.envelope))


def _resolve_signer(key: str | Path | NoteSigner | None) -> NoteSigner | None:
    if key is None or isinstance(key, NoteSigner):
        return key
    return load_signing_key(key)


def open_ledger(
    url: str = DEFAULT_URL,
    *,
    key: str | Path | NoteSigner | None = None,
    origin: str | None = None,
    create: bool = True,
    checkpoint_interval: float | None = DEFAULT_CHECKPOINT_INTERVAL,
    checkpoint_every: int | None = DEFAULT_CHECKPOINT_EVERY,
    required: bool = False,
    store_results: bool = False,
    max_batch: int = 1000,
    durable_timeout: float = 30.0,
    busy_timeout: float = 30.0,
    linger: float = DEFAULT_LINGER,
) -> Ledger:
    """Open (and by default create) an evidence ledger.

    Args:
        url: SQLAlchemy URL: ``sqlite:///path.db`` (default ``.fiveplane/ledger.db``) or
            ``postgresql+psycopg://user@host/db``.
        key: the checkpoint signing key: a key file path (see ``fiveplane audit keygen``), the
            ``PRIVATE+KEY+…`` string, or any :class:`NoteSigner` (KMS, HSM, another process).
            Without a key the ledger records and verifies but cannot sign checkpoints or receipts —
            and what it appends stays uncovered: ``audit verify --key`` fails on it.
        origin: the log's unique name (first line of its checkpoints), e.g. ``acme.example/agents``.
            Defaults to the signing key's name, or to the only ledger in the database.
        checkpoint_interval: with a key, sign a checkpoint at most this many seconds after this
            process's first commit no checkpoint covers; ``None``: no time trigger.
        checkpoint_every: ... or once this many entries are uncovered; ``None``: no count trigger.
            With both ``None`` checkpoints are signed on demand and at close only.
        required: every record is durable before its call returns, whatever the action class
            (``evidence: required``): a ledger that cannot write blocks every action.
        store_results: keep tool results in clear in the ledger (default: only their digest).
        linger: seconds a record held for the next commit (a call's outcome, held for the decision
            on its result; a proposal made only of tool calls, for its first call's) waits for that
            commit before it is written on its own.

    Raises at once if the database is unreachable (fail closed at construction), and, when
    ``create``, if the ledger's state row has a format this version does not know.
    """
    signer = _resolve_signer(key)
    store = Store(url, busy_timeout=busy_timeout, create=create)
    try:
        if origin is None:
            if signer is not None:
                origin = signer.name
            else:
                known = store.ledgers()
                if len(known) != 1:
                    raise LedgerError(
                        f"{store.url.render_as_string(hide_password=True)} holds {len(known)} ledgers "
                        f"({', '.join(r.origin for r, _ in known) or 'none'}): pass origin=..."
                    )
                origin = known[0][0].origin
        if not origin or any(ch.isspace() or ch == "+" for ch in origin):
            raise LedgerError(f"invalid origin {origin!r}: non-empty, no spaces or '+' (e.g. acme.example/agents)")
        row = store.open_ledger(origin, verifier_key=signer.verifier_key() if signer else None, create=create)
        if create and row.format != FORMAT_VERSION:
            raise LedgerError(f"ledger {origin}: {_format_problem(row.format)}")
    except BaseException:
        store.dispose()
        raise
    return Ledger(
        store,
        row,
        signer=signer,
        checkpoint_interval=checkpoint_interval,
        checkpoint_every=checkpoint_every,
        required=required,
        store_results=store_results,
        max_batch=max_batch,
        durable_timeout=durable_timeout,
        linger=linger,
    )
