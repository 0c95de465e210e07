"""The strict JSON-Schema-subset validator for tool arguments."""

from __future__ import annotations

from typing import Any

import pytest

from fiveplane._endpoint._schema import SchemaError, compile_schema

SCHEMA = {
    "type": "object",
    "properties": {
        "contract_id": {"type": "string", "pattern": "^C-[0-9]+$", "maxLength": 12},
        "status": {"type": "string", "enum": ["draft", "signed"]},
        "count": {"type": "integer", "minimum": 1, "maximum": 10},
        "ratio": {"type": "number", "exclusiveMinimum": 0, "exclusiveMaximum": 1},
        "tags": {"type": "array", "items": {"type": "string", "minLength": 1}, "maxItems": 3, "uniqueItems": True},
        "meta": {"type": "object", "additionalProperties": {"type": "string"}},
        "flag": {"type": ["boolean", "null"]},
    },
    "required": ["contract_id", "status"],
}


@pytest.mark.parametrize(
    "args",
    [
        {"contract_id": "C-7", "status": "draft"},
        {
            "contract_id": "C-7",
            "status": "signed",
            "count": 10,
            "ratio": 0.5,
            "tags": ["a", "b"],
            "meta": {"k": "v"},
            "flag": None,
        },
        {"contract_id": "C-1", "status": "draft", "count": 3.0, "flag": True},
    ],
)
def test_valid(args: dict[str, Any]) -> None:
    assert compile_schema(SCHEMA).errors(args) == []


@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        ({"status": "draft"}, "missing required field 'contract_id'"),
        ({"contract_id": "X-7", "status": "draft"}, "does not match"),
        ({"contract_id": "C-7", "status": "cancelled"}, "is not one of"),
        ({"contract_id": "C-7", "status": "draft", "extra": 1}, "unexpected field 'extra'"),
        ({"contract_id": "C-7", "status": "draft", "count": True}, "expected integer"),
        ({"contract_id": "C-7", "status": "draft", "count": 0}, "less than the minimum"),
        ({"contract_id": "C-7", "status": "draft", "count": 11}, "more than the maximum"),
        ({"contract_id": "C-7", "status": "draft", "count": 1.5}, "expected integer"),
        ({"contract_id": "C-7", "status": "draft", "ratio": 1}, "must be less than"),
        ({"contract_id": "C-7", "status": "draft", "ratio": float("nan")}, "expected number"),
        ({"contract_id": "C-7", "status": "draft", "tags": ["a", "a"]}, "unique"),
        ({"contract_id": "C-7", "status": "draft", "tags": ["a", "b", "c", "d"]}, "more than 3 items"),
        ({"contract_id": "C-7", "status": "draft", "tags": [""]}, "shorter than"),
        ({"contract_id": "C-7", "status": "draft", "meta": {"k": 1}}, "expected string"),
        ({"contract_id": "C-12345678901", "status": "draft"}, "longer than 12"),
        ({"contract_id": 7, "status": "draft"}, "expected string"),
        ({"contract_id": "C-7", "status": "draft", "flag": 0}, "expected boolean or null"),
    ],
)
def test_invalid(args: dict[str, Any], fragment: str) -> None:
    errors = compile_schema(SCHEMA).errors(args)
    assert any(fragment in e for e in errors), errors


def test_enum_does_not_confuse_booleans_and_numbers() -> None:
    schema = compile_schema({"type": "object", "properties": {"x": {"enum": [1, "a"]}}})
    assert schema.errors({"x": 1}) == []
    assert schema.errors({"x": True}) != []


def test_additional_properties_default_is_configurable() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "string"}}}
    assert compile_schema(schema).errors({"a": "x", "b": 1}) != []
    assert compile_schema(schema, additional_properties=True).errors({"a": "x", "b": 1}) == []
    assert compile_schema({**schema, "additionalProperties": True}).errors({"a": "x", "b": 1}) == []


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "oneOf": [{}]},
        {"type": "object", "properties": {"a": {"$ref": "#/x"}}},
        {"type": "strnig"},
        {"type": "string", "pattern": "("},
        {"type": "string", "maxLength": -1},
        {"type": "object", "required": "a"},
        {"enum": []},
        "not a schema",
    ],
)
def test_unsupported_schemas_are_rejected(schema: Any) -> None:
    with pytest.raises(SchemaError):
        compile_schema(schema)


def test_error_count_is_bounded() -> None:
    schema = compile_schema({"type": "object", "properties": {}})
    assert len(schema.errors({f"k{i}": i for i in range(100)})) == 10
