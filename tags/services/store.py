"""Explicit tag values (manual edits, imports): validated as a whole, written set-based.

A call is all-or-nothing: every item is checked first and every problem is
reported with its index; then one guarded write stores only what changed and
appends history. Rule and propagated tags refuse explicit values — their values
are the rule's, and an edit would be overwritten by the next recompute.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

import orjson
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.db import connection, transaction
from django.utils import timezone

from audit.services import bulk_write_record
from common.errors import ItemError, ServiceError
from subjects.models import Subject
from tags.models import Computation, TagDefinition, TagStatus, ValueSource
from tags.services.values import ValueProblem, canonical_value
from tags.services.writer import apply_computed
from tags.signals import send_values_changed_on_commit

EXPLICIT_SOURCES = {ValueSource.MANUAL, ValueSource.IMPORTED}


@dataclass(frozen=True)
class WriteResult:
    created: int
    updated: int
    removed: int
    unchanged: int
    correlation_id: uuid.UUID


def write_values(
    tag: TagDefinition,
    items: Sequence[tuple[int, object]],
    *,
    source: str,
    actor: AbstractBaseUser | AnonymousUser | None,
    correlation_id: uuid.UUID | None = None,
) -> WriteResult:
    """Set (value) or remove (None) ``tag`` on subjects; raises ServiceError naming every bad item."""
    if source not in EXPLICIT_SOURCES:
        raise ServiceError.single("source", f'Explicit values come from "manual" or "imported", not "{source}".')
    _check_tag(tag)
    rows = _checked_rows(tag, items)
    correlation_id = correlation_id or uuid.uuid4()
    if not rows:
        return WriteResult(0, 0, 0, 0, correlation_id)
    with transaction.atomic():
        applied = apply_computed(
            tag_id=tag.pk,
            computed_sql=recordset_sql(),
            params=[orjson.dumps(rows).decode()],
            source=source,
            rule_version=None,
            correlation_id=correlation_id,
            now=timezone.now(),
        )
        counts = {"created": len(applied.created), "updated": len(applied.updated), "removed": len(applied.removed)}
        bulk_write_record(
            actor=actor,
            action=f"tags.values_{source}",
            object_type=f"tag:{tag.code}",
            counts={**counts, "tag_id": tag.pk},
            ids=applied.changed_ids,
            correlation_id=correlation_id,
        )
        send_values_changed_on_commit(tag, applied.changed_ids, correlation_id)
    return WriteResult(**counts, unchanged=len(rows) - applied.count, correlation_id=correlation_id)


def _check_tag(tag: TagDefinition) -> None:
    if tag.status == TagStatus.ARCHIVED:
        raise ServiceError.single("tag", f'Tag "{tag.code}" is archived; its values can no longer change.', "archived")
    if tag.computation != Computation.ASSIGNED:
        raise ServiceError.single(
            "tag",
            f'Tag "{tag.code}" is computed ({tag.computation}); its values cannot be set by hand or imported.',
            "computed_tag",
        )


def _checked_rows(tag: TagDefinition, items: Sequence[tuple[int, object]]) -> list[dict]:
    """``[{"subject_id", "value": JSON text or None}]``, or ServiceError listing every problem."""
    options = set(tag.options.values_list("value", flat=True))
    errors: list[ItemError] = []
    rows: list[dict] = []
    seen: set[int] = set()
    for index, item in enumerate(items):
        subject_id, value = _unpack(item)
        if isinstance(subject_id, bool) or not isinstance(subject_id, int) or not 0 < subject_id < 2**63:
            errors.append(ItemError(index, "subject", "Expected a subject id (a positive integer).", "wrong_type"))
            continue
        if subject_id in seen:
            errors.append(ItemError(index, "subject", f"Subject {subject_id} appears twice in the batch.", "duplicate"))
            continue
        seen.add(subject_id)
        try:
            canonical = canonical_value(tag.value_type, options, value)
        except ValueProblem as problem:
            errors.append(ItemError(index, "value", str(problem), problem.code))
            continue
        rows.append(
            {"subject_id": subject_id, "value": None if canonical is None else orjson.dumps(canonical).decode()}
        )
    errors.extend(_subject_errors(tag, items, rows))
    if errors:
        errors.sort(key=lambda e: (e.index, e.field))
        raise ServiceError(f"{len(errors)} item(s) are invalid; nothing was written.", errors)
    return rows


def _unpack(item: object) -> tuple[object, object]:
    if isinstance(item, list | tuple) and len(item) == 2:
        return item[0], item[1]
    return None, None


def _subject_errors(tag: TagDefinition, items: Sequence, rows: list[dict]) -> list[ItemError]:
    """One query: which subjects exist and are of the tag's subject type."""
    ids = [row["subject_id"] for row in rows]
    types = dict(Subject.objects.filter(id__in=ids).values_list("id", "subject_type_id"))
    index_of = {item[0]: i for i, item in reversed(list(enumerate(items))) if isinstance(item, list | tuple) and item}
    errors = []
    for subject_id in ids:
        if subject_id not in types:
            errors.append(
                ItemError(index_of[subject_id], "subject", f"Subject {subject_id} does not exist.", "unknown")
            )
        elif types[subject_id] != tag.subject_type_id:
            errors.append(
                ItemError(
                    index_of[subject_id],
                    "subject",
                    f'Subject {subject_id} is not a {tag.subject_type.code}; tag "{tag.code}" is for that type.',
                    "wrong_subject_type",
                )
            )
    return errors


def recordset_sql() -> str:
    """The batch as a computed relation read from one JSON parameter (values pre-encoded as JSON text)."""
    if connection.vendor == "postgresql":
        return (
            "SELECT r.subject_id, r.value::jsonb AS value"
            " FROM jsonb_to_recordset(%s::jsonb) AS r(subject_id bigint, value text)"
        )
    return (
        "SELECT json_extract(j.value, '$.subject_id') AS subject_id, json_extract(j.value, '$.value') AS value"
        " FROM json_each(%s) AS j"
    )
