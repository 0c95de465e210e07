"""``fsck`` for the evidence ledger: recompute everything from the stored envelopes and compare.

Checks, in one consistent read snapshot:

1. every sequence number from 0 is present, once (no gap, no truncation behind the state row);
2. every leaf hash equals ``SHA-256(0x00 || envelope)``; every envelope parses, belongs to this log
   (origin) and agrees with the lookup columns copied from it;
3. every payload matches the salted digest in its envelope; a missing payload is only fine if an
   ``erasure`` record names it;
4. every stored tree node equals the node recomputed from the leaves, and none is missing;
5. the state row (size, root, frontier) equals what the leaves give;
6. every stored checkpoint carries a valid signature from a trusted key, names this origin, and its
   root equals the recomputed root at its size (a rewritten history cannot match a signed root);
   their sequence numbers (``fiveplane-checkpoint N``) run 1, 2, 3… without a gap, so a deleted
   checkpoint row shows;
7. optionally, a checkpoint saved earlier elsewhere (``against``): the ledger must contain its size
   and reproduce its root — consistency, which also catches a restored older copy of the database;
8. **signed coverage**: every entry lies below a checkpoint signed by a trusted key whose root the
   entries reproduce. Entries past the last such checkpoint — appended without the key, or after the
   last checkpoint — are vouched for by nobody: with ``require_signed`` (``audit verify --key``) they,
   and a ledger with no trusted checkpoint at all, fail the verification; otherwise they are a warning;
9. optionally (``witness_keys``), the ``against`` checkpoint, or else the latest stored one, carries
   valid ``cosignature/v1`` cosignatures from enough of the given witnesses;
10. the state row's format is one this version knows.

The report names the first bad sequence number and what is wrong with it.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, Field

from ._merkle import EMPTY_ROOT, CompactRange, ProofError, consistency_plan, fold_plan, verify_consistency
from ._note import Checkpoint, NoteError, NoteVerifier
from ._records import ENVELOPE_VERSION, SCHEMA, RecordKind, payload_digest
from ._store import FORMAT_VERSION, Store
from ._witness import CosignatureVerifier, verify_cosignatures

__all__ = ["Problem", "VerifyReport", "verify_store"]

_sha256 = hashlib.sha256
_ENTRY_CHECKS = ("sequence", "leaf", "envelope", "payload", "node")


class Problem(BaseModel):
    """One thing found wrong."""

    seq: int | None = None
    """The first entry concerned (``None`` when no single entry is, e.g. a bad signature)."""
    check: str
    """``sequence`` | ``leaf`` | ``envelope`` | ``payload`` | ``node`` | ``state`` | ``checkpoint`` |
    ``against`` | ``coverage`` | ``witness``."""
    detail: str

    def __str__(self) -> str:
        where = f"seq {self.seq}" if self.seq is not None else self.check
        return f"{where}: {self.detail}"


class VerifyReport(BaseModel):
    """The result of :meth:`Ledger.verify` / ``fiveplane audit verify``."""

    origin: str
    url: str
    ok: bool = True
    size: int = 0
    """Tree size in the state row."""
    entries: int = 0
    """Entries found (should equal ``size``)."""
    root: str = ""
    """Root recomputed from the stored envelopes (hex)."""
    payloads_checked: int = 0
    payloads_erased: int = 0
    nodes_checked: int = 0
    checkpoints_checked: int = 0
    latest_checkpoint: int | None = None
    """Size of the latest stored checkpoint."""
    latest_checkpoint_number: int | None = None
    format: int | None = None
    """The state row's format (this version knows format 1)."""
    signed_size: int = 0
    """Entries ``[0, signed_size)`` are covered by a checkpoint signed by a trusted key (or ``against``)."""
    uncovered: int = 0
    """Entries past ``signed_size``: nobody trusted vouches for them."""
    uncovered_entries: list[dict[str, Any]] = Field(default_factory=list)
    """The first uncovered entries: ``{"seq", "kind", "time"}``."""
    require_signed: bool = False
    """Whether uncovered entries (and no trusted checkpoint) failed the verification or only warned."""
    against: dict[str, Any] | None = None
    witness: dict[str, Any] | None = None
    """With witness keys: ``{"size", "cosigned_by": [{"key", "time"}], "required"}``."""
    keys: list[str] = Field(default_factory=list)
    problems: list[Problem] = Field(default_factory=list)
    warnings: list[Problem] = Field(default_factory=list)
    truncated_problems: int = 0
    elapsed_s: float = 0.0

    @property
    def first_bad_seq(self) -> int | None:
        seqs = [p.seq for p in self.problems if p.seq is not None]
        return min(seqs) if seqs else None

    @property
    def first_problem(self) -> Problem | None:
        if not self.problems:
            return None
        with_seq = [p for p in self.problems if p.seq is not None]
        return min(with_seq, key=lambda p: p.seq or 0) if with_seq else self.problems[0]

    def summary(self) -> str:
        if self.ok:
            warn = f" ({len(self.warnings)} warning(s): {self.warnings[0].detail})" if self.warnings else ""
            return f"OK: {self.entries} entries, root {self.root[:16]}…, {self.checkpoints_checked} checkpoints verified{warn}"
        first = self.first_problem
        return f"FAILED: {len(self.problems) + self.truncated_problems} problem(s); first: {first}"


