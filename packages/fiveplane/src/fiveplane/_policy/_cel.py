"""CEL conditions: compiled once at load, evaluated per decision; any failure is an error (fail closed).

Variables are resolved lazily (only those a condition reads are converted to CEL values), which
keeps a condition at a few microseconds. Functions a condition calls are checked at load time, so
a misspelled or unsupported function is a load error with file:line, not a surprise at run time.

A condition that fails at run time says why, naming the expression: ``size() of null at args.cc``,
``lower() of int at args.n``, ``args.cc is null``, ``list 'payees' is unavailable (…)`` — never the
engine's "Undefined variable or function".

fiveplane's functions: ``lower``, ``upper``, ``trim``, ``split``, ``join``, ``replace``,
``email_domain`` / ``domain`` (the domain of exactly one plain RFC 5322 address, ``""`` otherwise),
and the provenance functions over the session's information-flow index: ``from_user(x)`` (the user
typed it), ``untrusted(x)`` (it carries a value or text from untrusted content), ``source(x)`` (the
tool that brought it, ``""`` if none).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from email.errors import HeaderParseError
from email.headerregistry import Address
from email.utils import getaddresses
from typing import Any, Protocol

import cel

from ._celfast import UNDECIDED, compile_fast, project, projection

__all__ = [
    "CEL_FUNCTIONS",
    "CEL_VARIABLES",
    "PROVENANCE_FUNCTIONS",
    "Condition",
    "ConditionError",
    "Provenance",
    "email_domain",
]

CEL_VARIABLES = ("action", "args", "tool", "user", "agent", "principal", "session", "content", "now", "lists")
"""The variables a ``when:`` condition can use (a flow rule's ``unless:`` also has ``match``)."""

PROVENANCE_FUNCTIONS = frozenset({"from_user", "untrusted", "source"})
"""Functions that read the session's information-flow index."""


class ConditionError(RuntimeError):
    """A condition failed at run time (missing field, type error, non-boolean result)."""


class Provenance(Protocol):
    """What the provenance functions ask (the reasoning plane binds the session's flow index)."""

    def from_user(self, value: Any) -> bool: ...

    def untrusted(self, value: Any) -> bool: ...

    def source(self, value: Any) -> str: ...


# ---- per-evaluation state (the evaluation is synchronous: a thread-local is enough) ----------------

_TLS = threading.local()


def _trap(fn: str, value: Any) -> None:
    """Record a bad argument to one of fiveplane's functions (the condition then fails, naming it)."""
    errors: list[tuple[str, Any]] | None = getattr(_TLS, "errors", None)
    if errors is not None:
        errors.append((fn, value))


def _str_fn(name: str, f: Callable[..., Any], neutral: Any) -> Callable[..., Any]:
    def call(s: Any, *rest: Any) -> Any:
        if not isinstance(s, str):
            _trap(name, s)
            return neutral
        return f(s, *rest)

    call.__name__ = name
    return call


def _split(s: str, sep: str) -> list[str]:
    return s.split(sep)


def _join(items: Any, sep: str = "") -> Any:
    if not isinstance(items, list):
        _trap("join", items)
        return ""
    return sep.join(str(i) for i in items)


# ---- e-mail addresses ------------------------------------------------------------------------------

_LABEL = re.compile(r"^(?!-)[a-z0-9-]{1,63}(?<!-)$")
_LOCAL_ATOM = re.compile(r"^[A-Za-z0-9!#$&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$&'*+/=?^_`{|}~-]+)*$")


def email_domain(address: Any) -> str:
    """The domain of exactly one plain e-mail address (RFC 5322 ``local@domain``), lower-cased and
    IDNA-encoded; ``""`` for anything else: lists, display names, comments, quoted or empty local
    parts, source routes (``@a:b@c``), the ``%`` hack (``x%evil.com@acme.example``), IP literals,
    or a domain that is not a host name."""
    if not isinstance(address, str):
        _trap("email_domain", address)
        return ""
    text = address
    if not text or len(text) > 320 or any(c in text for c in ',;<>()[]"\\ \t\r\n:%!'):
        return ""
    if text.count("@") != 1:
        return ""
    try:
        parsed = getaddresses([text], strict=True)
    except TypeError:  # Python without the strict flag
        parsed = getaddresses([text])
    if len(parsed) != 1 or parsed[0][0] or parsed[0][1] != text:
        return ""
    local, _, host = text.partition("@")
    if not _LOCAL_ATOM.match(local) or len(local) > 64:
        return ""
    try:
        Address(username=local, domain=host)
    except (ValueError, HeaderParseError, IndexError):
        return ""
    host = host.rstrip(".").lower()
    if not host.isascii():
        try:
            host = host.encode("idna").decode("ascii")
        except UnicodeError:
            return ""
    labels = host.split(".")
    if len(labels) < 2 or not all(_LABEL.match(label) for label in labels) or labels[-1].isdigit():
        return ""
    return host


# ---- provenance ------------------------------------------------------------------------------------


def _provenance(name: str) -> Callable[[Any], Any]:
    def call(value: Any) -> Any:
        env: Provenance | None = getattr(_TLS, "provenance", None)
        if env is None:
            _TLS.missing_provenance = name
            return "" if name == "source" else False
        if value is None:
            _trap(name, value)
            return "" if name == "source" else False
        return getattr(env, name)(value)

    call.__name__ = name
    return call


_EXTRA: dict[str, Callable[..., Any]] = {
    "lower": _str_fn("lower", str.lower, ""),
    "upper": _str_fn("upper", str.upper, ""),
    "trim": _str_fn("trim", str.strip, ""),
    "split": _str_fn("split", _split, []),
    "join": _join,
    "replace": _str_fn("replace", lambda s, old, new: s.replace(old, new), ""),
    "domain": email_domain,
    "email_domain": email_domain,
    **{n: _provenance(n) for n in sorted(PROVENANCE_FUNCTIONS)},
}

_BUILTIN = {
    "size", "contains", "startsWith", "endsWith", "matches", "exists", "all", "exists_one", "map",
    "filter", "has", "int", "uint", "double", "string", "bytes", "type", "timestamp", "duration",
    "dyn", "getFullYear", "getMonth", "getDayOfYear", "getDayOfMonth", "getDate", "getDayOfWeek",
    "getHours", "getMinutes", "getSeconds", "getMilliseconds",
}  # fmt: skip

CEL_FUNCTIONS = frozenset(_BUILTIN | set(_EXTRA))
"""Functions a condition may call: CEL's standard ones this engine supports plus fiveplane's helpers
(``lower``, ``upper``, ``trim``, ``split``, ``join``, ``replace``, ``email_domain`` / ``domain``: the
domain of one plain e-mail address; ``from_user``, ``untrusted``, ``source``: provenance)."""

_ACCEPTS: dict[str, tuple[type, ...]] = {
    "size": (str, list, dict, bytes),
    "contains": (str,),
    "startsWith": (str,),
    "endsWith": (str,),
    "matches": (str,),
}


# ---- naming the cause of a failure ---------------------------------------------------------------

_UNDEFINED = re.compile(r"Undefined variable or function: '(\w+)'")
_PY_FN = re.compile(r"Function '(\w+)' error")
_PATH = re.compile(r"\b(?:args|content|session|user|tool|agent|action|principal|lists|match)(?:\.\w+|\[[^\[\]]{1,80}\])+")
_STRING = re.compile(r"\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'")


def _matching(text: str, i: int, opening: str, closing: str, step: int) -> int:
    """Index of the bracket matching the one at ``i`` (scanning by ``step``), or -1."""
    depth = 0
    while 0 <= i < len(text):
        c = text[i]
        if c in "\"'":
            # skip a string literal
            j = i + step
            while 0 <= j < len(text) and text[j] != c:
                j += step
            i = j + step
            continue
        if c == opening:
            depth += 1
        elif c == closing:
            depth -= 1
            if depth == 0:
                return i
        i += step
    return -1


def _call_arguments(source: str, fn: str) -> list[str]:
    """The expressions ``fn`` is applied to in ``source``: first arguments of ``fn(x, …)`` and
    receivers of ``x.fn(…)``."""
    out: list[str] = []
    masked = _STRING.sub(lambda m: "_" * len(m.group(0)), source)  # no matches inside literals
    for m in re.finditer(rf"(\.)?\b{re.escape(fn)}\s*\(", masked):
        if m.group(1):  # receiver form: walk back over the receiver expression
            j = m.start() - 1
            while j >= 0:
                c = masked[j]
                if c.isalnum() or c in "_.":
                    j -= 1
                elif c in ")]":
                    k = _matching(masked, j, ")" if c == ")" else "]", "(" if c == ")" else "[", -1)
                    if k < 0:
                        break
                    j = k - 1
                else:
                    break
            receiver = source[j + 1 : m.start()].strip()
            if receiver:
                out.append(receiver)
        else:
            if m.start() > 0 and (masked[m.start() - 1].isalnum() or masked[m.start() - 1] in "_"):
                continue
            open_at = m.end() - 1
            close_at = _matching(masked, open_at, "(", ")", 1)
            if close_at < 0:
                continue
            inner, depth, end = masked[open_at + 1 : close_at], 0, close_at - open_at - 1
            for i, c in enumerate(inner):
                if c in "([{":
                    depth += 1
                elif c in ")]}":
                    depth -= 1
                elif c == "," and depth == 0:
                    end = i
                    break
            arg = source[open_at + 1 : open_at + 1 + end].strip()
            if arg:
                out.append(arg)
    return list(dict.fromkeys(out))


class _Projected:
    """A resolver that hands CEL only the fields of ``args`` / ``content`` the condition reads."""

    __slots__ = ("_keys", "_resolve")

    def __init__(self, resolve: Callable[[str], Any], keys: dict[str, frozenset[str]]) -> None:
        self._resolve, self._keys = resolve, keys

    def __call__(self, name: str) -> Any:
        value = self._resolve(name)
        keys = self._keys.get(name)
        return value if keys is None else project(value, keys)

    @property
    def error(self) -> str | None:
        return getattr(self._resolve, "error", None)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {str: "string", bool: "bool", int: "int", float: "double", list: "list", dict: "map", bytes: "bytes"}.get(
        type(value), type(value).__name__
    )


class Condition:
    """A compiled CEL boolean expression."""

    __slots__ = (
        "_args_node",
        "_fast",
        "_parts",
        "_program",
        "_projection",
        "_traps",
        "_variables",
        "functions",
        "source",
        "uses_provenance",
    )

    def __init__(self, source: str, *, variables: tuple[str, ...] = CEL_VARIABLES) -> None:
        self.source = source
        try:
            self._program = cel.compile(source)
        except (ValueError, RuntimeError) as exc:
            first = str(exc).strip().splitlines()[0]
            raise ValueError(f"invalid CEL: {first}") from exc
        self.functions = frozenset(f for f in self._program.functions() if f[:1].isalpha())
        unknown = sorted(self.functions - CEL_FUNCTIONS)
        if unknown:
            raise ValueError(f"unknown CEL function(s) {', '.join(unknown)}; supported: {', '.join(sorted(CEL_FUNCTIONS))}")
        self._parts: dict[str, Any] = {}
        self._traps = bool(self.functions & set(_EXTRA))
        self.uses_provenance = bool(self.functions & PROVENANCE_FUNCTIONS)
        """The condition calls from_user / untrusted / source."""
        # Other variable names are either comprehension variables (the x in list.exists(x, ...)) or
        # mistakes; a mistake fails at run time and blocks (``policy check`` lints them).
        self._variables = variables
        self._fast = compile_fast(source, variables) if not self._traps else None
        """The condition as a Python closure (simple conditions only), exact where it answers."""
        self._args_node = self._fast.node if self._fast is not None and getattr(self._fast, "root", None) == "args" else None  # type: ignore[attr-defined]
        """The closure of a simple condition that reads ``args`` alone (applied to the arguments as they are)."""
        self._projection = projection(source, variables)
        """First-level fields of ``args`` / ``content`` the condition reads (CEL converts only those)."""

    @property
    def compiled(self) -> bool:
        """True when the condition has a fast closure (CEL still decides where it is not sure)."""
        return self._fast is not None

    @property
    def variables(self) -> frozenset[str]:
        return frozenset(self._program.variables())

    @property
    def unknown_variables(self) -> list[str]:
        """Referenced names that are not fiveplane variables (comprehension variables or typos)."""
        return sorted(set(self._program.variables()) - set(self._variables))

    def list_names(self) -> set[str]:
        """Names read as ``lists.NAME`` / ``lists["NAME"]``."""
        masked = self.source
        return set(re.findall(r"\blists\.([A-Za-z_]\w*)", masked)) | set(re.findall(r"\blists\[\s*[\"'](\w+)[\"']\s*\]", masked))

    def on_arguments(self, arguments: dict[str, Any]) -> Any:
        """The condition's value when it reads only ``args`` and is simple enough to be sure of
        CEL's answer without building any other variable; else :data:`UNDECIDED` (then
        :meth:`evaluate` decides, CEL included)."""
        node = self._args_node
        if node is None:
            return UNDECIDED
        result = node({"args": arguments})
        return result if type(result) is bool else UNDECIDED

    def evaluate(self, resolve: Callable[[str], Any], provenance: Provenance | None = None) -> bool:
        """Evaluate with lazily resolved variables (``resolve(name)`` returns the value);
        ``provenance`` answers ``from_user`` / ``untrusted`` / ``source``."""
        fast = self._fast
        if fast is not None:
            answer = fast(resolve)
            if answer is not UNDECIDED:
                resolver_error = getattr(resolve, "error", None)
                if resolver_error:
                    raise ConditionError(resolver_error)
                return bool(answer)
        ctx = cel.Context(functions=_EXTRA) if self._traps else cel.Context()
        ctx.set_variable_resolver(_Projected(resolve, self._projection) if self._projection else resolve)
        errors: list[tuple[str, Any]] = []
        try:
            if self._traps:
                _TLS.errors, _TLS.provenance, _TLS.missing_provenance = errors, provenance, None
                try:
                    result = self._program.execute(ctx)
                finally:
                    _TLS.errors, _TLS.provenance = None, None
            else:  # no fiveplane function: nothing to trap (the common, fast case)
                result = self._program.execute(ctx)
            resolver_error = getattr(resolve, "error", None)
            if resolver_error:
                raise ConditionError(resolver_error)
            if self._traps and _TLS.missing_provenance:
                raise ConditionError(
                    f"{_TLS.missing_provenance}() needs the session's information flow, which is not available here"
                )
            if errors:
                raise ConditionError(self._diagnose(errors[0][0], resolve, errors[0][1]))
        except ConditionError:
            raise
        except KeyError as exc:
            key = exc.args[0] if exc.args else ""
            hint = getattr(resolve, "missing_hint", None)
            known = hint(str(key)) if hint is not None else None
            if known:
                raise ConditionError(known) from exc
            raise ConditionError(f"condition reads a missing field {exc}; guard it with has(...)") from exc
        except Exception as exc:
            resolver_error = getattr(resolve, "error", None)
            if resolver_error:
                raise ConditionError(resolver_error) from exc
            raise ConditionError(self._explain(exc, resolve)) from exc
        if not isinstance(result, bool):
            raise ConditionError(f"condition returned {type(result).__name__}, not a boolean")
        return result

    # .. failures

    def _part(self, text: str) -> Any:
        prog = self._parts.get(text)
        if prog is None and text not in self._parts:
            try:
                prog = cel.compile(text)
            except Exception:  # noqa: BLE001 - not a standalone expression
                prog = None
            self._parts[text] = prog
        return prog

    def _value_of(self, text: str, resolve: Callable[[str], Any]) -> tuple[bool, Any]:
        prog = self._part(text)
        if prog is None or set(prog.variables()) - set(self._variables):
            return False, None  # a comprehension variable: cannot evaluate it alone
        ctx = cel.Context(functions=_EXTRA)
        ctx.set_variable_resolver(resolve)
        try:
            return True, prog.execute(ctx)
        except Exception:  # noqa: BLE001
            return False, None

    def _diagnose(self, fn: str, resolve: Callable[[str], Any], seen: Any = ...) -> str:
        """``fn() of null at args.cc``: the argument of ``fn`` that it cannot take."""
        accepts = _ACCEPTS.get(fn, (str,))
        for text in _call_arguments(self.source, fn):
            ok, value = self._value_of(text, resolve)
            if ok and (value is None or not isinstance(value, accepts) or isinstance(value, bool)):
                return f"{fn}() of {_type_name(value)} at {text}"
        if seen is not ...:
            return f"{fn}() of {_type_name(seen)}"
        return f"{fn}() cannot take its argument here (a null or a value of another type)"

    def _explain(self, exc: Exception, resolve: Callable[[str], Any]) -> str:
        text = str(exc).strip()
        first = text.splitlines()[0] if text else type(exc).__name__
        m = _UNDEFINED.search(first) or _PY_FN.search(first)
        if m and m.group(1) in CEL_FUNCTIONS:
            return self._diagnose(m.group(1), resolve)
        if "No such overload" in first or "no such overload" in first:
            nulls = []
            for path in dict.fromkeys(_PATH.findall(self.source)):
                ok, value = self._value_of(path, resolve)
                if ok and value is None:
                    nulls.append(path)
            if nulls:
                return f"{', '.join(nulls)} {'is' if len(nulls) == 1 else 'are'} null (guard it: has(x) && x != null)"
            return "values of different types were compared or combined (CEL does not convert: int vs double, string vs number)"
        return f"condition failed: {first}"
