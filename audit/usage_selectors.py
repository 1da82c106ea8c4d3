"""Reads behind the tag usage pages: usage over time, subjects affected, lineage, unused and stale tags.

Every function takes the tags to consider as a queryset (the caller's visible tags), so
what a viewer may not see is never counted. Each is one set-based query over indexed
columns — usage by ``(tag, day, kind)``, values by ``(tag, subject)``, history by
``(tag, changed_at)`` — and the lineage one recursive CTE per direction: no query per
tag or per day, whatever the window.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db import connection
from django.db.models import Count, Exists, IntegerField, Max, OuterRef, Q, QuerySet, Subquery, Sum
from django.db.models.functions import TruncDate
from django.utils import timezone

from tags.models import TagDefinition, TagStatus, TagValue, TagValueChange

from .models import TagUsage, UsageKind

LINEAGE_MAX_DEPTH = 50  # the graph is a DAG (cycles are refused); the bound only guards a slipped-in one


def window(days: int, today: dt.date | None = None) -> list[dt.date]:
    """The ``days`` days ending today, oldest first."""
    today = today or timezone.localdate()
    return [today - dt.timedelta(days=n) for n in range(days - 1, -1, -1)]


def usage_series(tags: QuerySet, days: list[dt.date]) -> dict[str, list[int]]:
    """Uses per kind and day over ``days`` (zeros filled) for all of ``tags`` together: one query."""
    rows = (
        TagUsage.objects.filter(tag__in=tags.values("pk"), day__gte=days[0], day__lte=days[-1])
        .values_list("kind", "day")
        .annotate(total=Sum("count"))
    )
    by_key = {(kind, day): total for kind, day, total in rows}
    return {kind: [by_key.get((kind, day), 0) for day in days] for kind in UsageKind.values}


def top_tags(tags: QuerySet, since: dt.date, limit: int = 50) -> list[dict]:
    """The most used of ``tags`` since ``since``: id, code, name, subject type, total and ``by_kind`` (kind order)."""
    rows = (
        TagUsage.objects.filter(tag__in=tags.values("pk"), day__gte=since)
        .values("tag_id", "tag__code", "tag__name", "tag__subject_type__code")
        .annotate(
            total=Sum("count"),
            **{kind: Sum("count", filter=Q(kind=kind), default=0) for kind in UsageKind.values},
        )
        .order_by("-total", "tag_id")[:limit]
    )
    return [{**row, "by_kind": [row[kind] for kind in UsageKind.values]} for row in rows]


def _last_used():
    return TagUsage.objects.filter(tag=OuterRef("pk")).order_by("-day").values("day")[:1]


def _last_change():
    return TagValueChange.objects.filter(tag=OuterRef("pk")).order_by("-changed_at").values("changed_at")[:1]


def unused_tags(tags: QuerySet, since: dt.date) -> QuerySet:
    """Tags (archived ones aside) with no use of any kind since ``since``, with the day of their last use."""
    used = TagUsage.objects.filter(tag=OuterRef("pk"), day__gte=since)
    return (
        tags.exclude(status=TagStatus.ARCHIVED)
        .filter(~Exists(used))
        .annotate(last_used=Subquery(_last_used()))
        .select_related("subject_type")
        .order_by("subject_type__code", "code")
    )


def stale_tags(tags: QuerySet, since: dt.datetime) -> QuerySet:
    """Tags (archived ones aside) whose values have not changed and that were not recomputed since ``since``.

    The last change is one backward probe of the ``(tag, changed_at)`` history index per tag.
    """
    return (
        tags.exclude(status=TagStatus.ARCHIVED)
        .annotate(last_change=Subquery(_last_change()))
        .filter(Q(last_change__isnull=True) | Q(last_change__lt=since))
        .filter(Q(last_computed_at__isnull=True) | Q(last_computed_at__lt=since))
        .select_related("subject_type")
        .order_by("subject_type__code", "code")
    )


def subjects_now(tag: TagDefinition, subject_filter: Q) -> int:
    """Subjects holding a value of ``tag`` now (an index-only count on ``(tag, subject)``)."""
    return TagValue.objects.filter(tag=tag).filter(subject_filter).count()


def subjects_series(tag: TagDefinition, days: list[dt.date], subject_filter: Q) -> dict[str, list[int]]:
    """Per day: subjects holding a value at the day's end, values added, removed and changes (history).

    One GROUP BY over the window's history: a day's end count is today's count minus
    the net additions of the days after it, so the history before the window is never read.
    """
    start = timezone.make_aware(dt.datetime.combine(days[0], dt.time.min))
    history = TagValueChange.objects.filter(tag=tag, changed_at__gte=start).filter(subject_filter)
    rows = (
        history.annotate(day=TruncDate("changed_at"))
        .values_list("day")
        .annotate(
            added=Count("id", filter=Q(old_value__isnull=True, new_value__isnull=False)),
            removed=Count("id", filter=Q(old_value__isnull=False, new_value__isnull=True)),
            changes=Count("id"),
        )
    )
    by_day = {day: (added, removed, changes) for day, added, removed, changes in rows}
    added = [by_day.get(day, (0, 0, 0))[0] for day in days]
    removed = [by_day.get(day, (0, 0, 0))[1] for day in days]
    with_value, level = [], subjects_now(tag, subject_filter)
    for i in range(len(days) - 1, -1, -1):
        with_value.append(level)
        level -= added[i] - removed[i]
    with_value.reverse()
    return {
        "with_value": with_value,
        "added": added,
        "removed": removed,
        "changes": [by_day.get(day, (0, 0, 0))[2] for day in days],
    }


@dataclass(frozen=True)
class LineageEntry:
    tag_id: int
    depth: int
    kind: str  # a dependency kind on the way, "propagation" before "rule" (the first by name)


def lineage(tag_id: int) -> dict[str, list[LineageEntry]]:
    """Tags ``tag_id`` reads (``upstream``, transitively) and tags reading it (``downstream``), nearest first.

    One recursive CTE per direction over ``TagDependency`` (``tag`` reads ``depends_on``).
    """
    return {
        "upstream": _walk(tag_id, "tag_id", "depends_on_id"),
        "downstream": _walk(tag_id, "depends_on_id", "tag_id"),
    }


def _walk(tag_id: int, near: str, far: str) -> list[LineageEntry]:
    sql = f"""
        WITH RECURSIVE walk(id, depth, kind) AS (
            SELECT d.{far}, 1, d.kind FROM tags_tagdependency d WHERE d.{near} = %s
            UNION
            SELECT d.{far}, w.depth + 1, d.kind
            FROM tags_tagdependency d JOIN walk w ON d.{near} = w.id
            WHERE w.depth < %s
        )
        SELECT id, MIN(depth), MIN(kind) FROM walk WHERE id <> %s GROUP BY id ORDER BY MIN(depth), id
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [tag_id, LINEAGE_MAX_DEPTH, tag_id])
        return [LineageEntry(int(i), int(depth), kind) for i, depth, kind in cursor.fetchall()]


def annotate_usage(tags: QuerySet, since: dt.date) -> QuerySet:
    """``tags`` with ``uses`` (since ``since``) and ``last_used`` (day), for lists of tags."""
    uses = (
        TagUsage.objects.filter(tag=OuterRef("pk"), day__gte=since).values("tag").annotate(n=Sum("count")).values("n")
    )
    return tags.annotate(
        uses=Subquery(uses, output_field=IntegerField()),
        last_used=Subquery(_last_used()),
        last_change=Subquery(_last_change()),
    )


def last_use_by_kind(tag: TagDefinition) -> dict[str, dt.date]:
    return dict(TagUsage.objects.filter(tag=tag).values_list("kind").annotate(last=Max("day")))