class _Collector:
    def __init__(self, report: VerifyReport, limit: int) -> None:
        self.report = report
        self.limit = limit

    def warn(self, check: str, detail: str, seq: int | None = None) -> None:
        self.report.warnings.append(Problem(seq=seq, check=check, detail=detail))

    def add(self, check: str, detail: str, seq: int | None = None) -> None:
        self.report.ok = False
        if len(self.report.problems) < self.limit:
            self.report.problems.append(Problem(seq=seq, check=check, detail=detail))
        else:
            self.report.truncated_problems += 1


def verify_store(
    store: Store,
    ledger_id: int,
    origin: str,
    *,
    keys: Sequence[NoteVerifier],
    against: str | None = None,
    progress: Callable[[int, int], None] | None = None,
    max_problems: int = 200,
    require_signed: bool = False,
    witness_keys: Sequence[CosignatureVerifier] = (),
    witnesses_required: int = 1,
    grace: float = 0.0,
    now: float | None = None,
) -> VerifyReport:
    """Run every check (see the module docstring) and return the report (never raises for a bad ledger)."""
    t0 = time.perf_counter()
    report = VerifyReport(
        origin=origin,
        url=store.url.render_as_string(hide_password=True),
        keys=[str(k) for k in keys],
        require_signed=require_signed,
    )
    bad = _Collector(report, max_problems)
    conn = store.read_conn()
    if store.dialect == "postgresql":
        conn = conn.execution_options(isolation_level="REPEATABLE READ")
    with conn, conn.begin():
        st = store.state(ledger_id, conn)
        report.size = st.size
        report.format = st.format
        if st.format != FORMAT_VERSION:
            bad.add(
                "state",
                f"unknown ledger format {st.format} in the state row (this version reads format {FORMAT_VERSION}): "
                "the row was changed, or another version wrote this ledger",
            )
        stored_cps = store.checkpoints(ledger_id, conn)
        max_seq = store.max_seq(ledger_id, conn)
        total = max(st.size, max_seq + 1)

        # external checkpoint: parse and check its signature first, so its size joins the snapshot sizes
        ext: Checkpoint | None = None
        if against is not None:
            try:
                ext = Checkpoint.from_note(against, keys, origin=origin)
            except NoteError as exc:
                bad.add("against", f"the checkpoint to check against is not valid: {exc}")
        want_roots = {size for size, _, _ in stored_cps} | ({ext.size} if ext else set())
        roots_at: dict[int, bytes] = {0: EMPTY_ROOT} if 0 in want_roots else {}

        # 1-3: leaves, envelopes, payloads
        cr = CompactRange()
        leaf_hashes = bytearray()
        leaf_ok = bytearray()  # 1 where the stored leaf hash equals the envelope's hash
        contiguous = True
        expected = 0
        missing_payloads: list[int] = []
        erased: set[int] = set()
        lo = 0
        rows_seen = 0
        step = 4096
        while lo < total:
            hi = min(total, lo + step)
            payloads = store.payload_rows(ledger_id, lo, hi, conn)
            for row in store.iter_leaves(ledger_id, lo, hi, conn=conn):
                seq = int(row.seq)
                rows_seen += 1
                if seq != expected:
                    if contiguous:
                        bad.add("sequence", f"entry {expected} is missing (the next stored entry is {seq})", expected)
                    contiguous = False
                    expected = seq
                expected += 1
                envelope = bytes(row.envelope)
                leaf = _sha256(b"\x00" + envelope).digest()
                same = leaf == bytes(row.leaf_hash)
                if not same:
                    bad.add(
                        "leaf",
                        "stored leaf hash does not match SHA-256(0x00 || envelope): the leaf or its envelope was altered",
                        seq,
                    )
                if contiguous:
                    cr.append(leaf)
                    leaf_hashes += leaf
                    leaf_ok.append(1 if same else 0)
                    if cr.size in want_roots:
                        roots_at[cr.size] = cr.root()
                env = _check_envelope(envelope, row, origin, seq, bad)
                if env is None:
                    payloads.pop(seq, None)
                    continue
                if env.get("kind") == RecordKind.ERASURE:
                    erased.update(int(s) for s in env.get("meta", {}).get("erased", []) if isinstance(s, int))
                pd = env.get("payload")
                stored = payloads.pop(seq, None)
                if pd is None:
                    if stored is not None:
                        bad.add("payload", "a payload is stored for an entry whose envelope has none", seq)
                    continue
                if stored is None:
                    missing_payloads.append(seq)
                    continue
                report.payloads_checked += 1
                if not isinstance(pd, dict) or payload_digest(*stored) != pd.get("digest"):
                    bad.add("payload", "payload (or its salt) does not match the digest in its envelope", seq)
            for seq in sorted(payloads):
                bad.add("payload", "a payload is stored for an entry that does not exist", seq)
            lo = hi
            if progress is not None:
                progress(lo, total)
        report.entries = rows_seen
        for seq in missing_payloads:
            if seq in erased:
                report.payloads_erased += 1
            else:
                bad.add("payload", "payload was deleted without an erasure record", seq)

        # 4: tree nodes
        if contiguous:
            _check_nodes(store, ledger_id, conn, bytes(leaf_hashes), bytes(leaf_ok), bad, report)

        # 5: state row
        computed_root = cr.root()
        report.root = computed_root.hex()
        if rows_seen < st.size:
            bad.add(
                "state",
                f"the state row says {st.size} entries but {rows_seen} are stored (truncated?)",
                rows_seen if contiguous else None,
            )
        elif rows_seen > st.size:
            bad.add("state", f"{rows_seen} entries are stored but the state row says {st.size}", st.size)
        if contiguous and rows_seen == st.size:
            if st.root != computed_root:
                bad.add("state", "the root in the state row differs from the root recomputed from the entries")
            if st.frontier != cr.encode():
                bad.add("state", "the frontier in the state row differs from the one recomputed from the entries")

        # 6: stored checkpoints
        last_good = 0
        signed = -1  # the largest size a trusted signature covers and the entries reproduce
        next_number: int | None = None
        prev_size = 0
        if stored_cps and not keys:
            bad.add("checkpoint", "no verifier key to check checkpoint signatures (pass --key)")
        for size, root, note in stored_cps:
            report.checkpoints_checked += 1
            report.latest_checkpoint = size
            _check_number(note, size, prev_size, next_number, bad, report)
            if report.latest_checkpoint_number is not None:
                next_number = report.latest_checkpoint_number + 1
            prev_size = size
            if keys:
                try:
                    cp = Checkpoint.from_note(note, keys, origin=origin)
                except NoteError as exc:
                    bad.add("checkpoint", f"checkpoint at size {size}: {exc}", size - 1 if size else None)
                    continue
            else:
                try:
                    cp = Checkpoint.parse_unverified(note)
                except NoteError as exc:
                    bad.add("checkpoint", f"checkpoint at size {size} is malformed: {exc}", size - 1 if size else None)
                    continue
            if cp.size != size or cp.root != root:
                bad.add(
                    "checkpoint",
                    f"checkpoint row at size {size} differs from its signed note (size {cp.size})",
                    size - 1 if size else None,
                )
                continue
            if size > rows_seen:
                bad.add(
                    "checkpoint",
                    f"a signed checkpoint covers {size} entries but only {rows_seen} are stored (truncated?)",
                    rows_seen,
                )
                continue
            got = roots_at.get(size)
            if got is None:
                continue  # an earlier gap already made the tree unverifiable
            if got != cp.root:
                explained = any(p.seq is not None and p.seq < size and p.check in _ENTRY_CHECKS for p in report.problems)
                if explained:
                    bad.add(
                        "checkpoint",
                        f"the root signed at size {size} is not reproduced (a consequence of the altered entries above)",
                    )
                    continue
                bad.add(
                    "checkpoint",
                    f"the entries do not reproduce the root signed at size {size}: history in [{last_good}, {size}) was rewritten",
                    last_good,
                )
            else:
                last_good = size
                if keys:
                    signed = max(signed, size)

        # 7: an external checkpoint
        if ext is not None:
            info: dict[str, Any] = {"size": ext.size, "root": ext.root.hex()}
            report.against = info
            if ext.size > rows_seen:
                bad.add(
                    "against",
                    f"the ledger holds {rows_seen} entries but the checkpoint saved earlier has {ext.size}: entries were removed (restored older copy or truncation)",
                    rows_seen,
                )
            elif contiguous:
                got = roots_at.get(ext.size)
                if got != ext.root:
                    bad.add(
                        "against",
                        f"the entries do not reproduce the root of the checkpoint saved earlier at size {ext.size}: history was rewritten",
                        last_good if last_good < ext.size else None,
                    )
                else:
                    info["root_matches"] = True
                    signed = max(signed, ext.size)
                    if ext.size > 0:
                        try:
                            plan = consistency_plan(ext.size, st.size) if ext.size < st.size else []
                            proof = fold_plan(plan, store.subtrees(conn, ledger_id, (c for g in plan for c in g))) if plan else []
                            verify_consistency(ext.size, st.size, proof, ext.root, st.root)
                            info["consistency_proof"] = len(proof)
                        except (ProofError, LookupError) as exc:
                            bad.add(
                                "against",
                                f"no valid consistency proof from size {ext.size} to {st.size} from the stored tree: {exc}",
                            )
        # 8: signed coverage
        _check_coverage(store, ledger_id, conn, signed, rows_seen, bool(stored_cps), grace, now, bad, report)

        # 9: witnesses
        if witness_keys:
            if ext is not None:
                target: str | None = against
                where = "the checkpoint given (--against)"
            elif stored_cps:
                target = stored_cps[-1][2] + "".join(store.cosignatures(ledger_id, stored_cps[-1][0], conn))
                where = f"the latest stored checkpoint (size {stored_cps[-1][0]})"
            else:
                target, where = None, "no checkpoint"
            _check_witnesses(target, where, witness_keys, witnesses_required, now, bad, report)
    report.elapsed_s = round(time.perf_counter() - t0, 3)
    report.problems.sort(key=lambda p: (p.seq is None, p.seq or 0))
    return report


