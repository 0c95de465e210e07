"""Witness cosignatures: C2SP ``tlog-cosignature`` (Ed25519 ``cosignature/v1``) and a file-based witness.

A cosignature is a note signature line on a checkpoint by a second key, the *witness*, stating that
as of a time it saw this tree head and that it is consistent with every earlier one it cosigned for
the log. Per https://c2sp.org/tlog-cosignature:

* key ID ``= SHA-256(name || 0x0A || 0x04 || 32-byte Ed25519 public key)[:4]`` (verifier keys are
  written ``name+hex(key ID)+base64(0x04 || pubkey)``; a plain ``0x01`` Ed25519 key is accepted and
  used as a cosigner key, as transparency-dev/formats does);
* signature ``= u64 big-endian timestamp || Ed25519(message)``;
* message ``= "cosignature/v1\\n" || "time <timestamp>\\n" || the checkpoint's note text`` (extension
  lines included).

:func:`witness_checkpoint` is what ``fiveplane audit cosign`` runs: it checks the log's signature,
refuses rollback and unproven growth against the witness's own state file (the latest checkpoint it
cosigned for that origin, as the C2SP ``tlog-witness`` protocol requires), then cosigns.
"""

from __future__ import annotations

import base64
import os
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._merkle import ProofError, verify_consistency
from ._note import (
    ED25519,
    Checkpoint,
    NoteError,
    NoteSignature,
    NoteVerifier,
    _b64decode,
    _valid_name,
    key_id,
    parse_note,
    read_key_text,
    write_key_pair,
)

__all__ = [
    "COSIGNATURE_V1",
    "CosignatureVerifier",
    "Cosigner",
    "WitnessedCheckpoint",
    "cosign_note",
    "generate_witness_key",
    "load_cosignature_verifier",
    "load_cosigner",
    "verify_cosignatures",
    "witness_checkpoint",
]

COSIGNATURE_V1 = 0x04
_HEADER = b"cosignature/v1\n"
_MAX_FUTURE_S = 600
"""Cosignatures dated more than this far in the future are rejected (the spec allows it)."""


def _message(timestamp: int, text: bytes) -> bytes:
    return _HEADER + b"time %d\n" % timestamp + text


@dataclass(frozen=True, repr=False)
class CosignatureVerifier:
    """A witness's public key for ``cosignature/v1`` signatures."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> CosignatureVerifier:
        if not _valid_name(name):
            raise NoteError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")
        if len(public_key) != 32:
            raise NoteError(f"an Ed25519 public key is 32 bytes, not {len(public_key)}")
        return cls(name, key_id(name, bytes([COSIGNATURE_V1]) + public_key), public_key)

    @classmethod
    def parse(cls, vkey: str) -> CosignatureVerifier:
        """``name+hex(key ID)+base64(0x04 || pubkey)``, or a plain Ed25519 ``0x01`` verifier key of
        the same public key (its key ID is checked as written, the cosignature key ID derived)."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or not _valid_name(parts[0]) or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise NoteError(f"malformed witness key {vkey[:60]!r}")
        name, hex_id, b64 = parts
        raw = _b64decode(b64)
        if len(raw) != 33 or raw[0] not in (COSIGNATURE_V1, ED25519):
            raise NoteError("witness key is not an Ed25519 cosignature key (type 0x04 or 0x01 followed by 32 bytes)")
        if key_id(name, raw).hex() != hex_id:
            raise NoteError(f"witness key ID {hex_id} does not match the key (expected {key_id(name, raw).hex()})")
        return cls.from_public_key(name, raw[1:])

    def __str__(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(bytes([COSIGNATURE_V1]) + self.public_key).decode()}"

    def __repr__(self) -> str:
        return f"CosignatureVerifier({self})"

    @staticmethod
    def timestamp(signature: bytes) -> int:
        return int.from_bytes(signature[:8], "big") if len(signature) >= 8 else -1

    def verify(self, message: bytes, signature: bytes) -> bool:
        """Verify a ``timestamp || signature`` cosignature over the note text ``message``."""
        if len(signature) != 8 + 64:
            return False
        ts = self.timestamp(signature)
        if ts >= 2**63:
            return False
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature[8:], _message(ts, message))
        except Exception:  # noqa: BLE001 - InvalidSignature or a malformed key: not valid
            return False
        return True


