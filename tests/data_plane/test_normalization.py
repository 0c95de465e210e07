"""Normalization before detection: percent-encoded, full-width and zero-width-split values are found,
and redaction removes the whole original span (no prefix, no ``%XX``, no hidden character left of the
value). Property tests interleave the three obfuscations into planted values."""

from __future__ import annotations

import re
import unicodedata
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fiveplane import MediationPoint, Verdict
from fiveplane._pii._normalize import normalize

from .conftest import act, evaluate, make_plane

ZERO_WIDTH = ("\u200b", "\u200c", "\u200d", "\u2060", "\ufeff", "\u00ad", "\u202e", "\U000e0041", "\ufe0f")


# ---- the normalizer alone (no Presidio) ---------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("dana.whitfield%40globex-corp.com", "dana.whitfield@globex-corp.com"),
        ("ｄａｎａ＠ｇｌｏｂｅｘ．ｃｏｍ", "dana@globex.com"),
        ("４１１１ １１１１ １１１１ １１１１", "4111 1111 1111 1111"),
        ("dana\u200b.whit\u2060field@glo\u00adbex.com", "dana.whitfield@globex.com"),
        ("%2540", "@"),  # double percent-encoding
        ("％４０", "@"),  # full-width percent-encoding
        ("%EF%BC%A0", "@"),  # percent-encoded full-width
        ("%E2%80%8Bx", "x"),  # percent-encoded zero-width space
        ("100% sure, %zz and %FF stay", "100% sure, %zz and %FF stay"),
        ("ﬁle", "file"),
        ("cafe\u0301", "café"),
    ],
)
def test_normalize(text: str, expected: str) -> None:
    n = normalize(text)
    assert n.text == expected
    assert n.changed == (expected != text)
    if n.changed:  # the whole text maps back to the original, up to the last character
        start, end = n.span(0, len(n.text))
        assert end == len(text) and normalize(text[start:end]).text == expected


def test_plain_ascii_is_not_copied_or_mapped() -> None:
    n = normalize("jane.roe@globex.example called at 10:30")
    assert not n.changed and n.starts is None and n.span(3, 7) == (3, 7)


def test_spans_map_to_the_original_characters() -> None:
    text = "mail: ｄａｎａ\u200b＠ｘ．ｉｏ!"
    n = normalize(text)
    start = n.text.index("dana")
    s, e = n.span(start, start + len("dana@x.io"))
    assert text[s:e] == "ｄａｎａ\u200b＠ｘ．ｉｏ"


def test_every_format_character_is_invisible() -> None:
    from fiveplane._pii._normalize import is_invisible

    # all of Unicode's format characters (Cf) of this Python, plus variation selectors and fillers
    cf = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) == "Cf"]
    assert cf and all(is_invisible(c) for c in cf)
    assert all(is_invisible(c) for c in ("\ufe0f", "\u034f", "\u3164"))
    assert not any(is_invisible(c) for c in "aZ09 @.-_é")
    assert all(normalize(f"a{c}b").text == "ab" for c in cf)


# ---- the plane ------------------------------------------------------------------------------------

pytestmark_model = pytest.mark.requires_model
REDACT = {"EMAIL_ADDRESS": "redact", "CREDIT_CARD": "redact", "IBAN_CODE": "redact", "US_SSN": "redact"}


@pytest.fixture(scope="module")
def plane() -> Any:
    return make_plane({"rules": [{"id": "all", "entities": REDACT}]})


@pytestmark_model
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Reach her at dana.whitfield%40globex-corp.com today.", "Reach her at <EMAIL_ADDRESS> today."),
        ("Reach her at ｄａｎａ＠ｇｌｏｂｅｘ．ｃｏｍ today.", "Reach her at <EMAIL_ADDRESS> today."),
        ("Card number ４１１１ １１１１ １１１１ １１１１ on file.", "Card number <CREDIT_CARD> on file."),
        ("Card number ４１１１　１１１１　１１１１　１１１１ on file.", "Card number <CREDIT_CARD> on file."),
        ("Reach her at dana​.whitfield@globex.com today.", "Reach her at <EMAIL_ADDRESS> today."),
        ("Reach her at d​a‍n⁠a.whitfield@globex.com today.", "Reach her at <EMAIL_ADDRESS> today."),
    ],
)
def test_obfuscated_values_are_redacted_whole(plane: Any, sales_policy: Any, text: str, expected: str) -> None:
    r = evaluate(plane, act("tool_result", "crm.get_account_notes", connector="crm", content=text), sales_policy)
    assert r.content_modified
    assert r.modified_content == expected  # nothing of the value is left: no prefix, no %XX, no hidden character
    evidence = plane.redact_evidence(act("tool_result", "crm.get_account_notes", connector="crm", content=text)).content
    assert evidence == expected


