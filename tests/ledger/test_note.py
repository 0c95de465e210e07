"""C2SP signed notes, checkpoints and tlog-proof receipts.

Signed-note vectors are from golang.org/x/mod/sumdb/note (note_test.go: TestSign, TestOpen,
TestNewVerifier), the reference implementation of the C2SP signed-note format.
"""

from __future__ import annotations

import base64
import re
import stat
from pathlib import Path

import pytest

from fiveplane._ledger import _merkle as m
from fiveplane._ledger._note import (
    Checkpoint,
    Ed25519Signer,
    NoteError,
    NoteVerifier,
    Receipt,
    generate_signing_key,
    key_id,
    load_signing_key,
    load_verifier,
    open_note,
    parse_note,
    sign_note,
    verify_receipt,
)

PETER_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n"
PETER_SIG = "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
ENOCH_SIG = "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n"


def test_go_sign_vector_byte_for_byte() -> None:
    signer = Ed25519Signer.parse(PETER_SKEY)
    assert signer.verifier_key() == PETER_VKEY
    assert signer.encode() == PETER_SKEY
    assert sign_note(TEXT, [signer]) == TEXT + "\n" + PETER_SIG


def test_key_id_is_sha256_of_name_newline_type_key() -> None:
    v = NoteVerifier.parse(PETER_VKEY)
    assert key_id("PeterNeumann", b"\x01" + v.public_key).hex() == "c74f20a3" == v.key_id.hex()


def test_open_ignores_unknown_keys_and_verifies_known() -> None:
    peter, enoch = NoteVerifier.parse(PETER_VKEY), NoteVerifier.parse(ENOCH_VKEY)
    msg = TEXT + "\n" + PETER_SIG + ENOCH_SIG
    text, good = open_note(msg, [peter])
    assert text == TEXT and good == [peter]
    assert open_note(msg, [peter, enoch])[1] == [peter, enoch]
    with pytest.raises(NoteError, match="no signature from a trusted key"):
        open_note(msg, [])


def test_open_rejects_bad_signature_from_known_key_and_malformed_notes() -> None:
    peter = NoteVerifier.parse(PETER_VKEY)
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(TEXT + "\n" + PETER_SIG[:60] + "ABCD" + PETER_SIG[60:], [peter])
    with pytest.raises(NoteError, match="no signature from a trusted key"):
        open_note(TEXT.replace("problem", "answer") + "\n" + PETER_SIG, [NoteVerifier.parse(ENOCH_VKEY)])
    with pytest.raises(NoteError, match="invalid signature"):
        open_note(TEXT.replace("problem", "answer") + "\n" + PETER_SIG, [peter])
    for bad in (
        TEXT,
        TEXT + "\n",
        TEXT + "\n" + PETER_SIG[:-1],
        "\x01" + TEXT + "\n" + PETER_SIG,
        TEXT + "\n" + "— Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n",
        TEXT + "\n" + PETER_SIG + "Unexpected line.\n",
    ):
        with pytest.raises(NoteError):
            open_note(bad, [peter])


def test_verifier_key_manglings_rejected() -> None:
    NoteVerifier.parse(PETER_VKEY)
    for i in range(len(PETER_VKEY)):
        mangled = PETER_VKEY[:i] + chr(ord(PETER_VKEY[i]) + 1) + PETER_VKEY[i + 1 :]
        with pytest.raises(NoteError):
            NoteVerifier.parse(mangled)
    for bad in (PETER_VKEY[:-4], "PeterNeumann+c74f20a3", "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"):
        with pytest.raises(NoteError):
            NoteVerifier.parse(bad)
    with pytest.raises(NoteError):
        Ed25519Signer.parse(PETER_SKEY.replace("c74f20a3", "c74f20a4"))


def test_key_files(tmp_path: Path) -> None:
    path = tmp_path / "k" / "log.key"
    v = generate_signing_key(path, "acme.example/agents")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_verifier(path.with_name("log.key.pub")) == v == load_verifier(str(v))
    signer = load_signing_key(path)
    assert signer.verifier == v and signer.name == "acme.example/agents"
    with pytest.raises(FileExistsError):
        generate_signing_key(path, "acme.example/agents")
    with pytest.raises(NoteError):
        load_signing_key(tmp_path / "missing.key")
    with pytest.raises(NoteError):
        Ed25519Signer.generate("has space")


