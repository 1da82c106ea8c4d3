"""Bulk upsert of relationships, validated as a whole, written set-based.

Checks per item: the relationship type, both ends (by id or external key) and
that they are of the type's from/to subject types, weight, validity period,
attributes against the type's schema, and cardinality against the batch and the
stored relationships. Taggable types get one relationship subject per
relationship, upserted in the same transaction, so tags need no special case.

A relationship that an update moves to other ends (or to another own subject) is
listed with its old ends in the domain event (``summary.previous_ends``), so whoever
follows relationship writes (the real-time engine) can refresh what it left too.
"""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import MappingProxyType

from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from audit.services import bulk_write_record
from common.errors import ConflictError, ItemError, ServiceError

from ..models import Cardinality, RelationshipType, SubjectType
from ..schemas import MAX_ID, attribute_error, attributes_encoding_error, valid_text, validator_for
from .item_checks import KEY_LIMITS, encoded_attributes, external_key
from .recordset import guarded_upsert, recordset_param, recordset_sql
from .references import KeyRef, parse_ref, subject_types_by_id, subjects_by_id, subjects_by_key
from .scope_checks import (
    StoredEnds,
    invisible_ids,
    not_found,
    refuse,
    restricted,
    stored_out_of_scope,
    stored_relationship_ends,
)
from .subject_bulk import BulkResult, ItemResult, count_statuses, upsert_subject_rows
from .type_lookup import types_by_code

ITEM_FIELDS = {
    "type",
    "from",
    "to",
    "source",
    "external_id",
    "weight",
    "valid_from",
    "valid_to",
    "attributes",
}
COLUMNS = [
    ("relationship_type_id", "bigint"),
    ("source", "text"),
    ("external_id", "text"),
    ("from_subject_id", "bigint"),
    ("to_subject_id", "bigint"),
    ("weight", "double precision"),
    ("valid_from", "timestamptz"),
    ("valid_to", "timestamptz"),
    ("attributes", "jsonb"),
    ("subject_id", "bigint"),
    ("from_slot", "bigint"),
    ("to_slot", "bigint"),
]
KEY = ("relationship_type_id", "source", "external_id")


@dataclass(slots=True)
class _Item:
    index: int
    rtype: RelationshipType
    source: str
    external_id: str
    ends: dict[str, int | KeyRef]
    weight: float
    valid_from: datetime | None
    valid_to: datetime | None
    attributes: dict
    attributes_json: str | None = None  # encoded once, by the check that it can be stored
    ids: dict[str, int] = field(default_factory=dict)
    slots: Mapping[str, int | None] = field(default_factory=dict)
    subject_id: int | None = None  # its own subject, taggable types only (set by the write)

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.rtype.id, self.source, self.external_id)

    def slot(self, end: str) -> int | None:
        return self.slots.get(end)


_NO_SLOTS: Mapping[str, int | None] = MappingProxyType({"from": None, "to": None})


def _assign_slots(items: list[_Item]) -> None:
    """An open relationship whose type limits an end holds that end's slot."""
    for item in items:
        cardinality = item.rtype.cardinality
        if item.valid_to is not None or cardinality == Cardinality.MANY_TO_MANY:
            item.slots = _NO_SLOTS
            continue
        item.slots = {
            "from": item.ids["from"] if Cardinality.from_is_unique(cardinality) else None,
            "to": item.ids["to"] if Cardinality.to_is_unique(cardinality) else None,
        }


