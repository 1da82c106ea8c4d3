"""Resolving references to subjects given in batch items.

An item may name another subject by id (``17``) or by its external key
(``{"source": "crm", "external_id": "B1", "type": "brand"}``; ``type`` optional
when the field implies the kind of subject). Lookups are one query per batch for
ids and one per distinct set of keys, never one per item.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from django.db import connection

from ..schemas import MAX_ID, valid_text
from .item_checks import KEY_LIMITS
from .recordset import id_list_param, id_list_sql, recordset_param, recordset_sql


@dataclass(frozen=True)
class KeyRef:
    source: str
    external_id: str
    type_code: str | None = None


Ref = int | KeyRef


def parse_ref(value: object) -> tuple[Ref | None, str | None]:
    """``(ref, error)`` for a raw item value."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return None, "must be a subject id or an object with source and external_id"
    if isinstance(value, int):
        if not 0 < value < MAX_ID:
            return None, f"{value} is not a valid subject id"
        return value, None
    if isinstance(value, dict):
        source, external_id = value.get("source"), value.get("external_id")
        type_code = value.get("type")
        if not valid_text(source, KEY_LIMITS["source"]) or not valid_text(external_id, KEY_LIMITS["external_id"]):
            return (
                None,
                "a reference by key needs non-empty 'source' and 'external_id' strings",
            )
        if type_code is not None and not isinstance(type_code, str):
            return None, "'type' must be a subject type code"
        return KeyRef(source, external_id, type_code), None
    return None, "must be a subject id or an object with source and external_id"


@dataclass(frozen=True, slots=True)
class FoundSubject:
    id: int
    subject_type_id: int
    type_code: str
    scope_role: str
    business_line_id: int | None
    brand_id: int | None
    region_id: int | None


def subjects_by_id(ids: Iterable[int]) -> dict[int, FoundSubject]:
    """The subjects with these ids, with their type and scope, in one statement."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    sql = (
        "SELECT s.id, s.subject_type_id, t.code, t.scope_role, s.business_line_id, s.brand_id, s.region_id"
        " FROM {} JOIN subjects_subjecttype t ON t.id = s.subject_type_id{}"
    ).format(*_subjects_with_ids(connection))
    with connection.cursor() as cursor:
        cursor.execute(sql, [id_list_param(ids)])
        return {row[0]: FoundSubject(*row) for row in cursor.fetchall()}


def subject_types_by_id(ids: Iterable[int]) -> dict[int, int]:
    """``{id: subject_type_id}`` of the subjects with these ids: what checking the
    ends of relationships given by id needs, without the type and scope columns."""
    ids = sorted(set(ids))
    if not ids:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s.id, s.subject_type_id FROM {}{}".format(*_subjects_with_ids(connection)), [id_list_param(ids)]
        )
        return dict(cursor.fetchall())


def _subjects_with_ids(connection) -> tuple[str, str]:
    """``(FROM items, WHERE clause)`` for the subjects ``s`` whose ids are in one JSON
    parameter: one primary-key probe each on PostgreSQL (``LATERAL … LIMIT 1``, a
    plan that does not depend on table statistics)."""
    if connection.vendor == "postgresql":
        lateral = " CROSS JOIN LATERAL (SELECT * FROM subjects_subject s WHERE s.id = r.id LIMIT 1) s"
        return id_list_sql(connection) + lateral, ""
    return "subjects_subject s", f" WHERE s.id IN (SELECT r.id FROM {id_list_sql(connection)})"


def subjects_by_key(
    keys: Iterable[tuple[int, str, str]],
) -> dict[tuple[int, str, str], int]:
    """Ids of the subjects with the given ``(subject_type_id, source, external_id)`` keys.

    One statement joining the keys (sent as one JSON parameter) to the unique index.
    """
    rows = [{"t": t, "s": s, "e": e} for t, s, e in set(keys)]
    if not rows:
        return {}
    source = recordset_sql(connection, [("t", "bigint"), ("s", "text"), ("e", "text")])
    sql = (
        f"SELECT r.t, r.s, r.e, x.id FROM {source} JOIN subjects_subject x"
        " ON x.subject_type_id = r.t AND x.source = r.s AND x.external_id = r.e"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [recordset_param(rows)])
        return {(t, s, e): id_ for t, s, e, id_ in cursor.fetchall()}