def _check_number(note: str, size: int, prev_size: int, expected: int | None, bad: _Collector, report: VerifyReport) -> None:
    """Checkpoint sequence numbers run 1, 2, 3… in size order (earlier versions wrote none: those may
    only come first)."""
    try:
        number = Checkpoint.parse_unverified(note).number
    except NoteError:
        return  # reported with the signature check
    if number is None:
        if expected is not None:
            bad.add("checkpoint", f"the checkpoint at size {size} has no sequence number although earlier ones do")
        return
    want = expected or 1
    if number > want:
        missing = f"#{want}" if number == want + 1 else f"#{want}–#{number - 1}"
        after = f"after size {prev_size} " if expected is not None else ""
        bad.add(
            "checkpoint",
            f"checkpoint {missing} is missing: the stored checkpoints jump {after}to #{number} at size {size} "
            "(checkpoint rows were deleted)",
            prev_size if expected is not None else None,
        )
    elif number < want:
        bad.add("checkpoint", f"the checkpoint at size {size} is #{number}, but #{want - 1} came before it")
    report.latest_checkpoint_number = number


def _check_coverage(
    store: Store,
    ledger_id: int,
    conn: Any,
    signed: int,
    rows: int,
    any_checkpoint: bool,
    grace: float,
    now: float | None,
    bad: _Collector,
    report: VerifyReport,
) -> None:
    report.signed_size = max(signed, 0)
    if signed >= 0 and rows <= signed:
        return
    start = max(signed, 0)
    report.uncovered = rows - start
    cutoff = (time.time() if now is None else now) - grace
    first_old: int | None = None
    shown: list[str] = []
    for row in store.iter_leaves(ledger_id, start, rows, conn=conn):
        seq = int(row.seq)
        when = _entry_time(bytes(row.envelope))
        if first_old is None and (grace <= 0 or when is None or when < cutoff):
            first_old = seq
        if len(report.uncovered_entries) < 20:
            report.uncovered_entries.append({"seq": seq, "kind": row.kind, "time": _iso(when)})
            shown.append(f"{seq} {row.kind}")
        elif first_old is not None:
            break
    names = ", ".join(shown) + (", …" if report.uncovered > len(shown) else "")
    if signed < 0:
        what = (
            "the ledger has no checkpoint signed by a trusted key"
            if any_checkpoint
            else "the ledger has no signed checkpoint at all (a key-holding writer signs one at close)"
        )
        detail = f"{what}: none of its {rows} entries is vouched for" + (f" ({names})" if rows else "")
    else:
        span = f"entry {start} is" if report.uncovered == 1 else f"entries {start}–{rows - 1} are"
        covers = f"they cover entries 0–{signed - 1}" if signed else "the only one is of the empty tree"
        detail = (
            f"{span} not covered by any checkpoint signed by a trusted key ({covers}): {names} "
            "— appended without the signing key, or since the last checkpoint"
        )
    if not report.require_signed or (first_old is None and rows > start):
        if report.require_signed:
            detail += f" (all recorded within the last {grace:g}s: allowed by the grace)"
        bad.warn("coverage", detail, start if rows > start else None)
    elif any(p.seq is not None for p in report.problems):  # altered or missing entries already explain it
        bad.add("coverage", f"{detail} (a consequence of the problems above)")
    else:
        bad.add("coverage", detail, first_old if first_old is not None else None)


