"""C2SP signed notes, tlog checkpoints and tlog-proof receipts, with Ed25519 keys.

* ``c2sp.org/signed-note``: a text ending in a newline, a blank line, then signature lines
  ``— <key name> base64(key ID || signature)``; ``key ID = SHA-256(name || 0x0A || 0x01 || pubkey)[:4]``
  for Ed25519. Verifier keys are written ``name+hex(key ID)+base64(0x01 || pubkey)`` and signer keys
  ``PRIVATE+KEY+name+hex(key ID)+base64(0x01 || seed)`` (the golang.org/x/mod/sumdb/note encodings).
* ``c2sp.org/tlog-checkpoint``: the note text ``origin\\nsize\\nbase64(root)\\n[extensions]``.
* ``c2sp.org/tlog-proof@v1``: ``index N``, the inclusion proof (one base64 hash a line), a blank line
  and the signed checkpoint verbatim. fiveplane puts the logged entry (the leaf's envelope) in the
  optional ``extra`` line so a receipt verifies offline on its own; the extra data is authenticated
  by hashing it into the leaf and checking the inclusion proof, never trusted by itself.

Unknown signatures are ignored (as the spec requires); a note verifies only if at least one trusted
key signed it, and any signature from a trusted key that fails makes the whole note invalid.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ._merkle import HASH_SIZE, ProofError, hash_leaf, verify_inclusion

__all__ = [
    "CHECKPOINT_NUMBER",
    "TLOG_PROOF_HEADER",
    "Checkpoint",
    "Ed25519Signer",
    "NoteError",
    "NoteSignature",
    "NoteSigner",
    "NoteVerifier",
    "Receipt",
    "ReceiptCheck",
    "generate_signing_key",
    "key_id",
    "load_signing_key",
    "load_verifier",
    "open_note",
    "parse_note",
    "read_key_text",
    "sign_note",
    "verify_receipt",
    "write_key_pair",
]

ED25519 = 0x01
TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
_SIG_PREFIX = "— "
_MAX_SIGNATURES = 100
CHECKPOINT_NUMBER = "fiveplane-checkpoint"
"""Extension line ``fiveplane-checkpoint N``: the checkpoint's sequence number, so a deleted one shows."""
_NUMBER = re.compile(CHECKPOINT_NUMBER + r" ([1-9][0-9]{0,17})")


class NoteError(ValueError):
    """A note, key, checkpoint or receipt is malformed or does not verify."""


def _valid_name(name: str) -> bool:
    return bool(name) and not any(ch.isspace() or ch == "+" for ch in name)


