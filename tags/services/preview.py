"""Preview a rule before activating it: the same compiled SELECT the recompute runs, without writing.

Given the requesting ``user``, a preview reads only tags they may use (``tags.access``) and
counts only subjects they may see: a brand operator's preview says nothing of other brands.
"""

from __future__ import annotations

import orjson
from django.db import connection
from django.utils import timezone

from audit.usage import record_tag_use
from tags.models import TagDefinition
from tags.rules.compiler import Selection

from .compiled import parse_for
from .recompute import compiled_select

SAMPLE_SIZE = 20


def visible_subjects_sql(user) -> tuple[str, list] | None:
    """The ids of the subjects ``user`` may see as ``(sql, params)``; None: no restriction (HQ)."""
    from subjects.access import access_for, visible_subjects

    if user is None or access_for(user).unrestricted:
        return None
    query = visible_subjects(user).values("pk").query
    sql, params = query.get_compiler(connection=connection).as_sql()
    return sql, list(params)


def restrict_to_subjects(computed_sql: str, params: list, subjects: tuple[str, list] | None) -> tuple[str, list]:
    """The computed relation ``(subject_id, value)`` limited to the ids of ``subjects``."""
    if subjects is None:
        return computed_sql, params
    subjects_sql, subjects_params = subjects
    sql = f"SELECT scoped.* FROM ({computed_sql}) scoped WHERE scoped.subject_id IN ({subjects_sql})"
    return sql, [*params, *subjects_params]


def preview_rule(tag: TagDefinition, document: object, *, user=None) -> dict:
    """What ``document`` would give the subjects of ``tag``'s type, against their current values.

    Returns ``{"total", "counts": {value: n}, "no_value": n, "changes": n, "sample": [...]}``:
    ``counts`` keys are the value itself for text values and its JSON text otherwise;
    ``sample`` lists up to 20 ``{"subject_id", "old", "new"}`` that would change.
    Raises ServiceError (errors pointing into the document) when the rule is invalid, and
    when it reads a tag ``user`` may not use. ``user`` None: the system, unrestricted.
    """
    from tags.access import check_usable

    subjects = visible_subjects_sql(user)
    if tag.computation == "propagated":  # propagation hook
        from tags.propagation.definitions import preview_propagation
        from tags.services.definitions import check_document_usable

        check_document_usable(user, tag, document)
        return preview_propagation(tag, document, subjects=subjects)
    rule = parse_for(tag, document)
    record_tag_use([tag.pk, *rule.tag_ids], "preview")
    check_usable(user, rule.tag_ids)
    computed_sql, params = compiled_select(tag, rule, Selection.everything(), timezone.now())
    return preview_computed(tag, *restrict_to_subjects(computed_sql, params, subjects))


def preview_computed(tag: TagDefinition, computed_sql: str, params: list) -> dict:
    """Counts per value, changes against the stored values and a sample, for a computed relation.

    Shared by rule and propagation previews: both hand over the SELECT their recompute runs.
    """
    pg = connection.vendor == "postgresql"
    differs = (
        "c.value IS DISTINCT FROM v.value"
        if pg
        else "(NOT (json_extract(c.value, '$') IS json_extract(v.value, '$'))"
        " OR (c.value IS NULL) <> (v.value IS NULL))"
    )
    joined = f"FROM ({computed_sql}) c LEFT JOIN tags_tagvalue v ON v.tag_id = %s AND v.subject_id = c.subject_id"
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT c.value, COUNT(*), SUM(CASE WHEN {differs} THEN 1 ELSE 0 END) {joined} GROUP BY c.value",
            [*params, tag.pk],
        )
        groups = cursor.fetchall()
        cursor.execute(
            f"SELECT c.subject_id, v.value, c.value {joined} WHERE {differs} ORDER BY c.subject_id LIMIT {SAMPLE_SIZE}",
            [*params, tag.pk],
        )
        sample = [{"subject_id": s, "old": _load(old), "new": _load(new)} for s, old, new in cursor.fetchall()]
    counts: dict[str, int] = {}
    no_value = changes = total = 0
    for value, count, changed in groups:
        value = _load(value)
        total += count
        changes += changed or 0
        if value is None:
            no_value += count
        else:
            key = value if isinstance(value, str) else orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()
            counts[key] = counts.get(key, 0) + count
    return {"total": total, "counts": counts, "no_value": no_value, "changes": changes, "sample": sample}


def _load(value: object) -> object:
    """Raw cursors return JSON text on both backends (Django leaves jsonb undecoded)."""
    if isinstance(value, str | bytes):
        return orjson.loads(value)
    return value