class Cosigner:
    """A witness's private key: produces timestamped ``cosignature/v1`` signature lines."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not _valid_name(name):
            raise NoteError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")
        self._name = name
        self._key = private_key
        public = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self._verifier = CosignatureVerifier.from_public_key(name, public)

    @classmethod
    def generate(cls, name: str) -> Cosigner:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def parse(cls, skey: str) -> Cosigner:
        """``PRIVATE+KEY+name+hex(key ID)+base64(0x04 || seed)`` (or ``0x01``: a note signer key reused)."""
        parts = skey.strip().split("+", 4)
        if len(parts) != 5 or parts[:2] != ["PRIVATE", "KEY"] or not _valid_name(parts[2]):
            raise NoteError("malformed witness signing key (expected PRIVATE+KEY+name+keyid+base64)")
        raw = _b64decode(parts[4])
        if len(raw) != 33 or raw[0] not in (COSIGNATURE_V1, ED25519):
            raise NoteError("witness signing key is not an Ed25519 key (type 0x04 or 0x01 followed by a 32-byte seed)")
        key = Ed25519PrivateKey.from_private_bytes(raw[1:])
        public = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        if key_id(parts[2], bytes([raw[0]]) + public).hex() != parts[3]:
            raise NoteError("witness signing key ID does not match the key")
        return cls(parts[2], key)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._verifier.key_id

    @property
    def verifier(self) -> CosignatureVerifier:
        return self._verifier

    def verifier_key(self) -> str:
        return str(self._verifier)

    def sign(self, message: bytes, *, timestamp: int | None = None) -> bytes:
        ts = int(time.time()) if timestamp is None else timestamp
        if not 0 <= ts < 2**63:
            raise NoteError(f"cosignature timestamp {ts} out of range")
        return ts.to_bytes(8, "big") + self._key.sign(_message(ts, message))

    def encode(self) -> str:
        seed = self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return f"PRIVATE+KEY+{self._name}+{self.key_id.hex()}+{base64.b64encode(bytes([COSIGNATURE_V1]) + seed).decode()}"

    def __repr__(self) -> str:
        return f"Cosigner({self._verifier})"


def cosign_note(note: str, cosigner: Cosigner, *, timestamp: int | None = None) -> str:
    """``note`` with one more signature line: ``cosigner``'s cosignature of its text."""
    text, _ = parse_note(note)
    sig = NoteSignature(cosigner.name, cosigner.key_id, cosigner.sign(text.encode(), timestamp=timestamp))
    return note + sig.line()


def verify_cosignatures(
    note: str, witnesses: Iterable[CosignatureVerifier], *, now: float | None = None
) -> list[tuple[CosignatureVerifier, int]]:
    """The witnesses among ``witnesses`` that validly cosigned ``note``, each with its timestamp.

    Lines from unknown keys are ignored; a line from a known key that does not verify, or that is
    dated more than 10 minutes in the future, raises :class:`NoteError`.
    """
    text, sigs = parse_note(note)
    known = {(w.name, w.key_id): w for w in witnesses}
    limit = (time.time() if now is None else now) + _MAX_FUTURE_S
    good: list[tuple[CosignatureVerifier, int]] = []
    for sig in sigs:
        w = known.get((sig.name, sig.key_id))
        if w is None or any(w is g for g, _ in good):
            continue
        if not w.verify(text.encode(), sig.signature):
            raise NoteError(f"invalid cosignature by witness {w.name}+{w.key_id.hex()}")
        ts = CosignatureVerifier.timestamp(sig.signature)
        if ts > limit:
            raise NoteError(f"cosignature by witness {w.name} is dated in the future ({ts})")
        good.append((w, ts))
    return good


