"""A demo ledger to explore: the reference scenario, plus a policy-tuning trial in shadow mode.

Used by the notebooks' runner, the tests and the benchmarks. Offline and deterministic in shape:
the core scripted scenario (DESIGN.md §8) with its approvals recorded as ``approval.*`` events,
then the same scenario again under a trial pack that adds rules in ``shadow`` mode (what they
*would* have done is recorded, nothing changes) — so a notebook has divergences to look at.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["TRIAL_PACK", "SampleLedger", "build_sample_ledger"]

TRIAL_PACK = """\
# A policy-tuning trial over the sales-support pack: two candidate rules in shadow mode.
name: sales-support-trial
version: "1.1.0-rc1"
mode: enforce
extends: [{base}]
rules:
  - id: trial.notes-need-approval
    reason: reading free-text CRM notes might need a manager's approval
    match: {{tools: [crm.get_account_notes]}}
    verdict: require_approval
    approval: {{role: sales-manager}}
    mode: shadow
  - id: trial.no-contract-mail
    reason: e-mail that names a contract might leak it
    match: {{tools: [email.send]}}
    when: 'has(args.body) && args.body.contains("C-7")'
    verdict: block
    mode: shadow
"""


@dataclass(frozen=True)
class SampleLedger:
    url: str
    directory: Path
    key_file: Path
    verifier_key: str
    policy: Path
    trial_policy: Path
    sessions: tuple[str, ...]


def _recorder(ledger: Any) -> Any:
    def record(kind: str, payload: dict[str, Any]) -> None:
        meta = {k: v for k, v in payload.items() if k != "reason" and v is not None}
        ledger.record_event(
            kind,
            meta,
            {"reason": payload.get("reason")},
            action_id=payload.get("action_id"),
            session_id=payload.get("session_id"),
        )

    return record


def _governor(policy: Path, ledger: Any, db: str) -> Any:
    from biscuit_auth import KeyPair

    from .._approvals import ApprovalStore
    from .._engine import Governor
    from .._planes._identity import IdentityPlane
    from .._policy._load import load_policy

    pack = load_policy(policy)
    planes = [IdentityPlane(database=db, root_key=KeyPair())] if "identity" in pack.planes else []
    return Governor(pack, planes=planes, approvals=ApprovalStore(db, record=_recorder(ledger)), evidence=ledger)


def build_sample_ledger(directory: str | Path, *, policy: str | Path | None = None, trial: bool = True) -> SampleLedger:
    """Run the reference scenario (and the shadow trial) into ``<directory>/demo.db``; returns where it is.

    The ledger is signed (``<directory>/demo.key``), checkpointed and closed; approvals, grants and
    revocations live in the same database.
    """
    from .._demo import default_policy_path, run_scenario
    from .._ledger import load_signing_key, open_ledger, run_demo_with_evidence

    d = Path(directory)
    d.mkdir(parents=True, exist_ok=True)
    base = Path(policy) if policy else default_policy_path()
    holder: dict[str, Any] = {}

    def make(ledger: Any) -> Any:
        holder["ledger"] = ledger
        return _governor(base, ledger, ledger.store.url.render_as_string(hide_password=False))

    ev = run_demo_with_evidence(base, d, governor=make)
    sessions = ["demo-session"]
    trial_file = d / "sales-support-trial.yaml"
    if trial:
        pack_dir = d / "packs"
        if pack_dir.exists():
            shutil.rmtree(pack_dir)
        # the trial extends the real pack by path; copy the pack and its bases so relative paths hold
        src_root = base.resolve().parent.parent
        shutil.copytree(src_root, pack_dir, ignore=shutil.ignore_patterns("*.tests.yaml"))
        rel = base.resolve().relative_to(src_root)
        trial_file = pack_dir / rel.parent / "sales-support-trial.yaml"
        trial_file.write_text(TRIAL_PACK.format(base=rel.name), encoding="utf-8")
        signer = load_signing_key(ev.key_file)
        ledger = open_ledger(ev.url, key=signer, checkpoint_interval=None)
        try:
            # its own grants and approvals (the pack's grants are seeded per pack); evidence in the same ledger
            state = d / "trial-state.db"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{state}{suffix}").unlink(missing_ok=True)
            gov = _governor(trial_file, ledger, f"sqlite:///{state}")
            run_scenario(gov, session_id="tuning-trial")
            ledger.flush()
            ledger.checkpoint()
        finally:
            ledger.close()
        sessions.append("tuning-trial")
    return SampleLedger(ev.url, d, ev.key_file, ev.verifier_key, base, trial_file, tuple(sessions))