def key_id(name: str, type_and_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || type || public key)[:4]`` (big-endian uint32 as 4 bytes)."""
    return hashlib.sha256(name.encode() + b"\n" + type_and_key).digest()[:4]


def _b64decode(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise NoteError(f"bad base64: {text[:40]!r}") from exc


# ---- keys ---------------------------------------------------------------------------------------


@runtime_checkable
class NoteSigner(Protocol):
    """Signs note texts. Implement it to keep the private key in a KMS, HSM or another process."""

    @property
    def name(self) -> str:
        """Key name (for a log: its origin)."""
        ...

    @property
    def key_id(self) -> bytes:
        """The 4-byte key ID that prefixes each signature."""
        ...

    def sign(self, message: bytes) -> bytes:
        """The raw signature of ``message`` (64 bytes for Ed25519)."""
        ...

    def verifier_key(self) -> str:
        """The public verifier key string ``name+hex(key ID)+base64(type || pubkey)``."""
        ...


@dataclass(frozen=True, repr=False)
class NoteVerifier:
    """An Ed25519 note verifier key (public)."""

    name: str
    key_id: bytes
    public_key: bytes
    """The 32 raw Ed25519 public key bytes."""

    @classmethod
    def from_public_key(cls, name: str, public_key: bytes) -> NoteVerifier:
        if not _valid_name(name):
            raise NoteError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")
        if len(public_key) != 32:
            raise NoteError(f"an Ed25519 public key is 32 bytes, not {len(public_key)}")
        return cls(name, key_id(name, bytes([ED25519]) + public_key), public_key)

    @classmethod
    def parse(cls, vkey: str) -> NoteVerifier:
        """Parse ``name+hex(key ID)+base64(0x01 || pubkey)``; the key ID must match the key."""
        parts = vkey.strip().split("+", 2)
        if len(parts) != 3 or not _valid_name(parts[0]) or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
            raise NoteError(f"malformed verifier key {vkey[:60]!r}")
        name, hex_id, b64 = parts
        raw = _b64decode(b64)
        if len(raw) != 33 or raw[0] != ED25519:
            raise NoteError("verifier key is not an Ed25519 key (type 0x01 followed by 32 bytes)")
        verifier = cls.from_public_key(name, raw[1:])
        if verifier.key_id.hex() != hex_id:
            raise NoteError(f"verifier key ID {hex_id} does not match the key (expected {verifier.key_id.hex()})")
        return verifier

    def __repr__(self) -> str:
        return f"NoteVerifier({self})"

    def __str__(self) -> str:
        return f"{self.name}+{self.key_id.hex()}+{base64.b64encode(bytes([ED25519]) + self.public_key).decode()}"

    def verify(self, message: bytes, signature: bytes) -> bool:
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except (InvalidSignature, ValueError):
            return False
        return True


class Ed25519Signer:
    """An Ed25519 note signer holding its private key in memory (loaded from a key file)."""

    def __init__(self, name: str, private_key: Ed25519PrivateKey) -> None:
        if not _valid_name(name):
            raise NoteError(f"invalid key name {name!r}: must be non-empty, without spaces or '+'")
        self._name = name
        self._key = private_key
        public = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        self._verifier = NoteVerifier.from_public_key(name, public)

    @classmethod
    def generate(cls, name: str) -> Ed25519Signer:
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def parse(cls, skey: str) -> Ed25519Signer:
        """Parse ``PRIVATE+KEY+name+hex(key ID)+base64(0x01 || 32-byte seed)``."""
        parts = skey.strip().split("+", 4)
        if (
            len(parts) != 5
            or parts[:2] != ["PRIVATE", "KEY"]
            or not _valid_name(parts[2])
            or not re.fullmatch(r"[0-9a-f]{8}", parts[3])
        ):
            raise NoteError("malformed signer key (expected PRIVATE+KEY+name+keyid+base64)")
        raw = _b64decode(parts[4])
        if len(raw) != 33 or raw[0] != ED25519:
            raise NoteError("signer key is not an Ed25519 key (type 0x01 followed by a 32-byte seed)")
        signer = cls(parts[2], Ed25519PrivateKey.from_private_bytes(raw[1:]))
        if signer.key_id.hex() != parts[3]:
            raise NoteError("signer key ID does not match the key")
        return signer

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> bytes:
        return self._verifier.key_id

    @property
    def verifier(self) -> NoteVerifier:
        return self._verifier

    def verifier_key(self) -> str:
        return str(self._verifier)

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def encode(self) -> str:
        """The private signer key string (keep it secret)."""
        seed = self._key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
        return f"PRIVATE+KEY+{self._name}+{self.key_id.hex()}+{base64.b64encode(bytes([ED25519]) + seed).decode()}"

    def __repr__(self) -> str:
        return f"Ed25519Signer({self._verifier})"


def generate_signing_key(path: str | Path, name: str, *, overwrite: bool = False) -> NoteVerifier:
    """Create an Ed25519 signer key file at ``path`` (mode 0600) and its verifier key at ``path.pub``.

    Keep the key file away from the database and from anyone who can write the database: whoever
    holds both can rewrite history and re-sign it.
    """
    signer = Ed25519Signer.generate(name)
    write_key_pair(path, signer.encode(), signer.verifier_key(), overwrite=overwrite)
    return signer.verifier


def write_key_pair(path: str | Path, secret: str, public: str, *, overwrite: bool = False) -> None:
    """``secret`` to ``path`` (created mode 0600; refused if it exists unless ``overwrite``), ``public`` to ``path.pub``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
    fd = os.open(path, flags, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret + "\n")
    path.with_name(path.name + ".pub").write_text(public + "\n")


def read_key_text(source: str | Path, *, private: bool, what: str) -> str:
    """The key string itself, or the contents of the file ``source`` names."""
    text = str(source).strip()
    inline = (
        text.startswith("PRIVATE+KEY+")
        if private
        else not isinstance(source, Path) and re.fullmatch(r"[^+\s]+\+[0-9a-f]{8}\+[A-Za-z0-9+/=]+", text) is not None
    )
    if inline:
        return text
    try:
        return Path(source).read_text().strip()
    except OSError as exc:
        if private:
            raise NoteError(f"cannot read {what} {source}: {exc.strerror or exc}") from exc
        raise NoteError(f"{source}: neither a {what} nor a readable key file") from exc


def load_signing_key(source: str | Path) -> Ed25519Signer:
    """Load a signer from a key file, or from the key string itself."""
    return Ed25519Signer.parse(read_key_text(source, private=True, what="signing key"))


def load_verifier(source: str | Path) -> NoteVerifier:
    """Load a verifier key from its string form or from a file holding it (e.g. ``key.pub``)."""
    return NoteVerifier.parse(read_key_text(source, private=False, what="verifier key"))