def _entry_time(envelope: bytes) -> float | None:
    try:
        t = json.loads(envelope[1:]).get("time")
        return datetime.fromisoformat(str(t).replace("Z", "+00:00")).timestamp()
    except (ValueError, AttributeError, TypeError):
        return None


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _check_witnesses(
    note: str | None,
    where: str,
    witnesses: Sequence[CosignatureVerifier],
    required: int,
    now: float | None,
    bad: _Collector,
    report: VerifyReport,
) -> None:
    info: dict[str, Any] = {"where": where, "required": required, "cosigned_by": []}
    report.witness = info
    if note is None:
        bad.add("witness", "no checkpoint to check witness cosignatures on")
        return
    try:
        cp = Checkpoint.parse_unverified(note)
        good = verify_cosignatures(note, witnesses, now=now)
    except NoteError as exc:
        bad.add("witness", f"{where}: {exc}")
        return
    info["size"] = cp.size
    info["cosigned_by"] = [{"key": str(w), "time": _iso(float(ts))} for w, ts in good]
    if len(good) < required:
        names = ", ".join(w.name for w in witnesses)
        bad.add(
            "witness",
            f"{where} carries {len(good)} valid cosignature(s) from the witness key(s) given ({names}); {required} required",
        )


def _check_envelope(envelope: bytes, row: Any, origin: str, seq: int, bad: _Collector) -> dict[str, Any] | None:
    if not envelope or envelope[0] != ENVELOPE_VERSION:
        bad.add("envelope", f"unknown envelope version {envelope[:1].hex() or 'none'}", seq)
        return None
    try:
        env = json.loads(envelope[1:])
    except ValueError:
        bad.add("envelope", "envelope is not valid JSON", seq)
        return None
    if not isinstance(env, dict) or env.get("schema") != SCHEMA:
        bad.add("envelope", "envelope is not a fiveplane evidence record", seq)
        return None
    if env.get("origin") != origin:
        bad.add("envelope", f"entry belongs to log {env.get('origin')!r}, not {origin!r}", seq)
    if (
        env.get("kind") != row.kind
        or env.get("action_id") != row.action_id
        or env.get("session_id") != row.session_id
        or env.get("parent_id") != row.parent_id
    ):
        bad.add("envelope", "lookup columns (kind, action, session, parent) differ from the envelope", seq)
    return env


