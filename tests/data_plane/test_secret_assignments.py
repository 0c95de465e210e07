"""Secrets assigned to a key: ``aws_secret_access_key = …``, ``password=…`` / ``passwd:`` /
``secret=``, ``Authorization: Bearer …``, PEM private keys. The value is redacted (inbound) or the
action blocked (outbound); the key stays readable; prose, placeholders and code references are not
secrets."""

from __future__ import annotations

from typing import Any

import pytest

from fiveplane import MediationPoint, Verdict

from .conftest import act, evaluate, make_plane

pytestmark = pytest.mark.requires_model

AWS_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
PEM = (
    "-----BEGIN RSA PRIVATE KEY-----\n"
    "MIIEowIBAAKCAQEAu1SU1LfVLPHCozMxH2Mo4lgOEePzNm0tRgeLezV6ffAt0gun\n"
    "VTLw7onLRnrq0/IzW7yWR7QkrmBL7jTKEn5u+qKhbwKfBstIs+bMY2Zkp18gnTxK\n"
    "-----END RSA PRIVATE KEY-----"
)


@pytest.fixture(scope="module")
def plane() -> Any:
    # the small test model calls some identifiers persons (``AWS_SECRET_ACCESS_KEY``): names are not what is tested here
    return make_plane({"rules": [{"id": "no-names", "entities": {"PERSON": "off"}}]})


def inbound(plane: Any, text: str) -> str:
    out: str = plane.redact_text(text, point=MediationPoint.TOOL_RESULT)
    return out


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (f"aws_secret_access_key = {AWS_SECRET}", "aws_secret_access_key = <API_KEY>"),
        (f"AWS_SECRET_ACCESS_KEY={AWS_SECRET}\n", "AWS_SECRET_ACCESS_KEY=<API_KEY>\n"),
        (f'{{"aws_secret_access_key": "{AWS_SECRET}"}}', '{"aws_secret_access_key": "<API_KEY>"}'),
        ("password=hunter22", "password=<PASSWORD>"),
        ("db passwd: Tr0ub4dor&3 (rotate monthly)", "db passwd: <PASSWORD> (rotate monthly)"),
        ("secret=opensesame", "secret=<PASSWORD>"),
        ('export DB_PASSWORD="correct horse battery staple"', 'export DB_PASSWORD="<PASSWORD>"'),
        ("client_secret: 'q8Z!x2LmP0'", "client_secret: '<PASSWORD>'"),
        ("PGPASSWORD=s3cr3t psql -h db", "PGPASSWORD=<PASSWORD> psql -h db"),
        ("Authorization: Bearer abcdef0123456789ABCDEFxyz", "Authorization: Bearer <API_KEY>"),
        ("authorization: basic dXNlcjpwYXNzd29yZA==", "authorization: basic <API_KEY>"),
        (
            "curl -H 'Authorization: Token 9f8e7d6c5b4a39281706' https://api",
            "curl -H 'Authorization: Token <API_KEY>' https://api",
        ),
        ("use bearer Xk9mP2vQz7wLr4Ts8Yb1 for the call", "use bearer <API_KEY> for the call"),
        ("STRIPE_API_KEY=Zx81kQmP0aLs93nVbT7u", "STRIPE_API_KEY=<API_KEY>"),
        (f"key file:\n{PEM}\nend", "key file:\n<PRIVATE_KEY>\nend"),
    ],
)
def test_secret_values_are_redacted_and_the_key_stays(plane: Any, text: str, expected: str) -> None:
    assert inbound(plane, text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "Password: please reset it from the portal.",
        "The password is required to continue.",
        "password: ********",
        "password=${DB_PASSWORD}",
        "password = os.environ.get('DB_PASSWORD')",
        "pass = get_password()",
        "password: <your password>",
        "secret: null",
        "The secretary: see the org chart.",
        "passwords must have 12 characters",
        "api_key = 'changeme'",  # not random: an API key assignment needs a random-looking value
        "Authorization: Bearer $TOKEN",
    ],
)
def test_prose_placeholders_and_references_are_not_secrets(plane: Any, text: str) -> None:
    assert inbound(plane, text) == text


