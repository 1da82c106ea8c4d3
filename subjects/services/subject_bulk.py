"""Bulk upsert of subjects: validate the whole batch, then write it set-based.

Every item is checked first (type, key, attributes against the type's schema,
scope references) and any error rejects the batch with the list of failing
items and fields. The write is one guarded ``INSERT … ON CONFLICT DO UPDATE …
WHERE … IS DISTINCT FROM …`` per dependency wave, so unchanged rows are not
rewritten, and one domain event records the operation.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from django.db import connection, transaction
from django.utils import timezone

from audit.services import bulk_write_record
from common.errors import ItemError, ServiceError

from ..models import ScopeRole, SubjectType
from ..schemas import MAX_ID, attribute_error, attributes_encoding_error, valid_text, validator_for
from .item_checks import KEY_LIMITS, encoded_attributes, external_key
from .recordset import guarded_upsert, recordset_param, recordset_sql
from .references import KeyRef, Ref, parse_ref, subjects_by_id, subjects_by_key
from .scope_checks import (
    invisible_ids,
    not_found,
    refuse,
    restricted,
    stored_out_of_scope,
    uncovered_target_errors,
)
from .type_lookup import types_by_code

SCOPE_FIELDS = ("business_line", "brand", "region")
REF_FIELDS = (*SCOPE_FIELDS, "parent")
ITEM_FIELDS = {
    "type",
    "source",
    "external_id",
    "display_name",
    "attributes",
    *REF_FIELDS,
}


@dataclass
class ItemResult:
    index: int
    id: int
    status: str  # created | updated | unchanged


@dataclass
class BulkResult:
    results: list[ItemResult]
    correlation_id: uuid.UUID
    counts: dict[str, int] = field(default_factory=dict)


@dataclass(slots=True)
class _Item:
    index: int
    subject_type: SubjectType
    source: str
    external_id: str
    display_name: str
    attributes: dict
    refs: dict[str, Ref | None]
    attributes_json: str | None = None  # encoded once, by the check that it can be stored
    ids: dict[str, int | None] = field(default_factory=dict)

    @property
    def key(self) -> tuple[int, str, str]:
        return (self.subject_type.id, self.source, self.external_id)


def subject_bulk_upsert(
    *,
    actor,
    items: Sequence[Mapping],
    max_items: int | None = None,
    correlation_id: uuid.UUID | None = None,
    action: str = "subjects.bulk_upserted",
) -> BulkResult:
    """Create or update subjects by ``(type, source, external_id)``; all or nothing."""
    if max_items is not None and len(items) > max_items:
        raise ServiceError.single(
            "items",
            f"A batch holds at most {max_items} items; got {len(items)}.",
            "too_many",
        )
    errors: list[ItemError] = []
    parsed = _parse(items, errors)
    if not errors:
        _resolve_refs(parsed, errors)
    if errors:
        raise ServiceError(
            f"{len({e.index for e in errors})} of {len(items)} items are invalid.",
            errors,
        )
    waves = _waves(parsed, errors)
    if errors:
        raise ServiceError("References between items of the batch form a cycle.", errors)
    checked = restricted(actor) is not None
    if checked:
        refuse(_scope_errors(actor, parsed))
    with transaction.atomic():
        results = _write_waves(waves)
        _refuse_parent_cycles(parsed, results)
        if checked:  # scopes named by key of an item of this batch are known only now
            refuse(_target_errors(actor, [item for item in parsed if _scope_in_batch(item)]))
        counts = count_statuses(results)
        written = sorted(r.id for r in results if r.status != "unchanged")
        correlation_id = bulk_write_record(
            actor=actor,
            action=action,
            object_type="subjects.subject",
            counts=counts,
            ids=written,
            correlation_id=correlation_id,
        )
    results.sort(key=lambda r: r.index)
    return BulkResult(results=results, correlation_id=correlation_id, counts=counts)


def _scope_in_batch(item: _Item) -> bool:
    return any(isinstance(item.refs.get(name), tuple) for name in SCOPE_FIELDS)


def _target_errors(actor, items: list[_Item]) -> list[ItemError]:
    targets = [(item.index, tuple(item.ids.get(name) for name in SCOPE_FIELDS)) for item in items]
    return uncovered_target_errors(actor, targets)


def _scope_errors(actor, items: list[_Item]) -> list[ItemError]:
    """The target scope of every item, the stored subject it would update and its parent must
    all be the actor's: three queries for the whole batch (region ancestors, stored keys, one
    visibility probe of stored rows and parents together)."""
    errors = _target_errors(actor, [item for item in items if not _scope_in_batch(item)])
    stored = subjects_by_key(item.key for item in items)
    parents = {item.index: item.ids["parent"] for item in items if item.ids.get("parent") is not None}
    hidden = invisible_ids(actor, [*stored.values(), *parents.values()])
    if not hidden:
        return errors
    for item in items:
        if stored.get(item.key) in hidden:
            errors.append(stored_out_of_scope(item.index, "subject"))
        if parents.get(item.index) in hidden:
            errors.append(not_found(item.index, "parent", parents[item.index]))
    return errors


def _refuse_parent_cycles(items: list[_Item], results: list[ItemResult]) -> None:
    """A new parent given by id may close a loop with stored regions: walk up from
    every written item that has a parent (one recursive statement) and roll back."""
    id_of = {r.index: r.id for r in results if r.status != "unchanged"}
    starts = [id_of[item.index] for item in items if item.index in id_of and item.ids.get("parent") is not None]
    if not starts:
        return
    source = recordset_sql(connection, [("id", "bigint")])
    sql = (
        "WITH RECURSIVE walk(start, id, depth) AS ("
        f" SELECT s.id, s.parent_id, 1 FROM subjects_subject s WHERE s.id IN (SELECT r.id FROM {source})"
        " UNION ALL SELECT w.start, p.parent_id, w.depth + 1 FROM walk w JOIN subjects_subject p ON p.id = w.id"
        " WHERE p.parent_id IS NOT NULL AND w.id <> w.start AND w.depth < 100"
        ") SELECT DISTINCT start FROM walk WHERE id = start"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [recordset_param([{"id": i} for i in starts])])
        looping = {row[0] for row in cursor.fetchall()}
    if looping:
        index_of = {id_: index for index, id_ in id_of.items()}
        errors = [
            ItemError(index_of[i], "parent", "This parent makes the hierarchy a loop.", "cycle")
            for i in sorted(looping)
        ]
        raise ServiceError("Parents would form a cycle; nothing was written.", errors)


def count_statuses(results: list[ItemResult]) -> dict[str, int]:
    """``{"created": n, "updated": n, "unchanged": n}`` for a batch's results."""
    counts = {"created": 0, "updated": 0, "unchanged": 0}
    for result in results:
        counts[result.status] += 1
    return counts


