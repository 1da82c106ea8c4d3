"""Set-based writes from one JSON parameter.

A batch travels to the database as a single JSON array and is read back as a
table (``jsonb_to_recordset`` on PostgreSQL, ``json_each`` on SQLite), so an
upsert of 1,000 rows is one statement with one parameter, whatever the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from operator import itemgetter

import orjson
from django.db import IntegrityError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

from .new_rows import copy_if_all_new
from .staging import SAVEPOINT, one_round_trip, stage_batch

Column = tuple[str, str]  # (name, PostgreSQL type)


def recordset_sql(connection: BaseDatabaseWrapper, columns: Sequence[Column]) -> str:
    """A FROM-clause item named ``r`` with ``columns``, read from one ``%s`` parameter."""
    if connection.vendor == "postgresql":
        definition = ", ".join(f"{name} {pg_type}" for name, pg_type in columns)
        return f"jsonb_to_recordset(%s::jsonb) AS r({definition})"
    fields = ", ".join(_sqlite_field(name, pg_type) for name, pg_type in columns)
    return f"(SELECT {fields} FROM json_each(%s)) AS r"


def _sqlite_field(name: str, pg_type: str) -> str:
    extract = f"json_extract(value, '$.{name}')"
    if pg_type == "jsonb":
        return f"json({extract}) AS {name}"
    return f"{extract} AS {name}"


def recordset_param(rows: Sequence[dict]) -> str:
    """The JSON parameter for :func:`recordset_sql`."""
    return orjson.dumps(rows).decode()


def id_list_sql(connection: BaseDatabaseWrapper) -> str:
    """A FROM-clause item named ``r`` with one column ``id``, read from one ``%s``
    parameter holding a JSON array of integers (see :func:`id_list_param`)."""
    if connection.vendor == "postgresql":
        return "(SELECT value::bigint AS id FROM json_array_elements_text(%s::json)) AS r"
    return "(SELECT value AS id FROM json_each(%s)) AS r"


def id_list_param(ids: Sequence[int]) -> str:
    """The parameter for :func:`id_list_sql`."""
    return orjson.dumps(ids).decode()


def db_datetime(connection: BaseDatabaseWrapper, value: datetime | None) -> object:
    """A datetime as the backend stores it (ISO text with offset on PostgreSQL)."""
    if value is None:
        return None
    if connection.vendor == "postgresql":
        return value.isoformat()
    return connection.ops.adapt_datetimefield_value(value)


def guarded_upsert(
    connection: BaseDatabaseWrapper,
    *,
    table: str,
    columns: Sequence[Column],
    key: Sequence[str],
    rows: Sequence[tuple],
    now: datetime,
    before_compare: Callable[[], object] | None = None,
) -> list[tuple[int, str]]:
    """Insert or update ``rows`` (tuples in ``columns`` order) by ``key``.

    Returns ``(id, status)`` per row, in order; status is created, updated or
    unchanged. Each row is matched to the stored row by one probe of the key's
    unique index; only new and changed rows are written (unchanged ones cost no
    write and no row lock), through ``ON CONFLICT DO UPDATE … WHERE (old) IS
    DISTINCT FROM (new)`` so a concurrent writer of the same keys is handled, in
    key order so concurrent batches cannot deadlock. On PostgreSQL a batch whose
    keys are all new is copied straight into the table (:mod:`.new_rows`); any
    other batch is streamed with ``COPY`` into the session's staging table
    (:mod:`.staging`) and matched with a ``LATERAL`` probe (a plan that does not
    depend on table statistics), all in one statement; SQLite reads the batch
    from one JSON parameter.

    A ``jsonb`` value may be given already encoded (``str`` of JSON text), so a
    caller that encoded it to check it does not pay for it twice.

    ``before_compare`` runs once, inside the transaction, just before a batch takes the
    compare-and-write path: there a caller can read the stored rows as they were before
    the write, and an all-new batch (which has none) pays nothing for it.
    """
    if not rows:
        return []
    if not connection.in_atomic_block:  # the staged rows live until the transaction ends
        with transaction.atomic(using=connection.alias):
            return guarded_upsert(
                connection,
                table=table,
                columns=columns,
                key=key,
                rows=rows,
                now=now,
                before_compare=before_compare,
            )
    key_of = itemgetter(*[[name for name, _ in columns].index(k) for k in key])
    keys = [key_of(row) for row in rows]
    width = len(key)
    if connection.vendor == "postgresql":
        created = copy_if_all_new(connection, table=table, columns=columns, key=key, keys=keys, rows=rows, now=now)
        if created is not None:
            return created
    if before_compare is not None:
        before_compare()
    source, params = stage_batch(connection, table, columns, rows)
    stamps = _stamps(connection, now)
    outcome: dict[tuple, tuple[int, str]] = {}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for row in _upsert_postgresql(connection, cursor, table, columns, key, source, stamps):
                outcome[row[:width]] = (row[width], row[width + 1])
        else:
            cursor.execute(_write_sql_sqlite(table, columns, key, source), [*stamps, *params])
            for row in cursor.fetchall():
                outcome[tuple(row[1 : 1 + width])] = (row[0], "created" if row[-1] else "updated")
        if len(outcome) < len(rows):  # unchanged rows (SQLite), or rows a concurrent batch wrote identically
            match = " AND ".join(f"x.{k} = r.{k}" for k in key)
            cursor.execute(
                f"SELECT {', '.join('r.' + k for k in key)}, x.id FROM {source} JOIN {table} x ON {match}", params
            )
            for row in cursor.fetchall():
                outcome.setdefault(tuple(row[:width]), (row[width], "unchanged"))
    return [outcome[k] for k in keys]


def _conflict_clause(columns: Sequence[Column], key: Sequence[str]) -> str:
    updated = [name for name, _ in columns if name not in key]
    assignments = ", ".join(f"{name} = excluded.{name}" for name in [*updated, "updated_at"])
    return (
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {assignments}"
        f" WHERE ({', '.join('t.' + n for n in updated)}) IS DISTINCT FROM ({', '.join('excluded.' + n for n in updated)})"
    )


def _upsert_postgresql(connection, cursor, table, columns, key, source, stamps) -> list[tuple]:
    """New rows go through a plain ``INSERT`` (no speculative-insertion cost); if a
    concurrent batch inserted one of their keys meanwhile, the unique violation rolls
    back to a savepoint and the batch is written with ``ON CONFLICT`` throughout.

    With client-side binding (Django's default for psycopg) the savepoint, the write
    and the release travel as one simple-protocol query: one round trip a batch.
    """
    insert = _upsert_sql_postgresql(table, columns, key, source, plain_insert=True)
    upsert = _upsert_sql_postgresql(table, columns, key, source)
    if not one_round_trip(cursor):
        try:
            with transaction.atomic(using=connection.alias):
                cursor.execute(insert, [*stamps, *stamps])
                return cursor.fetchall()
        except IntegrityError:
            cursor.execute(upsert, [*stamps])
            return cursor.fetchall()
    try:
        cursor.execute(f"SAVEPOINT {SAVEPOINT}; {insert}; RELEASE SAVEPOINT {SAVEPOINT}", [*stamps, *stamps])
    except IntegrityError:
        cursor.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}; {upsert}", [*stamps])
        cursor.nextset()
    cursor.nextset()
    return cursor.fetchall()


def _upsert_sql_postgresql(
    table: str, columns: Sequence[Column], key: Sequence[str], source: str, plain_insert: bool = False
) -> str:
    names = [name for name, _ in columns]
    updated = [name for name in names if name not in key]
    keys = ", ".join(key)
    order = _key_order(columns, key)
    probe = " AND ".join(f"y.{k} = r.{k}" for k in key)
    same = f"x.id IS NOT NULL AND ({', '.join('x.' + n for n in updated)}) IS NOT DISTINCT FROM ({', '.join('r.' + n for n in updated)})"
    return (
        f"WITH batch AS MATERIALIZED (SELECT r.*, x.id AS stored_id, {same} AS same FROM {source}"
        f" LEFT JOIN LATERAL (SELECT y.* FROM {table} y WHERE {probe} LIMIT 1) x ON true),"
        f" written AS (INSERT INTO {table} AS t ({', '.join(names)}, created_at, updated_at)"
        f" SELECT {', '.join(names)}, %s, %s FROM batch WHERE NOT same"
        f"{' AND stored_id IS NOT NULL' if plain_insert else ''} ORDER BY {order}"
        f"{_conflict_clause(columns, key)} RETURNING {keys}, id, created_at = updated_at AS created)"
        + (
            f", inserted AS (INSERT INTO {table} ({', '.join(names)}, created_at, updated_at)"
            f" SELECT {', '.join(names)}, %s, %s FROM batch WHERE stored_id IS NULL ORDER BY {order}"
            f" RETURNING {keys}, id)"
            f" SELECT {keys}, id, 'created' FROM inserted UNION ALL"
            if plain_insert
            else ""
        )
        + f" SELECT {keys}, id, CASE WHEN created THEN 'created' ELSE 'updated' END FROM written"
        f" UNION ALL SELECT {keys}, stored_id, 'unchanged' FROM batch WHERE same"
    )


def _key_order(columns: Sequence[Column], key: Sequence[str]) -> str:
    """The order rows are written in, the same for every writer (so concurrent
    batches cannot deadlock); text in byte order, which sorts faster than a locale's."""
    types = dict(columns)
    return ", ".join(f'{k} COLLATE "C"' if types[k] == "text" else k for k in key)


def _write_sql_sqlite(table: str, columns: Sequence[Column], key: Sequence[str], source: str) -> str:
    names = [name for name, _ in columns]
    updated = [name for name in names if name not in key]
    stored = ", ".join(f"json(x.{n})" if t == "jsonb" else f"x.{n}" for n, t in columns if n not in key)
    match = " AND ".join(f"x.{k} = r.{k}" for k in key)
    return (
        f"INSERT INTO {table} AS t ({', '.join(names)}, created_at, updated_at)"
        f" SELECT {', '.join('r.' + n for n in names)}, %s, %s FROM {source} LEFT JOIN {table} x ON {match}"
        f" WHERE x.id IS NULL OR ({stored}) IS DISTINCT FROM ({', '.join('r.' + n for n in updated)})"
        f" ORDER BY {', '.join('r.' + k for k in key)}"
        f"{_conflict_clause(columns, key)}"
        f" RETURNING id, {', '.join(key)}, created_at = updated_at"
    )


def _stamps(connection, now: datetime) -> tuple[object, object]:
    stamp = db_datetime(connection, now)
    return stamp, stamp