@pytestmark_model
def test_keyed_operators_see_the_canonical_value(sales_policy: Any) -> None:
    p = make_plane(
        {"rules": [{"id": "crm", "match": {"points": ["tool_result"]}, "entities": {"EMAIL_ADDRESS": "pseudonymize"}}]}
    )
    tokens = []
    for form in ("dana.whitfield@globex.com", "dana.whitfield%40globex.com", "ｄａｎａ.ｗｈｉｔｆｉｅｌｄ＠ｇｌｏｂｅｘ.ｃｏｍ"):
        r = evaluate(p, act("tool_result", "crm.get_account_notes", connector="crm", content=f"to {form}"), sales_policy)
        tokens.append(r.modified_content)
    assert len(set(tokens)) == 1 and tokens[0].startswith("to <EMAIL_ADDRESS#")
    clear, _, _ = p.compiled().pseudonymizer().reveal_text(tokens[0], "s1")
    assert clear == "to dana.whitfield@globex.com"


@pytestmark_model
def test_an_obfuscated_secret_still_blocks_outbound(plane: Any, sales_policy: Any) -> None:
    r = evaluate(plane, act("tool_call", "email.send", arguments={"body": "key: ＡＫＩＡ\u200bIOSFODNN7EXAMPLE"}), sales_policy)
    assert Verdict.BLOCK in {f.verdict for f in r.findings}
    assert any(f.code == "secret_blocked" for f in r.findings)


# ---- property: nothing of a planted value survives, whatever the obfuscation ---------------------

PLANTED = [
    ("dana.whitfield@globex-corp.com", "<EMAIL_ADDRESS>", "Please write to {} about the renewal."),
    ("jane.roe@globex.example", "<EMAIL_ADDRESS>", "Contact: {} (billing)."),
    ("4111 1111 1111 1111", "<CREDIT_CARD>", "The card number {} was declined."),
    ("5500 0000 0000 0004", "<CREDIT_CARD>", "Charge card {} for the order."),
    ("DE89 3704 0044 0532 0130 00", "<IBAN_CODE>", "Wire it to IBAN {} please."),
    ("536-90-4399", "<US_SSN>", "SSN {} is on file for the applicant."),
]


def _fullwidth(c: str) -> str:
    if c == " ":
        return "\u3000"
    return chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c


def _percent(c: str) -> str:
    return "".join(f"%{b:02X}" for b in c.encode("utf-8"))


@st.composite
def obfuscated(draw: st.DrawFn) -> tuple[str, str, str]:
    value, placeholder, template = draw(st.sampled_from(PLANTED))
    out = []
    for c in value:
        how = draw(st.sampled_from(["plain", "plain", "full", "pct", "full+pct", "pct-of-full"]))
        piece = {
            "plain": c,
            "full": _fullwidth(c),
            "pct": _percent(c),
            "full+pct": "".join(_fullwidth(x) for x in _percent(c)),  # ％４０ (full-width percent-encoding)
            "pct-of-full": _percent(_fullwidth(c)),  # %EF%BC%A0 (percent-encoded full-width)
        }[how]
        if c == " " and how in ("pct", "full+pct", "pct-of-full"):
            piece = " "  # a percent-encoded space would join the words: keep the separators readable
        out.append(piece)
        if draw(st.booleans()):
            out.append(draw(st.sampled_from(ZERO_WIDTH)))
    return template.format("".join(out)), value, template.format(placeholder)


def _fragments(value: str) -> list[str]:
    return [w for w in re.split(r"[^0-9A-Za-z]+", value) if len(w) >= 3]


@pytestmark_model
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(obfuscated())
def test_no_part_of_an_obfuscated_value_survives(plane: Any, case: tuple[str, str, str]) -> None:
    text, value, expected = case
    out = plane.redact_text(text, point=MediationPoint.TOOL_RESULT)
    seen = normalize(out).text
    assert seen == expected, (text, out)
    for fragment in _fragments(value):
        assert fragment not in seen
    assert not re.search(r"%[0-9A-Fa-f]{2}", out)


@pytestmark_model
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(obfuscated(), st.sampled_from(["body", "notes"]))
def test_obfuscated_values_in_arguments_and_json_strings(
    plane: Any, sales_policy: Any, case: tuple[str, str, str], field: str
) -> None:
    import json

    text, value, expected = case
    payload = json.dumps({"rows": [{field: text, "id": "ACC-1"}]}, ensure_ascii=False)
    r = evaluate(plane, act("tool_result", "crm.search_accounts", connector="crm", content=payload), sales_policy)
    out = json.loads(r.modified_content)
    assert normalize(out["rows"][0][field]).text == expected and out["rows"][0]["id"] == "ACC-1"
    assert not any(f in normalize(r.modified_content).text for f in _fragments(value))