def _parse(items: Sequence[Mapping], errors: list[ItemError]) -> list[_Item]:
    types = types_by_code(SubjectType, (item.get("type") for item in items if isinstance(item, Mapping)))
    validators = {code: validator_for(t.attribute_schema) for code, t in types.items()}
    parsed: list[_Item] = []
    seen: dict[tuple[int, str, str], int] = {}
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


def _parse_valid_item(index: int, raw: object, types: dict, validators: dict) -> _Item | None:
    """The fast path for a well-formed item (the common case); ``None`` sends it to
    :func:`_parse_item`, which finds and names every problem."""
    if type(raw) is not dict or not raw.keys() <= ITEM_FIELDS:
        return None
    code = raw.get("type")
    subject_type = types.get(code) if type(code) is str else None
    source, external_id = raw.get("source"), raw.get("external_id")
    display_name = raw.get("display_name", "")
    attributes = raw.get("attributes", {})
    if attributes is None:
        attributes = {}
    if (
        subject_type is None
        or not valid_text(source, KEY_LIMITS["source"])
        or not valid_text(external_id, KEY_LIMITS["external_id"])
        or type(display_name) is not str
        or len(display_name) > 255
        or "\x00" in display_name
        or type(attributes) is not dict
    ):
        return None
    refs = {name: raw.get(name) for name in REF_FIELDS}
    if any(value is not None and (type(value) is not int or not 0 < value < MAX_ID) for value in refs.values()):
        return None
    if refs["parent"] is not None and not subject_type.scope_role:
        return None
    encoded = encoded_attributes(attributes)
    if encoded is None or attribute_error(validators[code], attributes) is not None:
        return None
    return _Item(index, subject_type, source, external_id, display_name, attributes, refs, encoded)


