"""The engine's shortcuts change no result: the phone recognizer without Presidio's second parse,
context enhancement only below the threshold, NER artifacts read from the ``Doc``."""

from __future__ import annotations

import random
from typing import Any

import pytest

from fiveplane import MediationPoint

from .conftest import make_plane

pytestmark = pytest.mark.requires_model

ALL = ["EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "US_BANK_NUMBER", "URL"]


def texts(n: int = 250) -> list[str]:
    from faker import Faker

    fake = Faker(["en_US", "en_GB", "de_DE"])
    Faker.seed(11)
    rnd = random.Random(11)
    out = []
    for _ in range(n):
        pieces = [
            f"Call {fake.name()} on {fake.phone_number()}",
            f"or {fake.numerify(rnd.choice(['+1 (###) ###-####', '###-###-####', '+44 20 #### ####', '0#### ######', '(###) ###-#### x###']))}.",
            f"Account {fake.bothify('ACC-#####')} updated {fake.iso8601()};",
            f"card {fake.credit_card_number()}, SSN {fake.ssn()}, bank {fake.numerify('#########')}, IBAN {fake.iban()}",
            f"from {fake.ipv4()} mail {fake.email()} see {fake.url()}",
        ]
        rnd.shuffle(pieces)
        out.append(" ".join(pieces[: rnd.randint(1, len(pieces))]))
    return out


def test_the_phone_recognizer_matches_presidios() -> None:
    from presidio_analyzer.predefined_recognizers import PhoneRecognizer

    from fiveplane._pii._engine import FastPhoneRecognizer

    theirs, ours = PhoneRecognizer(), FastPhoneRecognizer()
    cases = [
        *texts(),
        "(415) 555-0134",
        " +49 30 901820 ",
        "4155550134",
        "2021-03-04T12:34:56Z",
        "0262 Družstevní 1690, Volduchy",
    ]
    for text in cases:
        a = sorted((r.start, r.end, r.score) for r in theirs.analyze(text, ["PHONE_NUMBER"]))
        b = sorted((r.start, r.end, r.score) for r in ours.analyze(text, ["PHONE_NUMBER"]))
        assert a == b, text


def test_context_enhancement_below_the_threshold_only_changes_nothing_that_passes() -> None:
    plane = make_plane({"builtin_rules": False, "rules": [{"id": "all", "entities": {e: "redact" for e in ALL}}]})
    cc = plane.compiled()
    scope = cc.scope(MediationPoint.TOOL_RESULT, None, None)
    engine = cc.engine
    for text in [*texts(120), "ssn 078051120 on file", "routing and bank account 123456789 please"]:
        full = engine.analyzer.analyze(
            text=text, language="en", entities=ALL, nlp_artifacts=engine.light_artifacts(text), score_threshold=0.0
        )
        theirs = {(r.entity_type, r.start, r.end) for r in full if r.score >= scope.entities[r.entity_type].threshold}
        mine = engine.analyze(text, ALL, engine.light_artifacts(text), needs_context=scope.below_threshold)
        ours = {(d.entity, d.start, d.end) for d in mine if d.score >= scope.entities[d.entity].threshold}
        assert ours == theirs, text


def test_ner_artifacts_are_presidios() -> None:
    cc = make_plane().compiled()
    engine = cc.engine
    batch = ["Dana Whitfield met Jane Roe in Berlin on Monday.", "Nothing here.", "Call Bob Smith at Globex Corporation."]
    theirs = [art for _, art in engine.nlp_engine.process_batch(batch, language="en")]
    mine = engine.ner_artifacts(batch)
    for a, b in zip(theirs, mine, strict=True):
        assert [(e.start_char, e.end_char, e.label_) for e in a.entities] == [
            (e.start_char, e.end_char, e.label_) for e in b.entities
        ]
        assert a.scores == b.scores
        assert a.tokens_indices == b.tokens_indices and a.keywords == b.keywords
    found: list[Any] = []
    for text, art in zip(batch, mine, strict=True):
        found.append(sorted((d.entity, text[d.start : d.end]) for d in engine.analyze(text, ["PERSON"], art)))
    assert ("PERSON", "Dana Whitfield") in found[0] and found[1] == []