def relationship_bulk_upsert(
    *,
    actor,
    items: Sequence[Mapping],
    max_items: int | None = None,
    correlation_id: uuid.UUID | None = None,
    action: str = "relationships.bulk_upserted",
) -> BulkResult:
    """Create or update relationships by ``(type, source, external_id)``; all or nothing."""
    if max_items is not None and len(items) > max_items:
        raise ServiceError.single(
            "items",
            f"A batch holds at most {max_items} items; got {len(items)}.",
            "too_many",
        )
    errors: list[ItemError] = []
    parsed = _parse(items, errors)
    if not errors:
        _resolve_ends(parsed, errors)
    if errors:
        raise ServiceError(f"{len({e.index for e in errors})} of {len(items)} items are invalid.", errors)
    stored = _Stored(parsed)
    if restricted(actor) is not None:
        refuse(_scope_errors(actor, parsed, stored.ends()))
    _assign_slots(parsed)
    try:
        with transaction.atomic():
            limited = {
                item.rtype.id for item in parsed if item.slots["from"] is not None or item.slots["to"] is not None
            }
            if limited:
                # Checked inside the transaction, with the types locked against a
                # concurrent cardinality change; PostgreSQL's constraints catch races.
                _lock_types_for_share(sorted(limited))
                _check_cardinality(parsed, errors)
                if errors:
                    raise ServiceError(f"{len({e.index for e in errors})} of {len(items)} items are invalid.", errors)
            results = _write(parsed, before_compare=stored.ends)
            if limited and connection.vendor == "postgresql":
                with connection.cursor() as cursor:  # surface a cardinality race here, not at an outer commit
                    cursor.execute(
                        "SET CONSTRAINTS relationship_from_cardinality, relationship_to_cardinality IMMEDIATE"
                    )
            counts = count_statuses(results)
            written = sorted(r.id for r in results if r.status != "unchanged")
            moved = _previous_ends(parsed, results, stored.read or {})
            correlation_id = bulk_write_record(
                actor=actor,
                action=action,
                object_type="subjects.relationship",
                counts=counts,
                ids=written,
                correlation_id=correlation_id,
                extra={"previous_ends": moved} if moved else None,
            )
    except IntegrityError as exc:
        raise ConflictError(
            "A concurrent write took a relationship slot this batch needs (cardinality); nothing was written.",
            [ItemError(None, "items", str(exc).splitlines()[0], "conflict")],
            code="conflict",
        ) from exc
    results.sort(key=lambda r: r.index)
    return BulkResult(results=results, correlation_id=correlation_id, counts=counts)


class _Stored:
    """The batch's stored ends, read at most once: by the scope check of a restricted actor,
    else just before the compare-and-write. A batch copied in as all new reads nothing."""

    __slots__ = ("items", "read")

    def __init__(self, items: list[_Item]) -> None:
        self.items = items
        self.read: dict[tuple[int, str, str], StoredEnds] | None = None

    def ends(self) -> dict[tuple[int, str, str], StoredEnds]:
        if self.read is None:
            self.read = stored_relationship_ends(item.key for item in self.items)
        return self.read


def _previous_ends(items: list[_Item], results: list[ItemResult], stored: Mapping) -> list[list[int | None]]:
    """``[type, from, to, own subject]`` as stored before the write, of each updated
    relationship whose ends or own subject it changed; a weight or attribute change lists none."""
    previous = []
    for item, result in zip(items, results, strict=True):
        old, now = stored.get(item.key), (item.ids["from"], item.ids["to"], item.subject_id)
        if result.status == "updated" and old is not None and old != now:
            previous.append([item.rtype.id, *old])
    return previous


def _scope_errors(actor, items: list[_Item], stored: Mapping[tuple[int, str, str], StoredEnds]) -> list[ItemError]:
    """Both ends of every relationship, and both stored ends of one it would update, must be
    visible to the actor (a relationship is visible when both its ends are): two queries for
    the batch, the stored ends read by the caller. A hidden end is reported like a missing one."""
    ends = {item.ids[end] for item in items for end in ("from", "to")}
    hidden = invisible_ids(actor, ends.union(*((e.from_id, e.to_id) for e in stored.values())))
    errors = []
    for item in items:
        for end in ("from", "to"):
            if item.ids[end] in hidden:
                errors.append(not_found(item.index, end, item.ids[end]))
        old = stored.get(item.key)
        if old is not None and hidden.intersection((old.from_id, old.to_id)):
            errors.append(stored_out_of_scope(item.index, "relationship"))
    return errors


