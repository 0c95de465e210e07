"""The fast closures of simple CEL conditions answer exactly as CEL does, or leave it to CEL.

Property: for generated expressions in the compiled subset and generated values, whenever the
closure answers, CEL gives the same boolean (and never an error); and ``Condition.evaluate`` — fast
closure, then CEL on the fields the condition reads — returns the same result or raises the same
error as plain CEL on whole variables.
"""

from __future__ import annotations

from typing import Any

import cel
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fiveplane._policy._cel import CEL_VARIABLES, Condition, ConditionError
from fiveplane._policy._celfast import UNDECIDED, compile_fast, project, projection

KEYS = ["a", "b", "s", "l", "m", "n"]

scalars = st.one_of(
    st.integers(-5, 5),
    st.sampled_from([0, 1, 1000, 2**53, 2**53 + 1, 2**63 - 1, 2**63, -(2**63), -(2**63) - 1]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 1.0, 1.5, -2.0, 1000.0, 9007199254740993.0]),
    st.text(alphabet="abxyé Z_\ud7ff", max_size=4),
    st.sampled_from(["", "a", "ab", "b", "é", "x"]),
    st.booleans(),
    st.none(),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3),
        st.dictionaries(st.sampled_from(KEYS), inner, max_size=3),
    ),
    max_leaves=6,
)
args_maps = st.dictionaries(st.sampled_from(KEYS), values, max_size=6)


def _lit(v: Any) -> str:
    if v is True:
        return "true"
    if v is False:
        return "false"
    if v is None:
        return "null"
    if isinstance(v, str):
        return '"' + v + '"'
    return repr(v)


literal = st.one_of(
    st.integers(-3, 1001).map(str),
    st.sampled_from(["-1", "-0", "-1.5", "-9223372036854775808"]),
    st.sampled_from(["1.5", "0.0", "1000.0", "2"]),
    st.sampled_from(['"a"', "'ab'", '""', '"é"', "'x'"]),
    st.sampled_from(["true", "false", "null"]),
)
key = st.sampled_from(KEYS)
path = st.one_of(
    key.map(lambda k: f"args.{k}"),
    key.map(lambda k: f'args["{k}"]'),
    st.tuples(key, key).map(lambda t: f"args.{t[0]}.{t[1]}"),
    key.map(lambda k: f"args.{k}[0]"),
    st.sampled_from(["tool.name", "tool.connector", "user.roles", "user.id"]),
)
operand = st.one_of(path, literal, path.map(lambda p: f"size({p})"), path.map(lambda p: f"{p}.size()"))
list_lit = st.lists(literal, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]")
atom = st.one_of(
    st.tuples(operand, st.sampled_from(["==", "!=", "<", "<=", ">", ">="]), operand).map(lambda t: " ".join(t)),
    st.tuples(operand, st.one_of(list_lit, path)).map(lambda t: f"{t[0]} in {t[1]}"),
    key.map(lambda k: f"has(args.{k})"),
    st.tuples(key, key).map(lambda t: f"has(args.{t[0]}.{t[1]})"),
    st.tuples(path, st.sampled_from(["startsWith", "endsWith", "contains"]), st.sampled_from(['"a"', '""', '"é"'])).map(
        lambda t: f"{t[0]}.{t[1]}({t[2]})"
    ),
    path,
    st.sampled_from(["true", "false"]),
    st.tuples(
        st.one_of(path, literal),
        st.sampled_from(["==", "!="]),
        st.sampled_from(["map", "list", "string", "int", "uint", "double", "bool", "null_type", "type", "type(1)"]),
    ).map(lambda t: f"type({t[0]}) {t[1]} {t[2]}"),
)
expressions = st.recursive(
    atom,
    lambda inner: st.one_of(
        st.tuples(inner, st.sampled_from(["&&", "||"]), inner).map(lambda t: f"{t[0]} {t[1]} {t[2]}"),
        inner.map(lambda e: f"!({e})"),
        inner.map(lambda e: f"({e})"),
    ),
    max_leaves=5,
)

TOOL = {"name": "crm.update", "connector": "crm", "class": "modify"}
USER = {"id": "rep-1", "roles": ["sales-rep", "analyst"], "claims": {}}


def _env(args: dict[str, Any]) -> dict[str, Any]:
    return {"args": args, "tool": TOOL, "user": USER}


def _cel(source: str, env: dict[str, Any]) -> tuple[bool, Any]:
    try:
        return True, cel.compile(source).execute(cel.Context(variables=env))
    except Exception as exc:
        return False, exc


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions, args_maps)
def test_closure_answers_only_as_cel_does(source: str, args: dict[str, Any]) -> None:
    fast = compile_fast(source, CEL_VARIABLES)
    assert fast is not None, f"the generator's expressions are all in the subset: {source}"
    env = _env(args)
    answer = fast(env.__getitem__)
    if answer is UNDECIDED:
        return
    ok, expected = _cel(source, env)
    assert ok, f"{source} with {args!r}: closure said {answer}, CEL failed: {expected}"
    assert answer is expected, f"{source} with {args!r}: closure {answer}, CEL {expected!r}"


