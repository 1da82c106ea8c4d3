"""A subject's tags grouped by tag group, built from two queries whatever the number of tags.

Shared by the subject API resource and the subject's admin page, so both show the
same thing: per group (in display order) each tag's value with its option
label(s), source, rule version and when it last changed, plus the tag's
freshness (``computed_at``: when its rule last ran over all subjects).

Only tags the user may see are listed (``tags.access``, a subquery in the same statement, so
the query count does not change); the caller has already checked the subject is visible.
"""

from __future__ import annotations

from collections.abc import Iterable

from django.db.models import BooleanField, Case, FilteredRelation, Q, Value, When

from audit.usage import record_tag_use
from tags.access import EDIT, tag_condition, visible_tags, visible_value_filter
from tags.models import TagDefinition, TagOption, TagValue

VALUE_FIELDS = (
    "subject_id",
    "value",
    "source",
    "rule_version",
    "updated_at",
    "tag_id",
    "tag__code",
    "tag__name",
    "tag__value_type",
    "tag__unit",
    "tag__computation",
    "tag__last_computed_at",
    "tag__group_id",
    "tag__group__code",
    "tag__group__name",
    "tag__group__position",
)


def _labels(tag_ids: Iterable[int]) -> dict[tuple[int, str], str]:
    rows = TagOption.objects.filter(tag_id__in=set(tag_ids)).values_list("tag_id", "value", "label")
    return {(tag_id, value): label for tag_id, value, label in rows}


def _label_of(labels: dict, tag_id: int, value: object) -> str | list[str] | None:
    if isinstance(value, list):
        return [labels.get((tag_id, v), v) for v in value]
    if isinstance(value, str):
        return labels.get((tag_id, value))
    return None


def subjects_tag_groups(subject_ids: Iterable[int], *, user) -> dict[int, list[dict]]:
    """``{subject_id: [group, …]}`` of the tags ``user`` sees; no values map to ``[]`` (two queries)."""
    ids = sorted(set(subject_ids))
    result: dict[int, list[dict]] = {i: [] for i in ids}
    rows = list(
        TagValue.objects.filter(visible_value_filter(user), subject_id__in=ids)
        .order_by("subject_id", "tag__group__position", "tag__group__code", "tag__code")
        .values_list(*VALUE_FIELDS)
    )
    if not rows:
        return result
    record_tag_use({row[5] for row in rows}, "read")
    labels = _labels(row[5] for row in rows)
    groups: dict[tuple[int, int], dict] = {}
    for row in rows:
        entry = dict(zip(VALUE_FIELDS, row, strict=True))
        key = (entry["subject_id"], entry["tag__group_id"])
        group = groups.get(key)
        if group is None:
            group = {"code": entry["tag__group__code"], "name": entry["tag__group__name"], "tags": []}
            groups[key] = group
            result[entry["subject_id"]].append(group)
        group["tags"].append(_tag_entry(entry, labels))
    return result


def _tag_entry(entry: dict, labels: dict) -> dict:
    label = _label_of(labels, entry["tag_id"], entry["value"])
    return {
        "id": entry["tag_id"],
        "code": entry["tag__code"],
        "name": entry["tag__name"],
        "value_type": entry["tag__value_type"],
        "unit": entry["tag__unit"],
        "computation": entry["tag__computation"],
        "value": entry["value"],
        "label": label if not isinstance(label, list) else None,
        "labels": label if isinstance(label, list) else None,
        "source": entry["source"],
        "rule_version": entry["rule_version"],
        "updated_at": entry["updated_at"],
        "computed_at": entry["tag__last_computed_at"],
    }


def subject_tag_groups(subject_id: int, *, user) -> list[dict]:
    return subjects_tag_groups([subject_id], user=user)[subject_id]


TYPE_TAG_FIELDS = (
    "id", "code", "name", "value_type", "unit", "computation", "status", "last_computed_at", "group_id",
    "group__code", "group__name", "current__value", "current__source", "current__rule_version",
    "current__updated_at", "editable",
)  # fmt: skip


def subject_type_tags(subject, *, user) -> tuple[list[dict], list[dict]]:
    """``(groups with the subject's values, every visible tag of its type)`` in one query (+ labels).

    The admin page needs both — what the subject has, and what an operator may set —
    so one LEFT JOIN of the type's visible tags to the subject's values serves them
    together; ``editable`` (computed in the same statement) says which ones they may set.
    """
    condition = tag_condition(user, EDIT)
    editable = (
        Value(True, output_field=BooleanField())
        if condition is None
        else Case(When(condition, then=Value(True)), default=Value(False), output_field=BooleanField())
    )
    rows = (
        visible_tags(user, TagDefinition.objects.filter(subject_type_id=subject.subject_type_id))
        .annotate(current=FilteredRelation("values", condition=Q(values__subject_id=subject.pk)))
        .annotate(editable=editable)
        .order_by("group__position", "group__code", "code")
        .values_list(*TYPE_TAG_FIELDS)
    )
    tags = [dict(zip(TYPE_TAG_FIELDS, row, strict=True)) for row in rows]
    valued = [t for t in tags if t["current__updated_at"] is not None]
    record_tag_use([t["id"] for t in valued], "read")
    labels = _labels(t["id"] for t in valued) if valued else {}
    groups: dict[int, dict] = {}
    for tag in valued:
        group = groups.setdefault(tag["group_id"], {"code": tag["group__code"], "name": tag["group__name"], "tags": []})
        group["tags"].append(_tag_entry(_as_value_entry(tag), labels))
    return list(groups.values()), tags


def _as_value_entry(tag: dict) -> dict:
    return {
        "tag_id": tag["id"],
        "tag__code": tag["code"],
        "tag__name": tag["name"],
        "tag__value_type": tag["value_type"],
        "tag__unit": tag["unit"],
        "tag__computation": tag["computation"],
        "tag__last_computed_at": tag["last_computed_at"],
        "value": tag["current__value"],
        "source": tag["current__source"],
        "rule_version": tag["current__rule_version"],
        "updated_at": tag["current__updated_at"],
    }