def _parse(items: Sequence[Mapping], errors: list[ItemError]) -> list[_Item]:
    types = types_by_code(RelationshipType, (i.get("type") for i in items if isinstance(i, Mapping)))
    validators = {code: validator_for(t.attribute_schema) for code, t in types.items()}
    parsed, seen = [], {}
    for index, raw in enumerate(items):
        item = _parse_valid_item(index, raw, types, validators) or _parse_item(index, raw, types, validators, errors)
        if item is None:
            continue
        first = seen.setdefault(item.key, index)
        if first != index:
            errors.append(
                ItemError(
                    index,
                    "external_id",
                    f"Duplicate of item {first} (same type, source and external_id).",
                    "duplicate",
                )
            )
            continue
        parsed.append(item)
    return parsed


_INVALID = object()


def _moment(value: object) -> datetime | object | None:
    """An aware datetime from an ISO 8601 date or date-time; ``_INVALID`` if it is not one."""
    if value is None:
        return None
    if type(value) is not str:
        return _INVALID
    try:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            moment = parse_datetime(value)
            if moment is None:
                day = parse_date(value)
                if day is None:
                    return _INVALID
                moment = datetime(day.year, day.month, day.day)
        moment = timezone.make_aware(moment) if moment.tzinfo is None else moment
        moment.astimezone(UTC)  # must be storable in UTC (year 1..9999)
    except (ValueError, OverflowError):  # well-formed but impossible (2024-02-30) or out of range
        return _INVALID
    return moment


def _finite(value: object) -> bool:
    """A JSON number that is finite and fits a double."""
    if type(value) not in (int, float):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


def _parse_valid_item(index: int, raw: object, types: dict, validators: dict) -> _Item | None:
    """The fast path for a well-formed item with ends given by id; ``None`` sends the
    item to :func:`_parse_item`, which finds and names every problem."""
    if type(raw) is not dict or not raw.keys() <= ITEM_FIELDS:
        return None
    code = raw.get("type")
    rtype = types.get(code) if type(code) is str else None
    source, external_id = raw.get("source"), raw.get("external_id")
    from_, to = raw.get("from"), raw.get("to")
    weight = raw.get("weight", 1.0)
    attributes = raw.get("attributes", {})
    if attributes is None:
        attributes = {}
    if (
        rtype is None
        or not valid_text(source, KEY_LIMITS["source"])
        or not valid_text(external_id, KEY_LIMITS["external_id"])
        or type(from_) is not int
        or type(to) is not int
        or not 0 < from_ < MAX_ID
        or not 0 < to < MAX_ID
        or not _finite(weight)
        or type(attributes) is not dict
    ):
        return None
    valid_from, valid_to = _moment(raw.get("valid_from")), _moment(raw.get("valid_to"))
    if valid_from is _INVALID or valid_to is _INVALID or (valid_from and valid_to and valid_to < valid_from):
        return None
    encoded = encoded_attributes(attributes)
    if encoded is None or attribute_error(validators[code], attributes) is not None:
        return None
    ends = {"from": from_, "to": to}
    return _Item(index, rtype, source, external_id, ends, float(weight), valid_from, valid_to, attributes, encoded)


def _parse_item(index, raw, types, validators, errors) -> _Item | None:
    if not isinstance(raw, Mapping):
        errors.append(ItemError(index, "", "Each item must be a JSON object."))
        return None
    before = len(errors)
    for name in sorted(set(raw) - ITEM_FIELDS):
        errors.append(ItemError(index, name, "Unknown field.", "unknown_field"))
    rtype = types.get(raw.get("type")) if isinstance(raw.get("type"), str) else None
    if rtype is None:
        errors.append(
            ItemError(
                index,
                "type",
                f"Unknown relationship type {raw.get('type')!r}.",
                "unknown_type",
            )
        )
    key = external_key(index, raw, errors)
    ends = {}
    for end in ("from", "to"):
        ref, problem = parse_ref(raw.get(end))
        if problem or ref is None:
            errors.append(
                ItemError(
                    index,
                    end,
                    problem or "This field is required.",
                    "required" if not problem else "invalid",
                )
            )
        else:
            ends[end] = ref
    weight = raw.get("weight", 1.0)
    if not _finite(weight):
        errors.append(ItemError(index, "weight", "Must be a finite number."))
    period = {name: _parse_moment(index, name, raw.get(name), errors) for name in ("valid_from", "valid_to")}
    if period["valid_from"] and period["valid_to"] and period["valid_to"] < period["valid_from"]:
        errors.append(ItemError(index, "valid_to", "Must not be before valid_from.", "invalid_period"))
    attributes = raw.get("attributes", {})
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        errors.append(ItemError(index, "attributes", "Must be a JSON object."))
    elif problem := attributes_encoding_error(attributes):
        errors.append(ItemError(index, "attributes", problem))
    elif rtype is not None and (problem := attribute_error(validators[rtype.code], attributes)):
        errors.append(ItemError(index, problem[0], problem[1], "schema"))
    if len(errors) > before:
        return None
    return _Item(
        index,
        rtype,
        key["source"],
        key["external_id"],
        ends,
        float(weight),
        period["valid_from"],
        period["valid_to"],
        attributes,
    )


