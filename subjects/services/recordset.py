"""Set-based writes from one JSON parameter.

A batch travels to the database as a single JSON array and is read back as a
table (``jsonb_to_recordset`` on PostgreSQL, ``json_each`` on SQLite), so an
upsert of 1,000 rows is one statement with one parameter, whatever the backend.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

import orjson
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
    rows: Sequence[dict],
    now: datetime,
) -> list[tuple[int, str]]:
    """Insert or update ``rows`` by ``key``; ``(id, status)`` per row, in order.

    First one read compares the batch with what is stored, so unchanged rows cost
    an index probe and no write (not even a row lock). New and changed rows then
    go through one ``INSERT … ON CONFLICT DO UPDATE … WHERE (old) IS DISTINCT FROM
    (new)``, which stays correct when a concurrent batch wrote the same keys in
    between. Rows are written in key order so concurrent batches lock rows in the
    same order and cannot deadlock each other.
    """
    if not rows:
        return []
    keys = [tuple(row[k] for k in key) for row in rows]
    stored = _compare(connection, table, columns, key, rows)
    outcome: dict[tuple, tuple[int, str]] = {}
    pending = []
    for row, row_key in zip(rows, keys, strict=True):
        found = stored.get(row_key)
        if found is not None and not found[1]:
            outcome[row_key] = (found[0], "unchanged")
        else:
            pending.append(row)
    if pending:
        outcome.update(_write(connection, table, columns, key, pending, now))
        raced = [dict(zip(key, k, strict=True)) for k in keys if k not in outcome]
        if raced:  # identical rows written by a concurrent batch after our read
            for row_key, (id_, _changed) in _compare(connection, table, columns, key, raced, compare=False).items():
                outcome[row_key] = (id_, "unchanged")
    return [outcome[k] for k in keys]


def _compare(connection, table, columns, key, rows, compare: bool = True) -> dict[tuple, tuple[int, bool]]:
    """Stored id per key, and whether the stored row differs from the given one."""
    used = [c for c in columns if c[0] in key or compare]
    updated = [name for name, _ in used if name not in key]
    match = " AND ".join(f"x.{k} = r.{k}" for k in key)
    if compare and updated:
        stored = ", ".join(_stored_value(connection, name, pg_type) for name, pg_type in used if name not in key)
        incoming = ", ".join(f"r.{name}" for name in updated)
        differs = f"({stored}) IS DISTINCT FROM ({incoming})"
    else:
        differs = "false"
    sql = (
        f"SELECT {', '.join('r.' + k for k in key)}, x.id, {differs}"
        f" FROM {recordset_sql(connection, used)} JOIN {table} x ON {match}"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [recordset_param(rows)])
        width = len(key)
        return {tuple(row[:width]): (row[width], bool(row[width + 1])) for row in cursor.fetchall()}


def _stored_value(connection, name: str, pg_type: str) -> str:
    # SQLite keeps JSON as text in whatever spacing wrote it; json() normalizes it.
    if pg_type == "jsonb" and connection.vendor != "postgresql":
        return f"json(x.{name})"
    return f"x.{name}"


def _write(connection, table, columns, key, rows, now) -> dict[tuple, tuple[int, str]]:
    names = [name for name, _ in columns]
    updated = [name for name in names if name not in key]
    stamp = db_datetime(connection, now)
    assignments = ", ".join(f"{name} = excluded.{name}" for name in [*updated, "updated_at"])
    sql = (
        f"INSERT INTO {table} AS t ({', '.join(names)}, created_at, updated_at)"
        f" SELECT {', '.join('r.' + n for n in names)}, %s, %s FROM {recordset_sql(connection, columns)}"
        f" WHERE true ORDER BY {', '.join('r.' + k for k in key)}"
        f" ON CONFLICT ({', '.join(key)}) DO UPDATE SET {assignments}"
        f" WHERE ({', '.join('t.' + n for n in updated)}) IS DISTINCT FROM ({', '.join('excluded.' + n for n in updated)})"
        f" RETURNING id, {', '.join(key)}, created_at = updated_at"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [stamp, stamp, recordset_param(rows)])
        return {tuple(row[1:-1]): (row[0], "created" if row[-1] else "updated") for row in cursor.fetchall()}
