"""Preview a rule before activating it: the same compiled SELECT the recompute runs, without writing."""

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


def preview_rule(tag: TagDefinition, document: object) -> dict:
    """What ``document`` would give the subjects of ``tag``'s type, against their current values.

    Returns ``{"total", "counts": {value: n}, "no_value": n, "changes": n, "sample": [...]}``:
    ``counts`` keys are the value itself for text values and its JSON text otherwise;
    ``sample`` lists up to 20 ``{"subject_id", "old", "new"}`` that would change.
    Raises ServiceError (errors pointing into the document) when the rule is invalid.
    """
    if tag.computation == "propagated":  # propagation hook
        from tags.propagation.definitions import preview_propagation

        return preview_propagation(tag, document)
    rule = parse_for(tag, document)
    record_tag_use([tag.pk, *rule.tag_ids], "preview")
    computed_sql, params = compiled_select(tag, rule, Selection.everything(), timezone.now())
    return preview_computed(tag, computed_sql, params)


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
