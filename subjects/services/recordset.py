"""Set-based writes from one JSON parameter.

A batch travels to the database as a single JSON array and is read back as a
table (``jsonb_to_recordset`` on PostgreSQL, ``json_each`` on SQLite), so an
upsert of 1,000 rows is one statement with one parameter, whatever the backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from operator import itemgetter

import orjson
from django.db import IntegrityError, transaction
from django.db.backends.base.base import BaseDatabaseWrapper

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
) -> list[tuple[int, str]]:
    """Insert or update ``rows`` (tuples in ``columns`` order) by ``key``.

    Returns ``(id, status)`` per row, in order; status is created, updated or
    unchanged. Each row is matched to the stored row by one probe of the key's
    unique index; only new and changed rows are written (unchanged ones cost no
    write and no row lock), through ``ON CONFLICT DO UPDATE … WHERE (old) IS
    DISTINCT FROM (new)`` so a concurrent writer of the same keys is handled, in
    key order so concurrent batches cannot deadlock. On PostgreSQL the batch is
    streamed with ``COPY`` into a session-local staging table and matched with a
    ``LATERAL`` probe (a plan that does not depend on table statistics), all in
    one statement; SQLite reads the batch from one JSON parameter.
    """
    if not rows:
        return []
    key_of = itemgetter(*[[name for name, _ in columns].index(k) for k in key])
    keys = [key_of(row) for row in rows]
    width = len(key)
    source, params = _stage(connection, table, columns, rows)
    stamps = _stamps(connection, now)
    outcome: dict[tuple, tuple[int, str]] = {}
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            for row in _upsert_postgresql(connection, cursor, table, columns, key, source, stamps):
                outcome[tuple(row[:width])] = (row[width], row[width + 1])
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
    back to a savepoint and the batch is written with ``ON CONFLICT`` throughout."""
    try:
        with transaction.atomic(using=connection.alias):
            cursor.execute(_upsert_sql_postgresql(table, columns, key, source, plain_insert=True), [*stamps, *stamps])
            return cursor.fetchall()
    except IntegrityError:
        cursor.execute(_upsert_sql_postgresql(table, columns, key, source), [*stamps])
        return cursor.fetchall()


def _upsert_sql_postgresql(
    table: str, columns: Sequence[Column], key: Sequence[str], source: str, plain_insert: bool = False
) -> str:
    names = [name for name, _ in columns]
    updated = [name for name in names if name not in key]
    keys = ", ".join(key)
    probe = " AND ".join(f"y.{k} = r.{k}" for k in key)
    same = f"x.id IS NOT NULL AND ({', '.join('x.' + n for n in updated)}) IS NOT DISTINCT FROM ({', '.join('r.' + n for n in updated)})"
    return (
        f"WITH batch AS MATERIALIZED (SELECT r.*, x.id AS stored_id, {same} AS same FROM {source}"
        f" LEFT JOIN LATERAL (SELECT y.* FROM {table} y WHERE {probe} LIMIT 1) x ON true),"
        f" written AS (INSERT INTO {table} AS t ({', '.join(names)}, created_at, updated_at)"
        f" SELECT {', '.join(names)}, %s, %s FROM batch WHERE NOT same"
        f"{' AND stored_id IS NOT NULL' if plain_insert else ''} ORDER BY {keys}"
        f"{_conflict_clause(columns, key)} RETURNING {keys}, id, created_at = updated_at AS created)"
        + (
            f", inserted AS (INSERT INTO {table} ({', '.join(names)}, created_at, updated_at)"
            f" SELECT {', '.join(names)}, %s, %s FROM batch WHERE stored_id IS NULL ORDER BY {keys}"
            f" RETURNING {keys}, id)"
            f" SELECT {keys}, id, 'created' FROM inserted UNION ALL"
            if plain_insert
            else ""
        )
        + f" SELECT {keys}, id, CASE WHEN created THEN 'created' ELSE 'updated' END FROM written"
        f" UNION ALL SELECT {keys}, stored_id, 'unchanged' FROM batch WHERE same"
    )


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


def _stage(connection, table: str, columns: Sequence[Column], rows: Sequence[tuple]) -> tuple[str, list]:
    """Where the statements read the batch from: ``(FROM-clause item named r, params)``."""
    if connection.vendor != "postgresql":
        names = [name for name, _ in columns]
        return recordset_sql(connection, columns), [
            recordset_param([dict(zip(names, row, strict=True)) for row in rows])
        ]
    stage = f"tw_stage_{table}"
    definition = ", ".join(f"{name} {pg_type}" for name, pg_type in columns)
    jsonb = [i for i, (_, pg_type) in enumerate(columns) if pg_type == "jsonb"]
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({definition})")
        cursor.execute(f"TRUNCATE {stage}")
        with cursor.cursor.copy(f"COPY {stage} FROM STDIN") as copy:
            for row in rows:
                if jsonb:
                    row = list(row)
                    for i in jsonb:
                        row[i] = orjson.dumps(row[i]).decode()
                copy.write_row(row)
    return f"{stage} r", []
