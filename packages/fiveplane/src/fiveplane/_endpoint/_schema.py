"""A small, strict validator for the JSON-Schema subset tool catalogs use.

Supported keywords: ``type`` (a name or a list), ``properties``, ``required``,
``additionalProperties`` (bool or schema), ``enum``, ``const``, ``minLength``, ``maxLength``,
``pattern`` (unanchored, like JSON Schema), ``minimum``, ``maximum``, ``exclusiveMinimum``,
``exclusiveMaximum``, ``items``, ``minItems``, ``maxItems``, ``uniqueItems``, ``minProperties``,
``maxProperties``; annotations ``title``, ``description``, ``default``, ``examples``, ``format``,
``$comment`` are accepted and ignored (``format: uri`` / ``hostname`` marks network fields for
the network plane).

Strict means two things. A schema using any other keyword is *rejected* when compiled (it would
otherwise be silently ignored, i.e. fail open). And an object schema that does not say
``additionalProperties`` rejects unknown keys unless compiled with ``additional_properties=True``.
Booleans are not integers or numbers; integers are numbers.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["CompiledSchema", "SchemaError", "compile_schema"]

_ANNOTATIONS = frozenset({"title", "description", "default", "examples", "format", "$comment", "$schema"})
_KEYWORDS = frozenset(
    {
        "type", "properties", "required", "additionalProperties", "enum", "const", "minLength", "maxLength",
        "pattern", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "items", "minItems",
        "maxItems", "uniqueItems", "minProperties", "maxProperties",
    }
) | _ANNOTATIONS  # fmt: skip
_TYPES: dict[str, Callable[[Any], bool]] = {
    "object": lambda v: isinstance(v, Mapping),
    "array": lambda v: isinstance(v, (list, tuple)),
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
    "number": lambda v: (
        isinstance(v, (int, float)) and not isinstance(v, bool) and not (isinstance(v, float) and not math.isfinite(v))
    ),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
}
_MAX_ERRORS = 10


class SchemaError(ValueError):
    """The schema itself is invalid or uses an unsupported keyword."""


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, Mapping):
        return "object"
    if isinstance(value, (list, tuple)):
        return "array"
    return type(value).__name__


def _same(a: Any, b: Any) -> bool:
    """JSON equality: booleans never equal numbers."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


