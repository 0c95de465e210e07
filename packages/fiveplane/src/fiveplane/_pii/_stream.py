"""Streaming redaction: a streamed model output is redacted as it flows, holding back at most a
bounded look-back window, so a value split across chunks is still caught.

The redactor keeps the not-yet-emitted tail in a buffer. Once the buffer holds twice the window, it
is scanned; everything before ``len(buffer) - window`` is emitted (redacted), except that the cut
moves back to the start of any detection crossing it and to a word boundary, so no value up to
``window`` characters long is ever emitted partially in clear. A value whose action is ``block``
stops the stream (:class:`StreamBlocked`); what was emitted before was clean.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from ._errors import StreamBlocked
from ._scan import CompiledConfig, Scope, _Ops, scan_text

__all__ = ["StreamBlocked", "StreamRedactor"]


class StreamRedactor:
    """Feed chunks, get redacted text back (possibly empty while holding back), then :meth:`close`.

    Use :meth:`fiveplane._planes._data.DataPlane.stream_redactor` to get one.
    """

    def __init__(
        self, cc: CompiledConfig, scope: Scope, *, session_id: str | None, window: int, labels: frozenset[str] = frozenset()
    ) -> None:
        self._cc = cc
        self._scope = scope
        self._session = session_id
        self.window = window
        self._buf = ""
        self._emitted = 0
        self._closed = False
        self.counts: Counter[str] = Counter()
        """Entities found so far."""
        denied = sorted(labels & set(scope.deny_labels))
        self._denied = denied

    @property
    def held(self) -> int:
        """Characters received but not yet emitted."""
        return len(self._buf)

    def feed(self, chunk: str) -> str:
        if self._closed:
            raise RuntimeError("the stream redactor is closed")
        self._check_labels()
        self._buf += chunk
        if len(self._buf) < 2 * self.window:
            return ""
        return self._drain(final=False)

    def close(self) -> str:
        """Flush: scan and emit what is held back."""
        if self._closed:
            return ""
        self._check_labels()
        out = self._drain(final=True) if self._buf else ""
        self._closed = True
        return out

    def _check_labels(self) -> None:
        if self._denied:
            rule = self._scope.deny_labels[self._denied[0]]
            raise StreamBlocked(f"data labelled {self._denied[0]} may not reach the output", (rule,), self._emitted)

    def _safe_cut(self, buf: str, cut: int, dets: list[Any]) -> int:
        """Move the cut back until no detection crosses it and it sits on a word boundary (in a
        very long run without spaces, the detection-safe cut is enough)."""
        while True:
            start = cut
            for d in dets:
                if d.start < cut < d.end:
                    cut = d.start
            boundary = cut
            while boundary > 0 and not buf[boundary - 1].isspace():
                boundary -= 1
            if boundary > 0 or len(buf) < 8 * self.window:
                cut = boundary
            if cut == start:
                return cut

    def _drain(self, *, final: bool) -> str:
        buf = self._buf
        out_all, dets, blocks = scan_text(self._cc, self._scope, buf, self._session)
        if blocks:
            self._closed = True
            raise StreamBlocked(
                "; ".join(b.message for b in blocks), tuple(dict.fromkeys(b.rule_id or "data" for b in blocks)), self._emitted
            )
        cut = len(buf) if final else self._safe_cut(buf, len(buf) - self.window, dets)
        if cut <= 0:
            return ""
        inside = [d for d in dets if d.end <= cut]
        for d in inside:
            self.counts[d.entity] += 1
        if cut == len(buf):
            out = out_all
        else:
            rewrite = [d for d in inside if self._scope.entities[d.entity].action in ("redact", "mask", "hash", "pseudonymize")]
            ops = _Ops(self._cc, self._session)
            out = ops.apply(
                buf[:cut], rewrite, {d.entity: ops.operator(d.entity, self._scope.entities[d.entity]) for d in rewrite}
            )
        self._buf = buf[cut:]
        self._emitted += cut
        return out
