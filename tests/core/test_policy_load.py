"""Policy packs: validation with file:line errors, CEL at load, composition, defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from fiveplane import PolicyError, load_policy
from fiveplane._policy._lint import lint_policy

MINIMAL = """\
name: t
tools:
  - name: crm.read
    connector: crm
    class: read
connectors:
  - name: crm
agents:
  - name: bot
    purpose: testing
rules:
  - id: r1
    match: {tools: [crm.read]}
    verdict: allow
"""


def write(tmp_path: Path, text: str, name: str = "pack.yaml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def errors_of(tmp_path: Path, text: str) -> list[str]:
    with pytest.raises(PolicyError) as exc:
        load_policy(write(tmp_path, text))
    return exc.value.errors


def test_minimal_pack_loads(tmp_path: Path) -> None:
    policy = load_policy(write(tmp_path, MINIMAL))
    assert policy.name == "t"
    assert [r.id for r in policy.rules] == ["r1"]
    assert policy.hash.startswith("sha256:") and len(policy.hash) == 71
    assert policy.tools["crm.read"].connector == "crm"


def test_hash_changes_with_content(tmp_path: Path) -> None:
    a = load_policy(write(tmp_path, MINIMAL, "a.yaml")).hash
    b = load_policy(write(tmp_path, MINIMAL.replace("verdict: allow", "verdict: block"), "b.yaml")).hash
    assert a != b


def test_malformed_yaml_names_the_line(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, "name: t\nrules:\n  - id: [unclosed\n")
    assert len(errs) == 1
    assert errs[0].startswith(f"{tmp_path / 'pack.yaml'}:")
    assert "invalid YAML" in errs[0]


def test_unknown_key_is_rejected_with_line(tmp_path: Path) -> None:
    text = MINIMAL.replace("    verdict: allow", "    verdict: allow\n    verdcit: block")
    errs = errors_of(tmp_path, text)
    assert any("unknown key 'verdcit'" in e and e.split(":")[1] == "15" for e in errs), errs


def test_duplicate_key_is_rejected(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, MINIMAL + "name: again\n")
    assert any("duplicate key 'name'" in e for e in errs)


def test_invalid_cel_is_a_load_error(tmp_path: Path) -> None:
    text = MINIMAL.replace("    verdict: allow", "    when: 'args.x >'\n    verdict: allow")
    errs = errors_of(tmp_path, text)
    assert any(":14:" in e and "invalid CEL" in e and "r1" in e for e in errs), errs


def test_unknown_cel_function_is_a_load_error(tmp_path: Path) -> None:
    text = MINIMAL.replace("    verdict: allow", "    when: 'args.to.lowerAscii() == \"x\"'\n    verdict: allow")
    errs = errors_of(tmp_path, text)
    assert any("unknown CEL function(s) lowerAscii" in e for e in errs), errs


def test_rule_naming_unknown_tool(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, MINIMAL.replace("match: {tools: [crm.read]}", "match: {tools: [crm.wipe]}"))
    assert any("unknown tool 'crm.wipe'" in e and ":13:" in e for e in errs), errs


def test_tool_naming_unknown_connector(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, MINIMAL.replace("    connector: crm\n", "    connector: erp\n"))
    assert any("unknown connector 'erp'" in e for e in errs)


def test_empty_pack_is_an_error(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, "name: empty\n")
    assert any("no rules" in e for e in errs)
    assert load_policy(write(tmp_path, "name: empty\nunsafe_empty: true\n", "ok.yaml")).rules == []


def test_empty_file_is_an_error(tmp_path: Path) -> None:
    assert any("empty" in e for e in errors_of(tmp_path, ""))


def test_not_a_mapping(tmp_path: Path) -> None:
    assert any("must be a mapping" in e for e in errors_of(tmp_path, "- a\n- b\n"))


def test_require_approval_needs_an_approver(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, MINIMAL.replace("verdict: allow", "verdict: require_approval"))
    assert any("approval" in e for e in errs)


def test_bad_verdict_value(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, MINIMAL.replace("verdict: allow", "verdict: permit"))
    assert any("rules.0.verdict" in e and ":14:" in e for e in errs), errs


def test_duplicate_rule_ids(tmp_path: Path) -> None:
    text = MINIMAL + "  - id: r1\n    match: {tools: [crm.read]}\n    verdict: block\n"
    assert any("duplicate rule id 'r1'" in e for e in errors_of(tmp_path, text))


def test_non_utf8_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.yaml"
    p.write_bytes(b"name: \xff\xfe\n")
    with pytest.raises(PolicyError) as exc:
        load_policy(p)
    assert "not UTF-8" in str(exc.value)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError) as exc:
        load_policy(tmp_path / "nope.yaml")
    assert "cannot read" in str(exc.value)


def test_extends_composes_and_detects_cycles(tmp_path: Path) -> None:
    write(
        tmp_path,
        "name: base\ndefaults: {no_match: require_approval}\nrules:\n  - id: base.r\n    match: {points: [final_output]}\n    verdict: allow\n",
        "base.yaml",
    )
    app = write(tmp_path, "extends: [base.yaml]\n" + MINIMAL, "app.yaml")
    policy = load_policy(app)
    assert [r.id for r in policy.rules] == ["base.r", "r1"]
    assert policy.defaults.no_match == "require_approval"
    assert policy.defaults.unknown_tool == "block"
    write(tmp_path, "name: x\nextends: [y.yaml]\nunsafe_empty: true\n", "x.yaml")
    write(tmp_path, "name: y\nextends: [x.yaml]\nunsafe_empty: true\n", "y.yaml")
    with pytest.raises(PolicyError) as exc:
        load_policy(tmp_path / "x.yaml")
    assert "cycle" in str(exc.value)


def test_extends_missing_file(tmp_path: Path) -> None:
    errs = errors_of(tmp_path, "extends: [nowhere.yaml]\n" + MINIMAL)
    assert any("nowhere.yaml" in e and "not found" in e for e in errs)


def test_conflicting_tool_declarations(tmp_path: Path) -> None:
    write(
        tmp_path,
        "name: base\nunsafe_empty: true\nconnectors: [{name: crm}]\ntools:\n  - {name: crm.read, connector: crm, class: modify}\n",
        "base.yaml",
    )
    errs = errors_of(tmp_path, "extends: [base.yaml]\n" + MINIMAL)
    assert any("already declared differently" in e for e in errs)


def test_lint_finds_unreachable_shadowed_duplicate_and_unknown_variables(tmp_path: Path) -> None:
    text = MINIMAL + (
        "  - id: unreachable\n    match: {tools: [crm.read], classes: [modify]}\n    verdict: allow\n"
        "  - id: blocker\n    match: {tools: [crm.read]}\n    verdict: block\n"
        "  - id: dup\n    match: {tools: [crm.read]}\n    verdict: allow\n"
        "  - id: typo\n    match: {tools: [crm.read]}\n    when: 'argz.x == 1'\n    verdict: block\n"
        "  - id: comprehension-ok\n    match: {tools: [crm.read]}\n    when: 'args.items.exists(i, i == 1)'\n    verdict: block\n"
    )
    issues = {(i.rule_id, i.code) for i in lint_policy(load_policy(write(tmp_path, text)))}
    assert ("unreachable", "unreachable") in issues
    assert ("r1", "shadowed") in issues
    assert ("dup", "duplicate") in issues
    assert ("typo", "unknown_variable") in issues
    assert not any(rid == "comprehension-ok" for rid, _ in issues)


def test_shipped_packs_load_and_lint_clean() -> None:
    root = Path(__file__).resolve().parents[2] / "policies"
    packs = [p for p in root.rglob("*.yaml") if not p.name.endswith(".tests.yaml")]
    assert packs
    for pack in packs:
        assert [i for i in lint_policy(load_policy(pack)) if i.level == "error"] == []