# ---- signed notes -------------------------------------------------------------------------------


@dataclass(frozen=True)
class NoteSignature:
    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        return f"{_SIG_PREFIX}{self.name} {base64.b64encode(self.key_id + self.signature).decode()}\n"


def sign_note(text: str, signers: Sequence[NoteSigner]) -> str:
    """Encode a signed note: ``text`` (must end in a newline), a blank line, one line per signer."""
    if not text.endswith("\n") or not signers:
        raise NoteError("a note text must end with a newline and have at least one signer")
    _check_chars(text)
    lines = []
    for s in signers:
        kid = bytes(s.key_id)
        if not _valid_name(s.name) or len(kid) != 4:
            raise NoteError(f"invalid signer {s.name!r}")
        lines.append(NoteSignature(s.name, kid, s.sign(text.encode())).line())
    return text + "\n" + "".join(lines)


def _check_chars(msg: str) -> None:
    if any(ord(ch) < 0x20 and ch != "\n" for ch in msg):
        raise NoteError("malformed note: control characters")


def parse_note(msg: str) -> tuple[str, list[NoteSignature]]:
    """Split a signed note into its text and signatures (syntax only, no verification)."""
    _check_chars(msg)
    split = msg.rfind("\n\n")
    if split < 0:
        raise NoteError("malformed note: no blank line before the signatures")
    text, sig_block = msg[: split + 1], msg[split + 2 :]
    if not sig_block or not sig_block.endswith("\n"):
        raise NoteError("malformed note: no signature lines")
    sigs: list[NoteSignature] = []
    for line in sig_block[:-1].split("\n"):
        if not line.startswith(_SIG_PREFIX):
            raise NoteError(f"malformed note: bad signature line {line[:40]!r}")
        name, _, b64 = line[len(_SIG_PREFIX) :].partition(" ")
        raw = _b64decode(b64) if b64 else b""
        if not _valid_name(name) or len(raw) < 5:
            raise NoteError(f"malformed note: bad signature line {line[:40]!r}")
        sigs.append(NoteSignature(name, raw[:4], raw[4:]))
        if len(sigs) > _MAX_SIGNATURES:
            raise NoteError("malformed note: too many signatures")
    return text, sigs


def open_note(msg: str, verifiers: Iterable[NoteVerifier]) -> tuple[str, list[NoteVerifier]]:
    """Verify a signed note: returns its text and the trusted keys that signed it.

    Signatures from unknown keys are ignored; a signature from a known key that fails raises; a
    note without any valid signature from a known key raises.
    """
    text, sigs = parse_note(msg)
    known: dict[tuple[str, bytes], NoteVerifier] = {}
    for verifier in verifiers:
        known[(verifier.name, verifier.key_id)] = verifier
    good: list[NoteVerifier] = []
    for sig in sigs:
        v = known.get((sig.name, sig.key_id))
        if v is None or v in good:
            continue
        if not v.verify(text.encode(), sig.signature):
            raise NoteError(f"invalid signature for key {sig.name}+{sig.key_id.hex()}")
        good.append(v)
    if not good:
        names = ", ".join(f"{s.name}+{s.key_id.hex()}" for s in sigs)
        raise NoteError(f"note has no signature from a trusted key (signed by: {names or 'nobody'})")
    return text, good


# ---- checkpoints --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    """A tlog checkpoint: the log's origin, tree size and root hash, usually with its signed note."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()
    note: str | None = field(default=None, compare=False)
    """The signed note (``body`` + signatures) when known."""

    @property
    def number(self) -> int | None:
        """The checkpoint's sequence number (1 for a log's first), from its ``fiveplane-checkpoint N``
        extension line; ``None`` for checkpoints written without one (by earlier versions)."""
        for ext in self.extensions:
            m = _NUMBER.fullmatch(ext)
            if m is not None:
                return int(m.group(1))
        return None

    def body(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode(), *self.extensions]
        return "\n".join(lines) + "\n"

    def signed(self, signers: Sequence[NoteSigner]) -> Checkpoint:
        return Checkpoint(self.origin, self.size, self.root, self.extensions, sign_note(self.body(), signers))

    @classmethod
    def parse_body(cls, text: str) -> Checkpoint:
        lines = text.split("\n")
        if len(lines) < 4 or lines[-1] != "" or any(not ln for ln in lines[:-1]):
            raise NoteError("malformed checkpoint: need origin, size and root lines, each non-empty")
        origin, size_s, root_b64, *ext = lines[:-1]
        if not re.fullmatch(r"0|[1-9][0-9]*", size_s):
            raise NoteError(f"malformed checkpoint: bad tree size {size_s!r}")
        root = _b64decode(root_b64)
        if len(root) != HASH_SIZE:
            raise NoteError("malformed checkpoint: root hash is not 32 bytes")
        return cls(origin, int(size_s), root, tuple(ext))

    @classmethod
    def from_note(cls, note: str, verifiers: Iterable[NoteVerifier], *, origin: str | None = None) -> Checkpoint:
        """Verify a signed checkpoint note and parse it; ``origin`` (if given) must match."""
        text, _ = open_note(note, verifiers)
        cp = cls.parse_body(text)
        if origin is not None and cp.origin != origin:
            raise NoteError(f"checkpoint is for log {cp.origin!r}, not {origin!r}")
        return Checkpoint(cp.origin, cp.size, cp.root, cp.extensions, note)

    @classmethod
    def parse_unverified(cls, note: str) -> Checkpoint:
        """Parse a signed checkpoint without checking any signature (for display and diagnostics)."""
        text, _ = parse_note(note)
        cp = cls.parse_body(text)
        return Checkpoint(cp.origin, cp.size, cp.root, cp.extensions, note)


