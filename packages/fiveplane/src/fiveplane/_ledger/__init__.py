"""The evidence ledger: a tamper-evident RFC 6962 / RFC 9162 Merkle log over SQLAlchemy.

Open one with :func:`open_ledger` and hand it to the Governor (``Governor(policy, evidence=ledger)``):
every decision leaves intent, decision and enforcement records (durable before a ``modify`` runs),
every outcome its own record. Checkpoints are C2SP signed notes (Ed25519), witnesses cosign them
(C2SP tlog-cosignature), receipts are C2SP tlog-proofs anyone verifies offline, and
:meth:`Ledger.verify` recomputes everything from storage and trusts only what a given key signed.
"""

from ._demo import DemoEvidence, run_demo_with_evidence
from ._errors import LedgerError, LedgerUnavailable
from ._note import (
    Checkpoint,
    Ed25519Signer,
    NoteError,
    NoteSigner,
    NoteVerifier,
    Receipt,
    ReceiptCheck,
    generate_signing_key,
    load_signing_key,
    load_verifier,
    verify_receipt,
)
from ._reconstruct import ActionStory, EvidenceRecord, TimelineFilter
from ._sink import DEFAULT_URL, Ledger, open_ledger
from ._verify import Problem, VerifyReport
from ._witness import (
    CosignatureVerifier,
    Cosigner,
    generate_witness_key,
    load_cosignature_verifier,
    load_cosigner,
    verify_cosignatures,
    witness_checkpoint,
)

__all__ = [
    "DEFAULT_URL",
    "ActionStory",
    "Checkpoint",
    "CosignatureVerifier",
    "Cosigner",
    "DemoEvidence",
    "Ed25519Signer",
    "EvidenceRecord",
    "Ledger",
    "LedgerError",
    "LedgerUnavailable",
    "NoteError",
    "NoteSigner",
    "NoteVerifier",
    "Problem",
    "Receipt",
    "ReceiptCheck",
    "TimelineFilter",
    "VerifyReport",
    "generate_signing_key",
    "generate_witness_key",
    "load_cosignature_verifier",
    "load_cosigner",
    "load_signing_key",
    "load_verifier",
    "open_ledger",
    "run_demo_with_evidence",
    "verify_cosignatures",
    "verify_receipt",
    "witness_checkpoint",
]