def _parse_moment(index: int, name: str, value: object, errors: list[ItemError]) -> datetime | None:
    moment = _moment(value)
    if moment is _INVALID:
        errors.append(ItemError(index, name, "Must be an ISO 8601 date or date-time.", "invalid_date"))
        return None
    return moment


def _expected_type(item: _Item, end: str, end_types: dict[int, SubjectType]) -> SubjectType:
    return end_types[item.rtype.from_type_id if end == "from" else item.rtype.to_type_id]


def _resolve_ends(items: list[_Item], errors: list[ItemError]) -> None:
    """Every end as a subject id of the type's from/to subject type, or an error naming it."""
    if all(type(ref) is int for item in items for ref in item.ends.values()) and _ends_by_id_match(items):
        return
    end_types = SubjectType.objects.in_bulk(
        {t for item in items for t in (item.rtype.from_type_id, item.rtype.to_type_id)}
    )
    by_id = subjects_by_id(ref for item in items for ref in item.ends.values() if isinstance(ref, int))
    keys = {
        (_expected_type(item, end, end_types).id, ref.source, ref.external_id)
        for item in items
        for end, ref in item.ends.items()
        if isinstance(ref, KeyRef)
    }
    by_key = subjects_by_key(keys)
    for item in items:
        for end, ref in item.ends.items():
            expected = _expected_type(item, end, end_types)
            if isinstance(ref, int):
                found = by_id.get(ref)
                if found is None:
                    errors.append(ItemError(item.index, end, f"No subject with id {ref}.", "not_found"))
                elif found.subject_type_id != expected.id:
                    errors.append(
                        ItemError(
                            item.index,
                            end,
                            f"Subject {ref} is a {found.type_code}; {item.rtype.code} needs a {expected.code}.",
                            "wrong_type",
                        )
                    )
                else:
                    item.ids[end] = ref
            elif ref.type_code not in (None, expected.code):
                errors.append(
                    ItemError(
                        item.index,
                        end,
                        f"{item.rtype.code} needs a {expected.code}, not a {ref.type_code}.",
                        "wrong_type",
                    )
                )
            elif (found_id := by_key.get((expected.id, ref.source, ref.external_id))) is None:
                errors.append(
                    ItemError(
                        item.index,
                        end,
                        f"No {expected.code} with source {ref.source!r} and external_id {ref.external_id!r}.",
                        "not_found",
                    )
                )
            else:
                item.ids[end] = found_id


def _ends_by_id_match(items: list[_Item]) -> bool:
    """The common case, every end given by id: one statement for the ends' types and
    one comparison per end. ``False`` (nothing resolved) when any end is missing or of
    the wrong type; the detailed resolution then names each one."""
    type_of = subject_types_by_id(ref for item in items for ref in item.ends.values())
    for item in items:
        ends, rtype = item.ends, item.rtype
        if type_of.get(ends["from"]) != rtype.from_type_id or type_of.get(ends["to"]) != rtype.to_type_id:
            return False
    for item in items:
        item.ids = item.ends
    return True