def _parse_item(index, raw, types, validators, errors) -> _Item | None:
    if not isinstance(raw, Mapping):
        errors.append(ItemError(index, "", "Each item must be a JSON object."))
        return None
    before = len(errors)
    unknown = set(raw) - ITEM_FIELDS
    for name in sorted(unknown):
        errors.append(ItemError(index, name, "Unknown field.", "unknown_field"))
    code = raw.get("type")
    subject_type = types.get(code) if isinstance(code, str) else None
    if subject_type is None:
        errors.append(ItemError(index, "type", f"Unknown subject type {code!r}.", "unknown_type"))
    key = external_key(index, raw, errors)
    display_name = raw.get("display_name", "")
    if not isinstance(display_name, str) or len(display_name) > 255 or "\x00" in display_name:
        errors.append(ItemError(index, "display_name", "Must be a string of at most 255 characters, without NUL."))
    attributes = raw.get("attributes", {})
    if attributes is None:
        attributes = {}
    if not isinstance(attributes, dict):
        errors.append(ItemError(index, "attributes", "Must be a JSON object."))
    elif problem := attributes_encoding_error(attributes):
        errors.append(ItemError(index, "attributes", problem))
    elif subject_type is not None:
        problem = attribute_error(validators[subject_type.code], attributes)
        if problem:
            errors.append(ItemError(index, problem[0], problem[1], "schema"))
    refs: dict[str, Ref | None] = {}
    for name in REF_FIELDS:
        ref, problem = parse_ref(raw.get(name))
        if problem:
            errors.append(ItemError(index, name, problem))
        refs[name] = ref
    if refs["parent"] is not None and subject_type is not None and not subject_type.scope_role:
        errors.append(
            ItemError(
                index,
                "parent",
                "Only scope subjects (business lines, brands, regions) have a parent.",
            )
        )
    if len(errors) > before:
        return None
    return _Item(
        index,
        subject_type,
        key["source"],
        key["external_id"],
        display_name,
        attributes,
        refs,
    )


def _expected_role(item: _Item, name: str) -> str:
    return item.subject_type.scope_role if name == "parent" else name


def _resolve_refs(items: list[_Item], errors: list[ItemError]) -> None:
    """Turn every reference into an id, or note it as pointing at an item of this batch."""
    id_refs = {ref for item in items for ref in item.refs.values() if type(ref) is int}
    by_id = subjects_by_id(id_refs)
    key_refs = [(item, name, ref) for item in items for name, ref in item.refs.items() if isinstance(ref, KeyRef)]
    candidates, in_db, in_batch = {}, {}, set()
    if key_refs:  # references by external key: which types they may name, then one lookup
        role_types: dict[str, list[SubjectType]] = {}
        for subject_type in SubjectType.objects.exclude(scope_role=""):
            role_types.setdefault(subject_type.scope_role, []).append(subject_type)
        candidates = {
            (item.index, name): _candidate_keys(ref, role_types.get(_expected_role(item, name), []))
            for item, name, ref in key_refs
        }
        in_db = subjects_by_key(key for keys in candidates.values() for key in keys)
        in_batch = {item.key for item in items}
    for item in items:
        for name, ref in item.refs.items():
            role = _expected_role(item, name)
            if ref is None:
                item.ids[name] = None
            elif isinstance(ref, int):
                found = by_id.get(ref)
                if found is None:
                    errors.append(ItemError(item.index, name, f"No subject with id {ref}.", "not_found"))
                elif found.scope_role != role:
                    errors.append(
                        ItemError(
                            item.index,
                            name,
                            f"Subject {ref} is a {found.type_code}, not a {ScopeRole(role).label.lower()}.",
                            "wrong_type",
                        )
                    )
                else:
                    item.ids[name] = ref
            else:
                _resolve_key(
                    item,
                    name,
                    ref,
                    candidates[(item.index, name)],
                    in_db,
                    in_batch,
                    errors,
                )


