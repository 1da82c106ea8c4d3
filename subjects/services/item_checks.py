"""Checks shared by the bulk services' detailed (error-naming) item paths."""

from __future__ import annotations

from collections.abc import Mapping

import orjson

from common.errors import ItemError

KEY_LIMITS = {"source": 64, "external_id": 128}


def external_key(index: int, raw: Mapping, errors: list[ItemError]) -> dict[str, str]:
    """``source`` and ``external_id`` of an item, noting in ``errors`` what is wrong with them."""
    key = {}
    for name, limit in KEY_LIMITS.items():
        value = raw.get(name)
        if not isinstance(value, str) or not value.strip():
            errors.append(ItemError(index, name, "This field is required and must be a non-empty string.", "required"))
        elif len(value) > limit:
            errors.append(ItemError(index, name, f"At most {limit} characters.", "max_length"))
        elif "\x00" in value:
            errors.append(ItemError(index, name, "Must not contain NUL characters.", "invalid"))
        else:
            key[name] = value
    return key


def encoded_attributes(attributes: object) -> str | None:
    """``attributes`` as JSON text when every backend can store it, else ``None``.

    The fast item paths encode once, here, and the write reuses the text; the
    conditions are those of :func:`subjects.schemas.attributes_encoding_error`
    (64-bit integers, no NUL in text), which the detailed paths use to say why.
    """
    try:
        encoded = orjson.dumps(attributes)
    except orjson.JSONEncodeError:
        return None
    if b"\\u0000" in encoded:
        return None
    return encoded.decode()
