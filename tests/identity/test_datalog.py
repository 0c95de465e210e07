"""Token Datalog: a value is inlined as a literal only when that says exactly what binding it would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from biscuit_auth import AuthorizerBuilder, BiscuitBuilder, KeyPair, Rule
from hypothesis import given, settings
from hypothesis import strategies as st

from fiveplane import ActionClass, Principal, PrincipalKind
from fiveplane._identity import Attenuation, CapabilityDenied, MemoryRevocationStore, TokenService, attenuate
from fiveplane._identity._datalog import Source, date_literal, text_literal

KEY = KeyPair()
SAFE = "ABCXYZabcxyz0189 _.:/@+=*,~#-"


def facts(source: str, params: dict[str, Any] | None) -> list[list[Any]]:
    """The terms of every ``t(...)`` fact of a token built from ``source`` (read back by a query)."""
    token = BiscuitBuilder(source, params).build(KEY.private_key)
    builder = AuthorizerBuilder("allow if true;")
    limits = builder.limits()
    limits.max_time = timedelta(seconds=1)  # biscuit's default 1 ms fails spuriously on a loaded machine
    builder.set_limits(limits)
    authorizer = builder.build(token)
    authorizer.authorize()
    return [f.terms for f in authorizer.query(Rule("x($a) <- t($a)"))]


@pytest.mark.parametrize(
    "value",
    ['a"b', "a\\b", "{x}", "a)b", "a;b", "a\nb", "tab\there", "$t", "é", "日本", "a'b", "[x]", "<x>", "a|b", "\x00"],
)
def test_anything_that_could_leave_the_quotes_is_bound(value: str) -> None:
    assert text_literal(value) is None
    src = Source()
    assert src.text("v", value) == "{v}" and src.args() == {"v": value}


@pytest.mark.parametrize("value", ["", "crm.get_note", "notes/n1", "user:rep-1@acme.example", "sha256:ab12", "a b*c=d,e~f#g-h+i"])
def test_plain_names_are_inlined(value: str) -> None:
    src = Source()
    assert src.text("v", value) == f'"{value}"' and src.args() is None


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=40) | st.text(alphabet=SAFE, max_size=40))
def test_inlined_or_bound_the_fact_is_the_value(value: str) -> None:
    src = Source()
    assert facts(f"t({src.text('v', value)});", src.args()) == [[value]]
    assert facts("t({v});", {"v": value}) == [[value]]  # the same as binding it always


@settings(max_examples=200, deadline=None)
@given(
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2099, 12, 31), timezones=st.just(UTC)),
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
def test_date_literal_is_the_bound_date(when: datetime, offset_minutes: int) -> None:
    bound = facts("t({v});", {"v": when})
    assert facts(f"t({date_literal(when)});", None) == bound == [[when.replace(microsecond=0)]]
    elsewhere = when.astimezone(timezone(timedelta(minutes=offset_minutes)))  # the same instant, another zone
    assert facts(f"t({date_literal(elsewhere)});", None) == bound


HOSTILE = [
    'notes/1"); right("crm.get_note", "crm", "modify", "notes/1',  # an injection attempt
    "notes/ünïcødé",
    "notes/{id}",
    "notes/a\\b",
    "notes/line\nbreak",
]


@pytest.mark.parametrize("resource", HOSTILE)
def test_values_that_are_not_plain_names_round_trip_as_parameters(resource: str) -> None:
    service = TokenService(KEY, revocations=MemoryRevocationStore())
    odd = Principal(kind=PrincipalKind.USER, id='rep "one"\n')
    cap = service.mint(
        chain=(odd, Principal(kind=PrincipalKind.AGENT, id="agent/ü")),
        tool="crm.get_note",
        connector='crm"',
        operation=ActionClass.READ,
        resource=resource,
        session_id="s;1",
        action_id="a{1}",
        ttl=60,
    )
    v = service.verifier()
    with pytest.raises(CapabilityDenied) as info:  # the root block grants what it says, not what its values spell
        v.verify(cap.token, tool="crm.get_note", operation="modify", resource="notes/1", connector="crm")
    assert info.value.code == "denied"
    cap = attenuate(cap, Attenuation(resources=(resource,), resource_prefixes=(resource[:7], 'x"')))
    got = v.verify(cap.token, tool="crm.get_note", operation="read", resource=resource, connector='crm"')
    assert got.principal == ('user:rep "one"\n', "agent:agent/ü") and got.session_id == "s;1" and got.action_id == "a{1}"
    with pytest.raises(CapabilityDenied) as info:
        v.verify(cap.token, tool="crm.get_note", operation="read", resource=resource + "x")
    assert info.value.code in {"denied", "attenuated"}
    with pytest.raises(CapabilityDenied):
        v.verify(cap.token, tool="crm.get_note", operation="read", resource=resource, connector="crm")