def test_outbound_secrets_block_and_the_message_names_no_value(plane: Any, sales_policy: Any) -> None:
    for body in (
        "db password=hunter22",
        f"aws_secret_access_key = {AWS_SECRET}",
        f"key:\n{PEM}",
        "Authorization: Bearer abcdef0123456789ABCDEFxyz",
    ):
        r = evaluate(plane, act("tool_call", "email.send", arguments={"to": "a@acme.example", "body": body}), sales_policy)
        blocked = [f for f in r.findings if f.verdict is Verdict.BLOCK]
        assert blocked and blocked[0].code == "secret_blocked", body
        assert "hunter22" not in blocked[0].message and AWS_SECRET not in blocked[0].message
        evidence = plane.redact_evidence(act("tool_call", "email.send", arguments={"to": "a@acme.example", "body": body}))
        assert "hunter22" not in str(evidence.arguments) and AWS_SECRET not in str(evidence.arguments)
        assert "MIIEow" not in str(evidence.arguments)


def test_password_is_a_secret_entity(plane: Any) -> None:
    from fiveplane._pii._config import ENTITY_GROUPS, SECRET_ENTITIES

    assert "PASSWORD" in SECRET_ENTITIES and "PASSWORD" in ENTITY_GROUPS["SECRETS"]
    scope = plane.compiled().scope(MediationPoint.TOOL_CALL, "email.send", None)
    assert scope.entities["PASSWORD"].action == "block"
    assert plane.compiled().scope(MediationPoint.TOOL_RESULT, None, None).entities["PASSWORD"].action == "redact"


def test_assignment_recognizer_is_linear_on_hostile_input(plane: Any) -> None:
    import time

    from fiveplane._pii._recognizers import AssignmentRecognizer

    rec = AssignmentRecognizer()
    for text in ("password" * 20_000, "password=" + "a" * 100_000, "a_" * 50_000 + "=", "Bearer " * 20_000, "'" * 100_000):
        t = time.perf_counter()
        rec.analyze(text, ["API_KEY", "PASSWORD"])
        assert time.perf_counter() - t < 2.0, text[:20]


@pytest.mark.parametrize(
    "arguments",
    [
        {"user": "svc-report", "password": "hunter22"},
        {"config": {"db": {"DB_PASSWORD": "Tr0ub4dor&3"}}},
        {"headers": {"Authorization": "Bearer abcdef0123456789ABCDEFxyz"}},
        {"aws_secret_access_key": AWS_SECRET},
        {"body": '{"client_secret": "q8Z!x2LmP0", "client_id": "reports"}'},  # a JSON string, parsed
    ],
)
def test_a_secret_field_holds_a_secret(plane: Any, sales_policy: Any, arguments: dict[str, Any]) -> None:
    r = evaluate(plane, act("tool_call", "email.send", arguments=arguments), sales_policy)
    assert any(f.code == "secret_blocked" for f in r.findings), [f.message for f in r.findings]
    stored = str(plane.redact_evidence(act("tool_call", "email.send", arguments=arguments)).arguments)
    for clear in ("hunter22", "Tr0ub4dor", "abcdef0123456789", AWS_SECRET, "q8Z!x2LmP0"):
        assert clear not in stored
    assert "svc-report" in stored or "reports" in stored or "Bearer" in stored or "<" in stored


def test_fields_that_only_look_secret_keep_their_values(plane: Any, sales_policy: Any) -> None:
    arguments = {
        "password_policy": "min 12 chars",
        "token_count": 512,
        "keyword": "renewal",
        "password": "********",
        "next_page_token": "CAESBggBEAEYAQxZ9k2",  # a pagination cursor, not a credential
        "max_tokens": 1024,
    }
    r = evaluate(plane, act("tool_call", "email.send", arguments=arguments), sales_policy)
    assert not any(f.verdict is Verdict.BLOCK for f in r.findings), [f.message for f in r.findings]