def test_checkpoint_format_matches_the_spec_example() -> None:
    body = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    cp = Checkpoint.parse_body(body)
    assert (cp.origin, cp.size) == ("example.com/behind-the-sofa", 20852163)
    assert cp.body() == body
    for bad in (
        "o\n01\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "o\n1\nAAAA\n",
        "o\n1\n",
        "o\n1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",
    ):
        with pytest.raises(NoteError):
            Checkpoint.parse_body(bad)


def test_checkpoint_sign_verify_and_origin_binding() -> None:
    signer = Ed25519Signer.generate("acme.example/log")
    cp = Checkpoint("acme.example/log", 7, m.hash_leaf(b"x")).signed([signer])
    assert cp.note is not None and cp.note.startswith(cp.body() + "\n— acme.example/log ")
    assert Checkpoint.from_note(cp.note, [signer.verifier], origin="acme.example/log") == cp
    with pytest.raises(NoteError, match="not 'other'"):
        Checkpoint.from_note(cp.note, [signer.verifier], origin="other")
    other = Ed25519Signer.generate("acme.example/log")  # same name, another key: its signature is ignored
    with pytest.raises(NoteError, match="no signature from a trusted key"):
        Checkpoint.from_note(Checkpoint("acme.example/log", 7, cp.root).signed([other]).note or "", [signer.verifier])


def _receipt_setup(n: int = 11, idx: int = 6) -> tuple[Ed25519Signer, str, list[bytes]]:
    signer = Ed25519Signer.generate("acme.example/log")
    entries = [f"entry {i}".encode() for i in range(n)]
    leaves = [m.hash_leaf(e) for e in entries]
    cp = Checkpoint("acme.example/log", n, m.root_hash(leaves)).signed([signer])
    receipt = Receipt(idx, tuple(m.inclusion_proof(idx, leaves)), cp.note or "", entries[idx])
    return signer, receipt.encode(), entries


def test_receipt_text_format_and_offline_verification() -> None:
    signer, text, entries = _receipt_setup()
    lines = text.split("\n")
    assert lines[0] == "c2sp.org/tlog-proof@v1"
    assert lines[1] == "extra " + base64.b64encode(entries[6]).decode()
    assert lines[2] == "index 6"
    assert Receipt.parse(text).encode() == text
    check = verify_receipt(text, [signer.verifier], origin="acme.example/log")
    assert check.index == 6 and check.entry == entries[6] and check.checkpoint.size == 11


def test_receipt_tampering_is_rejected() -> None:
    signer, text, entries = _receipt_setup()
    v = signer.verifier
    with pytest.raises(NoteError, match="trusted key"):
        verify_receipt(text, [Ed25519Signer.generate("acme.example/log").verifier])
    with pytest.raises(NoteError, match="inclusion proof"):
        verify_receipt(text.replace("index 6", "index 5"), [v])
    swapped_entry = text.replace(base64.b64encode(entries[6]).decode(), base64.b64encode(entries[5]).decode())
    with pytest.raises(NoteError, match="inclusion proof"):
        verify_receipt(swapped_entry, [v])
    with pytest.raises(NoteError, match="differs"):
        verify_receipt(text, [v], entry=entries[5])
    proof_line = text.split("\n")[3]
    flipped = proof_line[:4] + ("A" if proof_line[4] != "A" else "B") + proof_line[5:]
    with pytest.raises(NoteError, match="inclusion proof"):
        verify_receipt(text.replace(proof_line, flipped), [v])
    with pytest.raises(NoteError, match=re.escape("not 'other.example/log'")):
        verify_receipt(text, [v], origin="other.example/log")
    with pytest.raises(NoteError, match="not a tlog-proof"):
        verify_receipt("c2sp.org/tlog-proof@v2" + text[len("c2sp.org/tlog-proof@v1") :], [v])


def test_parse_note_limits_signature_count() -> None:
    with pytest.raises(NoteError, match="too many"):
        parse_note(TEXT + "\n" + PETER_SIG * 101)