class CompiledSchema:
    """A compiled schema node. ``errors(value)`` lists what is wrong (empty: valid)."""

    def __init__(self, schema: Any, *, additional_properties: bool = False, where: str = "$") -> None:
        if schema is True or schema == {}:
            schema = {}
        if not isinstance(schema, Mapping):
            raise SchemaError(f"{where}: a schema must be a mapping")
        unknown = sorted(set(schema) - _KEYWORDS)
        if unknown:
            raise SchemaError(
                f"{where}: unsupported schema keyword(s) {', '.join(map(repr, unknown))}; supported: {', '.join(sorted(_KEYWORDS - _ANNOTATIONS))}"
            )
        self.where = where
        types = schema.get("type")
        self.types: tuple[str, ...] = ()
        if types is not None:
            self.types = (types,) if isinstance(types, str) else tuple(types)
            bad = [t for t in self.types if t not in _TYPES]
            if bad or not self.types:
                raise SchemaError(f"{where}: unknown type(s) {bad or types!r}")
        props = schema.get("properties", {})
        if not isinstance(props, Mapping):
            raise SchemaError(f"{where}.properties: must be a mapping")
        self.properties = {
            str(k): CompiledSchema(v, additional_properties=additional_properties, where=f"{where}.{k}") for k, v in props.items()
        }
        required = schema.get("required", [])
        if not isinstance(required, (list, tuple)) or not all(isinstance(r, str) for r in required):
            raise SchemaError(f"{where}.required: must be a list of names")
        self.required: tuple[str, ...] = tuple(required)
        extra = schema.get("additionalProperties", additional_properties)
        self.additional: bool | CompiledSchema
        if isinstance(extra, bool):
            self.additional = extra
        else:
            self.additional = CompiledSchema(
                extra, additional_properties=additional_properties, where=f"{where}.additionalProperties"
            )
        self.enum: tuple[Any, ...] | None = None
        if "enum" in schema:
            if not isinstance(schema["enum"], (list, tuple)) or not schema["enum"]:
                raise SchemaError(f"{where}.enum: must be a non-empty list")
            self.enum = tuple(schema["enum"])
        self.has_const = "const" in schema
        self.const = schema.get("const")
        self.min_length = self._int(schema, "minLength")
        self.max_length = self._int(schema, "maxLength")
        self.min_items = self._int(schema, "minItems")
        self.max_items = self._int(schema, "maxItems")
        self.min_props = self._int(schema, "minProperties")
        self.max_props = self._int(schema, "maxProperties")
        self.unique = bool(schema.get("uniqueItems", False))
        self.minimum = self._num(schema, "minimum")
        self.maximum = self._num(schema, "maximum")
        self.ex_minimum = self._num(schema, "exclusiveMinimum")
        self.ex_maximum = self._num(schema, "exclusiveMaximum")
        self.pattern: re.Pattern[str] | None = None
        if "pattern" in schema:
            try:
                self.pattern = re.compile(str(schema["pattern"]))
            except re.error as exc:
                raise SchemaError(f"{where}.pattern: invalid regular expression: {exc}") from None
        items = schema.get("items")
        self.items = (
            CompiledSchema(items, additional_properties=additional_properties, where=f"{where}[]") if items is not None else None
        )

    def _int(self, schema: Mapping[str, Any], key: str) -> int | None:
        value = schema.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise SchemaError(f"{self.where}.{key}: must be a non-negative integer")
        return value

    def _num(self, schema: Mapping[str, Any], key: str) -> float | None:
        value = schema.get(key)
        if value is None:
            return None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise SchemaError(f"{self.where}.{key}: must be a number")
        return float(value)

    def errors(self, value: Any, where: str = "") -> list[str]:
        out: list[str] = []
        self._check(value, where or "arguments", out)
        return out[:_MAX_ERRORS]

    def _check(self, value: Any, where: str, out: list[str]) -> None:
        if len(out) >= _MAX_ERRORS:
            return
        if self.types and not any(_TYPES[t](value) for t in self.types):
            out.append(f"{where}: expected {' or '.join(self.types)}, got {_type_name(value)}")
            return
        if self.enum is not None and not any(_same(value, e) for e in self.enum):
            shown = ", ".join(repr(e) for e in self.enum[:8])
            out.append(f"{where}: {_short(value)} is not one of {shown}")
        if self.has_const and not _same(value, self.const):
            out.append(f"{where}: must be {self.const!r}")
        if isinstance(value, str):
            if self.max_length is not None and len(value) > self.max_length:
                out.append(f"{where}: longer than {self.max_length} characters ({len(value)})")
            if self.min_length is not None and len(value) < self.min_length:
                out.append(f"{where}: shorter than {self.min_length} characters")
            if (
                self.pattern is not None
                and (self.max_length is None or len(value) <= self.max_length)
                and not self.pattern.search(value)
            ):
                out.append(f"{where}: does not match the pattern {self.pattern.pattern!r}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if self.minimum is not None and value < self.minimum:
                out.append(f"{where}: {value} is less than the minimum {_num(self.minimum)}")
            if self.maximum is not None and value > self.maximum:
                out.append(f"{where}: {value} is more than the maximum {_num(self.maximum)}")
            if self.ex_minimum is not None and value <= self.ex_minimum:
                out.append(f"{where}: {value} must be more than {_num(self.ex_minimum)}")
            if self.ex_maximum is not None and value >= self.ex_maximum:
                out.append(f"{where}: {value} must be less than {_num(self.ex_maximum)}")
        elif isinstance(value, Mapping):
            for name in self.required:
                if name not in value:
                    out.append(f"{where}: missing required field {name!r}")
            if self.min_props is not None and len(value) < self.min_props:
                out.append(f"{where}: fewer than {self.min_props} fields")
            if self.max_props is not None and len(value) > self.max_props:
                out.append(f"{where}: more than {self.max_props} fields")
            for key, item in value.items():
                sub = self.properties.get(str(key)) if isinstance(key, str) else None
                if not isinstance(key, str):
                    out.append(f"{where}: field names must be strings, got {_type_name(key)}")
                elif sub is not None:
                    sub._check(item, f"{where}.{key}", out)
                elif self.additional is False:
                    out.append(f"{where}: unexpected field {key!r}")
                elif isinstance(self.additional, CompiledSchema):
                    self.additional._check(item, f"{where}.{key}", out)
        elif isinstance(value, (list, tuple)):
            if self.min_items is not None and len(value) < self.min_items:
                out.append(f"{where}: fewer than {self.min_items} items")
            if self.max_items is not None and len(value) > self.max_items:
                out.append(f"{where}: more than {self.max_items} items")
                return
            if self.unique:
                for i, a in enumerate(value):
                    if any(_same(a, b) for b in value[:i]):
                        out.append(f"{where}: items must be unique ({_short(a)} repeats)")
                        break
            if self.items is not None:
                for i, item in enumerate(value):
                    self.items._check(item, f"{where}[{i}]", out)


def _num(x: float) -> str:
    return str(int(x)) if x.is_integer() else str(x)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:59] + "…"


def compile_schema(schema: Any, *, additional_properties: bool = False) -> CompiledSchema:
    """Compile a tool's ``arguments`` schema. Raises :class:`SchemaError` for what it cannot enforce."""
    return CompiledSchema(schema, additional_properties=additional_properties)