# ---- receipts (tlog-proof) ----------------------------------------------------------------------


@dataclass(frozen=True)
class Receipt:
    """A ``c2sp.org/tlog-proof@v1`` receipt: entry index, inclusion proof and signed checkpoint."""

    index: int
    proof: tuple[bytes, ...]
    checkpoint_note: str
    extra: bytes | None = None
    """fiveplane puts the logged entry (the leaf's canonical envelope) here."""

    def encode(self) -> str:
        lines = [TLOG_PROOF_HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode())
        lines.append(f"index {self.index}")
        lines.extend(base64.b64encode(p).decode() for p in self.proof)
        return "\n".join(lines) + "\n\n" + self.checkpoint_note

    @classmethod
    def parse(cls, text: str) -> Receipt:
        head, sep, note = text.partition("\n\n")
        if not sep:
            raise NoteError("malformed receipt: no blank line before the checkpoint")
        lines = head.split("\n")
        if lines[0] != TLOG_PROOF_HEADER:
            raise NoteError(f"not a tlog-proof: first line must be {TLOG_PROOF_HEADER!r}")
        pos = 1
        extra = None
        if pos < len(lines) and lines[pos].startswith("extra "):
            extra = _b64decode(lines[pos][len("extra ") :])
            pos += 1
        m = re.fullmatch(r"index (0|[1-9][0-9]*)", lines[pos]) if pos < len(lines) else None
        if m is None:
            raise NoteError("malformed receipt: missing 'index N' line")
        proof = []
        for line in lines[pos + 1 :]:
            h = _b64decode(line) if line else b""
            if len(h) != HASH_SIZE:
                raise NoteError("malformed receipt: proof lines must be base64 SHA-256 hashes")
            proof.append(h)
        return cls(int(m.group(1)), tuple(proof), note, extra)


@dataclass(frozen=True)
class ReceiptCheck:
    """What a verified receipt proves: ``entry`` is leaf ``index`` of the log under ``checkpoint``."""

    checkpoint: Checkpoint
    index: int
    leaf_hash: bytes
    entry: bytes | None
    signed_by: tuple[str, ...]


def verify_receipt(
    text: str,
    verifiers: Iterable[NoteVerifier],
    *,
    origin: str | None = None,
    entry: bytes | None = None,
) -> ReceiptCheck:
    """Verify a tlog-proof receipt offline. Raises :class:`NoteError` when anything does not hold.

    The entry is taken from ``entry`` or, failing that, from the receipt's ``extra`` line; its leaf
    hash must be proven included in the checkpoint, which must carry a valid signature from one of
    ``verifiers`` (and be for ``origin``, if given).
    """
    receipt = Receipt.parse(text)
    trusted = list(verifiers)
    _, signers = open_note(receipt.checkpoint_note, trusted)
    cp = Checkpoint.from_note(receipt.checkpoint_note, trusted, origin=origin)
    data = entry if entry is not None else receipt.extra
    if data is None:
        raise NoteError("the receipt carries no entry; pass the logged entry to verify it")
    if receipt.extra is not None and entry is not None and receipt.extra != entry:
        raise NoteError("the entry given differs from the one in the receipt")
    leaf = hash_leaf(data)
    try:
        verify_inclusion(leaf, receipt.index, cp.size, receipt.proof, cp.root)
    except ProofError as exc:
        raise NoteError(f"inclusion proof does not verify: {exc}") from exc
    return ReceiptCheck(cp, receipt.index, leaf, data, tuple(str(v) for v in signers))
