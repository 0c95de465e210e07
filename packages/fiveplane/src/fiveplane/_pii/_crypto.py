"""Keyed operators: reversible pseudonymization (AES-SIV) and keyed hashing (HMAC-SHA256).

A pseudonym is ``<ENTITY#token>`` where ``token`` is the base64url AES-SIV ciphertext of the value,
with the entity type (and, by default, the session id) as associated data. AES-SIV is
deterministic: one value gets one token (per session), so the model can still tell that two mentions
are the same person, and a token cannot be moved to another entity type or session: decryption
authenticates it. Revealing a token is a governed action (see ``DataPlane.reveal_tool``), never a
side door.

Keys come from environment variables named in the policy (``keys:``) or from the ``keys=`` argument
of the plane, never from the policy file itself. Several keys may be given for rotation: new tokens
use the first, any of them reveals.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import os
import re
import threading
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from ._config import KeysConfig

__all__ = ["TOKEN_RE", "KeyHasher", "Keyring", "MissingKeyError", "Pseudonymizer", "parse_key"]

TOKEN_RE = re.compile(r"<([A-Z][A-Z0-9_]{0,39})#([A-Za-z0-9_-]{22,4096})>")
"""A pseudonym token in text."""
_AAD = b"fiveplane-pseudonym-v1"
_KEY_SIZES = (32, 48, 64)


class MissingKeyError(RuntimeError):
    """``pseudonymize`` / ``hash`` is configured but no key is available."""


def parse_key(raw: str) -> bytes:
    """A key from base64 (standard or URL-safe, padding optional) or hex text."""
    text = raw.strip()
    candidates: list[bytes] = []
    if re.fullmatch(r"[0-9A-Fa-f]+", text) and len(text) // 2 in _KEY_SIZES:
        candidates.append(bytes.fromhex(text))
    for decode in (base64.b64decode, base64.urlsafe_b64decode):
        try:
            candidates.append(decode(text + "=" * (-len(text) % 4)))
        except (binascii.Error, ValueError):
            continue
    for key in candidates:
        if len(key) in _KEY_SIZES:
            return key
    raise ValueError(f"a key must be {', '.join(map(str, _KEY_SIZES))} bytes, base64 or hex encoded")


_EPHEMERAL: dict[str, bytes] = {}
_EPHEMERAL_LOCK = threading.Lock()


def _ephemeral(name: str) -> bytes:
    with _EPHEMERAL_LOCK:
        key = _EPHEMERAL.get(name)
        if key is None:
            key = _EPHEMERAL[name] = os.urandom(64)
            warnings.warn(
                f"fiveplane data plane: ${name} is not set; using a random per-process key "
                "(pseudonyms cannot be revealed after a restart). Set it for production.",
                RuntimeWarning,
                stacklevel=3,
            )
        return key


@dataclass(frozen=True)
class Keyring:
    """The keys of one data plane configuration."""

    keys: tuple[bytes, ...]
    """Pseudonym keys: the first encrypts, any decrypts."""
    hash_key: bytes
    ephemeral: bool = False

    @classmethod
    def from_config(
        cls, cfg: KeysConfig, environ: Mapping[str, str] | None = None, explicit: Sequence[bytes] | None = None
    ) -> Keyring:
        env = os.environ if environ is None else environ
        keys: list[bytes] = []
        ephemeral = False
        if explicit:
            keys.extend(explicit)
        else:
            for name in (cfg.pseudonym_key_env, *cfg.previous_key_envs):
                raw = env.get(name)
                if raw:
                    try:
                        keys.append(parse_key(raw))
                    except ValueError as exc:
                        raise MissingKeyError(f"${name}: {exc}") from None
        if not keys:
            if cfg.missing == "error":
                raise MissingKeyError(
                    f"pseudonymize/hash need a key: set ${cfg.pseudonym_key_env} (base64 of 64 random bytes, e.g. "
                    '`python -c "import os,base64;print(base64.b64encode(os.urandom(64)).decode())"`) '
                    "or pass keys= to DataPlane; `keys: {missing: ephemeral}` allows a per-process key"
                )
            keys.append(_ephemeral(cfg.pseudonym_key_env))
            ephemeral = True
        for k in keys:
            if len(k) not in _KEY_SIZES:
                raise MissingKeyError(f"a pseudonym key must be {', '.join(map(str, _KEY_SIZES))} bytes")
        hash_key: bytes | None = None
        if cfg.hash_key_env and env.get(cfg.hash_key_env):
            hash_key = env[cfg.hash_key_env].encode("utf-8")
        if hash_key is None:
            hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"fiveplane-data-hash-v1")
            hash_key = hkdf.derive(keys[0])
        return cls(tuple(keys), hash_key, ephemeral)


class Pseudonymizer:
    """Deterministic, authenticated, reversible tokens for values."""

    def __init__(self, keyring: Keyring, *, per_session: bool = True) -> None:
        self._ciphers = [AESSIV(k) for k in keyring.keys]
        self.per_session = per_session

    def _aad(self, entity: str, session_id: str | None) -> list[bytes]:
        aad = [_AAD, entity.encode("utf-8")]
        if self.per_session:
            aad.append((session_id or "").encode("utf-8"))
        return aad

    def token(self, entity: str, value: str, session_id: str | None) -> str:
        ct = self._ciphers[0].encrypt(value.encode("utf-8"), self._aad(entity, session_id))
        return f"<{entity}#{base64.urlsafe_b64encode(ct).rstrip(b'=').decode('ascii')}>"

    def reveal(self, entity: str, payload: str, session_id: str | None) -> str | None:
        """The clear value of one token, or ``None`` if no key authenticates it (here)."""
        try:
            ct = base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
        except (binascii.Error, ValueError):
            return None
        aad = self._aad(entity, session_id)
        for cipher in self._ciphers:
            try:
                return cipher.decrypt(ct, aad).decode("utf-8")
            except (InvalidTag, ValueError, UnicodeDecodeError):
                continue
        return None

    def reveal_text(self, text: str, session_id: str | None) -> tuple[str, int, int]:
        """``text`` with every valid token replaced by its value; (text, revealed, unrevealable)."""
        revealed = bad = 0

        def sub(m: re.Match[str]) -> str:
            nonlocal revealed, bad
            value = self.reveal(m.group(1), m.group(2), session_id)
            if value is None:
                bad += 1
                return m.group(0)
            revealed += 1
            return value

        return TOKEN_RE.sub(sub, text), revealed, bad


class KeyHasher:
    """``<ENTITY:h:hex>``: HMAC-SHA256 of the value under the plane's hash key (not reversible,
    not brute-forceable without the key, equal values give equal hashes)."""

    def __init__(self, keyring: Keyring, *, length: int = 20) -> None:
        self._key = keyring.hash_key
        self.length = length

    def hash(self, entity: str, value: str) -> str:
        mac = hmac.new(self._key, entity.encode("utf-8") + b"\x00" + value.encode("utf-8"), hashlib.sha256).hexdigest()
        return f"<{entity}:h:{mac[: self.length]}>"
