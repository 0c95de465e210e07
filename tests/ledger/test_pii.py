"""Sensitive data never reaches the ledger in clear: arguments are redacted by the Governor's `redact=`
hook before they are recorded, tool results are stored only as digests. The test greps the raw
database files (main file, WAL and shared memory) for the PII it handed to the tools."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from fiveplane import Action, Governor
from fiveplane._ledger import open_ledger
from tests.ledger.test_ledger import PACK

EMAIL = "jane.roe@globex.example"
PHONE = "+1 415 555 0134"
SSN = "078-05-1120"
ADDRESS = "742 Evergreen Terrace"
SECRETS = (EMAIL, PHONE, SSN, ADDRESS, "Jane Roe")
CHAIN = [{"kind": "user", "id": "tess", "roles": ["tester"]}, {"kind": "agent", "id": "test-agent"}]

_PII = re.compile("|".join(re.escape(s) for s in SECRETS))


def _scrub(value: Any) -> Any:
    if isinstance(value, str):
        return _PII.sub("[REDACTED]", value)
    if isinstance(value, dict):
        return {k: _scrub(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_scrub(v) for v in value]
    return value


def redact(action: Action) -> Action:
    """Stand-in for the data plane's redaction hook."""
    return action.model_copy(update={"arguments": _scrub(action.arguments), "content": _scrub(action.content)})


def test_pii_in_arguments_and_results_is_not_stored(tmp_path: Path) -> None:
    db = tmp_path / "pii.db"
    received: list[dict[str, Any]] = []

    def update(customer: str, tier: str, contact: dict[str, str]) -> dict[str, Any]:
        received.append({"customer": customer, "contact": contact})
        return {"customer": customer, "ssn": SSN, "address": ADDRESS, "phone": PHONE, "name": "Jane Roe"}

    def lookup(customer: str) -> str:
        return f"Jane Roe lives at {ADDRESS}, mail {EMAIL}"

    led = open_ledger(f"sqlite:///{db}", origin="pii.test/log")
    gov = Governor(PACK, evidence=led, redact=redact)
    with gov.run(CHAIN, session_id="s-pii", intent="update the customer's tier", purpose="testing"):
        out = gov.govern(update, tool="crm.update")(
            customer="Jane Roe", tier="gold", contact={"email": EMAIL, "phone": PHONE, "ssn": SSN}
        )
        note = gov.govern(lookup, tool="crm.lookup")(customer=EMAIL)
    assert received[0]["contact"]["ssn"] == SSN and out["ssn"] == SSN and EMAIL in note  # the tools saw real data
    led.flush()

    stored = [e for _, e in led.iter_records()]
    calls = [e["action_id"] for e in stored if e["kind"] == "decision" and e["meta"]["point"] == "tool_call"]
    story = led.reconstruct(calls[0])
    assert story is not None and story.what["arguments"]["contact"]["ssn"] == "[REDACTED]"
    assert story.results[0].what["content"] is None and story.results[0].what["content_digest"].startswith("sha256:")
    assert story.outcomes[0]["result_digest"].startswith("sha256:")

    def leaked() -> list[str]:
        found = []
        for suffix in ("", "-wal", "-shm"):
            path = Path(f"{db}{suffix}")
            if path.exists():
                data = path.read_bytes()
                found += [f"{path.name}: {s}" for s in SECRETS if s.encode() in data]
        return found

    assert leaked() == []
    led.close()
    assert leaked() == []
    assert Path(db).stat().st_size > 0  # the grep looked at a real file
