"""Turning what an operator types (a form field, a CSV cell) into a value for ``store.write_values``.

Only the shape is converted here — ``"3"`` to 3 for a number tag, ``"a, b"`` to a
list for a multi-enum — never judged: text that does not convert is passed on
as it is, so the service, the one validator, reports it with its own message.
"""

from __future__ import annotations

import json

from tags.models import ValueType

TRUE, FALSE = {"true", "yes", "1", "y"}, {"false", "no", "0", "n"}


def parse_value_text(value_type: str, text: str | None) -> object:
    """The value typed for a tag of ``value_type``; empty text means "no value" (None)."""
    text = (text or "").strip()
    if not text:
        return None
    if value_type == ValueType.NUMBER:
        return _number(text)
    if value_type == ValueType.BOOLEAN:
        lowered = text.lower()
        return True if lowered in TRUE else False if lowered in FALSE else text
    if value_type == ValueType.MULTI_ENUM:
        if text.startswith("["):
            try:
                return json.loads(text)
            except ValueError:
                return text
        return [part.strip() for part in text.replace(";", ",").split(",") if part.strip()]
    return text


def _number(text: str) -> object:
    try:
        return int(text)
    except ValueError:
        pass
    try:
        return float(text)
    except ValueError:
        return text


def value_text(value: object) -> str:
    """A stored value as an operator reads and types it back."""
    if value is None:
        return ""
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)
