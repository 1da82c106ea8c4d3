"""Small helpers that keep the demo attribute schemas (JSON Schema draft 7) short."""

from __future__ import annotations

DATE = {"type": "string", "format": "date"}
TEXT = {"type": "string", "minLength": 1, "maxLength": 200}
PHONE = {"type": "string", "pattern": "^1[3-9][0-9]{9}$"}
MONEY = {"type": "number", "minimum": 0}
GENDER = {"enum": ["female", "male", "unknown"]}


def enum(*values: str) -> dict:
    return {"enum": list(values)}


def tags_of(*values: str) -> dict:
    """A non-empty list of distinct values from ``values``."""
    return {"type": "array", "items": {"enum": list(values)}, "minItems": 1, "uniqueItems": True}


def integer(minimum: int, maximum: int) -> dict:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def obj(required: dict, optional: dict | None = None) -> dict:
    """A closed object: every key of ``required`` must be present, nothing unknown."""
    schema = {"type": "object", "properties": {**required, **(optional or {})}, "additionalProperties": False}
    if required:
        schema["required"] = sorted(required)
    return schema