def _candidate_keys(ref: KeyRef, types: list[SubjectType]) -> list[tuple[int, str, str]]:
    return [(t.id, ref.source, ref.external_id) for t in types if ref.type_code in (None, t.code)]


def _resolve_key(item, name, ref, keys, in_db, in_batch, errors) -> None:
    matches = [k for k in keys if k in in_batch or k in in_db]
    if not matches:
        role = ScopeRole(_expected_role(item, name)).label.lower()
        errors.append(
            ItemError(
                item.index,
                name,
                f"No {role} with source {ref.source!r} and external_id {ref.external_id!r}.",
                "not_found",
            )
        )
    elif len(matches) > 1:
        errors.append(
            ItemError(
                item.index,
                name,
                "The key matches subjects of several types; give 'type'.",
                "ambiguous",
            )
        )
    elif matches[0] in in_batch:
        item.refs[name] = matches[0]  # resolved after the referenced item is written
        item.ids[name] = None
    else:
        item.ids[name] = in_db[matches[0]]


def _waves(items: list[_Item], errors: list[ItemError]) -> list[list[_Item]]:
    """Order items so that an item is written after the batch items it references."""
    if not any(isinstance(ref, tuple) for item in items for ref in item.refs.values()):
        return [items] if items else []
    by_key = {item.key: item for item in items}
    depth: dict[tuple, int] = {}
    visiting: set[tuple] = set()

    def level(item: _Item) -> int:
        if item.key in depth:
            return depth[item.key]
        if item.key in visiting:
            raise RecursionError
        visiting.add(item.key)
        deps = [by_key[ref] for ref in item.refs.values() if isinstance(ref, tuple)]
        value = 1 + max((level(dep) for dep in deps), default=-1)
        visiting.discard(item.key)
        depth[item.key] = value
        return value

    waves: dict[int, list[_Item]] = {}
    for item in items:
        try:
            waves.setdefault(level(item), []).append(item)
        except RecursionError:
            errors.append(
                ItemError(
                    item.index,
                    "parent",
                    "References between items form a cycle.",
                    "cycle",
                )
            )
            visiting.clear()
    return [waves[k] for k in sorted(waves)]


COLUMNS = [
    ("subject_type_id", "bigint"),
    ("source", "text"),
    ("external_id", "text"),
    ("display_name", "text"),
    ("attributes", "jsonb"),
    ("business_line_id", "bigint"),
    ("brand_id", "bigint"),
    ("region_id", "bigint"),
    ("parent_id", "bigint"),
]
KEY = ("subject_type_id", "source", "external_id")


def _write_waves(waves: list[list[_Item]]) -> list[ItemResult]:
    written: dict[tuple[int, str, str], int] = {}
    results: list[ItemResult] = []
    for wave in waves:
        for item in wave:
            for name, ref in item.refs.items():
                if isinstance(ref, tuple):
                    item.ids[name] = written[ref]
        rows = [_row(item) for item in wave]
        for result, item in zip(upsert_subject_rows(rows), wave, strict=True):
            result.index = item.index
            written[item.key] = result.id
            results.append(result)
    return results


def _row(item: _Item) -> tuple:
    ids = item.ids
    return (
        item.subject_type.id,
        item.source,
        item.external_id,
        item.display_name,
        item.attributes if item.attributes_json is None else item.attributes_json,
        ids.get("business_line"),
        ids.get("brand"),
        ids.get("region"),
        ids.get("parent"),
    )


def upsert_subject_rows(rows: list[tuple]) -> list[ItemResult]:
    """Write already-validated rows (tuples in ``COLUMNS`` order); results in the order of ``rows``."""
    written = guarded_upsert(
        connection,
        table="subjects_subject",
        columns=COLUMNS,
        key=KEY,
        rows=rows,
        now=timezone.now(),
    )
    return [ItemResult(-1, id_, status) for id_, status in written]
