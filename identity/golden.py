"""The golden record: one value per attribute from a OneID's records, by survivorship rules.

Strategies (``SurvivorshipRule`` rows; an attribute without a rule is *most
trusted*): the value of the most trusted source (ties: most recent), the most
recent record's, the most frequent value (ties: most trusted), or the first
record's (oldest). Empty values (``None``, ``""``, ``[]``, ``{}``) never win. Only
attributes the OneID subject type's schema allows are kept, and a value the
schema rejects is dropped, so the subject write never fails on a source's
oddities.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson

from subjects.schemas import attribute_error, validator_for


@dataclass(frozen=True)
class RecordView:
    id: int
    trust: int
    created_at: float  # epoch seconds: only their order matters
    updated_at: float
    raw: Mapping


def _empty(value: object) -> bool:
    return value is None or value == "" or value == [] or value == {}


def _pick(strategy: str, candidates: list[tuple[RecordView, object]]) -> object:
    if strategy == "most_recent":
        return max(candidates, key=lambda c: (c[0].updated_at, c[0].trust, c[0].id))[1]
    if strategy == "first_non_empty":
        return min(candidates, key=lambda c: (c[0].created_at, c[0].id))[1]
    if strategy == "most_frequent":
        counts = Counter(orjson.dumps(v, option=orjson.OPT_SORT_KEYS) for _, v in candidates)
        best = max(
            candidates,
            key=lambda c: (counts[orjson.dumps(c[1], option=orjson.OPT_SORT_KEYS)], c[0].trust, c[0].updated_at),
        )
        return best[1]
    return max(candidates, key=lambda c: (c[0].trust, c[0].updated_at, c[0].id))[1]


def allowed_attributes(schema: Mapping) -> set[str] | None:
    """Attribute names the schema accepts, or ``None`` for "any"."""
    if not schema or schema.get("additionalProperties", True) is not False:
        return None
    return set(schema.get("properties", {}))


def golden_record(records: Sequence[RecordView], schema: Mapping, strategies: Mapping[str, str]) -> tuple[dict, str]:
    """``(attributes, display_name)`` for a OneID made of ``records``."""
    allowed = allowed_attributes(schema)
    if len(records) == 1:  # the common case: one record, its own non-empty values
        raw = records[0].raw
        attributes = {k: raw[k] for k in sorted(raw) if not _empty(raw[k]) and (allowed is None or k in allowed)}
        return _valid(attributes, schema), _name(attributes, records)
    by_attribute: dict[str, list[tuple[RecordView, object]]] = {}
    for record in records:
        for name, value in record.raw.items():
            if not _empty(value) and (allowed is None or name in allowed):
                by_attribute.setdefault(name, []).append((record, value))
    attributes = {
        name: _pick(strategies.get(name, "most_trusted"), candidates)
        for name, candidates in sorted(by_attribute.items())
    }
    return _valid(attributes, schema), _name(attributes, records)


def _valid(attributes: dict, schema: Mapping) -> dict:
    """``attributes`` without the values the schema rejects."""
    validator = validator_for(schema)
    for _ in range(len(attributes) + 1):
        problem = attribute_error(validator, attributes)
        if problem is None:
            break
        field = problem[0].split(".")[1] if "." in problem[0] else None
        if field is None or field not in attributes:
            attributes = {}
            break
        del attributes[field]
    return attributes


def _name(attributes: dict, records: Sequence[RecordView]) -> str:
    name = attributes.get("name") or next(
        (r.raw.get("name") for r in records if isinstance(r.raw.get("name"), str) and r.raw.get("name")), ""
    )
    return str(name)[:255]
