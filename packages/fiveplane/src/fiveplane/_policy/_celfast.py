"""Simple CEL conditions compiled to Python closures, and the fields a condition reads.

Most conditions in policy packs are comparisons of a field with a literal joined by ``&&`` / ``||``
(``args.amount < 1000``, ``tool.connector == "crm"``, ``args.payee in lists.payees``). Evaluating
them through the CEL engine costs a few microseconds, most of it converting variables to CEL values
(the whole ``args`` map when a condition reads one field of it). This module compiles that subset to
a closure over plain Python values.

The closure answers only where its answer is certain to be CEL's: same-kind comparisons (numbers
with numbers, strings with strings, booleans with booleans), membership in a list or map, ``has()``
of a map key, ``size()``, ``startsWith`` / ``endsWith`` / ``contains`` on strings, and the
connectives (with CEL's rule that ``false && error`` is ``false`` and ``true || error`` is
``true``). Anything else — a missing field, a null, a type mismatch, a big integer, a non-boolean
result — makes it return :data:`UNDECIDED`, and the caller evaluates the condition with CEL, which
gives the result or the error exactly as before. A property test checks the closure against CEL on
generated expressions and values.

:func:`projection` names the first-level fields of ``args`` / ``content`` a condition reads, so
that when CEL does run it converts only those fields.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import Any

__all__ = ["UNDECIDED", "FastCondition", "compile_fast", "projection"]


class _Undecided:
    __slots__ = ()

    def __repr__(self) -> str:
        return "UNDECIDED"


UNDECIDED: Any = _Undecided()
"""Returned by a fast condition that cannot be sure of CEL's answer (then CEL decides)."""

FastCondition = Callable[[Callable[[str], Any]], Any]
"""``fast(resolve) -> bool | UNDECIDED``."""

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<num>\d+(?:\.\d+)?)(?![\w.])
    | (?P<str>"[^"\\\n]*"|'[^'\\\n]*')
    | (?P<id>[A-Za-z_]\w*)
    | (?P<op>&&|\|\||==|!=|<=|>=|[<>!()\[\],.-])
    )""",
    re.VERBOSE,
)
_I64 = 2**63
_EXACT = 2**53
_NO = UNDECIDED

# kinds of Python values as CEL sees them
_K_NUM, _K_STR, _K_BOOL, _K_NULL, _K_LIST, _K_MAP, _K_OTHER = range(7)


def _kind(v: Any) -> int:
    t = type(v)
    if t is str:
        return _K_STR if v.isascii() or _utf8(v) else _K_OTHER
    if t is bool:
        return _K_BOOL
    if t is int:
        return _K_NUM if -_I64 <= v < _I64 else _K_OTHER
    if t is float:
        return _K_NUM if math.isfinite(v) else _K_OTHER
    if v is None:
        return _K_NULL
    if t is list:
        return _K_LIST
    if t is dict:
        return _K_MAP
    return _K_OTHER


class _Type:
    """A CEL type value (``type(x)``, or a type name such as ``map``)."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


_TYPE_NAMES = frozenset({"map", "list", "string", "int", "uint", "double", "bool", "bytes", "null_type", "type"})
_TYPES = {name: _Type(name) for name in _TYPE_NAMES}
_TYPE_OF: dict[int, _Type] = {
    _K_MAP: _TYPES["map"],
    _K_LIST: _TYPES["list"],
    _K_STR: _TYPES["string"],
    _K_BOOL: _TYPES["bool"],
    _K_NULL: _TYPES["null_type"],
}


def _type_of(v: Any) -> Any:
    k = _kind(v)
    if k == _K_NUM:
        return _TYPES["int"] if type(v) is int else _TYPES["double"]
    if k == _K_OTHER:
        return _TYPES["type"] if type(v) is _Type else _NO
    return _TYPE_OF[k]


def _utf8(s: str) -> bool:
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:  # a lone surrogate: CEL cannot take it
        return False
    return True


def _tokens(source: str, pattern: re.Pattern[str] = _TOKEN) -> list[tuple[str, str]] | None:
    """``(kind, text)`` of each token (the pattern's group names), or ``None`` if one is not one."""
    out: list[tuple[str, str]] = []
    source = source.rstrip()
    pos, end = 0, len(source)
    while pos < end:
        m = pattern.match(source, pos)
        if m is None or m.end() == pos:
            return None
        kind = m.lastgroup
        assert kind is not None
        out.append((kind, m.group(kind)))
        pos = m.end()
    return out


# ---- the closure compiler --------------------------------------------------------------------------

Node = Callable[[dict[str, Any]], Any]


