"""Attribute schemas: JSON Schema definitions checked with jsonschema, data
validated with compiled validators (fastjsonschema) because bulk upserts check
millions of items and the interpreted validator costs ~20× more per item.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping

import fastjsonschema
import jsonschema
import orjson

Validator = Callable[[object], object]


def schema_definition_errors(schema: object) -> list[tuple[str, str]]:
    """Problems with a schema itself, as ``(path, message)`` pairs."""
    if not isinstance(schema, Mapping):
        return [("", "must be a JSON object")]
    try:
        jsonschema.Draft7Validator.check_schema(schema)
    except jsonschema.SchemaError as exc:
        path = ".".join(str(part) for part in exc.absolute_path)
        return [(path, exc.message)]
    try:
        compiled_validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode())
    except fastjsonschema.JsonSchemaDefinitionException as exc:
        return [("", str(exc))]
    return []


@functools.lru_cache(maxsize=256)
def compiled_validator(schema_json: str) -> Validator:
    return fastjsonschema.compile(orjson.loads(schema_json))


def validator_for(schema: Mapping) -> Validator | None:
    """A compiled validator, or ``None`` when the schema accepts anything."""
    if not schema:
        return None
    return compiled_validator(orjson.dumps(schema, option=orjson.OPT_SORT_KEYS).decode())


def attribute_error(validator: Validator | None, attributes: object) -> tuple[str, str] | None:
    """The first violation as ``(field, message)``, with the field as ``attributes.<path>``."""
    if validator is None:
        return None
    try:
        validator(attributes)
    except fastjsonschema.JsonSchemaValueException as exc:
        path = [str(part) for part in (exc.path or [])[1:]]
        field = ".".join(["attributes", *path])
        message = exc.message.replace("data.", "").replace("data ", "attributes ", 1)
        return field, message
    return None


def attributes_encoding_error(attributes: object) -> str | None:
    """Why ``attributes`` cannot be stored as JSON by every backend, if it cannot.

    Integers must fit in 64 bits and text must not contain NUL (PostgreSQL's jsonb
    rejects it); both would otherwise fail deep in the write as a server error.
    """
    try:
        encoded = orjson.dumps(attributes)
    except orjson.JSONEncodeError as exc:
        return f"cannot be stored as JSON: {exc}"
    if b"\\u0000" in encoded:
        return "text must not contain NUL characters (\\u0000)"
    return None


MAX_ID = 2**63


def valid_text(value: object, limit: int) -> bool:
    """A non-blank string of at most ``limit`` characters with no NUL."""
    return type(value) is str and 0 < len(value) <= limit and not value.isspace() and "\x00" not in value
