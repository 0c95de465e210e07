"""CEL conditions: compiled once at load, evaluated per decision; any failure is an error (fail closed).

Variables are resolved lazily (only those a condition reads are converted to CEL values), which
keeps a condition at a few microseconds. Functions a condition calls are checked at load time, so
a misspelled or unsupported function is a load error with file:line, not a surprise at run time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import cel

__all__ = ["CEL_FUNCTIONS", "CEL_VARIABLES", "Condition", "ConditionError"]

CEL_VARIABLES = ("action", "args", "tool", "user", "agent", "principal", "session", "content", "now")
"""The variables a ``when:`` condition can use."""


def _split(s: str, sep: str) -> list[str]:
    return s.split(sep)


def _join(items: list[Any], sep: str = "") -> str:
    return sep.join(str(i) for i in items)


_EXTRA: dict[str, Callable[..., Any]] = {
    "lower": str.lower,
    "upper": str.upper,
    "trim": str.strip,
    "split": _split,
    "join": _join,
    "replace": lambda s, old, new: s.replace(old, new),
    "domain": lambda s: _domain(s),
}


def _domain(address: str) -> str:
    """The domain of one plain e-mail address, lower-cased; "" for anything else (lists, display names)."""
    if address.count("@") != 1 or any(c in address for c in ",;<>\"' \t\r\n()[]\\"):
        return ""
    local, _, host = address.partition("@")
    return host.lower().rstrip(".") if local and host else ""


_BUILTIN = {
    "size", "contains", "startsWith", "endsWith", "matches", "exists", "all", "exists_one", "map",
    "filter", "has", "int", "uint", "double", "string", "bytes", "type", "timestamp", "duration",
    "dyn", "getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek",
    "getHours", "getMinutes", "getSeconds", "getMilliseconds",
}  # fmt: skip

CEL_FUNCTIONS = frozenset(_BUILTIN | set(_EXTRA))
"""Functions a condition may call: CEL's standard ones this engine supports plus fiveplane's helpers
(``lower``, ``upper``, ``trim``, ``split``, ``join``, ``replace``, ``domain``: the part of an e-mail
address after ``@``, lower-cased)."""


class ConditionError(RuntimeError):
    """A condition failed at run time (missing field, type error, non-boolean result)."""


class Condition:
    """A compiled CEL boolean expression."""

    __slots__ = ("_program", "source")

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._program = cel.compile(source)
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"invalid CEL: {first}") from exc
        unknown = [f for f in self._program.functions() if f[:1].isalpha() and f not in CEL_FUNCTIONS]
        if unknown:
            raise ValueError(f"unknown CEL function(s) {', '.join(unknown)}; supported: {', '.join(sorted(CEL_FUNCTIONS))}")
        # Other variable names are either comprehension variables (the x in list.exists(x, ...)) or
        # mistakes; a mistake fails at run time and blocks (``policy check`` lints them).

    @property
    def unknown_variables(self) -> list[str]:
        """Referenced names that are not fiveplane variables (comprehension variables or typos)."""
        return sorted(set(self._program.variables()) - set(CEL_VARIABLES))

    def evaluate(self, resolve: Callable[[str], Any]) -> bool:
        """Evaluate with lazily resolved variables (``resolve(name)`` returns the value)."""
        ctx = cel.Context(functions=_EXTRA)
        ctx.set_variable_resolver(resolve)
        try:
            result = self._program.execute(ctx)
        except KeyError as exc:
            raise ConditionError(f"condition reads a missing field {exc}; guard it with has(...)") from exc
        except Exception as exc:
            text = str(exc).strip()
            first = text.splitlines()[0] if text else type(exc).__name__
            raise ConditionError(f"condition failed: {first}") from exc
        if not isinstance(result, bool):
            raise ConditionError(f"condition returned {type(result).__name__}, not a boolean")
        return result