class _Unsupported(Exception):
    pass


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], variables: frozenset[str]) -> None:
        self.t = tokens
        self.i = 0
        self.variables = variables
        self.roots: set[str] = set()

    def peek(self, value: str | None = None, kind: str | None = None) -> bool:
        if self.i >= len(self.t):
            return False
        k, v = self.t[self.i]
        return (value is None or v == value) and (kind is None or k == kind)

    def take(self, value: str | None = None, kind: str | None = None) -> str:
        if not self.peek(value, kind):
            raise _Unsupported
        v = self.t[self.i][1]
        self.i += 1
        return v

    def parse(self) -> Node:
        node = self.or_()
        if self.i != len(self.t):
            raise _Unsupported
        return node

    def or_(self) -> Node:
        return self._chain("||", self.and_, True)

    def and_(self) -> Node:
        return self._chain("&&", self.rel, False)

    def _chain(self, op: str, operand: Callable[[], Node], is_or: bool) -> Node:
        """``operand (op operand)*``, left to right."""
        node = operand()
        while self.peek(op, "op"):
            self.take()
            node = _connective(node, operand(), is_or)
        return node

    def rel(self) -> Node:
        left = self.unary()
        for op in ("==", "!=", "<=", ">=", "<", ">"):
            if self.peek(op, "op"):
                self.take()
                node = _compare(op, left, self.unary())
                break
        else:
            if self.peek("in", "id"):
                self.take()
                node = _member(left, self.unary())
            else:
                return left
        if any(self.peek(op, "op") for op in ("==", "!=", "<=", ">=", "<", ">")) or self.peek("in", "id"):
            raise _Unsupported  # a < b < c: let CEL say what it thinks
        return node

    def unary(self) -> Node:
        if self.peek("!", "op"):
            self.take()
            if self.peek("!", "op"):
                raise _Unsupported
            return _not(self.unary())
        return self.primary()

    def primary(self) -> Node:
        if self.peek("(", "op"):
            self.take()
            node = self.or_()
            self.take(")", "op")
            return node
        if self.peek("[", "op"):
            return self.list_literal()
        sign = 1
        if self.peek("-", "op"):  # a negative number literal (nothing else may follow a minus)
            self.take()
            if not self.peek(kind="num"):
                raise _Unsupported
            sign = -1
        k, v = self.t[self.i] if self.i < len(self.t) else ("", "")
        if k == "num":
            self.take()
            if "." in v:
                return _const(sign * float(v))
            n = sign * int(v)
            if not -_I64 <= n < _I64:
                raise _Unsupported
            return _const(n)
        if k == "str":
            self.take()
            return _const(v[1:-1])
        if k == "id":
            if v in ("true", "false"):
                self.take()
                return _const(v == "true")
            if v == "null":
                self.take()
                return _const(None)
            if v == "has":
                return self.has()
            function = _FUNCTIONS.get(v)
            if function is not None and self.i + 1 < len(self.t) and self.t[self.i + 1][1] == "(":
                self.take()
                self.take("(", "op")
                arg = self.or_()
                self.take(")", "op")
                return function(arg)
            if v in _TYPE_NAMES and v not in self.variables:
                self.take()
                return _const(_TYPES[v])
            if v in self.variables:
                return self.path()
        raise _Unsupported

    def list_literal(self) -> Node:
        self.take("[", "op")
        items: list[Node] = []
        while not self.peek("]", "op"):
            items.append(self.unary())
            if not self.peek(",", "op"):
                break
            self.take()
        self.take("]", "op")
        nodes = tuple(items)

        def build(env: dict[str, Any]) -> Any:
            out = []
            for n in nodes:
                v = n(env)
                if v is _NO:
                    return _NO
                out.append(v)
            return out

        return build

    def steps(self) -> tuple[str, list[str | int]]:
        root = self.take(kind="id")
        self.roots.add(root)
        steps: list[str | int] = []
        while True:
            if self.peek(".", "op"):
                self.take()
                name = self.take(kind="id")
                if self.peek("(", "op"):  # a method call on the path so far
                    self.i -= 2
                    break
                steps.append(name)
            elif self.peek("[", "op"):
                self.take()
                k, v = self.t[self.i] if self.i < len(self.t) else ("", "")
                if k == "str":
                    steps.append(v[1:-1])
                elif k == "num" and "." not in v:
                    steps.append(int(v))
                else:
                    raise _Unsupported
                self.take()
                self.take("]", "op")
            else:
                break
        return root, steps

    def path(self) -> Node:
        root, steps = self.steps()
        node = _path(root, tuple(steps))
        if self.peek(".", "op"):  # receiver.method(arg)
            self.take()
            method = self.take(kind="id")
            self.take("(", "op")
            if method == "size":
                self.take(")", "op")
                return _size(node)
            if method in ("startsWith", "endsWith", "contains"):
                arg = self.unary()
                self.take(")", "op")
                return _strmethod(method, node, arg)
            raise _Unsupported
        return node

    def has(self) -> Node:
        self.take("has", "id")
        self.take("(", "op")
        if not self.peek(kind="id") or self.t[self.i][1] not in self.variables:
            raise _Unsupported
        root, steps = self.steps()
        self.take(")", "op")
        if not steps or not isinstance(steps[-1], str):
            raise _Unsupported
        parent, key = _path(root, tuple(steps[:-1])), steps[-1]

        def has(env: dict[str, Any]) -> Any:
            p = parent(env)
            if type(p) is not dict:
                return _NO
            return key in p

        return has


