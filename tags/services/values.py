"""Canonical JSON values per tag value type, shared by explicit writes and rule validation.

One canonical form per value means equality is plain JSON equality on both
backends, so the guarded writes can compare stored and incoming values in SQL.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Collection

from tags.models import ValueType

TEXT_MAX = 1000


class ValueProblem(ValueError):
    """Why a value does not fit a tag; ``code`` is the ItemError code."""

    def __init__(self, message: str, code: str = "invalid") -> None:
        super().__init__(message)
        self.code = code


def canonical_value(value_type: str, options: Collection[str], value: object) -> object:
    """The canonical JSON value of ``value`` for a tag, or None for "no value"; raises ValueProblem."""
    if value is None:
        return None
    checker = _CHECKERS[value_type]
    return checker(value, options)


def _enum(value: object, options: Collection[str]) -> str:
    if not isinstance(value, str):
        raise ValueProblem(f"Expected one of the tag's option values, got {type(value).__name__}.", "wrong_type")
    if value not in options:
        raise ValueProblem(f'"{value}" is not an option of this tag.', "not_an_option")
    return value


def _multi_enum(value: object, options: Collection[str]) -> list[str] | None:
    if not isinstance(value, list | tuple):
        raise ValueProblem("Expected a list of the tag's option values.", "wrong_type")
    for item in value:
        _enum(item, options)
    return sorted(set(value)) or None


def _number(value: object, options: Collection[str]) -> int | float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueProblem(f"Expected a number, got {type(value).__name__}.", "wrong_type")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueProblem("Expected a finite number.", "wrong_type")
        if value.is_integer() and abs(value) < 2**53:
            return int(value)
    elif abs(value) >= 2**53:
        raise ValueProblem("The number is too large.", "out_of_range")
    return value


def _boolean(value: object, options: Collection[str]) -> bool:
    if not isinstance(value, bool):
        raise ValueProblem(f"Expected true or false, got {type(value).__name__}.", "wrong_type")
    return value


def _text(value: object, options: Collection[str]) -> str:
    if not isinstance(value, str):
        raise ValueProblem(f"Expected text, got {type(value).__name__}.", "wrong_type")
    if "\x00" in value:
        raise ValueProblem("Text may not contain NUL characters.")
    if len(value) > TEXT_MAX:
        raise ValueProblem(f"Text is longer than {TEXT_MAX} characters.", "too_long")
    return value


def _date(value: object, options: Collection[str]) -> str:
    if isinstance(value, dt.datetime):
        raise ValueProblem("Expected a date (YYYY-MM-DD), got a date and time.", "wrong_type")
    if isinstance(value, dt.date):
        return value.isoformat()
    if not isinstance(value, str):
        raise ValueProblem(f"Expected a date (YYYY-MM-DD), got {type(value).__name__}.", "wrong_type")
    try:
        parsed = dt.date.fromisoformat(value)
    except ValueError:
        raise ValueProblem(f'"{value[:40]}" is not a date (YYYY-MM-DD).', "wrong_type") from None
    if len(value) != 10:
        raise ValueProblem(f'"{value[:40]}" is not a date (YYYY-MM-DD).', "wrong_type")
    return parsed.isoformat()


_CHECKERS = {
    ValueType.ENUM: _enum,
    ValueType.MULTI_ENUM: _multi_enum,
    ValueType.NUMBER: _number,
    ValueType.BOOLEAN: _boolean,
    ValueType.TEXT: _text,
    ValueType.DATE: _date,
}
