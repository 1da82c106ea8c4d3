"""Questions about the past, answered from the append-only TagValueChange history."""

from __future__ import annotations

import datetime as dt

import orjson
from django.db import connection

from tags.models import TagDefinition, TagValueChange

from .values import canonical_value


def value_at(tag: TagDefinition, subject_id: int, at: dt.datetime) -> object:
    """The value ``subject_id`` had for ``tag`` at ``at`` (None: no value); one probe of the history index."""
    latest = (
        TagValueChange.objects.filter(tag=tag, subject_id=subject_id, changed_at__lte=at)
        .order_by("-changed_at", "-id")
        .values_list("new_value", flat=True)
        .first()
    )
    return latest


def subjects_with_value_at(tag: TagDefinition, value: object, at: dt.datetime, *, user=None) -> list[int]:
    """Ids of the subjects whose ``tag`` value was ``value`` at ``at`` (exact match, canonical form).

    With ``user``, only subjects they may see (``subjects.access``) are listed and counted;
    callers check that the tag itself is visible.

    PostgreSQL: ``DISTINCT ON (subject_id)`` over the (tag, subject, changed_at)
    index read backwards, so each subject's latest change before ``at`` is one step
    of the scan; SQLite: the same with ROW_NUMBER().
    """
    options = tuple(tag.options.values_list("value", flat=True))
    canonical = canonical_value(tag.value_type, options, value)
    if canonical is None:
        return []
    wanted = orjson.dumps(canonical).decode()
    stamp = TagValueChange._meta.get_field("changed_at").get_db_prep_value(at, connection)
    if connection.vendor == "postgresql":
        sql = (
            "SELECT subject_id FROM (SELECT DISTINCT ON (subject_id) subject_id, new_value"
            " FROM tags_tagvaluechange WHERE tag_id = %s AND changed_at <= %s"
            " ORDER BY subject_id DESC, changed_at DESC, id DESC) latest"
            " WHERE new_value = %s::jsonb ORDER BY subject_id"
        )
    else:
        sql = (
            "SELECT subject_id FROM (SELECT subject_id, new_value, ROW_NUMBER() OVER"
            " (PARTITION BY subject_id ORDER BY changed_at DESC, id DESC) AS rn"
            " FROM tags_tagvaluechange WHERE tag_id = %s AND changed_at <= %s) latest"
            " WHERE rn = 1 AND json_extract(new_value, '$') IS json_extract(%s, '$') ORDER BY subject_id"
        )
    from .preview import restrict_to_subjects, visible_subjects_sql

    params = [tag.pk, stamp, wanted]
    subjects = visible_subjects_sql(user)
    if subjects is not None:
        sql, params = restrict_to_subjects(sql, params, subjects)
        sql += " ORDER BY scoped.subject_id"
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [row[0] for row in cursor.fetchall()]