def _path(root: str, steps: tuple[str | int, ...]) -> Node:
    if not steps:
        return lambda env: env[root]
    if len(steps) == 1 and isinstance(steps[0], str):
        key = steps[0]

        def one(env: dict[str, Any]) -> Any:
            v = env[root]
            if type(v) is not dict:
                return _NO
            return v.get(key, _NO)

        return one

    def walk(env: dict[str, Any]) -> Any:
        v = env[root]
        for s in steps:
            if isinstance(s, str):
                if type(v) is not dict or s not in v:
                    return _NO
                v = v[s]
            else:
                if type(v) is not list or not 0 <= s < len(v):
                    return _NO
                v = v[s]
        return v

    return walk


def _connective(a: Node, b: Node, decides: bool) -> Node:
    """``&&`` (``decides=False``) or ``||`` (``decides=True``): either side equal to ``decides``
    settles it, as in CEL, even when the other side is an error."""
    other = not decides

    def f(env: dict[str, Any]) -> Any:
        left = a(env)
        if left is decides:
            return decides
        right = b(env)
        if right is decides:
            return decides
        if left is other and right is other:
            return other
        return _NO

    return f


def _not(a: Node) -> Node:
    def f(env: dict[str, Any]) -> Any:
        v = a(env)
        return (not v) if type(v) is bool else _NO

    return f


def _const(value: Any) -> Node:
    """A literal's node; its ``literal`` attribute holds ``(value,)`` (a comparison with it is specialised)."""

    def c(env: dict[str, Any]) -> Any:
        return value

    c.literal = (value,)  # type: ignore[attr-defined]
    return c


_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


def _compare(op: str, a: Node, b: Node) -> Node:
    general = _compare_any(op, a, b)
    literal = getattr(b, "literal", None)
    if literal is None:
        return general
    (y,) = literal
    ky, ty, cmp = _kind(y), type(y), _CMP[op]
    # a field against a number or string literal, the commonest condition: the same answer as
    # ``general`` (which the value takes whenever it is not of the literal's kind), fewer steps
    if ky == _K_NUM:
        big_y = abs(y) > _EXACT

        def num(env: dict[str, Any]) -> Any:
            x = a(env)
            tx = type(x)
            if (tx is int and -_I64 <= x < _I64) or (tx is float and math.isfinite(x)):
                if tx is not ty and (big_y or abs(x) > _EXACT):
                    return _NO
                return cmp(x, y)
            return general(env)

        return num
    if ky == _K_STR:

        def text(env: dict[str, Any]) -> Any:
            x = a(env)
            if type(x) is str and x.isascii():
                return cmp(x, y)
            return general(env)

        return text
    return general


def _compare_any(op: str, a: Node, b: Node) -> Node:
    def f(env: dict[str, Any]) -> Any:
        x = a(env)
        if x is _NO:
            return _NO
        y = b(env)
        if y is _NO:
            return _NO
        tx, ty = type(x) is _Type, type(y) is _Type
        if tx or ty:
            if not (tx and ty) or op not in ("==", "!="):
                return _NO
            return (x.name == y.name) is (op == "==")
        kx, ky = _kind(x), _kind(y)
        if kx != ky or kx >= _K_LIST:
            return _NO
        if kx == _K_NUM and type(x) is not type(y) and (abs(x) > _EXACT or abs(y) > _EXACT):
            return _NO
        if op == "==":
            return x == y
        if op == "!=":
            return x != y
        if kx == _K_NULL:
            return _NO
        if op == "<":
            return x < y
        if op == "<=":
            return x <= y
        if op == ">":
            return x > y
        return x >= y

    return f


