"""The one guarded write of tag values, shared by explicit writes and rule recomputes.

Input is a *computed relation*: SQL selecting ``(subject_id, value)`` where ``value``
is the canonical JSON value (jsonb on PostgreSQL, JSON text on SQLite) or NULL for
"no value". Against it the writer inserts new values, updates changed ones, deletes
values that became NULL and appends one history row per change; unchanged values
cost an index probe and write nothing.

PostgreSQL: one statement of data-modifying CTEs (old values → upsert guarded by
``IS DISTINCT FROM`` → delete → history from both RETURNINGs). SQLite: the same
steps as a few statements over a temporary table inside the caller's transaction.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from django.db import connection, transaction

from tags.models import TagValueChange

VALUE = "tags_tagvalue"
CHANGE = "tags_tagvaluechange"
SQLITE_STAGE = "tw_tag_computed"


@dataclass
class Applied:
    created: list[int] = field(default_factory=list)
    updated: list[int] = field(default_factory=list)
    removed: list[int] = field(default_factory=list)
    # (subject, old, new) per change, when asked for (``with_values``): what delta maintenance
    # of the propagations reading this tag subtracts and adds (None = absent).
    values: list[tuple[int, object, object]] | None = None

    @property
    def changed_ids(self) -> list[int]:
        return sorted([*self.created, *self.updated, *self.removed])

    @property
    def count(self) -> int:
        return len(self.created) + len(self.updated) + len(self.removed)


def apply_computed(
    *,
    tag_id: int,
    computed_sql: str,
    params: list,
    source: str,
    rule_version: int | None,
    correlation_id: uuid.UUID,
    now: datetime,
    with_values: bool = False,
) -> Applied:
    """Make stored values of ``tag_id`` equal the computed relation for the subjects it lists.

    ``with_values`` (PostgreSQL) also returns each change's old and new value, from the
    history rows the statement writes anyway.
    """
    stamp = TagValueChange._meta.get_field("changed_at").get_db_prep_value(now, connection)
    cid = TagValueChange._meta.get_field("correlation_id").get_db_prep_value(correlation_id, connection)
    with transaction.atomic(savepoint=False), connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            return _apply_postgresql(
                cursor, tag_id, computed_sql, params, source, rule_version, cid, stamp, with_values=with_values
            )
        return _apply_sqlite(cursor, tag_id, computed_sql, params, source, rule_version, cid, stamp)


def _apply_postgresql(
    cursor, tag_id, computed_sql, params, source, rule_version, cid, stamp, *, with_values: bool = False
) -> Applied:
    """One statement whose plan cannot go quadratic, whatever the statistics say.

    Each computed row probes its stored value through the (tag, subject) index in a
    LATERAL subquery (``OFFSET 0`` keeps it a per-row probe), so no step joins the
    computed relation with a CTE or a tag-wide scan. Right after a bulk load the
    statistics of ``tags_tagvalue`` claim it is empty; a join planned on that claim
    (a nested loop over a CTE scan) turned a 4-second chunk into minutes. Values to
    delete are addressed by primary key from one array.
    """
    sql = f"""
    WITH computed AS MATERIALIZED (
        SELECT c.subject_id, c.value, o.id AS old_id, o.value AS old_value
          FROM ({computed_sql}) c
          LEFT JOIN LATERAL (
              SELECT v.id, v.value FROM {VALUE} v WHERE v.tag_id = %s AND v.subject_id = c.subject_id OFFSET 0
          ) o ON TRUE
    ),
    up AS (
        INSERT INTO {VALUE} AS t (tag_id, subject_id, value, source, rule_version, updated_at)
        SELECT %s::bigint, c.subject_id, c.value, %s::text, %s::integer, %s::timestamptz
        FROM computed c
        WHERE c.value IS NOT NULL AND c.value IS DISTINCT FROM c.old_value
        ORDER BY c.subject_id
        ON CONFLICT (tag_id, subject_id) DO UPDATE
           SET value = EXCLUDED.value, source = EXCLUDED.source,
               rule_version = EXCLUDED.rule_version, updated_at = EXCLUDED.updated_at
         WHERE t.value IS DISTINCT FROM EXCLUDED.value
        RETURNING t.subject_id, t.value
    ),
    gone AS (
        DELETE FROM {VALUE} v
        WHERE v.id = ANY(ARRAY(SELECT old_id FROM computed WHERE value IS NULL AND old_id IS NOT NULL))
        RETURNING v.subject_id, v.value
    ),
    hist AS (
        INSERT INTO {CHANGE} (subject_id, tag_id, old_value, new_value, source, rule_version, changed_at, correlation_id)
        SELECT up.subject_id, %s::bigint, c.old_value, up.value, %s::text, %s::integer, %s::timestamptz, %s::uuid
          FROM up JOIN computed c ON c.subject_id = up.subject_id
        UNION ALL
        SELECT gone.subject_id, %s::bigint, gone.value, NULL::jsonb, %s::text, %s::integer, %s::timestamptz, %s::uuid FROM gone
        RETURNING subject_id, old_value IS NULL AS added, new_value IS NULL AS removed{", old_value, new_value" if with_values else ""}
    )
    SELECT added, removed, array_agg(subject_id){", jsonb_agg(jsonb_build_array(subject_id, old_value, new_value))" if with_values else ""}
      FROM hist GROUP BY added, removed
    """
    meta = [source, rule_version, stamp]
    history = [tag_id, *meta, cid]
    cursor.execute(sql, [*params, tag_id, tag_id, *meta, *history, *history])
    applied = Applied(values=[] if with_values else None)
    for added, removed, ids, *changes in cursor.fetchall():
        (applied.created if added else applied.removed if removed else applied.updated).extend(ids)
        if with_values:
            applied.values.extend((int(sid), old, new) for sid, old, new in _json(changes[0]))
    return applied


def _json(value):
    import orjson

    return orjson.loads(value) if isinstance(value, str | bytes) else value


def _json_eq_sqlite(a: str, b: str) -> str:
    """JSON equality on SQLite text: compare decoded scalars / minified documents."""
    return f"json_extract({a}, '$') IS json_extract({b}, '$')"


def _apply_sqlite(cursor, tag_id, computed_sql, params, source, rule_version, cid, stamp) -> Applied:
    cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {SQLITE_STAGE} (subject_id INTEGER PRIMARY KEY, value TEXT)")
    cursor.execute(f"DELETE FROM {SQLITE_STAGE}")
    cursor.execute(
        f"INSERT INTO {SQLITE_STAGE} (subject_id, value) SELECT subject_id, value FROM ({computed_sql})", params
    )
    meta = [source, rule_version, stamp, cid]
    cursor.execute(
        f"""INSERT INTO {CHANGE} (subject_id, tag_id, old_value, new_value, source, rule_version, changed_at, correlation_id)
        SELECT c.subject_id, %s, v.value, c.value, %s, %s, %s, %s
          FROM {SQLITE_STAGE} c LEFT JOIN {VALUE} v ON v.tag_id = %s AND v.subject_id = c.subject_id
         WHERE NOT ({_json_eq_sqlite("v.value", "c.value")}) OR (v.value IS NULL) <> (c.value IS NULL)
         ORDER BY c.subject_id
        RETURNING subject_id, typeof(old_value) = 'null', typeof(new_value) = 'null'""",
        [tag_id, *meta, tag_id],
    )
    applied = Applied()
    for subject_id, added, removed in cursor.fetchall():
        (applied.created if added else applied.removed if removed else applied.updated).append(subject_id)
    if not applied.count:
        return applied
    cursor.execute(
        f"""INSERT INTO {VALUE} AS t (tag_id, subject_id, value, source, rule_version, updated_at)
        SELECT %s, subject_id, value, %s, %s, %s FROM {SQLITE_STAGE} WHERE value IS NOT NULL
        ON CONFLICT (tag_id, subject_id) DO UPDATE
           SET value = excluded.value, source = excluded.source,
               rule_version = excluded.rule_version, updated_at = excluded.updated_at
         WHERE NOT ({_json_eq_sqlite("t.value", "excluded.value")})""",
        [tag_id, source, rule_version, stamp],
    )
    cursor.execute(
        f"DELETE FROM {VALUE} WHERE tag_id = %s AND subject_id IN (SELECT subject_id FROM {SQLITE_STAGE} WHERE value IS NULL)",
        [tag_id],
    )
    return applied