class _Resolver:
    def __init__(self, env: dict[str, Any]) -> None:
        self.env = env
        self.error: str | None = None

    def __call__(self, name: str) -> Any:
        return self.env.get(name)


def _outcome(cond: Condition, env: dict[str, Any]) -> tuple[str, Any]:
    try:
        return "ok", cond.evaluate(_Resolver(env))
    except ConditionError as exc:
        return "error", str(exc)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(expressions, args_maps)
def test_condition_evaluates_as_plain_cel(source: str, args: dict[str, Any]) -> None:
    """Fast closure + projected CEL vs CEL on whole variables: same result or same error message."""
    fast = Condition(source)
    plain = Condition(source)
    plain._fast, plain._projection = None, {}  # the reference: CEL on whole variables
    env = _env(args)
    assert _outcome(fast, env) == _outcome(plain, env), source


def test_the_common_conditions_are_compiled_and_decided() -> None:
    env = _env({"amount": 10, "to": "a@acme.example", "tags": ["x"], "memo": "refund"})
    env["lists"] = {"payees": ["a@acme.example"]}
    cases = {
        "args.amount < 1000": True,
        "args.amount >= 1000 || args.to in lists.payees": True,
        "has(args.cc) && args.cc != ''": False,
        "!(args.to in ['b@x.example'])": True,
        "size(args.tags) == 1 && args.memo.startsWith('ref')": True,
        "tool.connector == 'crm' && 'analyst' in user.roles": True,
        "type(args) == map && size(args.tags) > 3": False,
    }
    for source, expected in cases.items():
        fast = compile_fast(source, (*CEL_VARIABLES, "lists"))
        assert fast is not None, source
        assert fast(env.__getitem__) is expected, source
        assert _cel(source, env) == (True, expected)


@pytest.mark.parametrize(
    "source",
    [
        "lower(args.to) == 'x'",  # a fiveplane function
        "args.amount + 1 < 3",  # arithmetic
        "args.tags.exists(t, t == 'x')",  # a macro
        "args.amount < 1u",  # an unsigned literal
        "args.a < args.b < args.c",  # chained relations
        "args.to.matches('^a')",  # regular expressions
        "args.x == 'a\\u00e9'",  # an escape
        "args.amount < 2 - 1",  # arithmetic
        "-args.amount < 1",  # negation of a field
    ],
)
def test_outside_the_subset_is_left_to_cel(source: str) -> None:
    assert compile_fast(source, CEL_VARIABLES) is None


def test_missing_fields_and_mismatches_are_left_to_cel() -> None:
    fast = compile_fast("args.amount < 1000", CEL_VARIABLES)
    assert fast is not None
    for args in ({}, {"amount": None}, {"amount": "10"}, {"amount": True}, {"amount": 2**64}, {"amount": [1]}):
        assert fast({"args": args}.__getitem__) is UNDECIDED, args
    assert compile_fast("args.s == 'a'", CEL_VARIABLES)({"args": {"s": "\ud800"}}.__getitem__) is UNDECIDED  # type: ignore[misc]
    # and Condition then raises CEL's explained error, as before
    with pytest.raises(ConditionError, match="missing field"):
        Condition("args.amount < 1000").evaluate(_Resolver({"args": {}}))


def test_projection_names_the_fields_read() -> None:
    assert projection("args.amount < 1000 && args['to'] != ''", CEL_VARIABLES) == {"args": frozenset({"amount", "to"})}
    assert projection("size(args) > 2 && args.a == 1", CEL_VARIABLES) == {}
    assert projection("'k' in args", CEL_VARIABLES) == {}
    assert projection("args[args.k] == 1", CEL_VARIABLES) == {}
    assert projection("content.body.contains('x') && tool.args == 1", CEL_VARIABLES) == {"content": frozenset({"body"})}
    assert project({"a": 1, "b": 2}, frozenset({"a", "z"})) == {"a": 1}
    assert project("text", frozenset({"a"})) == "text"


def test_a_resolver_error_still_fails_the_condition() -> None:
    class Failing(_Resolver):
        def __call__(self, name: str) -> Any:
            if name == "lists":
                self.error = "list 'payees' is unavailable (file gone)"
                return None
            return super().__call__(name)

    cond = Condition("args.amount > 5 || args.to in lists.payees")
    assert cond.compiled
    with pytest.raises(ConditionError, match="unavailable"):
        cond.evaluate(Failing({"args": {"amount": 10, "to": "x"}}))