def _member(a: Node, b: Node) -> Node:
    def f(env: dict[str, Any]) -> Any:
        x = a(env)
        if x is _NO:
            return _NO
        ys = b(env)
        if ys is _NO:
            return _NO
        kx = _kind(x)
        if kx not in (_K_NUM, _K_STR, _K_BOOL):
            return _NO
        if type(ys) is dict:
            return x in ys if kx == _K_STR else _NO
        if type(ys) is not list:
            return _NO
        if kx == _K_NUM and type(x) is int and abs(x) > _EXACT:
            return _NO
        for y in ys:
            ky = _kind(y)
            if ky == kx and x == y:
                return True
            if ky == _K_OTHER or (ky == _K_NUM and type(y) is int and abs(y) > _EXACT):
                return _NO
        return False

    return f


def _typeof(a: Node) -> Node:
    def f(env: dict[str, Any]) -> Any:
        v = a(env)
        return _NO if v is _NO else _type_of(v)

    return f


def _size(a: Node) -> Node:
    def f(env: dict[str, Any]) -> Any:
        v = a(env)
        if type(v) in (str, list, dict):
            return len(v)
        return _NO

    return f


def _strmethod(method: str, recv: Node, arg: Node) -> Node:
    def f(env: dict[str, Any]) -> Any:
        s = recv(env)
        t = arg(env)
        if type(s) is not str or type(t) is not str:
            return _NO
        if method == "startsWith":
            return s.startswith(t)
        if method == "endsWith":
            return s.endswith(t)
        return t in s

    return f


_FUNCTIONS: dict[str, Callable[[Node], Node]] = {"size": _size, "type": _typeof}
"""The global functions of one argument the closures know (``size(x)``, ``type(x)``)."""


def compile_fast(source: str, variables: tuple[str, ...] | frozenset[str]) -> FastCondition | None:
    """The closure of a simple condition, or ``None`` when it uses anything outside the subset."""
    tokens = _tokens(source)
    if not tokens:
        return None
    parser = _Parser(tokens, frozenset(variables))
    try:
        node = parser.parse()
    except (_Unsupported, IndexError):
        return None
    roots = tuple(sorted(parser.roots))
    if len(roots) == 1:
        (root,) = roots

        def fast1(resolve: Callable[[str], Any]) -> Any:
            result = node({root: resolve(root)})
            return result if type(result) is bool else _NO

        fast1.root, fast1.node = root, node  # type: ignore[attr-defined]  # (Condition.on_arguments)
        return fast1

    def fast(resolve: Callable[[str], Any]) -> Any:
        # every variable the condition names is resolved first, as CEL would before it could fail
        # on one: an unavailable list then surfaces whichever way the connectives short-circuit
        env = {r: resolve(r) for r in roots}
        result = node(env)
        return result if type(result) is bool else _NO

    return fast


# ---- which fields a condition reads ----------------------------------------------------------------

PROJECTED = ("args", "content")


def projection(source: str, variables: tuple[str, ...] | frozenset[str]) -> dict[str, frozenset[str]]:
    """For ``args`` / ``content``: the first-level keys the condition reads, when it reads the
    variable only as ``var.key`` / ``var["key"]`` (any other use — ``size(args)``, ``"k" in args``,
    ``args[args.k]`` — reads it whole and it is not listed)."""
    if "'''" in source or '"""' in source or "\\" in source:
        return {}
    tokens = _tokens(source, _LOOSE)
    if tokens is None or any(kind == "str" and text[0] in "rRbB" for kind, text in tokens):
        return {}  # (a raw or bytes literal: not worth the risk)
    keys: dict[str, set[str]] = {}
    whole: set[str] = set()
    for i, (kind, value) in enumerate(tokens):
        if kind != "id" or value not in PROJECTED or value not in variables:
            continue
        if i > 0 and tokens[i - 1][1] == ".":
            continue  # a field named like the variable
        nxt = tokens[i + 1 : i + 4]
        if len(nxt) >= 2 and nxt[0][1] == "." and nxt[1][0] == "id":
            keys.setdefault(value, set()).add(nxt[1][1])
        elif len(nxt) >= 3 and nxt[0][1] == "[" and nxt[1][0] == "str" and nxt[2][1] == "]":
            keys.setdefault(value, set()).add(nxt[1][1][1:-1])
        else:
            whole.add(value)
    return {k: frozenset(v) for k, v in keys.items() if k not in whole}


_LOOSE = re.compile(
    r"""\s*(?:(?P<str>[rRbB]{0,2}"(?:[^"\\\n])*"|[rRbB]{0,2}'(?:[^'\\\n])*')|(?P<id>[A-Za-z_]\w*)|(?P<num>\d[\w.]*)|(?P<op>\S))"""
)


def project(value: Any, keys: frozenset[str]) -> Any:
    """``value`` with only ``keys`` (when it is a map)."""
    if type(value) is not dict:
        return value
    return {k: value[k] for k in keys if k in value}
