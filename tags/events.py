"""Event ingestion: validated as a whole, stored in one statement, idempotent by (source, event_id).

A batch is all-or-nothing (the project's rule for bad input): every item is
checked first and every problem is reported with its index and field; then one
``INSERT … ON CONFLICT (source, event_id) DO NOTHING RETURNING`` stores the new
events and one lookup returns the stored ones for keys seen before, so a replay
answers with the original result (``status: "replayed"``, the original id and
subject) and writes nothing. Accepted events are committed before the response;
the real-time engine is asked, after that commit, to refresh the tags that read
them (one task per batch).

Attribution: ``subject`` (an id) or ``identifier`` ({"type": "phone", "value": …,
"scope"?: …}) resolved to a OneID subject through ``identity.selectors`` (one
set-based lookup for the batch); without identity an identifier is a per-item
error, never dropped. An event attributed by identifier also stores the source record
the identifier was found on (``source_record_id``: the OneID's lowest record holding it),
so a later split of the OneID gives the event to the part holding that record; the
lookup returns it with the OneID, so provenance costs no query.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import orjson
from django.db import connection, transaction
from django.utils import timezone

from audit.services import bulk_write_record
from common.errors import ItemError, ServiceError

SLUG = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
FIELDS = {"subject", "identifier", "type", "occurred_at", "properties", "source", "event_id"}
MAX_PROPERTIES_BYTES = 16_384
SOURCE_MAX, EVENT_ID_MAX = 64, 128


@dataclass(frozen=True)
class EventResult:
    index: int
    id: int
    subject: int
    status: str  # created | replayed

    def as_dict(self) -> dict:
        return {"index": self.index, "id": self.id, "subject": self.subject, "status": self.status}


@dataclass
class _Item:
    index: int
    source: str
    event_id: str
    type: str
    occurred_at: dt.datetime
    properties: dict
    subject: int | None
    identifier: dict | None
    source_record: int | None = None  # the record the identifier was found on (a split follows it)


def ingest_events(*, actor, items: Sequence[object], max_items: int | None = None) -> list[EventResult]:
    """Store ``items`` (event dicts); raises ServiceError naming every bad item; returns one result per item."""
    if not isinstance(items, list | tuple):
        raise ServiceError.single("items", "Expected a list of events.")
    if max_items is not None and len(items) > max_items:
        raise ServiceError.single("items", f"A batch holds at most {max_items} events; got {len(items)}.", "too_many")
    errors: list[ItemError] = []
    parsed = _parse(items, errors)
    types = _attribute(parsed, errors)
    if errors:
        errors.sort(key=lambda e: (e.index if e.index is not None else -1, e.field))
        raise ServiceError(
            f"{len({e.index for e in errors})} of {len(items)} events are invalid; none was stored.", errors
        )
    if not parsed:
        return []
    with transaction.atomic():
        created = _insert(parsed)
        results = _results(parsed, created)
        new = [r for r in results if r.status == "created"]
        if new:
            correlation_id = bulk_write_record(
                actor=actor,
                action="tags.events_ingested",
                object_type="tags.event",
                counts={"created": len(new), "replayed": len(results) - len(new)},
                ids=[r.id for r in new],
            )
            from tags.realtime.enqueue import enqueue_after_commit
            from tags.realtime.planner import plan_for_events

            by_index = {item.index: item for item in parsed}
            plan = plan_for_events(((r.subject, by_index[r.index].type) for r in new), subject_types=types)
            enqueue_after_commit(plan, correlation_id=correlation_id)
    return results


# ---- parsing -----------------------------------------------------------------------------------


def _text(raw: Mapping, name: str, limit: int, index: int, errors: list[ItemError]) -> str | None:
    value = raw.get(name)
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        errors.append(ItemError(index, name, f"Expected text of 1 to {limit} characters.", "invalid"))
        return None
    return value


def _moment(value: object) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        moment = moment if moment.tzinfo else timezone.make_aware(moment, dt.UTC)
        moment.astimezone(dt.UTC)
    except (ValueError, OverflowError):
        return None
    return moment


def _parse(items: Sequence[object], errors: list[ItemError]) -> list[_Item]:
    parsed, seen = [], {}
    for index, raw in enumerate(items):
        before = len(errors)
        if not isinstance(raw, Mapping):
            errors.append(ItemError(index, "item", "Expected an event object.", "wrong_type"))
            continue
        unknown = set(raw) - FIELDS
        if unknown:
            errors.append(ItemError(index, sorted(unknown)[0], f"Unknown field(s): {', '.join(sorted(unknown))}."))
        source = _text(raw, "source", SOURCE_MAX, index, errors)
        event_id = _text(raw, "event_id", EVENT_ID_MAX, index, errors)
        kind = raw.get("type")
        if not isinstance(kind, str) or not SLUG.match(kind):
            errors.append(ItemError(index, "type", "An event type is a slug: a-z, 0-9 and _, starting with a letter."))
        occurred_at = _moment(raw.get("occurred_at"))
        if occurred_at is None:
            errors.append(ItemError(index, "occurred_at", "Expected an ISO 8601 date-time.", "invalid"))
        properties = raw.get("properties", {})
        if properties is None:
            properties = {}
        if not isinstance(properties, dict):
            errors.append(ItemError(index, "properties", "Expected an object.", "wrong_type"))
        else:
            try:
                encoded = orjson.dumps(properties)
            except (TypeError, orjson.JSONEncodeError):
                encoded = b""
                errors.append(ItemError(index, "properties", "Properties must be JSON.", "invalid"))
            if len(encoded) > MAX_PROPERTIES_BYTES or b"\\u0000" in encoded:
                errors.append(
                    ItemError(index, "properties", f"At most {MAX_PROPERTIES_BYTES} bytes, no NUL.", "too_large")
                )
        subject, identifier = raw.get("subject"), raw.get("identifier")
        if (subject is None) == (identifier is None):
            errors.append(ItemError(index, "subject", 'Give exactly one of "subject" (an id) or "identifier".'))
        elif subject is not None and (
            isinstance(subject, bool) or not isinstance(subject, int) or not 0 < subject < 2**63
        ):
            errors.append(ItemError(index, "subject", "Expected a subject id (a positive integer).", "wrong_type"))
        elif identifier is not None and not _identifier_ok(identifier):
            errors.append(ItemError(index, "identifier", 'Expected {"type": code, "value": text, "scope"?: text}.'))
        if len(errors) > before:
            continue
        key = (source, event_id)
        if key in seen:
            errors.append(
                ItemError(index, "event_id", f"Duplicate of item {seen[key]} (same source and event_id).", "duplicate")
            )
            continue
        seen[key] = index
        parsed.append(_Item(index, source, event_id, kind, occurred_at, properties, subject, identifier))
    return parsed


def _identifier_ok(value: object) -> bool:
    if not isinstance(value, Mapping) or set(value) - {"type", "value", "scope"}:
        return False
    return all(isinstance(value.get(k), str) and 0 < len(value[k]) <= 512 for k in ("type", "value")) and isinstance(
        value.get("scope", ""), str
    )


# ---- attribution -------------------------------------------------------------------------------


def _attribute(parsed: list[_Item], errors: list[ItemError]) -> dict[int, int]:
    """Resolve identifiers to subjects (OneID), check every subject exists; ``{subject: subject type}``.

    One query for all the subjects (the real-time planner reuses its answer), as an
    array parameter rather than a thousand placeholders.
    """
    by_identifier = [item for item in parsed if item.identifier is not None]
    if by_identifier:
        lookup = identifier_lookup()
        if lookup is None:
            for item in by_identifier:
                errors.append(
                    ItemError(
                        item.index,
                        "identifier",
                        "Attribution by identifier needs OneID (the identity app), which is not installed;"
                        " send the subject id.",
                        "identifier_unavailable",
                    )
                )
        else:
            keys = sorted({_key(item.identifier) for item in by_identifier})
            answers = lookup(keys)
            for item in by_identifier:
                subject, record, problem = answers[_key(item.identifier)]
                if problem is not None:
                    errors.append(ItemError(item.index, f"identifier.{problem[0]}", problem[1], problem[2]))
                item.subject, item.source_record = subject, record
    types = _subject_types({item.subject for item in parsed if item.subject is not None})
    for item in parsed:
        if item.identifier is None and item.subject is not None and item.subject not in types:
            errors.append(ItemError(item.index, "subject", f"Subject {item.subject} does not exist.", "unknown"))
    return types


def _subject_types(ids: set[int]) -> dict[int, int]:
    if not ids:
        return {}
    if connection.vendor == "postgresql":
        sql, params = "SELECT id, subject_type_id FROM subjects_subject WHERE id = ANY(%s::bigint[])", [sorted(ids)]
    else:
        sql = "SELECT id, subject_type_id FROM subjects_subject WHERE id IN (SELECT value FROM json_each(%s))"
        params = [orjson.dumps(sorted(ids)).decode()]
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return dict(cursor.fetchall())


def _key(identifier: Mapping) -> tuple[str, str, str | None]:
    return (identifier["type"], identifier["value"], identifier.get("scope") or None)


# (subject id, source record it was attributed through, (field, message, code) problem)
Answer = tuple[int | None, int | None, tuple[str, str, str] | None]


def identifier_lookup():
    """``keys -> {key: Answer}`` through OneID, or None when the identity app is absent.

    Uses ``identity.selectors.oneid_lookup_many`` (set-based, a few queries for the whole
    batch) when identity offers it, else ``identity.selectors.oneid_lookup`` once per
    distinct identifier.
    """
    try:
        from identity import selectors
    except ImportError:
        return None
    many = getattr(selectors, "oneid_lookup_many", None)
    if callable(many):
        return lambda keys: _answers(many(keys))
    single = getattr(selectors, "oneid_lookup", None)
    if not callable(single):
        return None

    def lookup(keys: list[tuple[str, str, str | None]]) -> dict:
        found: dict = {}
        for key in keys:
            type_code, value, scope = key
            try:
                found[key] = single(type_code=type_code, value=value, scope=scope, include_records=False)
            except ServiceError as error:
                found[key] = error
        return _answers(found)

    return lookup


def _answers(found: Mapping) -> dict:
    """``{key: OneIDs found | ServiceError}`` → ``{key: Answer}``: one active OneID, else a problem.

    The event's source record is the OneID's lowest record holding the identifier (several
    records of one person may hold it: the choice must not depend on the lookup's order).
    """
    answers: dict = {}
    for key, result in found.items():
        type_code = key[0]
        if isinstance(result, ServiceError):
            field = result.errors[0].field if result.errors else "value"
            answers[key] = (None, None, (field, result.message, result.code))
            continue
        subjects = sorted({o["id"] for o in result if o.get("status") == "active"} or {o["id"] for o in result})
        if not subjects:
            answers[key] = (None, None, ("value", f"No OneID holds this {type_code}.", "unknown"))
        elif len(subjects) > 1:
            answers[key] = (
                None,
                None,
                ("value", f"{len(subjects)} OneIDs hold this {type_code}; send the subject id.", "ambiguous"),
            )
        else:
            records = [r for o in result if o["id"] == subjects[0] for r in o.get("records") or ()]
            answers[key] = (subjects[0], min(records) if records else None, None)
    return answers


# ---- writing -----------------------------------------------------------------------------------


def _rows(parsed: list[_Item]) -> str:
    from tags.models import Event

    field = Event._meta.get_field("occurred_at")
    if connection.vendor == "postgresql":
        moment = lambda value: value.astimezone(dt.UTC).isoformat()  # noqa: E731
    else:
        moment = lambda value: str(field.get_db_prep_value(value, connection))  # noqa: E731
    stamp = moment(timezone.now())
    return orjson.dumps(
        [
            {
                "subject_id": i.subject,
                "type": i.type,
                "occurred_at": moment(i.occurred_at),
                "properties": i.properties,
                "source": i.source,
                "event_id": i.event_id,
                "received_at": stamp,
                "source_record_id": i.source_record,
            }
            for i in parsed
        ]
    ).decode()


def _insert(parsed: list[_Item]) -> dict[tuple[str, str], int]:
    """Insert the new events; ``{(source, event_id): id}`` of those created by this call."""
    pg = connection.vendor == "postgresql"
    if pg:
        sql = (
            "INSERT INTO tags_event"
            " (subject_id, type, occurred_at, properties, source, event_id, received_at, source_record_id)"
            " SELECT r.subject_id, r.type, r.occurred_at, r.properties, r.source, r.event_id, r.received_at,"
            " r.source_record_id"
            " FROM jsonb_to_recordset(%s::jsonb) AS r(subject_id bigint, type text, occurred_at timestamptz,"
            " properties jsonb, source text, event_id text, received_at timestamptz, source_record_id bigint)"
            " ORDER BY r.source, r.event_id"
            " ON CONFLICT (source, event_id) DO NOTHING RETURNING id, source, event_id"
        )
    else:
        sql = (
            "INSERT INTO tags_event"
            " (subject_id, type, occurred_at, properties, source, event_id, received_at, source_record_id)"
            " SELECT json_extract(j.value, '$.subject_id'), json_extract(j.value, '$.type'),"
            " json_extract(j.value, '$.occurred_at'), j.value -> '$.properties', json_extract(j.value, '$.source'),"
            " json_extract(j.value, '$.event_id'), json_extract(j.value, '$.received_at'),"
            " json_extract(j.value, '$.source_record_id')"
            " FROM json_each(%s) AS j WHERE 1"
            " ON CONFLICT (source, event_id) DO NOTHING RETURNING id, source, event_id"
        )
    with connection.cursor() as cursor:
        cursor.execute(sql, [_rows(parsed)])
        return {(source, event_id): pk for pk, source, event_id in cursor.fetchall()}


def _results(parsed: list[_Item], created: dict[tuple[str, str], int]) -> list[EventResult]:
    from tags.models import Event

    results: list[EventResult] = []
    seen_before = [i for i in parsed if (i.source, i.event_id) not in created]
    stored: dict[tuple[str, str], tuple[int, int]] = {}
    if seen_before:
        sources = {i.source for i in seen_before}
        keys = {(i.source, i.event_id) for i in seen_before}
        for pk, subject, source, event_id in Event.objects.filter(
            source__in=sources, event_id__in=[i.event_id for i in seen_before]
        ).values_list("id", "subject_id", "source", "event_id"):
            if (source, event_id) in keys:
                stored[(source, event_id)] = (pk, subject)
    for item in parsed:
        key = (item.source, item.event_id)
        if key in created:
            results.append(EventResult(item.index, created[key], item.subject, "created"))
        else:
            pk, subject = stored[key]
            results.append(EventResult(item.index, pk, subject, "replayed"))
    return results