def _lock_types_for_share(type_ids: list[int]) -> None:
    """Concurrent batches share the lock; a cardinality change (a row update) waits for them."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT id FROM subjects_relationshiptype WHERE id = ANY(%s) FOR SHARE", [type_ids])


def _check_cardinality(items: list[_Item], errors: list[ItemError]) -> None:
    """At most one open relationship per limited end: within the batch and against storage."""
    batch_keys = {item.key for item in items}
    by_index = {item.index: item for item in items}
    for end in ("from", "to"):
        claimed: dict[tuple[int, int], int] = {}
        for item in items:
            slot = item.slot(end)
            if slot is None:
                continue
            first = claimed.setdefault((item.rtype.id, slot), item.index)
            if first != item.index:
                errors.append(
                    ItemError(
                        item.index,
                        end,
                        f"Subject {slot} can have only one open {item.rtype.code} relationship ({item.rtype.cardinality}); item {first} claims it too.",
                        "cardinality",
                    )
                )
        for (type_id, slot), holder in _stored_slot_holders(end, claimed).items():
            if (type_id, *holder[1:]) not in batch_keys:  # a batch item rewrites that holder itself
                index = claimed[(type_id, slot)]
                code = by_index[index].rtype
                errors.append(
                    ItemError(
                        index,
                        end,
                        f"Subject {slot} already has an open {code.code} relationship ({code.cardinality}): relationship {holder[0]}. End it first.",
                        "cardinality",
                    )
                )


def _stored_slot_holders(end: str, claimed: dict[tuple[int, int], int]) -> dict[tuple[int, int], tuple[int, str, str]]:
    if not claimed:
        return {}
    column = f"{end}_slot"
    rows = [{"t": t, "s": s} for t, s in claimed]
    sql = (
        f"SELECT r.t, r.s, x.id, x.source, x.external_id FROM {recordset_sql(connection, [('t', 'bigint'), ('s', 'bigint')])}"
        f" JOIN subjects_relationship x ON x.relationship_type_id = r.t AND x.{column} = r.s"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [recordset_param(rows)])
        return {(t, s): (id_, source, ext) for t, s, id_, source, ext in cursor.fetchall()}


def _write(items: list[_Item], before_compare: Callable[[], object]) -> list[ItemResult]:
    subject_ids = _relationship_subjects([i for i in items if i.rtype.taggable])
    for item in items:
        item.subject_id = subject_ids.get(item.key) if subject_ids else None
    # PostgreSQL: datetimes go to COPY as they are (psycopg formats them).
    moment = _as_is if connection.vendor == "postgresql" else connection.ops.adapt_datetimefield_value
    rows = [
        (
            item.rtype.id,
            item.source,
            item.external_id,
            item.ids["from"],
            item.ids["to"],
            item.weight,
            moment(item.valid_from),
            moment(item.valid_to),
            item.attributes if item.attributes_json is None else item.attributes_json,
            item.subject_id,
            item.slots["from"],
            item.slots["to"],
        )
        for item in items
    ]
    written = guarded_upsert(
        connection,
        table="subjects_relationship",
        columns=COLUMNS,
        key=KEY,
        rows=rows,
        now=timezone.now(),
        before_compare=before_compare,
    )
    return [ItemResult(item.index, id_, status) for item, (id_, status) in zip(items, written, strict=True)]


def _as_is(value):
    return value


def _relationship_subjects(items: list[_Item]) -> dict[tuple[int, str, str], int]:
    """The subjects of taggable relationships, created when missing.

    A new one takes the 'from' end's scope; an existing one is left as it is (its
    name, attributes and tags are the operators' to change).
    """
    if not items:
        return {}
    subject_key = {item.key: (item.rtype.subject_type_id, item.source, item.external_id) for item in items}
    existing = subjects_by_key(subject_key.values())
    missing = [item for item in items if subject_key[item.key] not in existing]
    found = {item.key: existing[subject_key[item.key]] for item in items if subject_key[item.key] in existing}
    if not missing:
        return found
    items = missing
    ends = subjects_by_id(item.ids["from"] for item in items)
    rows = [
        (
            item.rtype.subject_type_id,
            item.source,
            item.external_id,
            f"{item.rtype.name} {item.external_id}"[:255],
            {},
            ends[item.ids["from"]].business_line_id,
            ends[item.ids["from"]].brand_id,
            ends[item.ids["from"]].region_id,
            None,
        )
        for item in items
    ]
    results = upsert_subject_rows(rows)
    return {**found, **{item.key: result.id for item, result in zip(items, results, strict=True)}}
