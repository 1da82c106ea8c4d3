"""Which target subjects a change reaches: the path walked forward from the changed end.

Used by the real-time planner. Validity filters are left out on purpose: a
superset of the affected targets costs a few index probes; a missed one is a
stale value.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import orjson
from django.db import connection

from .document import Propagation, Step


def forward(steps: Sequence[Step], ids: Iterable[int]) -> list[int]:
    """The subjects reached from ``ids`` (of ``steps[0]``'s start type) walking ``steps``; one statement."""
    ids = sorted({int(i) for i in ids})
    if not steps:
        return ids
    if not ids:
        return []
    pg = connection.vendor == "postgresql"
    joins, params = [], []
    previous = None
    for i, step in enumerate(steps):
        start, end = step.start_column, step.end_column
        alias = f"w{i}"
        if previous is None:
            source = "= ANY(%s::bigint[])" if pg else "IN (SELECT value FROM json_each(%s))"
            first = f"FROM subjects_relationship {alias} WHERE {alias}.relationship_type_id = %s AND {alias}.{start} {source}"
            first_params = [step.relationship_type_id, ids if pg else orjson.dumps(ids).decode()]
        else:
            joins.append(
                f"JOIN subjects_relationship {alias} ON {alias}.{start} = {previous}"
                f" AND {alias}.relationship_type_id = %s"
            )
            params.append(step.relationship_type_id)
        previous = f"{alias}.{end}"
    head, _, where = first.partition(" WHERE ")
    sql = f"SELECT DISTINCT {previous} {head} {' '.join(joins)} WHERE {where}"
    with connection.cursor() as cursor:
        cursor.execute(sql, [*params, *first_params])
        return sorted(row[0] for row in cursor.fetchall())


def targets_of_source(prop: Propagation, source_ids: Iterable[int]) -> list[int]:
    """Targets whose value may change when the source value of ``source_ids`` changed."""
    return forward(prop.steps, source_ids)


def targets_of_relationships(prop: Propagation, relationship_type_id: int, ends: dict[str, set[int]]) -> list[int]:
    """Targets whose value may change when relationships of the type changed between ``ends``.

    ``ends`` holds the subject ids at the relationships' "from" and "to" ends. For each
    step that walks the type, the end towards the target is walked forward to it.
    """
    found: set[int] = set()
    for i, step in enumerate(prop.steps):
        if step.relationship_type_id != relationship_type_id:
            continue
        column = {"to_subject_id": "to", "from_subject_id": "from", "subject_id": "subject"}[step.end_column]
        found.update(forward(prop.steps[i + 1 :], ends.get(column, set())))
    return sorted(found)
