"""The session's staging tables: where a batch is streamed with ``COPY`` on PostgreSQL.

A batch of rows is written once into a temporary table ``tw_stage_<table>``
(``ON COMMIT DELETE ROWS``) and the write statements read it from there; on
SQLite the batch is one JSON parameter instead.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import orjson
from django.db import transaction

if TYPE_CHECKING:
    from .recordset import Column

SAVEPOINT = "tw_guarded_upsert"


def one_round_trip(cursor) -> bool:
    """Whether ``cursor`` binds parameters client-side, so one ``execute`` may hold
    several statements (psycopg's ``ClientCursor``; not with ``server_side_binding``)."""
    from psycopg import ClientCursor

    return isinstance(cursor.cursor, ClientCursor)


def stage_batch(connection, table: str, columns: Sequence[Column], rows: Sequence[tuple]) -> tuple[str, list]:
    """Where the statements read the batch from: ``(FROM-clause item named r, params)``."""
    jsonb = [i for i, (_, pg_type) in enumerate(columns) if pg_type == "jsonb"]
    if connection.vendor != "postgresql":
        from .recordset import recordset_param, recordset_sql

        names = [name for name, _ in columns]
        return recordset_sql(connection, columns), [
            recordset_param([dict(zip(names, _json_fragments(row, jsonb), strict=True)) for row in rows])
        ]
    stage = f"tw_stage_{table}"
    state = _stage_state(connection, stage)
    with connection.cursor() as cursor:
        prepare = []
        if not state.ready:
            definition = ", ".join(f"{name} {pg_type}" for name, pg_type in columns)
            prepare.append(f"CREATE TEMP TABLE IF NOT EXISTS {stage} ({definition}) ON COMMIT DELETE ROWS")
        if state.dirty:  # an earlier batch of this transaction (a wave, a chunk of an import)
            prepare.append(f"TRUNCATE {stage}")
        if prepare and one_round_trip(cursor):
            cursor.execute("; ".join(prepare))
        else:
            for statement in prepare:
                cursor.execute(statement)
        state.dirty = True
        transaction.on_commit(state.committed, using=connection.alias)
        with cursor.cursor.copy(f"COPY {stage} FROM STDIN") as copy:
            write = copy.write_row
            if not jsonb:
                for row in rows:
                    write(row)
            else:
                for row in rows:
                    write(json_texts(row, jsonb))
    return f"{stage} r", []


@dataclass
class _StageState:
    """What a session knows about its staging table for one product table.

    The table is a temporary table ``ON COMMIT DELETE ROWS``: created once per
    session (``ready`` once a transaction that created it committed; until then
    every batch re-checks with ``IF NOT EXISTS``, so a rolled-back creation is
    repaired) and emptied by PostgreSQL at commit, in place, with no statement of
    ours. Only a second batch in one transaction (waves, an import's chunks) finds
    rows to clear (``dirty``).
    """

    ready: bool = False
    dirty: bool = False

    def committed(self) -> None:
        self.ready, self.dirty = True, False


_stage_states: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _stage_state(connection, stage: str) -> _StageState:
    """Per database session (the driver's connection object: a reconnect starts afresh)."""
    states = _stage_states.setdefault(connection.connection, {})
    return states.setdefault(stage, _StageState())


def json_texts(row: tuple, jsonb: list[int]) -> list:
    """``row`` with its jsonb values as JSON text (values given as text are kept)."""
    row = list(row)
    for i in jsonb:
        if type(row[i]) is not str:
            row[i] = orjson.dumps(row[i]).decode()
    return row


def _json_fragments(row: tuple, jsonb: list[int]) -> tuple:
    """``row`` for the JSON parameter, with jsonb values given as text embedded as JSON."""
    if not any(type(row[i]) is str for i in jsonb):
        return row
    row = list(row)
    for i in jsonb:
        if type(row[i]) is str:
            row[i] = orjson.Fragment(row[i])
    return tuple(row)
