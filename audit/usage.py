"""Tag usage: every use of a tag (an API or admin read, a rule, a propagation, a preview, an export).

Recording must cost a read path next to nothing, so uses are aggregated per tag, day and
kind (``TagUsage``), never one row per subject or per request: ``record_tag_use`` adds one
to each tag it is given with ONE upsert statement, whatever the number of tags
(``INSERT … SELECT … ON CONFLICT (tag, day, kind) DO UPDATE SET count = count + EXCLUDED.count``
on PostgreSQL and SQLite alike). The upsert increments in the database, so concurrent
requests never lose a count; rows are inserted in tag-id order, so two requests touching
the same tags cannot deadlock. On PostgreSQL the upsert commits asynchronously (no wait
for the WAL flush): see ``ASYNCHRONOUS_COMMIT``.

Inside a transaction the code opened (a recompute chunk, a real-time plan) the upsert runs
after the commit: holding the usage rows' locks until the end of a long transaction would
serialize every other operation reading the same tags, and two transactions upserting
several tags in different orders could deadlock. A rolled-back operation records nothing.
``TAGWEAVE_TAG_USAGE = False`` (settings) turns recording off.

The readers behind the admin's usage pages live in ``audit.usage_selectors``.
"""

from __future__ import annotations

from collections.abc import Iterable
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from .models import TagUsage, UsageKind

TABLE = TagUsage._meta.db_table
# Value sources of the writer (``tags.models.ValueSource``) → the usage kind of their inputs.
KIND_OF_SOURCE = {"rule": UsageKind.RULE, "propagated": UsageKind.PROPAGATION}


def record_tag_use(tag_ids: Iterable[int] | QuerySet, kind: str, *, actor=None) -> None:
    """Count one use of each tag of ``tag_ids`` today under ``kind`` (one statement, or none).

    ``tag_ids`` is ids (duplicates and unknown ids are ignored) or a flat ``values_list``
    queryset of ids, which becomes a subquery of the upsert instead of a read of its own.
    ``actor`` is who used the tags; it is not stored: usage is aggregated per tag, day and
    kind (who read what is the audit log's concern, and a per-user key would multiply rows).
    """
    if not getattr(settings, "TAGWEAVE_TAG_USAGE", True):
        return
    if kind not in UsageKind.values:
        raise ValueError(f"Unknown tag usage kind {kind!r}.")
    if isinstance(tag_ids, QuerySet):
        source = tag_ids.order_by()
    else:
        source = sorted({int(i) for i in tag_ids if i is not None})
        if not source:
            return
    upsert = partial(_upsert, source, kind, timezone.localdate())
    if _in_own_transaction():
        transaction.on_commit(upsert, robust=True)
    else:
        upsert()


def record_inputs_use(tag_id: int, source: str) -> None:
    """Count a use of every tag ``tag_id`` reads (its ``TagDependency`` edges) by a rule or propagation run.

    ``source`` is the writer's value source ("rule" or "propagated").
    """
    from tags.models import TagDependency

    inputs = TagDependency.objects.filter(tag_id=tag_id).values_list("depends_on_id", flat=True)
    record_tag_use(inputs, KIND_OF_SOURCE[source])


def tag_and_inputs(tag_id: int) -> QuerySet:
    """``tag_id`` and the tags it reads, as a flat id queryset (one subquery of the upsert).

    For reads that show a value together with the inputs it came from (explain).
    """
    from django.db.models import Q

    from tags.models import TagDefinition

    return TagDefinition.objects.filter(Q(pk=tag_id) | Q(dependents__tag_id=tag_id)).values_list("pk", flat=True)


def _in_own_transaction() -> bool:
    """Whether the code runs inside a transaction it opened (not only a test case's wrapping one).

    Django marks a TestCase's atomic blocks ``_from_testcase`` (its durable check uses the
    flag the same way), so tests see the same immediate write as an autocommit request.
    """
    blocks = connection.atomic_blocks
    return connection.in_atomic_block and not all(getattr(b, "_from_testcase", False) for b in blocks)


# PostgreSQL: the upsert's own transaction commits without waiting for the WAL flush. A read
# request writes nothing else, so a synchronous commit would make it wait for an fsync
# (6-15 ms on a busy disk, against < 1 ms for the statement); a crash can lose at most
# the last moments of counts, which analytics can afford. ``set_config(…, true)`` in the
# statement itself keeps it one statement (the setting lasts until its commit).
ASYNCHRONOUS_COMMIT = ", (SELECT set_config('synchronous_commit', 'off', true)) AS asynchronous_commit"


def _upsert(source: list[int] | QuerySet, kind: str, day) -> None:
    ids_sql, params = _ids_sql(source)
    on_day = connection.ops.adapt_datefield_value(day)
    asynchronous = ASYNCHRONOUS_COMMIT if connection.vendor == "postgresql" else ""
    sql = (
        f"INSERT INTO {TABLE} (tag_id, day, kind, count) "
        f"SELECT t.id, %s, %s, 1 FROM tags_tagdefinition t{asynchronous} WHERE t.id IN ({ids_sql}) ORDER BY t.id "
        f"ON CONFLICT (tag_id, day, kind) DO UPDATE SET count = {TABLE}.count + EXCLUDED.count"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [on_day, kind, *params])


def _ids_sql(source: list[int] | QuerySet) -> tuple[str, list]:
    """The ids as a subquery: the queryset's own SQL, or one array / JSON parameter (any length)."""
    if isinstance(source, QuerySet):
        sql, params = source.query.get_compiler(connection=connection).as_sql()
        return sql, list(params)
    if connection.vendor == "postgresql":
        return "SELECT unnest(%s::bigint[])", [source]
    return "SELECT value FROM json_each(%s)", ["[" + ",".join(map(str, source)) + "]"]
