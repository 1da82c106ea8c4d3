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


def _stamp(connection: BaseDatabaseWrapper, value: datetime) -> object:
    return db_datetime(connection, value)


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

    One ``INSERT … ON CONFLICT DO UPDATE … WHERE (old) IS DISTINCT FROM (new)``:
    unchanged rows are not rewritten (status ``unchanged``) and their ids come from
    one lookup on the key. Rows are inserted in key order so concurrent batches
    take row locks in the same order and cannot deadlock each other.
    """
    if not rows:
        return []
    names = [name for name, _ in columns]
    updated = [name for name in names if name not in key]
    stamp = _stamp(connection, now)
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
        returned = {tuple(row[1:-1]): (row[0], "created" if row[-1] else "updated") for row in cursor.fetchall()}
        keys = [tuple(row[k] for k in key) for row in rows]
        missing = [dict(zip(key, k, strict=True)) for k in keys if k not in returned]
        if missing:
            key_columns = [c for c in columns if c[0] in key]
            match = " AND ".join(f"x.{k} = r.{k}" for k in key)
            cursor.execute(
                f"SELECT x.id, {', '.join('r.' + k for k in key)} FROM {recordset_sql(connection, key_columns)}"
                f" JOIN {table} x ON {match}",
                [recordset_param(missing)],
            )
            for row in cursor.fetchall():
                returned[tuple(row[1:])] = (row[0], "unchanged")
    return [returned[k] for k in keys]
