"""``POST /api/v1/tag-values/bulk/``: imported values for many tags in one all-or-nothing request.

Items name a subject by id or external key and a tag by id or code (a code is
unique per subject type, so it is resolved against the subject's type). The
request is resolved set-based (one query each for tags, subject types, subjects
by id and by key), grouped by tag and written by ``store.write_values`` — the one
validator of values — each tag in a savepoint inside one transaction, so every
tag's problems are reported (with the request's item index) and any problem
rolls the whole request back.

Access (``tags.access``, ``subjects.access``): a tag the actor cannot see and a subject out of
their scope are "does not exist"; a visible tag they may not edit is a per-item "forbidden".
"""

from __future__ import annotations

import uuid
from collections import defaultdict
from dataclasses import dataclass, field

from django.db import transaction
from django.db.models import Q

from common.errors import ItemError, ServiceError
from subjects.access import access_for, visible_subjects
from subjects.models import Subject, SubjectType
from subjects.services.references import KeyRef, parse_ref, subjects_by_id, subjects_by_key
from tags.access import editable_tags, visible_tags
from tags.models import TagDefinition, ValueSource
from tags.services import store

ITEM_KEYS = {"subject", "tag", "value"}


@dataclass
class _Item:
    index: int
    subject: int | KeyRef
    tag: int | str
    value: object
    subject_id: int | None = None
    tag_def: TagDefinition | None = None


@dataclass
class BulkOutcome:
    created: int = 0
    updated: int = 0
    removed: int = 0
    unchanged: int = 0
    correlation_id: uuid.UUID = field(default_factory=uuid.uuid4)
    tags: list[dict] = field(default_factory=list)


def import_values(*, actor, items: object, max_items: int) -> BulkOutcome:
    """Validate, resolve and write ``items``; raises ServiceError listing every bad item."""
    parsed = _parse(items, max_items)
    _resolve(parsed, actor)
    return _write(actor, parsed)


def _parse(items: object, max_items: int) -> list[_Item]:
    if not isinstance(items, list):
        raise ServiceError.single("items", 'Send {"items": [...]}: a list of {"subject", "tag", "value"}.')
    if not items:
        raise ServiceError.single("items", "The batch is empty.", "empty")
    if len(items) > max_items:
        raise ServiceError.single(
            "items", f"At most {max_items:,} values a request; got {len(items):,}.", "too_many_items"
        )
    parsed, errors = [], []
    for index, raw in enumerate(items):
        item = _parse_item(index, raw, errors)
        if item is not None:
            parsed.append(item)
    if errors:
        raise ServiceError(f"{len({e.index for e in errors})} item(s) are invalid; nothing was written.", errors)
    return parsed


def _parse_item(index: int, raw: object, errors: list[ItemError]) -> _Item | None:
    if not isinstance(raw, dict):
        errors.append(ItemError(index, "", 'Each item is an object {"subject", "tag", "value"}.'))
        return None
    before = len(errors)
    for key in sorted(set(raw) - ITEM_KEYS):
        errors.append(ItemError(index, key, f'Unknown field "{key}".', "unknown_field"))
    if "value" not in raw:
        errors.append(ItemError(index, "value", "Required (null removes the value).", "required"))
    subject, problem = parse_ref(raw.get("subject"))
    if subject is None:
        errors.append(ItemError(index, "subject", problem or "Required: a subject id or external key.", "required"))
    tag = raw.get("tag")
    if isinstance(tag, bool) or not (
        (isinstance(tag, int) and 0 < tag < 2**63) or (isinstance(tag, str) and 0 < len(tag) <= 64)
    ):
        errors.append(ItemError(index, "tag", "Required: a tag id or code.", "required"))
    if len(errors) > before:
        return None
    return _Item(index, subject, tag, raw["value"])


def _resolve(items: list[_Item], actor=None) -> None:
    """Give every item its subject id and tag definition, or raise naming each unresolved one."""
    tags = _load_tags(items, actor)
    by_id = {t.pk: t for t in tags}
    by_code: dict[str, list[TagDefinition]] = defaultdict(list)
    for tag in tags:
        by_code[tag.code].append(tag)
    types = _type_ids({i.subject.type_code for i in items if isinstance(i.subject, KeyRef) and i.subject.type_code})
    errors: list[ItemError] = []
    keyed: list[tuple[_Item, int]] = []
    for item in items:
        if isinstance(item.tag, int) and item.tag not in by_id:
            errors.append(ItemError(item.index, "tag", f"Tag {item.tag} does not exist.", "unknown"))
        elif isinstance(item.tag, str) and item.tag not in by_code:
            errors.append(ItemError(item.index, "tag", f'Tag "{item.tag}" does not exist.', "unknown"))
        elif isinstance(item.subject, KeyRef):
            type_id = _key_type(item, types, by_id, by_code, errors)
            if type_id is not None:
                keyed.append((item, type_id))
    found = subjects_by_id(i.subject for i in items if isinstance(i.subject, int))
    keys = subjects_by_key((t, i.subject.source, i.subject.external_id) for i, t in keyed)
    found, keys = _visible_only(actor, found, keys)
    for item, type_id in keyed:
        item.subject_id = keys.get((type_id, item.subject.source, item.subject.external_id))
        if item.subject_id is None:
            errors.append(ItemError(item.index, "subject", f"No subject {_key_text(item.subject)}.", "unknown"))
    for item in items:
        if isinstance(item.subject, int):
            if item.subject in found:
                item.subject_id = item.subject
            else:
                errors.append(ItemError(item.index, "subject", f"Subject {item.subject} does not exist.", "unknown"))
    type_of = {i: s.subject_type_id for i, s in found.items()} | {i.subject_id: t for i, t in keyed}
    failed = {e.index for e in errors}
    for item in items:
        if item.subject_id is not None and item.index not in failed:
            item.tag_def = _tag_for(item, type_of[item.subject_id], by_id, by_code, errors)
    _check_editable(actor, items, errors)
    if errors:
        errors.sort(key=lambda e: (e.index, e.field))
        raise ServiceError(f"{len({e.index for e in errors})} item(s) are invalid; nothing was written.", errors)