def _check_nodes(
    store: Store, ledger_id: int, conn: Any, level0: bytes, ok0: bytes, bad: _Collector, report: VerifyReport
) -> None:
    """Recompute every complete subtree from the entries, level by level, and compare the stored nodes.

    Only root causes are reported: a stored node that differs although both its stored children are
    right, or a missing node. Its ancestors (which then differ as a consequence) are not.
    """
    prev, prev_ok = level0, ok0
    level = 0
    top = store.max_node_level(ledger_id, conn)
    while True:
        level += 1
        count = len(prev) // 64
        if count == 0 and level > top:
            break
        cur = bytearray()
        for i in range(count):
            cur += _sha256(b"\x01" + prev[64 * i : 64 * i + 64]).digest()
        ok = bytearray(count)
        expect = 0
        for idx, h in store.iter_nodes(ledger_id, level, conn):
            report.nodes_checked += 1
            if idx >= count:
                bad.add("node", f"tree node (level {level}, index {idx}) lies beyond the tree", idx << level)
                continue
            for gap in range(expect, idx):
                bad.add("node", f"tree node (level {level}, index {gap}) is missing", gap << level)
            expect = idx + 1
            if bytes(cur[32 * idx : 32 * idx + 32]) == h:
                ok[idx] = 1
            elif prev_ok[2 * idx] and prev_ok[2 * idx + 1]:
                bad.add(
                    "node", f"tree node (level {level}, index {idx}) differs from the hash of the entries below it", idx << level
                )
        for gap in range(expect, count):
            bad.add("node", f"tree node (level {level}, index {gap}) is missing", gap << level)
        prev, prev_ok = bytes(cur), bytes(ok)
