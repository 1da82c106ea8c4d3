"""A batch whose keys are all new goes into its table with ``COPY`` (PostgreSQL).

Loading and importing mostly send rows that are not stored yet. For those, the
compare-and-write statement of :func:`recordset.guarded_upsert` is wasted work: its
``INSERT … SELECT`` writes row by row where ``COPY`` writes pages of rows, and
the batch is streamed twice (into the staging table, then into the table). So
one statement first asks whether any key of the batch is stored (it stops at the
first that is) and, if none is, reserves the batch's ids from the table's
sequence; the rows are then copied straight into the table, in key order (the
order every writer uses, so concurrent batches cannot deadlock), under a
savepoint. If a concurrent batch inserted one of the keys meanwhile, the unique
violation rolls back to the savepoint and the batch takes the guarded path,
which sees the other batch's rows and compares with them; so does any batch in
which some key is already stored.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING

import orjson
import psycopg

from .staging import SAVEPOINT, json_texts, one_round_trip

if TYPE_CHECKING:
    from .recordset import Column

_sequences: dict[tuple[str, str], str] = {}


def copy_if_all_new(
    connection,
    *,
    table: str,
    columns: Sequence[Column],
    key: Sequence[str],
    keys: list[tuple],
    rows: Sequence[tuple],
    now: datetime,
) -> list[tuple[int, str]] | None:
    """``(id, "created")`` per row if every key was new and the rows are written; ``None``
    (nothing written) when some key is stored, for the caller's guarded path.

    ``keys`` holds each row's values of the ``key`` columns, in ``rows`` order.
    """
    with connection.cursor() as cursor:
        if not one_round_trip(cursor):
            return None
        order = sorted(range(len(rows)), key=keys.__getitem__)
        cursor.execute(
            f"SAVEPOINT {SAVEPOINT}; {_reserve_sql(table, columns, key)}",
            [_sequence(connection, cursor, table), orjson.dumps([keys[i] for i in order]).decode(), len(rows)],
        )
        cursor.nextset()
        reserved = sorted(row[0] for row in cursor.fetchall())
        if len(reserved) != len(rows):
            cursor.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
            return None
        jsonb = [i for i, (_, pg_type) in enumerate(columns) if pg_type == "jsonb"]
        names = ", ".join(name for name, _ in columns)
        try:
            with cursor.cursor.copy(f"COPY {table} (id, {names}, created_at, updated_at) FROM STDIN") as copy:
                write = copy.write_row
                for id_, i in zip(reserved, order, strict=True):
                    write((id_, *json_texts(rows[i], jsonb), now, now))
        except psycopg.IntegrityError:  # a concurrent batch inserted one of the keys
            cursor.execute(f"ROLLBACK TO SAVEPOINT {SAVEPOINT}; RELEASE SAVEPOINT {SAVEPOINT}")
            return None
        cursor.execute(f"RELEASE SAVEPOINT {SAVEPOINT}")
    ids = [0] * len(rows)
    for id_, i in zip(reserved, order, strict=True):
        ids[i] = id_
    return [(id_, "created") for id_ in ids]


def _reserve_sql(table: str, columns: Sequence[Column], key: Sequence[str]) -> str:
    """Parameters: the sequence, the keys (a JSON array of arrays), the row count.

    The ``EXISTS`` runs once and stops at the first stored key; each key is one
    probe of the unique index (``LATERAL … LIMIT 1``: a plan independent of table
    statistics). Ids come back in sequence order.
    """
    types = dict(columns)
    match = " AND ".join(
        f"y.{name} = (k->>{i})::{types[name]}" if types[name] != "text" else f"y.{name} = k->>{i}"
        for i, name in enumerate(key)
    )
    stored = (
        f"SELECT 1 FROM json_array_elements(%s::json) k"
        f" CROSS JOIN LATERAL (SELECT 1 FROM {table} y WHERE {match} LIMIT 1) x"
    )
    return f"SELECT nextval(%s::regclass) FROM generate_series(1, CASE WHEN EXISTS ({stored}) THEN 0 ELSE %s END)"


def _sequence(connection, cursor, table: str) -> str:
    """The table's id sequence (looked up once per process)."""
    name = _sequences.get((connection.alias, table))
    if name is None:
        cursor.execute("SELECT pg_get_serial_sequence(%s, 'id')", [table])
        name = _sequences[(connection.alias, table)] = cursor.fetchone()[0]
    return name