def generate_witness_key(path: str | Path, name: str, *, overwrite: bool = False) -> CosignatureVerifier:
    """Create a witness signing key at ``path`` (mode 0600) and its verifier key at ``path.pub``."""
    cosigner = Cosigner.generate(name)
    write_key_pair(path, cosigner.encode(), cosigner.verifier_key(), overwrite=overwrite)
    return cosigner.verifier


def load_cosigner(source: str | Path) -> Cosigner:
    """Load a witness signing key from a key file, or from the key string itself."""
    return Cosigner.parse(read_key_text(source, private=True, what="witness signing key"))


def load_cosignature_verifier(source: str | Path) -> CosignatureVerifier:
    """Load a witness verifier key from its string form or from a file holding it."""
    return CosignatureVerifier.parse(read_key_text(source, private=False, what="witness key"))


# ---- a file-based witness -----------------------------------------------------------------------


@dataclass(frozen=True)
class WitnessedCheckpoint:
    """What :func:`witness_checkpoint` did."""

    checkpoint: Checkpoint
    note: str
    """The checkpoint note with the new cosignature line."""
    timestamp: int
    previous_size: int | None
    """The size of the checkpoint the witness cosigned before (``None``: first one for this log)."""
    consistency_proof: int
    """Hashes in the consistency proof checked (0 when the size did not change or there was no state)."""


def witness_checkpoint(
    note: str,
    cosigner: Cosigner,
    log_keys: Sequence[NoteVerifier],
    *,
    state: Path | None = None,
    proof: Callable[[int, int], list[bytes]] | None = None,
    timestamp: int | None = None,
) -> WitnessedCheckpoint:
    """Cosign a log checkpoint as a witness.

    ``note`` must carry a valid signature from one of ``log_keys``. With ``state`` (a file holding
    the latest checkpoint this witness cosigned for the log; created on first use), the new
    checkpoint must not be smaller (rollback), must have the same root at the same size (fork), and
    growth must come with a valid consistency proof from ``proof(old_size, new_size)`` (e.g. the
    ledger's :meth:`Ledger.consistency_proof`; it is checked, not trusted). The state file is
    replaced atomically after signing. Raises :class:`NoteError` on any refusal.
    """
    cp = Checkpoint.from_note(note, log_keys)
    previous: Checkpoint | None = None
    proof_len = 0
    if state is not None and state.exists():
        try:
            previous = Checkpoint.from_note(state.read_text(), log_keys)
        except (OSError, NoteError) as exc:
            raise NoteError(f"witness state {state} is unreadable or not signed by the log key: {exc}") from exc
        if previous.origin != cp.origin:
            raise NoteError(f"witness state {state} is for log {previous.origin!r}, not {cp.origin!r} (one state file per log)")
        if cp.size < previous.size:
            raise NoteError(
                f"refusing to cosign: size {cp.size} is smaller than the {previous.size} entries this witness already cosigned (rollback)"
            )
        if cp.size == previous.size and cp.root != previous.root:
            raise NoteError(f"refusing to cosign: a different root at size {cp.size} than the one already cosigned (fork)")
        if cp.size > previous.size > 0:
            if proof is None:
                raise NoteError(f"a consistency proof from size {previous.size} to {cp.size} is needed (give the ledger: --db)")
            hashes = proof(previous.size, cp.size)
            try:
                verify_consistency(previous.size, cp.size, hashes, previous.root, cp.root)
            except ProofError as exc:
                raise NoteError(
                    f"refusing to cosign: size {cp.size} is not consistent with the checkpoint cosigned at size {previous.size}: {exc}"
                ) from exc
            proof_len = len(hashes)
    ts = int(time.time()) if timestamp is None else timestamp
    out = cosign_note(note, cosigner, timestamp=ts)
    if state is not None:
        state.parent.mkdir(parents=True, exist_ok=True)
        tmp = state.with_name(f".{state.name}.{os.getpid()}.tmp")
        tmp.write_text(out)
        os.replace(tmp, state)
    return WitnessedCheckpoint(
        Checkpoint(cp.origin, cp.size, cp.root, cp.extensions, out),
        out,
        ts,
        previous.size if previous is not None else None,
        proof_len,
    )
