"""Witness cosignatures (C2SP tlog-cosignature, Ed25519 ``cosignature/v1``) and the witnessing commands:
`audit checkpoint --out`, `audit cosign`, `audit import-cosignature`, `audit verify --witness-key`.

Vectors: key IDs from transparency-dev/formats (note/note_cosigv1_test.go, TestCoSigV1NewVerifier), and
a real checkpoint of the arche2025h1.staging.ct.transparency.dev log as cosigned by three witnesses of
the public witness network (the log's and the witnesses' public keys as they publish them).
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from typer.testing import CliRunner

from fiveplane._cli import app
from fiveplane._ledger import Ed25519Signer, LedgerError, NoteVerifier, open_ledger, verify_receipt
from fiveplane._ledger._note import Checkpoint, NoteError, open_note, parse_note
from fiveplane._ledger._witness import (
    CosignatureVerifier,
    Cosigner,
    cosign_note,
    load_cosignature_verifier,
    verify_cosignatures,
    witness_checkpoint,
)
from tests.ledger.conftest import fill, raw_sqlite

runner = CliRunner()

REAL = """arche2025h1.staging.ct.transparency.dev
1432088532
U7WM79jrzyhGZ5/GUBTpM7NzwdyfFx61t3RovgcC4Ro=

— arche2025h1.staging.ct.transparency.dev zTM8sQAAAZ5W0WdjBAMARjBEAiBjW5IQf9pvsYLfQFX6hoGREPMHbdQ3urbllzalApkptQIgIpwtEroeW2BXaHAI4kJXFbon5Ch9MNL5zRNZ55lvGt0=
— arche2025h1.staging.ct.transparency.dev ui8GwCF1+kWqZrxGdhj4aX3gcw7XUlXQQabg/27lefwhUkzbC3NygNI75MdhL1bfTW9g8Ei59RA23oHP7Ry1k3ZFWwQ=
— transparency.dev/DEV:witness-little-garden 2AQqhwAAAABqEiEgzgFIqqhbUoDwjMWE6UP8nd8/KYTzwZ2rhIgcqoXHAwVkjZr4AscylP3v7sEodkRAErumC2q44vdgJY096st5BQ==
— witness1.smartit.nu/witness1 pIyCDwAAAABqEiEghIp82KWebrw7/oHQwlTAm3g2RKS4+eebl8eO0WH+/iEcxZ75W3u5hNI7TOQtmJbqmNWVuE0tgh0XwzdZsDsUAQ==
— remora.n621.de 2net5wAAAABqEiEgPlfF3V06o0Y+fHM+J5J9s27wgxxcOVSpZ/2g/KSiXCg9DEZI+aVCIobWX9sXTynk5XeU/zZ0WBxtqB0DrAWfBw==
— witness.stagemole.eu Z/euoAAAAABqEiEgw0i+7g2ENfDAWHmtRzCfKTHSDwYDJA2NmKeGi9Y8FtEyOUvVr+AJmIY/2TUFucgKi7lI7cUiOvKFYe/TmN9DAg==
"""
REAL_LOG = "arche2025h1.staging.ct.transparency.dev+ba2f06c0+AU0vHmlGCS/PdN8b2OaGmKprLI8HKM+dJ472xgFYh15f"
REAL_WITNESSES = [
    "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",
    "transparency.dev/DEV:witness-little-garden+d8042a87+BCtusOxINQNUTN5Oj8HObRkh2yHf/MwYaGX4CPdiVEPM",
    "witness1.smartit.nu/witness1+a48c820f+BPSFWg9G6KPiO7QPryYO5Xq4oYJJ+kAvLKLSimDhoxMO",
]
REAL_TIME = 1779573024


def test_cosignature_key_ids_match_transparency_dev() -> None:
    native = CosignatureVerifier.parse("remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2")
    assert native.key_id.hex() == "da77ade7" and str(native).startswith("remora.n621.de+da77ade7+BO")
    converted = CosignatureVerifier.parse("TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6")  # a 0x01 vkey
    assert converted.key_id.hex() != "7997405c" and str(converted).split("+", 2)[2].startswith("BA")  # type 0x04 now
    for bad in (
        "rekor.sigstore.dev+12345678+AwEB",  # wrong type
        "remora.n621.de+00000000+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2",  # wrong key ID
        "bananas.sigstore.dev+12344556",
        "rekor.sigstore.dev+12345678+THIS_IS_NOT_BASE64!",
    ):
        with pytest.raises(NoteError):
            CosignatureVerifier.parse(bad)


def test_a_real_witnessed_checkpoint_verifies() -> None:
    _, log = open_note(REAL, [NoteVerifier.parse(REAL_LOG)])
    assert [str(v) for v in log] == [REAL_LOG]
    good = verify_cosignatures(REAL, [CosignatureVerifier.parse(w) for w in REAL_WITNESSES], now=REAL_TIME)
    assert sorted(w.name for w, _ in good) == sorted(w.split("+")[0] for w in REAL_WITNESSES)
    assert {ts for _, ts in good} == {REAL_TIME}
    forged = REAL.replace("1432088532", "1432088533", 1)
    with pytest.raises(NoteError, match="invalid cosignature by witness remora"):
        verify_cosignatures(forged, [CosignatureVerifier.parse(REAL_WITNESSES[0])], now=REAL_TIME)
    with pytest.raises(NoteError, match="in the future"):
        verify_cosignatures(REAL, [CosignatureVerifier.parse(REAL_WITNESSES[0])], now=REAL_TIME - 3600)


def test_cosign_produces_the_spec_message_and_signature_layout() -> None:
    cosigner = Cosigner.generate("witness.example/w1")
    log = Ed25519Signer.generate("log.example/a")
    note = Checkpoint("log.example/a", 7, b"\x07" * 32, ("fiveplane-checkpoint 3",)).signed([log]).note or ""
    out = cosign_note(note, cosigner, timestamp=1_700_000_000)
    text, sigs = parse_note(out)
    line = sigs[-1]
    assert line.name == "witness.example/w1" and line.key_id == cosigner.key_id and len(line.signature) == 72
    assert int.from_bytes(line.signature[:8], "big") == 1_700_000_000
    message = b"cosignature/v1\ntime 1700000000\n" + text.encode()  # built here from the spec's words
    Ed25519PublicKey.from_public_bytes(cosigner.verifier.public_key).verify(line.signature[8:], message)
    assert verify_cosignatures(out, [cosigner.verifier]) == [(cosigner.verifier, 1_700_000_000)]
    open_note(out, [log.verifier])  # the log's own signature is untouched
    again = Cosigner.parse(cosigner.encode())
    assert again.verifier == cosigner.verifier
    reused = Cosigner.parse(log.encode())  # a note signer key (0x01) works as a cosigner key
    assert reused.key_id != log.key_id and reused.verifier.public_key == log.verifier.public_key


def test_witness_refuses_rollback_fork_and_unproven_growth(tmp_path: Path, sqlite_url: str, signer: Ed25519Signer) -> None:
    cosigner = Cosigner.generate("witness.example/w1")
    state = tmp_path / "state.checkpoint"
    led = open_ledger(sqlite_url, key=signer, checkpoint_interval=None, checkpoint_every=None)
    try:
        fill(led, 10)
        first = led.checkpoint().note or ""
        w1 = witness_checkpoint(first, cosigner, [signer.verifier], state=state, proof=led.consistency_proof)
        assert w1.previous_size is None and state.read_text() == w1.note
        fill(led, 7, start=10)
        second = led.checkpoint().note or ""
        with pytest.raises(NoteError, match="consistency proof from size 10 to 17 is needed"):
            witness_checkpoint(second, cosigner, [signer.verifier], state=state)
        w2 = witness_checkpoint(second, cosigner, [signer.verifier], state=state, proof=led.consistency_proof)
        assert w2.previous_size == 10 and w2.consistency_proof > 0
        with pytest.raises(NoteError, match="rollback"):
            witness_checkpoint(first, cosigner, [signer.verifier], state=state, proof=led.consistency_proof)
        fork = Checkpoint(led.origin, 17, b"\x01" * 32).signed([signer]).note or ""
        with pytest.raises(NoteError, match="fork"):
            witness_checkpoint(fork, cosigner, [signer.verifier], state=state, proof=led.consistency_proof)
        bigger = Checkpoint(led.origin, 30, b"\x02" * 32).signed([signer]).note or ""
        fill(led, 13, start=17)  # the ledger really has 30 entries, but not that root
        with pytest.raises(NoteError, match="not consistent"):
            witness_checkpoint(bigger, cosigner, [signer.verifier], state=state, proof=led.consistency_proof)
        stranger = Ed25519Signer.generate(led.origin)
        with pytest.raises(NoteError, match="no signature from a trusted key"):
            witness_checkpoint(second, cosigner, [stranger.verifier], state=state)
        assert Checkpoint.parse_unverified(state.read_text()).size == 17  # refusals left the state alone
    finally:
        led.close()


def cli(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, ["audit", *args])
    return result.exit_code, result.output


def test_witnessing_end_to_end(tmp_path: Path, sqlite_url: str, signer: Ed25519Signer, verifier: NoteVerifier) -> None:
    wkey = tmp_path / "witness.key"
    code, out = cli("keygen", "witness.example/w1", "--out", str(wkey), "--witness")
    assert code == 0 and (tmp_path / "witness.key.pub").exists()
    wpub = load_cosignature_verifier(tmp_path / "witness.key.pub")
    assert str(wpub) in out and base64.b64decode(str(wpub).split("+", 2)[2])[0] == 0x04
    with open_ledger(sqlite_url, key=signer) as led:
        fill(led, 12)
    state, cp1, cos1 = tmp_path / "w" / "state", tmp_path / "cp1", tmp_path / "cos1"
    assert cli("checkpoint", "--db", sqlite_url, "--key", str(verifier), "--out", str(cp1))[0] == 0
    args = ["--key", str(wkey), "--log-key", str(verifier), "--state", str(state), "--db", sqlite_url]
    code, out = cli("cosign", "--checkpoint", str(cp1), *args, "--out", str(cos1))
    assert code == 0 and "cosigned" in out and "first checkpoint this witness cosigns" in out
    code, out = cli("verify", "--db", sqlite_url, "--key", str(verifier), "--witness-key", str(wpub))
    assert code == 1 and "carries 0 valid cosignature(s)" in out  # not imported yet
    code, out = cli("verify", "--db", sqlite_url, "--key", str(verifier), "--witness-key", str(wpub), "--against", str(cos1))
    assert code == 0 and "witnessed" in out
    assert cli("import-cosignature", str(cos1), "--db", sqlite_url, "--witness-key", str(wpub)) == (
        0,
        "stored 1 new cosignature(s)\n",
    )
    assert cli("import-cosignature", str(cos1), "--db", sqlite_url)[1] == "stored 0 new cosignature(s)\n"
    code, out = cli("verify", "--db", sqlite_url, "--key", str(verifier), "--witness-key", str(wpub), "--json")
    report = json.loads(out)
    assert code == 0 and report["witness"]["size"] == 12 and report["witness"]["cosigned_by"][0]["key"] == str(wpub)
    _, shown = cli("checkpoint", "--db", sqlite_url)
    assert "— witness.example/w1 " in shown  # the stored checkpoint is handed out with its cosignature
    receipt = tmp_path / "r.tlog-proof"
    assert cli("receipt", "4", "--db", sqlite_url, "--out", str(receipt))[0] == 0
    assert "— witness.example/w1 " in receipt.read_text()
    check = verify_receipt(receipt.read_text(), [verifier])
    assert verify_cosignatures(receipt.read_text().split("\n\n", 1)[1], [wpub]) and check.index == 4

    with open_ledger(sqlite_url, key=signer) as led:  # the log grows and signs again at close
        fill(led, 5, start=12)
    code, out = cli("verify", "--db", sqlite_url, "--key", str(verifier), "--witness-key", str(wpub))
    assert code == 1 and "latest stored checkpoint (size 17)" in out  # the latest is not witnessed yet
    code, _ = cli("verify", "--db", sqlite_url, "--key", str(verifier), "--witness-key", str(wpub), "--against", str(cos1))
    assert code == 0  # still consistent with what the witness saw
    cp2, cos2 = tmp_path / "cp2", tmp_path / "cos2"
    assert cli("checkpoint", "--db", sqlite_url, "--out", str(cp2))[0] == 0
    code, out = cli("cosign", "--checkpoint", str(cp2), *args, "--out", str(cos2), "--json")
    assert code == 0 and json.loads(out)["previous_size"] == 12 and json.loads(out)["consistency_proof"] > 0
    assert cli("import-cosignature", str(cos2), "--db", sqlite_url)[0] == 0
    assert cli("verify", "--db", sqlite_url, "--key", str(verifier), "--witness-key", str(wpub))[0] == 0
    code, out = cli("cosign", "--checkpoint", str(cp1), *args, "--out", str(tmp_path / "again"))
    assert code == 1 and "rollback" in out
    other = Cosigner.generate("witness.example/w2")
    code, out = cli("verify", "--db", sqlite_url, "--key", str(verifier), "--witness-key", str(other.verifier))
    assert code == 1 and "0 valid cosignature(s)" in out
    code, out = cli("verify", "--db", sqlite_url, "--witness-key", str(wpub), "--witnesses", "2")
    assert code == 2 and "only 1 --witness-key" in out


def test_a_tampered_stored_cosignature_fails(tmp_path: Path, sqlite_url: str, db_path: Path, signer: Ed25519Signer) -> None:
    cosigner = Cosigner.generate("witness.example/w1")
    with open_ledger(sqlite_url, key=signer) as led:
        fill(led, 4)
        cp = led.checkpoint()
        note = witness_checkpoint(cp.note or "", cosigner, [signer.verifier]).note
        assert led.add_cosignatures(note, witnesses=[cosigner.verifier]) == 1
        assert led.verify(keys=[signer.verifier], witness_keys=[cosigner.verifier]).ok
    conn = raw_sqlite(db_path)
    line = conn.execute("SELECT line FROM ledger_cosignatures").fetchone()[0]
    name, b64 = line[2:-1].split(" ")
    raw = bytearray(base64.b64decode(b64))
    raw[20] ^= 1
    conn.execute("UPDATE ledger_cosignatures SET line = ?", (f"— {name} {base64.b64encode(bytes(raw)).decode()}\n",))
    with open_ledger(sqlite_url, create=False) as led:
        report = led.verify(keys=[signer.verifier], witness_keys=[cosigner.verifier])
        assert not report.ok and "invalid cosignature by witness" in str(report.problems)
        with pytest.raises(LedgerError, match="differs from the checkpoint stored"):
            led.add_cosignatures(note.replace("fiveplane-checkpoint 1", "fiveplane-checkpoint 9", 1))


def test_a_ledger_from_before_witnessing_reads_and_takes_cosignatures(
    tmp_path: Path, sqlite_url: str, db_path: Path, signer: Ed25519Signer, verifier: NoteVerifier
) -> None:
    with open_ledger(sqlite_url, key=signer) as led:
        fill(led, 3)
    conn = raw_sqlite(db_path)
    conn.execute("DROP TABLE ledger_cosignatures")  # the schema as earlier versions created it
    conn.close()
    cp = tmp_path / "cp"
    assert cli("checkpoint", "--db", sqlite_url, "--out", str(cp))[0] == 0
    assert cli("verify", "--db", sqlite_url, "--key", str(verifier))[0] == 0
    cosigner = Cosigner.generate("witness.example/w1")
    cosigned = tmp_path / "cosigned"
    cosigned.write_text(witness_checkpoint(cp.read_text(), cosigner, [verifier]).note)
    assert cli("verify", "--db", sqlite_url, "--key", str(verifier), "--witness-key", str(cosigner.verifier))[0] == 1
    assert cli("import-cosignature", str(cosigned), "--db", sqlite_url)[0] == 0
    assert cli("verify", "--db", sqlite_url, "--key", str(verifier), "--witness-key", str(cosigner.verifier))[0] == 0