def _load_tags(items: list[_Item], actor) -> list[TagDefinition]:
    ids = {i.tag for i in items if isinstance(i.tag, int)}
    codes = {i.tag for i in items if isinstance(i.tag, str)}
    named = TagDefinition.objects.select_related("subject_type").filter(Q(pk__in=ids) | Q(code__in=codes))
    return list(named if actor is None else visible_tags(actor, named))


def _visible_only(actor, found: dict, keys: dict) -> tuple[dict, dict]:
    """Drop the subjects out of ``actor``'s scope (one query), so they read as unknown."""
    if actor is None or access_for(actor).unrestricted or not (found or keys):
        return found, keys
    ids = set(found) | set(keys.values())
    seen = set(visible_subjects(actor, Subject.objects.filter(pk__in=ids)).values_list("pk", flat=True))
    return {i: s for i, s in found.items() if i in seen}, {k: i for k, i in keys.items() if i in seen}


def _check_editable(actor, items: list[_Item], errors: list[ItemError]) -> None:
    """A per-item error for each value of a visible tag ``actor`` may not change (one query)."""
    tag_ids = {i.tag_def.pk for i in items if i.tag_def is not None}
    if actor is None or not tag_ids:
        return
    allowed = set(editable_tags(actor, TagDefinition.objects.filter(pk__in=tag_ids)).values_list("pk", flat=True))
    for item in items:
        if item.tag_def is not None and item.tag_def.pk not in allowed:
            message = f'You may not change the values of tag "{item.tag_def.code}".'
            errors.append(ItemError(item.index, "tag", message, "forbidden"))


def _type_ids(codes: set[str]) -> dict[str, int]:
    return dict(SubjectType.objects.filter(code__in=codes).values_list("code", "id")) if codes else {}


def _key_type(item: _Item, types: dict, by_id: dict, by_code: dict, errors: list[ItemError]) -> int | None:
    """The subject type an external key is looked up in: given, or the tag's."""
    ref: KeyRef = item.subject
    if ref.type_code:
        if ref.type_code not in types:
            errors.append(ItemError(item.index, "subject.type", f'Unknown subject type "{ref.type_code}".', "unknown"))
            return None
        return types[ref.type_code]
    candidates = [by_id[item.tag]] if isinstance(item.tag, int) else by_code[item.tag]
    if len(candidates) > 1:
        errors.append(
            ItemError(
                item.index,
                "subject.type",
                f'Tag "{item.tag}" exists for several subject types; give the subject\'s "type".',
                "ambiguous",
            )
        )
        return None
    return candidates[0].subject_type_id


def _tag_for(item: _Item, type_id: int, by_id: dict, by_code: dict, errors: list[ItemError]):
    candidates = [by_id[item.tag]] if isinstance(item.tag, int) else by_code[item.tag]
    for tag in candidates:
        if tag.subject_type_id == type_id:
            return tag
    errors.append(
        ItemError(
            item.index,
            "tag",
            f'Tag "{candidates[0].code}" is not a tag of subject {item.subject_id}\'s type.',
            "wrong_subject_type",
        )
    )
    return None


def _key_text(ref: KeyRef) -> str:
    kind = f"{ref.type_code} " if ref.type_code else ""
    return f"{kind}{ref.source}:{ref.external_id}"


def _write(actor, items: list[_Item]) -> BulkOutcome:
    by_tag: dict[int, list[_Item]] = defaultdict(list)
    for item in items:
        by_tag[item.tag_def.pk].append(item)
    outcome = BulkOutcome()
    errors: list[ItemError] = []
    with transaction.atomic():
        for group in by_tag.values():
            _write_tag(actor, group, outcome, errors)
        if errors:
            transaction.set_rollback(True)
    if errors:
        errors.sort(key=lambda e: (e.index, e.field))
        raise ServiceError(f"{len({e.index for e in errors})} item(s) are invalid; nothing was written.", errors)
    return outcome


def _write_tag(actor, group: list[_Item], outcome: BulkOutcome, errors: list[ItemError]) -> None:
    tag = group[0].tag_def
    try:
        with transaction.atomic():
            result = store.write_values(
                tag,
                [(i.subject_id, i.value) for i in group],
                source=ValueSource.IMPORTED,
                actor=actor,
                correlation_id=outcome.correlation_id,
            )
    except ServiceError as exc:
        for error in exc.errors or [ItemError(None, "tag", exc.message, exc.code)]:
            indexes = [group[error.index].index] if error.index is not None else [i.index for i in group]
            errors.extend(ItemError(index, error.field, error.message, error.code) for index in indexes)
        return
    counts = {"created": result.created, "updated": result.updated, "removed": result.removed}
    outcome.tags.append({"tag": tag.pk, "code": tag.code, **counts, "unchanged": result.unchanged})
    outcome.created += result.created
    outcome.updated += result.updated
    outcome.removed += result.removed
    outcome.unchanged += result.unchanged
