"""The reference scenario with evidence: run it into a fresh ledger, verify it, and cut a receipt."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .._actions import ActionClass, MediationPoint
from .._demo import DemoStep, default_policy_path, run_scenario
from .._engine import Governor
from ._note import NoteVerifier, generate_signing_key, load_signing_key
from ._sink import Ledger, open_ledger
from ._verify import VerifyReport

__all__ = ["DEMO_ORIGIN", "DemoEvidence", "run_demo_with_evidence"]

DEMO_ORIGIN = "demo.fiveplane.local/ledger"


@dataclass(frozen=True)
class DemoEvidence:
    steps: list[DemoStep]
    url: str
    key_file: Path
    verifier_key: str
    report: VerifyReport
    checkpoint: str
    """The signed checkpoint note after the run."""
    receipt: str
    """A tlog-proof receipt for the decision on the contract change (the modify step)."""
    receipt_seq: int
    receipt_file: Path


def run_demo_with_evidence(
    policy: str | Path | None = None,
    directory: str | Path = ".fiveplane",
    *,
    governor: Callable[[Ledger], Governor] | None = None,
) -> DemoEvidence:
    """Run the scenario into ``<directory>/demo.db`` (recreated), verify it, and write a receipt.

    The signing key is ``<directory>/demo.key`` (created once; ``demo.key.pub`` is its verifier key);
    the receipt is written to ``<directory>/demo-receipt.tlog-proof``. Verify it offline with
    ``fiveplane audit verify-receipt .fiveplane/demo-receipt.tlog-proof --key .fiveplane/demo.key.pub``.

    ``governor`` builds the Governor around the ledger (to install planes); by default
    ``Governor(policy, evidence=ledger)``.
    """
    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    db = d / "demo.db"
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    key_file = d / "demo.key"
    if not key_file.exists():
        generate_signing_key(key_file, DEMO_ORIGIN)
    signer = load_signing_key(key_file)
    verifier = NoteVerifier.parse(signer.verifier_key())
    url = f"sqlite:///{db}"
    ledger = open_ledger(url, key=signer, checkpoint_interval=None)
    try:
        gov = governor(ledger) if governor is not None else Governor(policy or default_policy_path(), evidence=ledger)
        steps = run_scenario(gov)
        ledger.flush()
        cp = ledger.checkpoint()
        report = ledger.verify(keys=[verifier])
        modify = next(
            (s for s in steps if s.action.point is MediationPoint.TOOL_CALL and s.action.action_class is ActionClass.MODIFY),
            steps[0],
        )
        decision_seq = next(r.seq for r in ledger.records(modify.action.action_id) if r.kind == "decision")
        receipt = ledger.receipt(decision_seq).encode()
    finally:
        ledger.close()
    receipt_file = d / "demo-receipt.tlog-proof"
    receipt_file.write_text(receipt)
    return DemoEvidence(steps, url, key_file, str(verifier), report, cp.note or "", receipt, decision_seq, receipt_file)
