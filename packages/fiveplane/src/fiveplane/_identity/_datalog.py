"""Datalog source for capability tokens, with values inlined only where that is provably safe.

biscuit-python binds each ``{parameter}`` of a snippet at a cost of about 1.5 µs, most of the time
a token block takes to build or an authorizer to set up; parsing a literal costs a tenth of that.
So a value goes into the source as a literal only when it cannot change what the snippet says:

- a string made only of ASCII letters, digits, spaces and ``_.:/@+=*,~#-`` (no quote, backslash,
  brace, parenthesis, semicolon, control or non-ASCII character) cannot leave its double quotes;
- a date is written by us in RFC 3339 form (UTC, whole seconds — what binding a ``datetime``
  gives too: biscuit dates have one-second resolution and binding truncates);
- an integer (a principal's position in the chain) is its decimal digits.

Anything else (quotes, backslashes, newlines, Unicode, sets) stays a bound parameter, exactly as
before, so no value can inject Datalog. ``tests/identity/test_datalog.py`` checks that both forms
give the same facts.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

__all__ = ["Source", "date_literal", "text_literal"]

_SAFE_TEXT = re.compile(r"[A-Za-z0-9 _.:/@+=*,~#-]*")


def text_literal(value: str) -> str | None:
    """``"value"`` if the string can be inlined safely, else ``None`` (bind it as a parameter)."""
    return f'"{value}"' if _SAFE_TEXT.fullmatch(value) is not None else None


def date_literal(value: datetime) -> str:
    """An RFC 3339 date literal (UTC, truncated to the second like a bound ``datetime``)."""
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(microsecond=0).isoformat()


class Source:
    """Parameters collected while a snippet is written: ``text()`` inlines or binds one string."""

    __slots__ = ("params",)

    def __init__(self) -> None:
        self.params: dict[str, Any] = {}

    def text(self, name: str, value: str) -> str:
        """The literal for ``value`` if safe, else ``{name}`` with the value bound as a parameter."""
        literal = text_literal(value)
        if literal is not None:
            return literal
        return self.bind(name, value)

    def bind(self, name: str, value: Any) -> str:
        """Always a bound parameter (sets, and anything not covered above)."""
        self.params[name] = value
        return "{" + name + "}"

    def args(self) -> dict[str, Any] | None:
        """The parameters for the builder (``None`` when everything was inlined)."""
        return self.params or None
